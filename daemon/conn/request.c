// SPDX-License-Identifier: BSD-3-Clause
/*
 * A request's state machine (the life cycle is drawn in conn_int.h): slots,
 * buffers, the range lock, the end of its work, and recycling.
 *
 * Every state change goes through req_set_state(), which asserts that the
 * transition is one of the life cycle's. Whether a request holds its lock,
 * is in use, or is cached is derived from its state and plan, never stored
 * beside them.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "conn_int.h"

#define S(x) (1u << (x))
#define LOCKED_STATES \
	(S(REQ_LOCKED) | S(REQ_BITMAP) | S(REQ_RMW) | S(REQ_IO) | S(REQ_FALLOC) | S(REQ_ZERO_WRITE) | \
	 S(REQ_SYNC) | S(REQ_CACHED) | S(REQ_EXTENTS) | S(REQ_SEG_REPLY) | S(REQ_SEG_PAYLOAD))
/* Where a segment's work ends (a READ's segment that is all holes: at its extent query). */
#define SEG_END_STATES (S(REQ_IO) | S(REQ_SYNC) | S(REQ_CACHED) | S(REQ_EXTENTS))

/* For each state, the states a request may enter it from. */
static const uint32_t req_from[REQ_NSTATES] = {
	[REQ_FREE] = ~S(REQ_FREE),     /* done, or dropped with its connection */
	[REQ_NEW] = S(REQ_FREE) | S(REQ_THROTTLED),
	[REQ_BUFFERS] = S(REQ_NEW),
	[REQ_PAYLOAD] = S(REQ_NEW) | S(REQ_BUFFERS),
	[REQ_SKIP] = S(REQ_NEW) | S(REQ_BUFFERS) | LOCKED_STATES, /* and a segmented WRITE failed */
	[REQ_LOCK_WAIT] = S(REQ_NEW) | S(REQ_BUFFERS) | S(REQ_PAYLOAD),
	[REQ_LOCKED] = S(REQ_NEW) | S(REQ_BUFFERS) | S(REQ_PAYLOAD) | S(REQ_LOCK_WAIT) |
		       S(REQ_SEG_REPLY) | S(REQ_SEG_PAYLOAD) |
		       SEG_END_STATES | S(REQ_FALLOC) | S(REQ_ZERO_WRITE) | /* a WRITE_ZEROES' next segment */
		       S(REQ_BITMAP),
	[REQ_BITMAP] = S(REQ_LOCKED),
	[REQ_RMW] = S(REQ_LOCKED),
	[REQ_IO] = S(REQ_LOCKED) | S(REQ_RMW) | S(REQ_EXTENTS), /* a READ that found its holes */
	[REQ_FALLOC] = S(REQ_LOCKED) | S(REQ_FALLOC),
	[REQ_ZERO_WRITE] = S(REQ_FALLOC),
	[REQ_SYNC] = S(REQ_LOCKED) | S(REQ_FALLOC) | S(REQ_ZERO_WRITE) | S(REQ_IO),
	[REQ_CACHED] = S(REQ_LOCKED),
	[REQ_EXTENTS] = S(REQ_LOCKED),
	[REQ_SEG_REPLY] = SEG_END_STATES,
	[REQ_SEG_PAYLOAD] = SEG_END_STATES,
	[REQ_FLUSH] = S(REQ_NEW),
	[REQ_THROTTLED] = S(REQ_NEW),
	[REQ_REPLY] = S(REQ_NEW) | S(REQ_SKIP) | S(REQ_BUFFERS) | S(REQ_FLUSH) | LOCKED_STATES,
};

void req_set_state(struct req *q, enum req_state to)
{
	assert(to < REQ_NSTATES);
	assert(req_from[to] & S(q->state));
	q->state = to;
}

struct req *req_take(struct conn *c)
{
	struct req *q = c->free_reqs;

	assert(c->live_reqs < CONN_MAX_REQS);
	if (q) {
		c->free_reqs = q->next;
	} else {
		/* A slot never used since the area was mapped (or given back). */
		q = &c->area->reqs[c->reqs_fresh++];
		q->c = c;
	}
	q->next = NULL;
	req_set_state(q, REQ_NEW);
	q->nbd_error = NBD_SUCCESS;
	q->niov = 0;
	q->iov = q->io_iov = NULL;
	q->bounce.iov_base = NULL;
	q->reply_raw_len = 0;
	q->npieces = 0;
	q->start_ns = now_ns();
	c->live_reqs++;
	if (!c->exp->be->no_poll)
		c->w->reqs_live++;
	stat_bump(&c->exp->ctr->slot[c->w->id].in_flight, 1);
	return q;
}

int req_get_buffers(struct req *q)
{
	struct conn *c = q->c;
	struct pool *pool = &c->w->pool;
	uint32_t n = q->plan.chunks, need = n + q->plan.bounce;
	int got;

	if (c->uq && ublk_buffers(q))
		return 0;
	if (c->buf_wait.promised)
		pool_claim(pool, &c->buf_wait); /* its turn came: they are free */
	else if (!worker_pool_may_take(c->w, &c->acct, need))
		return -ENOBUFS;
	if (need > pool->nfree)
		return -ENOBUFS;
	if (n > REQ_INLINE_CHUNKS) {
		q->iov = malloc(2 * n * sizeof(*q->iov));
		if (!q->iov)
			return -ENOMEM;
		q->io_iov = q->iov + n;
	} else {
		q->iov = q->iov_inline;
		q->io_iov = q->io_iov_inline;
	}
	if (n) {
		/* A segmented request's buffers fit any of its segments. */
		got = pool_get(pool, q->seg ? (uint64_t)n * POOL_CHUNK_BYTES : q->plan.io_len, q->iov);
		if (got < 0)
			goto out_release;
		assert((uint32_t)got == n);
		q->niov = n;
		c->acct.held += n;
	}
	if (q->plan.bounce) {
		got = pool_get(pool, POOL_CHUNK_BYTES, &q->bounce);
		if (got < 0)
			goto out_release;
		c->acct.held++;
	}
	return 0;

out_release:
	req_release_buffers(q);
	return got;
}

void req_release_buffers(struct req *q)
{
	struct pool *pool = &q->c->w->pool;
	struct pool_account *a = &q->c->acct;

	if (q->niov && !q->ublk_buf) {
		pool_put(pool, q->niov, q->iov);
		a->held -= q->niov;
	}
	q->ublk_buf = false;
	if (q->bounce.iov_base) {
		pool_put(pool, 1, &q->bounce);
		a->held--;
	}
	if (q->iov && q->iov != q->iov_inline)
		free(q->iov); /* io_iov is its second half */
	q->iov = q->io_iov = NULL;
	q->bounce.iov_base = NULL;
	q->niov = 0;
}

/* The segment of q->whole from byte off of the file: to the next segment boundary. */
static void req_segment_at(struct req *q, uint64_t off)
{
	uint64_t end = q->whole.offset + q->whole.len_bytes;
	uint64_t boundary = (off / REQ_SEGMENT_BYTES + 1) * REQ_SEGMENT_BYTES;

	q->r.offset = off;
	q->r.len_bytes = (boundary < end ? boundary : end) - off;
}

void req_plan(struct req *q)
{
	const struct conn *c = q->c;
	const struct export *e = c->exp;
	struct plan_in in = {
		.type = q->r.type,
		.offset = q->r.offset,
		.len_bytes = q->r.len_bytes,
		.align_bytes = e->align_bytes,
		.direct_end = e->direct_end,
		.cache = conn_host.cache ? (enum cache_mode)e->cache_mode : CACHE_MODE_NONE,
		.blockdev = e->be == &backend_blockdev, /* not an overlay's base */
		.cache_page_bytes = CACHE_PAGE_BYTES,
		.granule_bytes = e->be->zero_granule,
	};
	struct plan kept = q->plan;

	/* Holes as OFFSET_HOLE: structured, not DF, whole (a segment's reply is plain data). */
	in.holes_ok = c->sess.structured && !(q->r.flags & NBD_CMD_FLAG_DF) && !q->seg &&
		      atomic_load_explicit(&((struct export *)e)->may_have_holes,
					   memory_order_relaxed);

	/* A write that would leave part of a base granule copies the granule up (overlay.c). */
	if (e->be->write_align && q->r.type == NBD_CMD_WRITE && q->r.len_bytes)
		in.align_bytes = e->be->write_align(e, q->r.offset, q->r.len_bytes, e->align_bytes);
	plan_request(&in, &q->plan);
	if (!q->seg)
		return;
	/* The lock and the buffers stay those of the whole request. */
	q->plan.chunks = kept.chunks;
	q->plan.bounce = kept.bounce;
	q->plan.locks = kept.locks;
	q->plan.exclusive = kept.exclusive;
	q->plan.lock_first = kept.lock_first;
	q->plan.lock_last = kept.lock_last;
}

void req_segment_start(struct req *q)
{
	struct plan last;
	uint64_t end = q->r.offset + q->r.len_bytes;

	q->whole = q->r;
	q->seg = true;
	q->seg_sent = false;
	/* The lock spans the first segment's start to the last one's end. */
	req_segment_at(q, end - 1 - (end - 1) % REQ_SEGMENT_BYTES);
	q->seg = false;
	req_plan(q);
	last = q->plan;
	req_segment_at(q, q->whole.offset);
	req_plan(q);
	q->plan.lock_last = last.lock_last;
	q->plan.chunks = pool_chunks_for(REQ_SEGMENT_SPAN_BYTES);
	q->plan.bounce = true;
	q->seg = true;
}

static void req_run_work(struct req *q)
{
	if (q->plan.cached)
		cached_start(q);
	else
		fileio_start(q);
}

/* The bits a write set are on disk (res 0), or could not be put there. */
static void req_bitmap_synced(struct conn_op *o, int res)
{
	struct req *q = container_of(o, struct req, op);

	req_set_state(q, REQ_LOCKED);
	if (q->c->state == CONN_CLOSING)
		req_finish(q, NBD_EIO);
	else if (res < 0)
		req_finish(q, proto_errno_to_nbd(-res)); /* not written: no bit is missing */
	else
		req_run_work(q);
}

void req_run_locked(struct req *q)
{
	struct conn *c = q->c;
	struct bitmaps *bm;

	/* A write to a file with dirty bitmaps: its bits on disk before its data. */
	if (q->plan.exclusive &&
	    (bm = atomic_load_explicit(&export_store(c->exp)->bm, memory_order_acquire))) {
		conn_op_init(&q->op, c, req_bitmap_synced);
		q->bm_wait = (struct bitmap_wait){ .w = c->w, .op = &q->op.op };
		req_set_state(q, REQ_BITMAP);
		if (bitmaps_mark(bm, q->r.offset, q->r.len_bytes, &q->bm_wait)) {
			stat_add(&c->w->stats.bitmap_waits, 1);
			conn_expect(&q->op);
			return;
		}
		req_set_state(q, REQ_LOCKED);
	}
	req_run_work(q);
}

static void req_lock_granted(struct conn_op *o, int res)
{
	struct req *q = container_of(o, struct req, op);
	struct conn *c = q->c;

	uint64_t waited = now_ns() - q->wait_start_ns;

	(void)res;
	stat_add(&c->w->stats.lock_wait_ns, waited);
	hist_observe(&c->w->stats.lock_wait, waited);
	req_set_state(q, REQ_LOCKED);
	if (c->state == CONN_CLOSING)
		req_finish(q, NBD_EIO);
	else
		req_run_locked(q);
}

/* Any thread: the request resumes on its own worker. */
static void req_on_grant(struct rl_lock *lock, void *arg)
{
	struct req *q = arg;

	(void)lock;
	worker_post(q->c->w, &q->op.op, 0);
}

void req_lock(struct req *q)
{
	struct conn *c = q->c;
	const struct plan *p = &q->plan;

	if (p->buffered)
		stat_add(&c->w->stats.buffered_ios, 1);
	stat_add(&c->w->stats.lock_acquired, 1);
	conn_op_init(&q->op, c, req_lock_granted);
	if (rl_acquire(c->exp->locks, &q->lock, p->lock_first, p->lock_last, p->exclusive,
		       req_on_grant, q)) {
		req_set_state(q, REQ_LOCKED);
		req_run_locked(q);
		return;
	}
	/* Parked: the grant is posted to this worker (counted from now). */
	q->wait_start_ns = now_ns();
	stat_add(&c->w->stats.lock_waited, 1);
	req_set_state(q, REQ_LOCK_WAIT);
	conn_expect(&q->op);
}

/* The next segment (the current one is done): planned, its lock and buffers kept. */
static void req_segment_next(struct req *q)
{
	req_segment_at(q, q->r.offset + q->r.len_bytes);
	q->io_done_bytes = 0;
	req_plan(q);
}

void req_segment_sent(struct req *q)
{
	struct conn *c = q->c;

	req_segment_next(q);
	req_set_state(q, REQ_LOCKED);
	if (c->state == CONN_CLOSING)
		req_finish(q, NBD_EIO);
	else
		req_run_locked(q);
}

/*
 * A segment of a segmented request is done (or failed): true if that was
 * handled here; false if the request ends now as any other does.
 */
static bool req_segment_done(struct req *q, uint32_t nbd_error)
{
	struct conn *c = q->c;
	struct cache *cache = conn_host.cache;
	uint64_t rest = q->whole.offset + q->whole.len_bytes - (q->r.offset + q->r.len_bytes);

	if (c->state == CONN_CLOSING)
		return false;
	if (nbd_error == NBD_SUCCESS) {
		if (req_seg_last(q))
			return false;
		if (cache && q->plan.exclusive && c->exp->be->writes_cached)
			cache_invalidate(cache, c->exp->backing->cache_id, q->r.offset,
					 q->r.len_bytes);
		if (q->r.type == NBD_CMD_READ) {
			q->nbd_error = NBD_SUCCESS;
			reply_queue(q); /* this segment's data; the next segment once it is sent */
		} else if (q->r.type == NBD_CMD_WRITE_ZEROES) {
			/* No payload: the next segment at once, its zeroes where a payload goes. */
			req_segment_next(q);
			if (q->plan.zero_write)
				iov_zero(q->iov, q->niov, q->plan.data_off, q->r.len_bytes);
			req_set_state(q, REQ_LOCKED);
			req_run_locked(q);
		} else {
			req_segment_next(q);
			req_set_state(q, REQ_SEG_PAYLOAD);
			rx_segment_payload(q);
		}
		return true;
	}
	/* Failed part-way. A reply whose data is part-sent cannot carry an error: cut. */
	if (q->r.type == NBD_CMD_READ && q->seg_sent &&
	    (!c->sess.structured || (q->whole.flags & NBD_CMD_FLAG_DF))) {
		log_warn("conn %" PRIu64 ": READ offset %" PRIu64 " length %" PRIu64 " failed after "
			 "part of its reply was sent: closing", c->id, q->whole.offset,
			 q->whole.len_bytes);
		rl_release(c->exp->locks, &q->lock);
		req_set_state(q, REQ_SKIP);
		conn_close(c, NULL);
		req_recycle(q);
		return true;
	}
	if (q->r.type == NBD_CMD_WRITE && rest) {
		/* The rest of its payload is dropped before the error is sent. */
		rl_release(c->exp->locks, &q->lock);
		q->nbd_error = nbd_error;
		req_set_state(q, REQ_SKIP);
		rx_skip_rest(q, rest);
		return true;
	}
	return false;
}

void req_finish(struct req *q, uint32_t nbd_error)
{
	struct conn *c = q->c;
	struct cache *cache = conn_host.cache;

	if (q->seg && req_segment_done(q, nbd_error))
		return;
	if (req_locked(q)) {
		/* Before unlocking, so that no read can fill a page from before it afterwards. */
		/* An overlay's writes leave its base, the cached file, as it was. */
		if (cache && q->plan.exclusive && c->exp->be->writes_cached)
			cache_invalidate(cache, c->exp->backing->cache_id, q->r.offset,
					 q->r.len_bytes);
		rl_release(c->exp->locks, &q->lock);
	}
	if (c->state == CONN_CLOSING) {
		req_recycle(q);
		return;
	}
	q->nbd_error = nbd_error;
	reply_queue(q);
}

void req_recycle(struct req *q)
{
	struct conn *c = q->c;

	/* Dropped with its connection between two segments: the lock goes too. */
	if (q->state == REQ_SEG_REPLY || q->state == REQ_SEG_PAYLOAD)
		rl_release(c->exp->locks, &q->lock);
	req_release_buffers(q);
	req_set_state(q, REQ_FREE);
	q->seg = false;
	q->next = c->free_reqs;
	c->free_reqs = q;
	c->live_reqs--;
	if (!c->exp->be->no_poll)
		c->w->reqs_live--;
	stat_bump(&c->exp->ctr->slot[c->w->id].in_flight, (uint64_t)-1);
	if (c->state == CONN_CLOSING)
		return;
	conn_close_if_idle(c);
	rx_slot_freed(c);
}
