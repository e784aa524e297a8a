/*
 * The transmission phase: requests in, file I/O out.
 *
 * One receive is in flight per connection at a time (a header, a WRITE
 * payload straight into the request's pool chunks, or a payload being
 * discarded), so requests are taken in wire order; once taken, each runs on
 * its own and replies in completion order (reply.c). Receiving pauses while
 * every request slot is busy or the pool has no buffers, which is how a
 * fast client is slowed down instead of failed.
 *
 * A request's life, one function per step:
 *   header -> validate -> plan -> buffers -> [payload] -> range lock
 *   -> [edge reads] -> file I/O -> unlock -> reply -> free
 *
 * The plan (req_plan) turns any offset and length into O_DIRECT I/O on the
 * aligned span around it. Reads move the whole span into the request's
 * chunks and the reply sends the client's slice of it, no copy. Unaligned
 * writes receive the payload at its place in the span, read the one or two
 * edge blocks into a bounce chunk, copy the neighbours' bytes in, and write
 * the span, all under one exclusive lock over the span, so a concurrent
 * writer of the same blocks cannot lose bytes. A request touching the
 * partial last block of a file (size not a multiple of the alignment) uses
 * the buffered descriptor on exactly its bytes instead.
 *
 * Locks: READ shared over its bytes; WRITE exclusive over its span (its
 * bytes when aligned). A writer's lock always covers every block it
 * rewrites, and a reader's lock covers the bytes it returns, so the bytes a
 * read returns are all from before or all from after any write. A lock is
 * released once the file I/O is done, before the reply is sent.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "daemon.h"

#define SKIP_MAX_BYTES (UINT64_C(1) << 32)  /* a larger refused payload is a disconnect */
#define BLOCK_STATUS_MAX_EXTENTS 1024

/* What an OP_REQ_FILE completion ends. */
enum req_step {
	STEP_DATA,        /* read, write or flush of the request's data */
	STEP_FALLOC,      /* TRIM / WRITE_ZEROES fallocate */
	STEP_ZERO_WRITE,  /* WRITE_ZEROES written as zeroes (no fallocate support) */
	STEP_SYNC,        /* fdatasync after a TRIM / WRITE_ZEROES with FUA */
};

static void conn_rx_next(struct conn *c);

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void conn_maybe_drained(struct conn *c)
{
	if (c->live_reqs)
		return;
	if (c->state == CONN_DRAINING)
		conn_close(c, "client disconnected (NBD_CMD_DISC)");
	else if (c->close_when_idle)
		conn_close(c, "server shutting down");
}

/* Returns a request's buffers to the pool. */
void req_release_buffers(struct req *q, struct pool *pool)
{
	if (q->niov)
		pool_put(pool, q->niov, q->iov);
	if (q->bounce.iov_base)
		pool_put(pool, 1, &q->bounce);
	if (q->iov && q->iov != q->iov_inline)
		free(q->iov); /* io_iov is its second half */
	q->iov = q->io_iov = NULL;
	q->bounce.iov_base = NULL;
	q->niov = 0;
}

void req_free(struct req *q)
{
	struct conn *c = q->c;

	assert(q->in_use && !q->locked);
	req_release_buffers(q, &c->w->pool);
	q->in_use = false;
	q->next = c->free_reqs;
	c->free_reqs = q;
	c->live_reqs--;
	if (c->state != CONN_CLOSING) {
		conn_maybe_drained(c);
		if (c->rx_parked && !c->in_pool_wait) {
			c->rx_parked = false;
			conn_rx_next(c);
		}
	}
	worker_pool_kick(c->w);
}

/* Reads through the page cache: per the export's mode (CACHE always, when cached). */
static bool req_wants_cache(const struct req *q)
{
	const struct export *e = q->c->exp;

	if (e->cache_mode == CACHE_MODE_NONE || !q->c->w->srv->cache)
		return false;
	if (q->r.type == NBD_CMD_CACHE)
		return true;
	if (q->r.type != NBD_CMD_READ)
		return false;
	return e->cache_mode == CACHE_MODE_ALWAYS || q->r.len_bytes < CACHE_AUTO_MAX_BYTES ||
	       q->r.offset % e->align_bytes || q->r.len_bytes % e->align_bytes;
}

/* Decides which bytes of the file move and where the client's data sits. */
static void req_plan(struct req *q)
{
	const struct export *e = q->c->exp;
	uint64_t off = q->r.offset, end = off + q->r.len_bytes, a = e->align_bytes;
	uint64_t a_first = off / a * a, a_end = (end + a - 1) / a * a;

	q->buffered = q->rmw_head = q->rmw_tail = false;
	q->io_off = q->io_len = 0;
	q->data_off = 0;
	q->want_bounce = q->r.type == NBD_CMD_BLOCK_STATUS; /* the reply is built there */
	q->chunks_needed = q->want_bounce;
	q->cached = false;
	if (q->r.len_bytes && req_wants_cache(q)) {
		/* Whole cache pages around the request; the reply slices them. */
		uint64_t p = CACHE_PAGE_BYTES;

		q->cached = true;
		q->io_off = off / p * p;
		q->io_len = (end + p - 1) / p * p - q->io_off;
		q->data_off = (uint32_t)(off - q->io_off);
		if (q->r.type == NBD_CMD_READ)
			q->chunks_needed = pool_chunks_for(q->io_len);
		return;
	}
	if ((q->r.type != NBD_CMD_READ && q->r.type != NBD_CMD_WRITE) || q->r.len_bytes == 0)
		return;
	if (a_end > e->direct_end) {
		q->buffered = true;
		q->io_off = off;
		q->io_len = q->r.len_bytes;
		q->data_off = 0;
	} else {
		q->io_off = a_first;
		q->io_len = a_end - a_first;
		q->data_off = (uint32_t)(off - a_first);
		if (q->r.type == NBD_CMD_WRITE) {
			q->rmw_head = off != a_first;
			q->rmw_tail = end != a_end;
		}
	}
	q->want_bounce = q->rmw_head || q->rmw_tail;
	q->chunks_needed = pool_chunks_for(q->io_len) + q->want_bounce;
}

/* Takes pool chunks for the plan; false if the request must wait for them. */
static bool req_get_buffers(struct req *q)
{
	struct pool *pool = &q->c->w->pool;
	uint32_t n = pool_chunks_for(q->io_len);

	if (q->chunks_needed > pool->nfree)
		return false;
	if (n > REQ_INLINE_CHUNKS) {
		q->iov = malloc(2 * n * sizeof(*q->iov));
		if (!q->iov)
			return false;
		q->io_iov = q->iov + n;
	} else {
		q->iov = q->iov_inline;
		q->io_iov = q->io_iov_inline;
	}
	q->niov = (uint32_t)pool_get(pool, q->io_len, q->iov);
	if (q->want_bounce)
		pool_get(pool, POOL_CHUNK_BYTES, &q->bounce);
	return true;
}

static void req_unlock(struct req *q)
{
	if (q->locked) {
		q->locked = false;
		rl_release(q->c->exp->locks, &q->lock);
	}
}

/*
 * A request ends: a write-type request tells the cache (before unlocking,
 * so no read can fill a page from before it afterwards); unlock; reply
 * with nbd_error, or drop the request if the connection is closing.
 */
void req_finish(struct req *q, uint32_t nbd_error)
{
	struct cache *cache = q->c->w->srv->cache;

	if (cache && q->locked && (q->r.type == NBD_CMD_WRITE || q->r.type == NBD_CMD_TRIM ||
				   q->r.type == NBD_CMD_WRITE_ZEROES))
		cache_invalidate(cache, q->c->exp->file_locks->cache_id, q->r.offset, q->r.len_bytes);
	req_unlock(q);
	if (q->c->state == CONN_CLOSING) {
		req_free(q);
		return;
	}
	q->nbd_error = nbd_error;
	req_reply(q);
}

static void req_prep_file(struct req *q)
{
	struct conn *c = q->c;
	const struct export *e = c->exp;
	struct io_uring_sqe *sqe = ring_get_sqe(c, q, OP_REQ_FILE);
	int fd = q->buffered ? e->fd_buffered : e->fd;
	unsigned n;

	switch (q->step) {
	case STEP_FALLOC:
		io_uring_prep_fallocate(sqe, e->fd, q->falloc_mode, (off_t)q->r.offset,
					(off_t)q->r.len_bytes);
		return;
	case STEP_ZERO_WRITE:
		n = q->r.len_bytes - q->io_done_bytes < WORKER_ZEROES_BYTES
			    ? (unsigned)(q->r.len_bytes - q->io_done_bytes)
			    : WORKER_ZEROES_BYTES;
		io_uring_prep_write(sqe, e->fd_buffered, c->w->zeroes, n,
				    q->r.offset + q->io_done_bytes);
		return;
	case STEP_SYNC:
		io_uring_prep_fsync(sqe, e->fd, IORING_FSYNC_DATASYNC);
		return;
	}
	if (q->r.type == NBD_CMD_FLUSH) {
		io_uring_prep_fsync(sqe, e->fd, IORING_FSYNC_DATASYNC);
		return;
	}
	n = iov_slice(q->iov, q->niov, q->io_done_bytes, q->io_len - q->io_done_bytes, q->io_iov);
	if (q->r.type == NBD_CMD_READ)
		io_uring_prep_readv(sqe, fd, q->io_iov, n, q->io_off + q->io_done_bytes);
	else
		io_uring_prep_writev2(sqe, fd, q->io_iov, n, q->io_off + q->io_done_bytes,
				      (q->r.flags & NBD_CMD_FLAG_FUA) ? RWF_DSYNC : 0);
}

static void req_start_step(struct req *q, enum req_step step)
{
	q->step = step;
	q->io_done_bytes = 0;
	req_prep_file(q);
}

static void req_start_file(struct req *q)
{
	req_start_step(q, STEP_DATA);
}

/* TRIM and WRITE_ZEROES are done: with FUA, make them durable first. */
static void req_zeroed(struct req *q)
{
	if (q->r.flags & NBD_CMD_FLAG_FUA)
		req_start_step(q, STEP_SYNC);
	else
		req_finish(q, NBD_SUCCESS);
}

static void req_falloc_done(struct req *q, int res)
{
	bool fast = q->r.flags & NBD_CMD_FLAG_FAST_ZERO;

	if (res >= 0) {
		req_zeroed(q);
		return;
	}
	if (res != -EOPNOTSUPP && res != -ENOTTY) {
		req_finish(q, proto_errno_to_nbd(-res));
		return;
	}
	/* TRIM is advisory: where holes cannot be punched, it is done as it is. */
	if (q->r.type == NBD_CMD_TRIM) {
		req_zeroed(q);
		return;
	}
	if (q->falloc_mode & FALLOC_FL_PUNCH_HOLE) {
		q->falloc_mode = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
		req_start_step(q, STEP_FALLOC);
		return;
	}
	/* No cheap way to zero: FAST_ZERO asks to fail fast rather than write. */
	if (fast) {
		req_finish(q, NBD_ENOTSUP);
		return;
	}
	req_start_step(q, STEP_ZERO_WRITE);
}

void req_file_done(struct req *q, int res)
{
	struct conn *c = q->c;

	if (c->state == CONN_CLOSING) {
		req_finish(q, NBD_EIO);
		return;
	}
	switch (q->step) {
	case STEP_FALLOC:
		req_falloc_done(q, res);
		return;
	case STEP_SYNC:
		req_finish(q, res < 0 ? proto_errno_to_nbd(-res) : NBD_SUCCESS);
		return;
	case STEP_ZERO_WRITE:
		if (res <= 0) {
			req_finish(q, res < 0 ? proto_errno_to_nbd(-res) : NBD_EIO);
			return;
		}
		q->io_done_bytes += (uint64_t)res;
		if (q->io_done_bytes < q->r.len_bytes)
			req_prep_file(q);
		else
			req_zeroed(q);
		return;
	}
	if (res < 0) {
		log_warn("conn %" PRIu64 ": %s offset %" PRIu64 " length %" PRIu64 ": %s", c->id,
			 proto_cmd_name(q->r.type), q->r.offset, q->r.len_bytes, strerror(-res));
		req_finish(q, proto_errno_to_nbd(-res));
		return;
	}
	if (q->r.type != NBD_CMD_FLUSH) {
		if (res == 0) {
			/* The file shrank under us: nothing more will come. */
			log_warn("conn %" PRIu64 ": %s offset %" PRIu64 ": unexpected end of file",
				 c->id, proto_cmd_name(q->r.type), q->r.offset);
			req_finish(q, NBD_EIO);
			return;
		}
		q->io_done_bytes += (uint64_t)res;
		if (q->io_done_bytes < q->io_len) {
			req_prep_file(q); /* short transfer: the rest */
			return;
		}
	}
	req_finish(q, NBD_SUCCESS);
}

/* Under the exclusive lock: read the edge blocks an unaligned write keeps. */
static void req_start_rmw(struct req *q)
{
	struct conn *c = q->c;
	uint32_t a = c->exp->align_bytes;
	uint8_t *bounce = q->bounce.iov_base;
	struct io_uring_sqe *sqe;

	c->w->stats.rmw_writes++;
	q->rmw_pending = 0;
	q->rmw_err = 0;
	if (q->rmw_head) {
		sqe = ring_get_sqe(c, q, OP_REQ_RMW);
		io_uring_prep_read(sqe, c->exp->fd, bounce, a, q->io_off);
		q->rmw_pending++;
	}
	/* A one-block span with both edges unaligned needs one read, not two. */
	if (q->rmw_tail && !(q->rmw_head && q->io_len == a)) {
		sqe = ring_get_sqe(c, q, OP_REQ_RMW);
		io_uring_prep_read(sqe, c->exp->fd, bounce + a, a, q->io_off + q->io_len - a);
		q->rmw_pending++;
	}
}

void req_rmw_done(struct req *q, int res)
{
	uint32_t a = q->c->exp->align_bytes;
	const uint8_t *bounce = q->bounce.iov_base;

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
	if (q->rmw_head)
		iov_copy_in(q->iov, q->niov, 0, bounce, q->data_off);
	if (q->rmw_tail) {
		uint64_t tail_block = q->io_len - a;
		uint32_t keep_from = (uint32_t)(q->data_off + q->r.len_bytes - tail_block);
		const uint8_t *src = (q->rmw_head && q->io_len == a) ? bounce : bounce + a;

		iov_copy_in(q->iov, q->niov, tail_block + keep_from, src + keep_from,
			    a - keep_from);
	}
	req_start_file(q);
}

/* base:allocation from the file's holes, built straight into the bounce chunk. */
static void req_block_status(struct req *q)
{
	struct proto_extent ext[BLOCK_STATUS_MAX_EXTENTS];
	size_t n = export_extents(q->c->exp, q->r.offset, q->r.len_bytes,
				  q->r.flags & NBD_CMD_FLAG_REQ_ONE, ext, BLOCK_STATUS_MAX_EXTENTS);
	int len = proto_encode_block_status(&q->c->sess, q->bounce.iov_base, POOL_CHUNK_BYTES,
					    &q->r, ext, n);

	assert(len > 0);
	q->reply_raw_len = (uint32_t)len;
	req_finish(q, NBD_SUCCESS);
}

/* The lock is held: do the request's work. */
static void req_locked(struct req *q)
{
	const struct export *e = q->c->exp;

	if (q->cached) {
		req_cached_start(q);
		return;
	}
	switch (q->r.type) {
	case NBD_CMD_TRIM:
		q->falloc_mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
		req_start_step(q, STEP_FALLOC);
		break;
	case NBD_CMD_WRITE_ZEROES:
		/* Holes read as zeroes and are cheapest, unless NO_HOLE forbids them. */
		if (!(q->r.flags & NBD_CMD_FLAG_NO_HOLE)) {
			q->falloc_mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
		} else if (e->is_blockdev && (q->r.flags & NBD_CMD_FLAG_FAST_ZERO)) {
			/* A device's zero-out may fall back to writing: not fast. */
			req_finish(q, NBD_ENOTSUP);
			break;
		} else {
			q->falloc_mode = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
		}
		req_start_step(q, STEP_FALLOC);
		break;
	case NBD_CMD_BLOCK_STATUS:
		req_block_status(q);
		break;
	default:
		if (q->rmw_head || q->rmw_tail)
			req_start_rmw(q);
		else
			req_start_file(q);
	}
}

static void req_on_grant(struct rl_lock *lock, void *arg)
{
	(void)lock;
	worker_post_grant(arg); /* any thread: the request resumes on its own worker */
}

void req_lock_granted(struct req *q)
{
	struct conn *c = q->c;

	q->locked = true;
	c->w->stats.lock_wait_ns += now_ns() - q->lock_wait_start_ns;
	if (c->state == CONN_CLOSING) {
		req_finish(q, NBD_EIO);
		return;
	}
	req_locked(q);
}

static void req_lock(struct req *q)
{
	struct conn *c = q->c;
	bool exclusive = q->r.type == NBD_CMD_WRITE || q->r.type == NBD_CMD_TRIM ||
			 q->r.type == NBD_CMD_WRITE_ZEROES;
	uint64_t first = q->r.offset, last = q->r.offset + q->r.len_bytes - 1;

	if (q->r.type == NBD_CMD_WRITE && !q->buffered) {
		first = q->io_off;
		last = q->io_off + q->io_len - 1;
	}
	if (q->buffered)
		c->w->stats.buffered_ios++;
	c->w->stats.lock_acquired++;
	q->lock_wait_start_ns = now_ns();
	if (rl_acquire(c->exp->locks, &q->lock, first, last, exclusive, req_on_grant, q)) {
		q->locked = true;
		req_locked(q);
		return;
	}
	/* Parked: counted as pending so the connection outlives the wait. */
	c->w->stats.lock_waited++;
	c->sqes++;
}

/* Receives the rest of a WRITE payload into its place in the span. */
static void req_prep_rx_data(struct req *q)
{
	struct conn *c = q->c;
	struct io_uring_sqe *sqe = ring_get_sqe(c, q, OP_REQ_RX_DATA);

	/* The msghdr lives in the connection: one receive at a time. */
	memset(&c->rx_msg, 0, sizeof(c->rx_msg));
	c->rx_msg.msg_iov = q->io_iov;
	c->rx_msg.msg_iovlen = iov_slice(q->iov, q->niov, q->data_off + q->io_done_bytes,
					 q->r.len_bytes - q->io_done_bytes, q->io_iov);
	io_uring_prep_recvmsg(sqe, c->fd, &c->rx_msg, MSG_WAITALL);
}

void req_rx_data_done(struct req *q, int res)
{
	struct conn *c = q->c;

	if (c->state == CONN_CLOSING) {
		req_free(q);
		return;
	}
	if (res <= 0) {
		req_free(q);
		conn_close(c, res == 0 ? "client closed during a WRITE payload" : strerror(-res));
		return;
	}
	q->io_done_bytes += (uint64_t)res;
	if (q->io_done_bytes < q->r.len_bytes) {
		req_prep_rx_data(q);
		return;
	}
	c->rx_busy = false;
	req_lock(q);
	conn_rx_next(c);
}

/*
 * Buffers are in hand. A READ goes to its lock; a WRITE takes what of its
 * payload is already buffered and, if that is not all of it, receives the
 * rest straight into its pages. Returns false if receiving must wait.
 */
static bool req_run(struct req *q)
{
	struct conn *c = q->c;
	size_t n;

	if (q->r.type != NBD_CMD_WRITE) {
		req_lock(q);
		return true;
	}
	n = c->rx_end - c->rx_start;
	if (n > q->r.len_bytes)
		n = (size_t)q->r.len_bytes;
	iov_copy_in(q->iov, q->niov, q->data_off, c->rxbuf + c->rx_start, n);
	c->rx_start += n;
	if (n == q->r.len_bytes) {
		req_lock(q);
		return true;
	}
	/* The buffer is empty now: the rest bypasses it. */
	c->rx_start = c->rx_end = 0;
	c->rx_busy = true;
	q->io_done_bytes = n;
	req_prep_rx_data(q);
	return false;
}

void conn_pool_ready(struct conn *c)
{
	struct req *q = c->rx_req;

	assert(q && c->rx_parked);
	if (!req_get_buffers(q)) {
		worker_pool_wait(c->w, c);
		return;
	}
	c->rx_parked = false;
	c->rx_req = NULL;
	if (req_run(q))
		conn_rx_next(c);
}

static void conn_prep_skip(struct conn *c)
{
	struct io_uring_sqe *sqe = ring_get_sqe(c, c, OP_CONN_RX_SKIP);
	size_t n = c->skip_left < CONN_RXBUF_BYTES ? (size_t)c->skip_left : CONN_RXBUF_BYTES;

	/* The receive buffer is empty: use it as scratch. */
	io_uring_prep_recv(sqe, c->fd, c->rxbuf, n, 0);
}

void conn_rx_skip_done(struct conn *c, int res)
{
	struct req *q = c->rx_req;

	if (c->state == CONN_CLOSING) {
		c->rx_req = NULL;
		req_free(q);
		return;
	}
	if (res <= 0) {
		c->rx_req = NULL;
		req_free(q);
		conn_close(c, res == 0 ? "client closed during a payload" : strerror(-res));
		return;
	}
	c->skip_left -= (uint64_t)res;
	if (c->skip_left) {
		conn_prep_skip(c);
		return;
	}
	c->rx_req = NULL;
	c->rx_busy = false;
	req_reply(q);
	conn_rx_next(c);
}

/*
 * A refused request: drop its payload, if any, then reply with the error.
 * Returns false if the rest of the payload must be received first.
 */
static bool req_refuse(struct req *q, uint32_t nbd_error)
{
	struct conn *c = q->c;
	uint64_t payload = proto_request_payload_len(&c->sess, &q->r), n;

	q->nbd_error = nbd_error;
	log_debug("conn %" PRIu64 ": %s flags 0x%x offset %" PRIu64 " length %" PRIu64
		  ": refused with error %u", c->id, proto_cmd_name(q->r.type), q->r.flags,
		  q->r.offset, q->r.len_bytes, nbd_error);
	n = c->rx_end - c->rx_start;
	if (n > payload)
		n = payload;
	c->rx_start += n;
	if (n == payload) {
		req_reply(q);
		return true;
	}
	if (payload > SKIP_MAX_BYTES) {
		req_free(q);
		conn_close(c, "refused request with a payload over 4 GiB");
		return false;
	}
	c->rx_start = c->rx_end = 0;
	c->skip_left = payload - n;
	c->rx_req = q;
	c->rx_busy = true;
	conn_prep_skip(c);
	return false;
}

/*
 * Takes the request whose header starts the buffer. Returns false when
 * receiving must stop for now (a payload being received or skipped, buffers
 * awaited, DISC, or the connection closed).
 */
static bool conn_rx_request(struct conn *c)
{
	struct req *q;
	uint32_t err;

	q = c->free_reqs;
	assert(q);
	c->free_reqs = q->next;
	q->next = NULL;
	q->in_use = true;
	q->locked = false;
	q->nbd_error = NBD_SUCCESS;
	q->niov = 0;
	q->iov = q->io_iov = NULL;
	q->bounce.iov_base = NULL;
	q->reply_raw_len = 0;
	q->step = STEP_DATA;
	c->live_reqs++;
	if (proto_decode_request(&c->sess, c->rxbuf + c->rx_start, &q->r) < 0) {
		req_free(q);
		conn_close(c, "bad request magic");
		return false;
	}
	c->rx_start += c->rx_hdr_len;
	log_debug("conn %" PRIu64 ": %s flags 0x%x offset %" PRIu64 " length %" PRIu64,
		  c->id, proto_cmd_name(q->r.type), q->r.flags, q->r.offset, q->r.len_bytes);

	if (q->r.type == NBD_CMD_DISC) {
		/* No reply; finish what is in flight, then close. */
		req_free(q);
		c->state = CONN_DRAINING;
		conn_maybe_drained(c);
		return false;
	}
	if (c->w->srv->shutting_down)
		return req_refuse(q, NBD_ESHUTDOWN);
	err = proto_validate_request(&c->sess, &q->r, EXPORT_MAX_REQUEST_BYTES);
	if (err != NBD_SUCCESS)
		return req_refuse(q, err);
	req_plan(q);
	if (q->r.type == NBD_CMD_FLUSH) {
		req_start_file(q);
		return true;
	}
	/* Nothing to move: answered at once (CACHE on an export without a cache). */
	if ((q->r.type == NBD_CMD_CACHE && !q->cached) || q->r.len_bytes == 0) {
		req_reply(q);
		return true;
	}
	if (!req_get_buffers(q)) {
		c->rx_req = q;
		c->rx_parked = true;
		worker_pool_wait(c->w, c);
		return false;
	}
	return req_run(q);
}

/* Dispatches every whole request in the buffer; then receives more. */
static void conn_rx_next(struct conn *c)
{
	struct io_uring_sqe *sqe;

	if (c->rx_parsing)
		return; /* the loop below carries on */
	c->rx_parsing = true;
	while (c->state == CONN_TRANSMIT && !c->rx_busy && !c->rx_parked &&
	       c->rx_end - c->rx_start >= c->rx_hdr_len) {
		if (!c->free_reqs) {
			c->rx_parked = true; /* resumed by req_free() */
			break;
		}
		if (!conn_rx_request(c))
			break;
	}
	c->rx_parsing = false;
	if (c->state != CONN_TRANSMIT || c->rx_busy || c->rx_parked)
		return;
	/* Keep the partial request, if any, at the front; receive behind it. */
	if (c->rx_start) {
		memmove(c->rxbuf, c->rxbuf + c->rx_start, c->rx_end - c->rx_start);
		c->rx_end -= c->rx_start;
		c->rx_start = 0;
	}
	c->rx_busy = true;
	sqe = ring_get_sqe(c, c, OP_CONN_RX);
	io_uring_prep_recv(sqe, c->fd, c->rxbuf + c->rx_end, CONN_RXBUF_BYTES - c->rx_end, 0);
}

void conn_rx_done(struct conn *c, int res)
{
	c->rx_busy = false;
	if (c->state == CONN_CLOSING)
		return;
	if (res <= 0) {
		if (res == 0 && c->rx_end == c->rx_start)
			conn_close(c, "client closed the connection");
		else
			conn_close(c, res == 0 ? "client closed mid-request" : strerror(-res));
		return;
	}
	c->rx_end += (size_t)res;
	conn_rx_next(c);
}

void conn_transmit_start(struct conn *c)
{
	ev_timer_stop(c->w->loop, &c->hs_timer);
	free(c->hs_buf);
	free(c->hs_out.data);
	c->hs_buf = NULL;
	c->hs_out.data = NULL;
	c->hs_cap = c->hs_out.cap = 0;
	c->rxbuf = malloc(CONN_RXBUF_BYTES);
	if (!c->rxbuf) {
		conn_close(c, "out of memory for a receive buffer");
		return;
	}
	c->state = CONN_TRANSMIT;
	c->rx_hdr_len = proto_request_hdr_len(&c->sess);
	log_info("conn %" PRIu64 ": serving export \"%s\" (%s)", c->id, c->exp->name,
		 c->sess.extended ? "extended headers" :
		 c->sess.structured ? "structured replies" : "simple replies");
	conn_rx_next(c);
}
