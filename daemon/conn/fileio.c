// SPDX-License-Identifier: BSD-3-Clause
/*
 * The storage steps of a direct request, under its range lock, each a call
 * to the export's backend (e->be, storage.h): reads and writes of the
 * planned span (plan.h), the edge-block reads of unaligned writes, TRIM
 * and WRITE_ZEROES with their fallbacks (zeroes written where the backend
 * cannot zero), the flush after FUA, FLUSH, and block status.
 *
 * Reads move the whole span into the request's chunks and the reply sends
 * the client's slice of it, no copy. Unaligned writes have their payload at
 * its place in the span; the one or two edge blocks are read into the bounce
 * chunk, the neighbours' bytes copied in, and the span written, all under
 * one exclusive lock over the span, so a concurrent writer of the same
 * blocks cannot lose bytes. Short transfers are resubmitted for the rest.
 *
 * Durability errors are sticky (backing.c): once a flush (or the sync after
 * a FUA TRIM/WRITE_ZEROES, or a FUA write with EIO) of a file has failed,
 * every later FLUSH and FUA request to that file, through any export or
 * connection, fails with EIO, so no client is told that data is safe that
 * may have been lost. Only a restart clears it.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <string.h>

#include "conn_int.h"

#define BLOCK_STATUS_MAX_EXTENTS 1024
#define FILEIO_HOLES_MAX_EXTENTS 64 /* a READ's reply has at most twice that many chunks */

static void fileio_done(struct conn_op *o, int res);

/* A fresh call to the export's backend, completing q->op (counted pending). */
static struct backend_io *fileio_bio(struct req *q, uint64_t off, uint64_t len)
{
	struct backend_io *io = &q->bio;

	conn_expect(&q->op);
	io->w = q->c->w;
	io->op = &q->op.op;
	io->e = q->c->exp;
	io->off = off;
	io->len = len;
	io->flags = 0;
	return io;
}

/* Queues the I/O of the request's current state (from io_done_bytes on). */
static void fileio_prep(struct req *q)
{
	struct conn *c = q->c;
	const struct export *e = c->exp;
	struct backend_io *io;
	uint64_t left;

	switch (q->state) {
	case REQ_FALLOC:
		io = fileio_bio(q, q->plan.io_off, q->plan.io_len);
		io->mode = q->falloc_mode;
		if (q->r.type == NBD_CMD_TRIM)
			e->be->trim(io);
		else
			e->be->zero(io);
		return;
	case REQ_ZERO_WRITE: {
		struct iovec v = { .iov_base = c->w->zeroes };

		left = q->r.len_bytes - q->io_done_bytes;
		v.iov_len = left < WORKER_ZEROES_BYTES ? left : WORKER_ZEROES_BYTES;
		io = fileio_bio(q, q->r.offset + q->io_done_bytes, v.iov_len);
		io->iov = &v; /* read before the call returns */
		io->niov = 1;
		io->flags = BACKEND_BUFFERED;
		e->be->write(io);
		return;
	}
	case REQ_SYNC:
	case REQ_FLUSH:
		e->be->flush(fileio_bio(q, 0, 0));
		return;
	case REQ_IO:
		left = q->plan.io_len - q->io_done_bytes;
		io = fileio_bio(q, q->plan.io_off + q->io_done_bytes, left);
		io->niov = iov_slice(q->iov, q->niov, q->io_done_bytes, left, q->io_iov);
		io->iov = q->io_iov;
		if (q->plan.buffered)
			io->flags |= BACKEND_BUFFERED;
		if (q->r.type == NBD_CMD_READ) {
			e->be->read(io);
		} else {
			if ((q->r.flags & NBD_CMD_FLAG_FUA) && !e->be->fua_by_flush)
				io->flags |= BACKEND_FUA;
			e->be->write(io);
		}
		return;
	default:
		assert(0);
	}
}

/* Enters a file I/O state and queues its first I/O. */
static void fileio_step(struct req *q, enum req_state state)
{
	req_set_state(q, state);
	conn_op_init(&q->op, q->c, fileio_done);
	q->io_done_bytes = 0;
	fileio_prep(q);
}

/* A flush of this file failed before: nothing is promised durable any more. */
static bool fileio_lost(const struct req *q)
{
	return backing_durability_err(export_store(q->c->exp)) != 0;
}

/* TRIM and WRITE_ZEROES are done: with FUA, make them durable first. */
static void fileio_zeroed(struct req *q)
{
	if (!(q->r.flags & NBD_CMD_FLAG_FUA))
		req_finish(q, NBD_SUCCESS);
	else if (fileio_lost(q))
		req_finish(q, NBD_EIO);
	else
		fileio_step(q, REQ_SYNC);
}

static void fileio_falloc_done(struct req *q, int res)
{
	if (res >= 0) {
		/* Holes now: reads may find and answer them. */
		if (q->falloc_mode & FALLOC_FL_PUNCH_HOLE)
			atomic_store_explicit(&((struct export *)q->c->exp)->may_have_holes, true,
					      memory_order_relaxed);
		fileio_zeroed(q);
		return;
	}
	if (res != -EOPNOTSUPP && res != -ENOTTY) {
		req_finish(q, proto_errno_to_nbd(-res));
		return;
	}
	/* TRIM is advisory: where holes cannot be punched, it is done as it is. */
	if (q->r.type == NBD_CMD_TRIM) {
		fileio_zeroed(q);
		return;
	}
	if (q->falloc_mode & FALLOC_FL_PUNCH_HOLE) {
		q->falloc_mode = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
		fileio_step(q, REQ_FALLOC);
		return;
	}
	/* No cheap way to zero: FAST_ZERO asks to fail fast rather than write. */
	if (q->r.flags & NBD_CMD_FLAG_FAST_ZERO) {
		req_finish(q, NBD_ENOTSUP);
		return;
	}
	fileio_step(q, REQ_ZERO_WRITE);
}

static void fileio_zero_write_done(struct req *q, int res)
{
	if (res <= 0) {
		req_finish(q, res < 0 ? proto_errno_to_nbd(-res) : NBD_EIO);
		return;
	}
	q->io_done_bytes += (uint64_t)res;
	if (q->io_done_bytes < q->r.len_bytes)
		fileio_prep(q);
	else
		fileio_zeroed(q);
}

static void fileio_data_done(struct req *q, int res)
{
	struct conn *c = q->c;

	if (res < 0) {
		log_warn("conn %" PRIu64 ": %s offset %" PRIu64 " length %" PRIu64 ": %s", c->id,
			 proto_cmd_name(q->r.type), q->r.offset, q->r.len_bytes, strerror(-res));
		/* A FUA write that hit an I/O error may have lost earlier writes' writeback too. */
		if (q->r.type == NBD_CMD_WRITE && (q->r.flags & NBD_CMD_FLAG_FUA) && res == -EIO)
			backing_fail(export_store(c->exp), EIO);
		req_finish(q, proto_errno_to_nbd(-res));
		return;
	}
	if (res == 0) {
		/* The file shrank under us: nothing more will come. */
		log_warn("conn %" PRIu64 ": %s offset %" PRIu64 ": unexpected end of file", c->id,
			 proto_cmd_name(q->r.type), q->r.offset);
		req_finish(q, NBD_EIO);
		return;
	}
	q->io_done_bytes += (uint64_t)res;
	if (q->io_done_bytes < q->plan.io_len) {
		fileio_prep(q); /* short transfer: the rest */
		return;
	}
	if (q->r.type != NBD_CMD_READ) {
		const struct backend_ops *be = c->exp->be;

		if (be->written)
			be->written(c->exp, q->plan.io_off, q->plan.io_len);
		if (be->fua_by_flush && (q->r.flags & NBD_CMD_FLAG_FUA)) {
			fileio_step(q, REQ_SYNC);
			return;
		}
	}
	req_finish(q, NBD_SUCCESS);
}

static void fileio_done(struct conn_op *o, int res)
{
	struct req *q = container_of(o, struct req, op);

	if (q->c->state == CONN_CLOSING) {
		req_finish(q, NBD_EIO);
		return;
	}
	switch (q->state) {
	case REQ_FALLOC:
		fileio_falloc_done(q, res);
		break;
	case REQ_ZERO_WRITE:
		fileio_zero_write_done(q, res);
		break;
	case REQ_SYNC:
	case REQ_FLUSH:
		/* The first failure is remembered: no later flush may say all is well. */
		if (res < 0)
			backing_fail(export_store(q->c->exp), -res);
		req_finish(q, res < 0 || fileio_lost(q) ? NBD_EIO : NBD_SUCCESS);
		break;
	case REQ_IO:
		fileio_data_done(q, res);
		break;
	default:
		assert(0);
	}
}

static void fileio_rmw_done(struct conn_op *o, int res)
{
	struct req *q = container_of(o, struct req, op);
	uint32_t a = q->plan.align_bytes;
	const uint8_t *bounce = q->bounce.iov_base;
	const struct plan *p = &q->plan;

	if (res != (int)a && !q->rmw_err)
		q->rmw_err = res < 0 ? res : -EIO;
	if (--q->rmw_pending)
		return;
	if (q->c->state == CONN_CLOSING) {
		req_finish(q, NBD_EIO);
		return;
	}
	if (q->rmw_err) {
		log_warn("conn %" PRIu64 ": WRITE offset %" PRIu64 ": reading edge blocks: %s",
			 q->c->id, q->r.offset, strerror(-q->rmw_err));
		req_finish(q, proto_errno_to_nbd(-q->rmw_err));
		return;
	}
	if (p->rmw_head)
		iov_copy_in(q->iov, q->niov, 0, bounce, p->data_off);
	if (p->rmw_tail) {
		uint64_t tail_block = p->io_len - a;
		uint32_t keep_from = (uint32_t)(p->data_off + q->r.len_bytes - tail_block);
		const uint8_t *src = (p->rmw_head && p->io_len == a) ? bounce : bounce + a;

		iov_copy_in(q->iov, q->niov, tail_block + keep_from, src + keep_from,
			    a - keep_from);
	}
	fileio_step(q, REQ_IO);
}

/* Reads one edge block (on an overlay, from the layer it lives in: a block is in one granule). */
static void fileio_prep_edge(struct req *q, void *dst, uint32_t a, uint64_t off)
{
	struct iovec v = { .iov_base = dst, .iov_len = a };
	struct backend_io *io = fileio_bio(q, off, a);

	io->iov = &v; /* read before the call returns */
	io->niov = 1;
	q->c->exp->be->read(io);
}

/* Under the exclusive lock: read the edge blocks an unaligned write keeps. */
static void fileio_start_rmw(struct req *q)
{
	struct conn *c = q->c;
	const struct plan *p = &q->plan;
	uint32_t a = p->align_bytes;
	uint8_t *bounce = q->bounce.iov_base;

	req_set_state(q, REQ_RMW);
	conn_op_init(&q->op, c, fileio_rmw_done);
	stat_add(&c->w->stats.rmw_writes, 1);
	q->rmw_pending = 0;
	q->rmw_err = 0;
	if (p->rmw_head) {
		fileio_prep_edge(q, bounce, a, p->io_off);
		q->rmw_pending++;
	}
	/* A one-block span with both edges unaligned needs one read, not two. */
	if (p->rmw_tail && !(p->rmw_head && p->io_len == a)) {
		fileio_prep_edge(q, bounce + a, a, p->io_off + p->io_len - a);
		q->rmw_pending++;
	}
}

/*
 * BLOCK_STATUS: base:allocation from the file's holes. The lseek walk may
 * block on slow storage, so it runs on an offload thread; the extents land
 * in the back half of the bounce chunk and the reply is built in its front.
 */
#define EXTENTS_OFF REQ_BOUNCE_EXTENTS_OFF

static void fileio_extents_query(struct offload_job *j)
{
	struct req *q = container_of(j, struct req, bio.job);

	q->nextents = export_extents(q->c->exp, q->r.offset, q->r.len_bytes,
				     q->r.flags & NBD_CMD_FLAG_REQ_ONE,
				     (struct proto_extent *)((uint8_t *)q->bounce.iov_base + EXTENTS_OFF),
				     BLOCK_STATUS_MAX_EXTENTS);
}

/*
 * The reply: a BLOCK_STATUS chunk per context asked for, base:allocation's
 * extents (found off the loop) first, then each dirty bitmap's from its
 * bits, built in the front of the bounce chunk; DONE on the last.
 */
static void fileio_block_status_reply(struct req *q)
{
	struct conn *c = q->c;
	const struct export *e = c->exp;
	uint8_t *out = q->bounce.iov_base;
	struct proto_extent *ext = (struct proto_extent *)(void *)(out + EXTENTS_OFF);
	uint32_t rest = q->bs_contexts, k;
	size_t pos = 0, n, desc = c->sess.extended ? 16 : 8, hdr = proto_block_status_len(&c->sess, 0);
	bool one = q->r.flags & NBD_CMD_FLAG_REQ_ONE;
	int len;

	if (rest & 1) {
		rest &= ~1u;
		len = proto_encode_block_status_ctx(&c->sess, out, EXTENTS_OFF, &q->r,
						    PROTO_META_ID_BASE_ALLOCATION, !rest, ext,
						    q->nextents);
		assert(len > 0);
		pos = (size_t)len;
	}
	for (k = 0; k < e->nctx && rest; k++) {
		unsigned left;
		size_t max;

		if (!(rest & (2u << k)))
			continue;
		rest &= ~(2u << k);
		/* The room left, shared by this context and those after it. */
		left = 1 + (unsigned)__builtin_popcount(rest);
		max = (EXTENTS_OFF - pos) / left;
		max = max > hdr + desc ? (max - hdr) / desc : 1;
		if (max > BLOCK_STATUS_MAX_EXTENTS)
			max = BLOCK_STATUS_MAX_EXTENTS;
		n = e->be->dirty_extents ?
		    e->be->dirty_extents(e, k, q->r.offset, q->r.len_bytes, one, ext, max) :
		    bitmaps_extents(e->bm, e->ctx_slot[k], q->r.offset, q->r.len_bytes, one, ext,
				    max);
		if (!n) {
			/* A bitmap removed under this connection: nothing is known dirty. */
			ext[0].len_bytes = e->size_bytes - q->r.offset < q->r.len_bytes ?
					   e->size_bytes - q->r.offset : q->r.len_bytes;
			ext[0].flags = 0;
			n = 1;
		}
		len = proto_encode_block_status_ctx(&c->sess, out + pos, EXTENTS_OFF - pos, &q->r,
						    PROTO_META_ID_EXTRA + k, !rest, ext, n);
		assert(len > 0);
		pos += (size_t)len;
	}
	q->reply_raw_len = (uint32_t)pos;
	req_finish(q, NBD_SUCCESS);
}

static void fileio_extents_done(struct conn_op *o, int res)
{
	struct req *q = container_of(o, struct req, op);

	(void)res;
	if (q->c->state == CONN_CLOSING) {
		req_finish(q, NBD_EIO);
		return;
	}
	fileio_block_status_reply(q);
}

static void fileio_block_status(struct req *q)
{
	_Static_assert(BLOCK_STATUS_MAX_EXTENTS * sizeof(struct proto_extent) <= EXTENTS_OFF,
		       "the extents fit the back half of the bounce chunk");
	req_set_state(q, REQ_EXTENTS);
	/* Without base:allocation, no file query: the bits are in memory. */
	if (!(q->bs_contexts & 1)) {
		q->nextents = 0;
		fileio_block_status_reply(q);
		return;
	}
	conn_op_init(&q->op, q->c, fileio_extents_done);
	conn_expect(&q->op);
	q->bio.job = (struct offload_job){ .fn = fileio_extents_query, .w = q->c->w, .op = &q->op.op };
	offload_queue(&q->bio.job);
}

/*
 * A READ where holes may be (plan.holes): its extents first, off the loop,
 * into the bounce chunk; then the data is read unless all of it is a hole,
 * and the reply answers the holes as OFFSET_HOLE chunks (reply.c).
 */
static void fileio_holes_query(struct offload_job *j)
{
	struct req *q = container_of(j, struct req, bio.job);

	q->nextents = export_extents(q->c->exp, q->r.offset, q->r.len_bytes, false,
				     (struct proto_extent *)((uint8_t *)q->bounce.iov_base + EXTENTS_OFF),
				     FILEIO_HOLES_MAX_EXTENTS);
}

static void fileio_holes_done(struct conn_op *o, int res)
{
	struct req *q = container_of(o, struct req, op);
	const struct proto_extent *ext =
		(const struct proto_extent *)((uint8_t *)q->bounce.iov_base + EXTENTS_OFF);
	uint64_t covered = 0;
	size_t i;

	(void)res;
	if (q->c->state == CONN_CLOSING) {
		req_finish(q, NBD_EIO);
		return;
	}
	for (i = 0; i < q->nextents && (ext[i].flags & NBD_STATE_HOLE); i++)
		covered += ext[i].len_bytes;
	/* All of it a hole: nothing to read. */
	if (covered >= q->r.len_bytes) {
		req_finish(q, NBD_SUCCESS);
		return;
	}
	fileio_step(q, REQ_IO);
}

void fileio_start(struct req *q)
{
	const struct export *e = q->c->exp;

	switch (q->r.type) {
	case NBD_CMD_TRIM:
		q->falloc_mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
		/* On a device: no whole block inside it, nothing to discard (advisory). */
		if (!q->plan.io_len)
			fileio_zeroed(q);
		else
			fileio_step(q, REQ_FALLOC);
		break;
	case NBD_CMD_WRITE_ZEROES:
		if (q->plan.zero_write) {
			/* Unaligned on a device: written as zeroes, edges kept; not fast. */
			if (q->r.flags & NBD_CMD_FLAG_FAST_ZERO)
				req_finish(q, NBD_ENOTSUP);
			else if (q->plan.rmw_head || q->plan.rmw_tail)
				fileio_start_rmw(q);
			else
				fileio_step(q, REQ_IO);
			break;
		}
		/* A device with no zeroing command would write zeroes: not fast. */
		if (!e->zeroes_fast && (q->r.flags & NBD_CMD_FLAG_FAST_ZERO)) {
			req_finish(q, NBD_ENOTSUP);
			break;
		}
		/* Holes read as zeroes and are cheapest, unless NO_HOLE forbids them. */
		if (!(q->r.flags & NBD_CMD_FLAG_NO_HOLE)) {
			q->falloc_mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
		} else {
			q->falloc_mode = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
		}
		fileio_step(q, REQ_FALLOC);
		break;
	case NBD_CMD_BLOCK_STATUS:
		fileio_block_status(q);
		break;
	default:
		if (q->plan.holes) {
			req_set_state(q, REQ_EXTENTS);
			conn_op_init(&q->op, q->c, fileio_holes_done);
			conn_expect(&q->op);
			q->nextents = 0;
			q->bio.job = (struct offload_job){ .fn = fileio_holes_query, .w = q->c->w,
						       .op = &q->op.op };
			offload_queue(&q->bio.job);
		} else if (q->r.type == NBD_CMD_WRITE && (q->r.flags & NBD_CMD_FLAG_FUA) &&
			   fileio_lost(q))
			req_finish(q, NBD_EIO);
		else if (q->plan.rmw_head || q->plan.rmw_tail)
			fileio_start_rmw(q);
		else
			fileio_step(q, REQ_IO);
	}
}

void fileio_flush(struct req *q)
{
	if (fileio_lost(q))
		req_finish(q, NBD_EIO);
	else
		fileio_step(q, REQ_FLUSH);
}
