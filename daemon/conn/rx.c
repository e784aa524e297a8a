// SPDX-License-Identifier: BSD-3-Clause
/*
 * Requests in from the wire, in wire order.
 *
 * One receive is in flight per connection at a time (c->rx says which: a
 * receive into the connection's buffer, a WRITE payload straight into the
 * request's pool chunks, or a refused payload being discarded). Every whole
 * request header in the buffer is taken in one go, so all that arrived is
 * submitted in the same loop iteration; once taken, each request runs on
 * its own (request.c) and replies in completion order (reply.c).
 *
 * For each request: decode, validate, plan, take buffers, take the payload;
 * then the lock. Receiving pauses while every request slot is busy
 * (RX_WAIT_SLOT) or the pool has no buffers (RX_WAIT_BUFFERS), which is how
 * a fast client is slowed down instead of failed; the slot or the buffers
 * arrive as a posted op, never as a call from the code that freed them.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "conn_int.h"

#define SKIP_MAX_BYTES (UINT64_C(1) << 32)  /* a larger refused payload is a disconnect */

static bool rx_buffers(struct req *q);
static bool rx_admit(struct req *q);
static void rx_segment_received(struct req *q);

/* c may receive and parse (it is serving, and nothing of its intake is in flight). */
static bool rx_open(const struct conn *c)
{
	return (c->state == CONN_TRANSMIT || c->state == CONN_STOPPING) && c->rx == RX_IDLE &&
	       !c->handover;
}

static void rx_payload_done(struct conn_op *o, int res)
{
	struct req *q = container_of(o, struct req, op);
	struct conn *c = q->c;

	if (c->state == CONN_CLOSING) {
		req_recycle(q); /* a segmented WRITE's lock goes with it */
		return;
	}
	if (res <= 0) {
		conn_close(c, res == 0 ? "client closed during a WRITE payload" : strerror(-res));
		req_recycle(q);
		return;
	}
	q->io_done_bytes += (uint64_t)res;
	if (q->io_done_bytes < q->r.len_bytes) {
		rx_payload(q);
		return;
	}
	if (q->state == REQ_SEG_PAYLOAD) {
		rx_segment_received(q);
		return;
	}
	/* A segmented WRITE's later payload comes next: nothing else is read meanwhile. */
	c->rx = q->seg ? RX_STREAM : RX_IDLE;
	c->rx_req = q->seg ? q : NULL;
	req_lock(q);
	rx_next(c);
}

void rx_payload(struct req *q)
{
	struct conn *c = q->c;

	conn_op_init(&q->op, c, rx_payload_done);
	conn_progress(c);
	/* The msghdr lives in the connection: one receive at a time. */
	memset(&c->rx_msg, 0, sizeof(c->rx_msg));
	c->rx_msg.msg_iov = q->io_iov;
	c->rx_msg.msg_iovlen = iov_slice(q->iov, q->niov, q->plan.data_off + q->io_done_bytes,
					 q->r.len_bytes - q->io_done_bytes, q->io_iov);
	conn_recvmsg(&q->op, &c->rx_msg);
}

/*
 * Buffers are in hand. A READ goes to its lock; a WRITE takes what of its
 * payload is already buffered and, if that is not all of it, receives the
 * rest straight into its pages. Returns false if receiving must wait.
 */
static bool rx_take_payload(struct req *q)
{
	struct conn *c = q->c;
	size_t n;

	if (q->r.type != NBD_CMD_WRITE) {
		/* A write of zeroes has its zeroes where a payload would go. */
		if (q->plan.zero_write)
			iov_zero(q->iov, q->niov, q->plan.data_off, q->r.len_bytes);
		req_lock(q);
		return true;
	}
	if (c->uq) {
		/* The kernel's request brought it. */
		ublk_payload(q);
		req_lock(q);
		return true;
	}
	n = c->rx_end - c->rx_start;
	if (n > q->r.len_bytes)
		n = (size_t)q->r.len_bytes;
	iov_copy_in(q->iov, q->niov, q->plan.data_off, c->rxbuf + c->rx_start, n);
	c->rx_start += n;
	if (n == q->r.len_bytes) {
		if (q->seg) {
			/* Its later segments' payload is what follows: hold the intake. */
			c->rx = RX_STREAM;
			c->rx_req = q;
			req_lock(q);
			return false;
		}
		req_lock(q);
		return true;
	}
	/* The buffer is empty now: the rest bypasses it. */
	c->rx_start = c->rx_end = 0;
	c->rx = RX_PAYLOAD;
	c->rx_req = q;
	req_set_state(q, REQ_PAYLOAD);
	q->io_done_bytes = n;
	rx_payload(q);
	return false;
}

static void rx_prep_skip(struct conn *c)
{
	size_t n = c->skip_left < CONN_RXBUF_BYTES ? (size_t)c->skip_left : CONN_RXBUF_BYTES;

	conn_progress(c);
	/* The receive buffer is empty: use it as scratch. */
	conn_recv(&c->rx_op, c->rxbuf, n, false);
}

static void rx_skip_done(struct conn_op *o, int res)
{
	struct conn *c = o->c;
	struct req *q = c->rx_req;

	if (c->state == CONN_CLOSING || res <= 0) {
		if (c->state != CONN_CLOSING)
			conn_close(c, res == 0 ? "client closed during a payload" : strerror(-res));
		c->rx_req = NULL;
		req_recycle(q);
		return;
	}
	c->skip_left -= (uint64_t)res;
	if (c->skip_left) {
		rx_prep_skip(c);
		return;
	}
	c->rx_req = NULL;
	c->rx = RX_IDLE;
	reply_queue(q);
	rx_next(c);
}

/*
 * Drops payload bytes of q (which has its error), then replies. Returns
 * false if some must be received first.
 */
static bool rx_drop_payload(struct req *q, uint64_t payload)
{
	struct conn *c = q->c;
	uint64_t n;

	n = c->rx_end - c->rx_start;
	if (n > payload)
		n = payload;
	c->rx_start += n;
	if (n == payload) {
		reply_queue(q);
		return true;
	}
	if (payload > SKIP_MAX_BYTES) {
		conn_close(c, "refused request with a payload over 4 GiB");
		req_recycle(q);
		return false;
	}
	if (q->state != REQ_SKIP)
		req_set_state(q, REQ_SKIP);
	c->rx_start = c->rx_end = 0;
	c->skip_left = payload - n;
	c->rx_req = q;
	c->rx = RX_SKIP;
	conn_op_init(&c->rx_op, c, rx_skip_done);
	rx_prep_skip(c);
	return false;
}

/* A refused request: drop its payload, if any, then reply with the error. */
static bool rx_refuse(struct req *q, uint32_t nbd_error)
{
	struct conn *c = q->c;

	q->nbd_error = nbd_error;
	log_debug("conn %" PRIu64 ": %s flags 0x%x offset %" PRIu64 " length %" PRIu64
		  ": refused with error %u", c->id, proto_cmd_name(q->r.type), q->r.flags,
		  q->r.offset, q->r.len_bytes, nbd_error);
	if (c->uq) {
		reply_queue(q); /* nothing of it is in a socket */
		return true;
	}
	return rx_drop_payload(q, proto_request_payload_len(&c->sess, &q->r));
}

void rx_skip_rest(struct req *q, uint64_t len_bytes)
{
	struct conn *c = q->c;

	assert(c->rx == RX_STREAM && c->rx_req == q);
	c->rx = RX_IDLE;
	c->rx_req = NULL;
	if (rx_drop_payload(q, len_bytes))
		rx_next(c);
}

/* A segmented WRITE's current segment has its payload: write it (the lock is held). */
static void rx_segment_received(struct req *q)
{
	struct conn *c = q->c;
	bool last = req_seg_last(q);

	c->rx = last ? RX_IDLE : RX_STREAM;
	c->rx_req = last ? NULL : q;
	req_set_state(q, REQ_LOCKED);
	req_run_locked(q);
	if (last)
		rx_next(c);
}

void rx_segment_payload(struct req *q)
{
	struct conn *c = q->c;
	size_t n = c->rx_end - c->rx_start;

	assert(c->rx == RX_STREAM && c->rx_req == q);
	if (n > q->r.len_bytes)
		n = (size_t)q->r.len_bytes;
	iov_copy_in(q->iov, q->niov, q->plan.data_off, c->rxbuf + c->rx_start, n);
	c->rx_start += n;
	if (n == q->r.len_bytes) {
		rx_segment_received(q);
		return;
	}
	c->rx_start = c->rx_end = 0;
	c->rx = RX_PAYLOAD;
	q->io_done_bytes = n;
	rx_payload(q);
}

/* The pool has room again (or the connection closes). */
static void rx_buffers_ready(struct conn_op *o, int res)
{
	struct req *q = container_of(o, struct req, op);
	struct conn *c = q->c;

	assert(c->rx_req == q || c->state == CONN_CLOSING);
	if (res < 0 || c->state == CONN_CLOSING) {
		if (c->buf_wait.promised)
			pool_claim(&c->w->pool, &c->buf_wait); /* given up */
		c->rx_req = NULL;
		req_recycle(q);
		return;
	}
	hist_observe(&c->w->stats.pool_wait, now_ns() - q->wait_start_ns);
	c->rx = RX_IDLE;
	c->rx_req = NULL;
	if (rx_buffers(q))
		rx_next(c);
}

/* Takes the plan's buffers, or parks; a request that cannot have them is refused. */
static bool rx_buffers(struct req *q)
{
	struct conn *c = q->c;
	bool waited = q->state == REQ_BUFFERS;
	int ret = req_get_buffers(q);

	if (ret == -ENOBUFS) {
		if (!waited)
			req_set_state(q, REQ_BUFFERS);
		c->rx = RX_WAIT_BUFFERS;
		c->rx_req = q;
		conn_op_init(&q->op, c, rx_buffers_ready);
		c->buf_wait.acct = &c->acct;
		c->buf_wait.chunks = q->plan.chunks + q->plan.bounce;
		c->buf_wait.ctx = &q->op.op;
		if (!waited)
			q->wait_start_ns = now_ns();
		conn_expect(&q->op);
		worker_pool_wait(c->w, &c->buf_wait);
		return false;
	}
	if (ret < 0) {
		log_warn("conn %" PRIu64 ": %s of %" PRIu64 " bytes: %s", c->id,
			 proto_cmd_name(q->r.type), q->r.len_bytes, strerror(-ret));
		return rx_refuse(q, proto_errno_to_nbd(-ret));
	}
	return rx_take_payload(q);
}

/* ---- rate limits: a request waits here, before buffers and locks ---- */

/* What q counts as (false: nothing; FLUSH and BLOCK_STATUS move no data). */
static bool rx_throttle_cost(const struct req *q, bool *write, uint64_t *bytes)
{
	switch (q->r.type) {
	case NBD_CMD_READ:
	case NBD_CMD_CACHE:
		*write = false;
		*bytes = q->r.len_bytes;
		return true;
	case NBD_CMD_WRITE:
		*write = true;
		*bytes = q->r.len_bytes;
		return true;
	case NBD_CMD_TRIM:
	case NBD_CMD_WRITE_ZEROES:
		*write = true; /* an op, and no payload */
		*bytes = 0;
		return true;
	default:
		return false;
	}
}

/* The generations of c's limits: a change lets a waiting request look again. */
static unsigned rx_throttle_gen(const struct conn *c)
{
	struct export_counters *ec = c->exp->ctr;
	struct throttle_group *g = atomic_load_explicit(&ec->group, memory_order_acquire);

	return atomic_load(&ec->thr.gen) + atomic_load(&ec->conn_gen) +
	       (g ? atomic_load(&g->thr.gen) : 0);
}

/* The export's per-connection limits, copied into c's own buckets when they change. */
static void rx_throttle_refresh(struct conn *c)
{
	struct export_counters *ec = c->exp->ctr;
	unsigned gen = atomic_load_explicit(&ec->conn_gen, memory_order_acquire);
	struct throttle_limits lim;

	if (gen == c->thr_gen)
		return;
	pthread_mutex_lock(&ec->thr.lock);
	lim = ec->conn_lim;
	pthread_mutex_unlock(&ec->thr.lock);
	throttle_set(&c->thr, &lim);
	c->thr_gen = gen;
}

static void rx_throttle_end(struct conn *c)
{
	uint64_t waited = worker_now(c->w) - c->thr_since_ns;

	worker_timer_stop(c->w, &c->thr_timer);
	throttle_wait_end(c->thr_exp, waited);
	throttle_wait_end(c->thr_grp, waited);
	c->thr_exp = c->thr_grp = NULL;
}

static void rx_throttle_fire(struct timer *t)
{
	struct conn *c = container_of(t, struct conn, thr_timer);
	struct req *q = c->rx_req;
	uint64_t now = worker_now(c->w);

	assert(c->rx == RX_WAIT_THROTTLE);
	/* Not due, and its limits as they were: look again later. */
	if (now < c->thr_due_ns && rx_throttle_gen(c) == c->thr_seen) {
		worker_timer_at(c->w, t, min_u64(c->thr_due_ns, now + CONN_THROTTLE_RECHECK_NS));
		return;
	}
	rx_throttle_end(c);
	c->rx = RX_IDLE;
	c->rx_req = NULL;
	req_set_state(q, REQ_NEW);
	if (rx_admit(q))
		rx_next(c);
}

void rx_throttle_cancel(struct conn *c)
{
	struct req *q = c->rx_req;

	if (c->rx != RX_WAIT_THROTTLE)
		return;
	rx_throttle_end(c);
	c->rx_req = NULL;
	c->rx = RX_STOPPED;
	req_recycle(q);
}

/*
 * Charges q to its connection's, export's and group's limits. Returns true
 * if it may go on now; otherwise it waits (RX_WAIT_THROTTLE) and the intake
 * stops, so the requests behind it, and a WRITE's payload, stay in the
 * socket: waiting writers cost the daemon no memory.
 */
static bool rx_throttle(struct req *q)
{
	struct conn *c = q->c;
	struct export_counters *ec = c->exp->ctr;
	struct throttle_group *g = atomic_load_explicit(&ec->group, memory_order_acquire);
	struct throttle *gt = g ? &g->thr : NULL;
	uint64_t bytes, now, due;
	bool write;

	if (!rx_throttle_cost(q, &write, &bytes))
		return true;
	rx_throttle_refresh(c);
	if (!throttle_on(&c->thr) && !throttle_on(&ec->thr) && !throttle_on(gt))
		return true;
	now = worker_now(c->w);
	/* Charged to all three now: the wait is the longest of theirs. */
	due = throttle_charge(&c->thr, write, bytes, now);
	due = max_u64(due, throttle_charge(&ec->thr, write, bytes, now));
	if (gt)
		due = max_u64(due, throttle_charge(gt, write, bytes, now));
	if (!due)
		return true;
	c->thr_exp = &ec->thr;
	c->thr_grp = gt;
	throttle_wait_begin(c->thr_exp);
	throttle_wait_begin(c->thr_grp);
	c->thr_since_ns = now;
	c->thr_due_ns = now + due;
	c->thr_seen = rx_throttle_gen(c);
	req_set_state(q, REQ_THROTTLED);
	c->rx = RX_WAIT_THROTTLE;
	c->rx_req = q;
	if (!c->thr_timer.fire)
		timer_init(&c->thr_timer, rx_throttle_fire);
	worker_timer_at(c->w, &c->thr_timer, min_u64(c->thr_due_ns,
						      now + CONN_THROTTLE_RECHECK_NS));
	return false;
}

/*
 * Takes the request whose header starts the buffer. Returns false when
 * receiving must stop for now (a payload being received or skipped, buffers
 * awaited, DISC, or the connection closed).
 */
static bool rx_request(struct conn *c)
{
	struct req *q = req_take(c);
	uint32_t err;

	if (proto_decode_request(&c->sess, c->rxbuf + c->rx_start, &q->r) < 0) {
		conn_close(c, "bad request magic");
		req_recycle(q);
		return false;
	}
	c->rx_start += c->rx_hdr_len;
	log_debug("conn %" PRIu64 ": %s cookie 0x%" PRIx64 " flags 0x%x offset %" PRIu64
		  " length %" PRIu64, c->id, proto_cmd_name(q->r.type), q->r.cookie, q->r.flags,
		  q->r.offset, q->r.len_bytes);

	if (q->r.type == NBD_CMD_DISC) {
		/* No reply; finish what is in flight, then close. */
		c->state = CONN_DRAINING;
		c->rx = RX_STOPPED;
		req_recycle(q);
		return false;
	}
	if (conn_host.shutting_down(conn_host.ctx))
		return rx_refuse(q, NBD_ESHUTDOWN);
	/* BLOCK_STATUS naming its contexts: the payload (all buffered, rx_next saw to it). */
	q->bs_contexts = proto_block_status_contexts(&c->sess, NULL, 0);
	if (proto_block_status_payload(&c->sess, &q->r)) {
		uint64_t effect = 0;

		err = proto_decode_block_status_payload(&c->sess, c->rxbuf + c->rx_start,
							q->r.len_bytes, &effect);
		if (err == NBD_SUCCESS)
			q->bs_contexts = proto_block_status_contexts(&c->sess, c->rxbuf + c->rx_start,
								     q->r.len_bytes);
		c->rx_start += (size_t)q->r.len_bytes;
		q->r.flags &= (uint16_t)~NBD_CMD_FLAG_PAYLOAD_LEN;
		q->r.len_bytes = effect;
		if (err != NBD_SUCCESS)
			return rx_refuse(q, err);
	}
	/* Any length: those over EXPORT_MAX_REQUEST_BYTES are served in segments. */
	err = proto_validate_request(&c->sess, &q->r, UINT64_MAX);
	if (err != NBD_SUCCESS)
		return rx_refuse(q, err);
	/* DF: one chunk, whose compact header's length (data + 8) must fit 32 bits. */
	if ((q->r.flags & NBD_CMD_FLAG_DF) && !c->sess.extended &&
	    q->r.len_bytes > UINT32_MAX - 8)
		return rx_refuse(q, NBD_EOVERFLOW);
	return rx_take_request(q);
}

bool rx_take_request(struct req *q)
{
	if (!rx_throttle(q))
		return false;
	return rx_admit(q);
}

/* A valid request, past its rate limits: planned, then its buffers and payload. */
static bool rx_admit(struct req *q)
{
	if ((q->r.type == NBD_CMD_READ || q->r.type == NBD_CMD_WRITE) &&
	    q->r.len_bytes > EXPORT_MAX_REQUEST_BYTES)
		req_segment_start(q);
	else
		req_plan(q);
	/* An unaligned WRITE_ZEROES on a device writes zeroes: over 32 MiB, in segments too. */
	if (q->plan.zero_write && q->r.len_bytes > EXPORT_MAX_REQUEST_BYTES)
		req_segment_start(q);
	if (q->r.type == NBD_CMD_FLUSH) {
		fileio_flush(q);
		return true;
	}
	/* Nothing to move: answered at once (CACHE on an export without a cache). */
	if (!q->plan.locks) {
		reply_queue(q);
		return true;
	}
	return rx_buffers(q);
}

static void rx_done(struct conn_op *o, int res)
{
	struct conn *c = o->c;
	bool replaced = res == -ECANCELED && c->rx_cancelling;

	c->rx_cancelling = false;
	if (c->state == CONN_CLOSING)
		return;
	c->rx = RX_IDLE;
	if (replaced) {
		rx_next(c); /* the same receive again, a quiet one (conn.c) */
		return;
	}
	if (res <= 0) {
		if (res == 0 && c->rx_end == c->rx_start)
			conn_close(c, "client closed the connection");
		else
			conn_close(c, res == 0 ? "client closed mid-request" : strerror(-res));
		return;
	}
	c->rx_end += (size_t)res;
	c->area_quiet = false;
	conn_active(c);
	rx_next(c);
}

/* The request at rx_start can be taken: its header, and a payload read whole first. */
static bool rx_ready(const struct conn *c)
{
	size_t have = c->rx_end - c->rx_start;
	struct proto_request r;

	if (have < c->rx_hdr_len)
		return false;
	if (!c->sess.extended || proto_decode_request(&c->sess, c->rxbuf + c->rx_start, &r) < 0 ||
	    !proto_block_status_payload(&c->sess, &r))
		return true;
	return have >= c->rx_hdr_len + r.len_bytes;
}

void rx_next(struct conn *c)
{
	if (c->uq) {
		ublk_intake(c);
		return;
	}
	while (rx_open(c) && rx_ready(c)) {
		if (c->live_reqs == CONN_MAX_REQS) {
			c->rx = RX_WAIT_SLOT; /* resumed by rx_slot_freed() */
			return;
		}
		if (!rx_request(c))
			return;
	}
	if (!rx_open(c))
		return;
	/* Keep the partial request, if any, at the front; receive behind it. */
	if (c->rx_start) {
		memmove(c->rxbuf, c->rxbuf + c->rx_start, c->rx_end - c->rx_start);
		c->rx_end -= c->rx_start;
		c->rx_start = 0;
	}
	c->rx = RX_RECV;
	/* Nothing in flight: a small receive, so the area can be given back meanwhile. */
	c->rx_quiet = !c->live_reqs && !c->rx_end;
	conn_op_init(&c->rx_op, c, rx_done);
	conn_recv(&c->rx_op, c->rxbuf + c->rx_end,
		       c->rx_quiet ? CONN_RX_QUIET_BYTES : CONN_RXBUF_BYTES - c->rx_end, false);
}

static void rx_resume(struct conn_op *o, int res)
{
	(void)res;
	rx_next(o->c);
}

void rx_slot_freed(struct conn *c)
{
	if (c->rx != RX_WAIT_SLOT)
		return;
	c->rx = RX_IDLE;
	conn_post(&c->resume_op, 0);
}

/* Transmission begins (negotiated here, or handed over): the area, the state. */
static int rx_begin(struct conn *c)
{
	if (conn_transmit_start(c) < 0) {
		conn_close(c, "out of memory for the connection's buffers");
		return -1;
	}
	c->state = CONN_TRANSMIT;
	c->rx = RX_IDLE;
	c->rx_hdr_len = proto_request_hdr_len(&c->sess);
	conn_op_init(&c->resume_op, c, rx_resume);
	return 0;
}

void rx_start(struct conn *c)
{
	char who[96];
	const char *id = tls_conn_identity(c);

	worker_timer_stop(c->w, &c->hs_timer);
	free(c->hs_buf);
	free(c->hs_out.data);
	c->hs_buf = NULL;
	c->hs_out.data = NULL;
	c->hs_cap = c->hs_out.cap = 0;
	if (rx_begin(c) < 0)
		return;
	log_info("conn %" PRIu64 ": serving export \"%s\" to %s%s%s (%s%s)", c->id, c->exp->name,
		 conn_peer_name(c, who, sizeof(who)), id ? ", TLS identity " : "", id ? id : "",
		 c->sess.extended ? "extended headers" :
		 c->sess.structured ? "structured replies" : "simple replies",
		 tls_conn_up(c) ? ", TLS" : "");
	rx_next(c);
}

void rx_start_resumed(struct conn *c, const uint8_t *p, size_t n)
{
	if (rx_begin(c) < 0)
		return;
	if (n > CONN_RXBUF_BYTES)
		n = CONN_RXBUF_BYTES; /* cannot be: the buffer it came from is as large */
	memcpy(c->rxbuf, p, n);
	c->rx_end = n;
	if (n)
		c->area_quiet = false;
	rx_next(c);
}
