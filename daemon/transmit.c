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
 * A request's life: header -> validate -> buffers -> [payload] -> file I/O
 * -> reply -> free. One function per step.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "daemon.h"

#define SKIP_CHUNK 65536

static void conn_rx_next(struct conn *c);

static void conn_maybe_drained(struct conn *c)
{
	if (c->state == CONN_DRAINING && c->live_reqs == 0)
		conn_close(c, "client disconnected (NBD_CMD_DISC)");
}

void req_free(struct req *q)
{
	struct conn *c = q->c;

	assert(q->in_use);
	if (q->niov)
		pool_put(&c->w->pool, q->niov, q->iov);
	if (q->iov != q->iov_inline)
		free(q->iov);
	q->iov = NULL;
	q->niov = 0;
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

/* Takes pool chunks for the request's data; false if it must wait. */
static bool req_get_buffers(struct req *q)
{
	uint32_t n = pool_chunks_for(q->r.len_bytes);
	int ret;

	if (n > REQ_INLINE_CHUNKS) {
		if (!q->iov) {
			q->iov = malloc(n * sizeof(*q->iov));
			if (!q->iov)
				return false;
		}
	} else {
		q->iov = q->iov_inline;
	}
	ret = pool_get(&q->c->w->pool, q->r.len_bytes, q->iov);
	if (ret < 0)
		return false;
	q->niov = (uint32_t)ret;
	return true;
}

static void req_prep_file(struct req *q)
{
	struct conn *c = q->c;
	const struct export *e = c->exp;
	struct io_uring_sqe *sqe = ring_get_sqe(c, q, OP_REQ_FILE);
	uint64_t off = q->r.offset + q->io_done_bytes;
	struct iovec *iov = q->iov + q->adj_idx;
	unsigned niov = q->niov - q->adj_idx;

	switch (q->r.type) {
	case NBD_CMD_READ:
		io_uring_prep_readv(sqe, e->fd, iov, niov, off);
		break;
	case NBD_CMD_WRITE:
		io_uring_prep_writev2(sqe, e->fd, iov, niov, off,
				      (q->r.flags & NBD_CMD_FLAG_FUA) ? RWF_DSYNC : 0);
		break;
	case NBD_CMD_FLUSH:
		io_uring_prep_fsync(sqe, e->fd, IORING_FSYNC_DATASYNC);
		break;
	default:
		assert(0);
	}
}

static void req_start_file(struct req *q)
{
	q->io_done_bytes = 0;
	q->adj_idx = 0;
	q->adj_bytes = 0;
	req_prep_file(q);
}

/* Undoes the advance of a retried iovec, so the reply sends whole chunks. */
static void req_restore_iov(struct req *q)
{
	if (q->adj_bytes) {
		struct iovec *v = &q->iov[q->adj_idx];

		v->iov_base = (uint8_t *)v->iov_base - q->adj_bytes;
		v->iov_len += q->adj_bytes;
		q->adj_bytes = 0;
	}
	q->adj_idx = 0;
}

/* Advances the request's iovecs past n more bytes, for a short transfer. */
static void req_advance_iov(struct req *q, size_t n)
{
	req_restore_iov(q);
	while (n) {
		struct iovec *v = &q->iov[q->adj_idx];

		if (n < v->iov_len) {
			v->iov_base = (uint8_t *)v->iov_base + n;
			v->iov_len -= n;
			q->adj_bytes = n;
			return;
		}
		n -= v->iov_len;
		q->adj_idx++;
	}
}

void req_file_done(struct req *q, int res)
{
	struct conn *c = q->c;

	if (c->state == CONN_CLOSING) {
		req_restore_iov(q);
		req_free(q);
		return;
	}
	if (res < 0) {
		req_restore_iov(q);
		q->nbd_error = proto_errno_to_nbd(-res);
		log_warn("conn %" PRIu64 ": %s offset %" PRIu64 " length %" PRIu64 ": %s",
			 c->id, proto_cmd_name(q->r.type), q->r.offset, q->r.len_bytes,
			 strerror(-res));
		req_reply(q);
		return;
	}
	if (q->r.type != NBD_CMD_FLUSH) {
		if (res == 0) {
			/* The file shrank under us: nothing more will come. */
			req_restore_iov(q);
			q->nbd_error = NBD_EIO;
			log_warn("conn %" PRIu64 ": %s offset %" PRIu64 ": unexpected end of file",
				 c->id, proto_cmd_name(q->r.type), q->r.offset);
			req_reply(q);
			return;
		}
		q->io_done_bytes += (uint64_t)res;
		if (q->io_done_bytes < q->r.len_bytes) {
			req_advance_iov(q, (size_t)q->io_done_bytes);
			req_prep_file(q);
			return;
		}
		req_restore_iov(q);
	}
	req_reply(q);
}

/* Receives the rest of a WRITE payload into the request's chunks. */
static void req_prep_rx_data(struct req *q)
{
	struct conn *c = q->c;
	struct io_uring_sqe *sqe = ring_get_sqe(c, q, OP_REQ_RX_DATA);

	/* The msghdr lives in the connection: one receive at a time. */
	memset(&c->rx_msg, 0, sizeof(c->rx_msg));
	c->rx_msg.msg_iov = q->iov + q->adj_idx;
	c->rx_msg.msg_iovlen = q->niov - q->adj_idx;
	io_uring_prep_recvmsg(sqe, c->fd, &c->rx_msg, MSG_WAITALL);
}

void req_rx_data_done(struct req *q, int res)
{
	struct conn *c = q->c;

	if (c->state == CONN_CLOSING) {
		req_restore_iov(q);
		req_free(q);
		return;
	}
	if (res <= 0) {
		req_restore_iov(q);
		req_free(q);
		conn_close(c, res == 0 ? "client closed during a WRITE payload" : strerror(-res));
		return;
	}
	q->io_done_bytes += (uint64_t)res;
	if (q->io_done_bytes < q->r.len_bytes) {
		req_advance_iov(q, (size_t)q->io_done_bytes);
		req_prep_rx_data(q);
		return;
	}
	req_restore_iov(q);
	c->rx_busy = false;
	req_start_file(q);
	conn_rx_next(c);
}

/* Buffers are in hand: start the request's payload receive or its I/O. */
static void req_run(struct req *q)
{
	struct conn *c = q->c;

	if (q->r.type == NBD_CMD_WRITE) {
		c->rx_busy = true;
		q->io_done_bytes = 0;
		q->adj_idx = 0;
		q->adj_bytes = 0;
		req_prep_rx_data(q);
		return;
	}
	req_start_file(q);
	conn_rx_next(c);
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
	req_run(q);
}

static void conn_prep_skip(struct conn *c)
{
	struct io_uring_sqe *sqe = ring_get_sqe(c, c, OP_CONN_RX_SKIP);
	size_t n = c->skip_left < SKIP_CHUNK ? (size_t)c->skip_left : SKIP_CHUNK;

	io_uring_prep_recv(sqe, c->fd, c->skip_buf, n, MSG_WAITALL);
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

/* A refused request: discard its payload, if any, then reply with the error. */
static void req_refuse(struct req *q, uint32_t nbd_error)
{
	struct conn *c = q->c;
	uint64_t payload = proto_request_payload_len(&q->r);

	q->nbd_error = nbd_error;
	log_debug("conn %" PRIu64 ": %s flags 0x%x offset %" PRIu64 " length %" PRIu64
		  ": refused with error %u", c->id, proto_cmd_name(q->r.type), q->r.flags,
		  q->r.offset, q->r.len_bytes, nbd_error);
	if (!payload) {
		req_reply(q);
		conn_rx_next(c);
		return;
	}
	if (!c->skip_buf && !(c->skip_buf = malloc(SKIP_CHUNK))) {
		req_free(q);
		conn_close(c, "out of memory for discarding a payload");
		return;
	}
	c->skip_left = payload;
	c->rx_req = q;
	c->rx_busy = true;
	conn_prep_skip(c);
}

static void conn_rx_request(struct conn *c)
{
	struct req *q;
	uint32_t err;

	q = c->free_reqs;
	assert(q);
	c->free_reqs = q->next;
	q->next = NULL;
	q->in_use = true;
	q->nbd_error = NBD_SUCCESS;
	q->niov = 0;
	q->iov = NULL;
	c->live_reqs++;
	if (proto_decode_request(c->rx_hdr, &q->r) < 0) {
		req_free(q);
		conn_close(c, "bad request magic");
		return;
	}
	log_debug("conn %" PRIu64 ": %s flags 0x%x offset %" PRIu64 " length %" PRIu64,
		  c->id, proto_cmd_name(q->r.type), q->r.flags, q->r.offset, q->r.len_bytes);

	if (q->r.type == NBD_CMD_DISC) {
		/* No reply; finish what is in flight, then close. */
		req_free(q);
		c->state = CONN_DRAINING;
		conn_maybe_drained(c);
		return;
	}
	if (c->w->srv->shutting_down) {
		req_refuse(q, NBD_ESHUTDOWN);
		return;
	}
	err = proto_validate_request(&c->sess, &q->r, EXPORT_MAX_REQUEST_BYTES,
				     c->exp->align_bytes);
	if (err != NBD_SUCCESS) {
		req_refuse(q, err);
		return;
	}
	if (q->r.type == NBD_CMD_FLUSH || q->r.len_bytes == 0) {
		if (q->r.type == NBD_CMD_FLUSH)
			req_start_file(q);
		else
			req_reply(q);
		conn_rx_next(c);
		return;
	}
	if (!req_get_buffers(q)) {
		c->rx_req = q;
		c->rx_parked = true;
		worker_pool_wait(c->w, c);
		return;
	}
	req_run(q);
}

void conn_rx_hdr_done(struct conn *c, int res)
{
	c->rx_busy = false;
	if (c->state == CONN_CLOSING)
		return;
	if (res <= 0) {
		if (res == 0 && c->rx_have == 0)
			conn_close(c, "client closed the connection");
		else
			conn_close(c, res == 0 ? "client closed mid-header" : strerror(-res));
		return;
	}
	c->rx_have += (size_t)res;
	if (c->rx_have < sizeof(c->rx_hdr)) {
		struct io_uring_sqe *sqe = ring_get_sqe(c, c, OP_CONN_RX_HDR);

		c->rx_busy = true;
		io_uring_prep_recv(sqe, c->fd, c->rx_hdr + c->rx_have,
				   sizeof(c->rx_hdr) - c->rx_have, MSG_WAITALL);
		return;
	}
	conn_rx_request(c);
}

static void conn_rx_next(struct conn *c)
{
	struct io_uring_sqe *sqe;

	if (c->state != CONN_TRANSMIT || c->rx_busy || c->rx_parked)
		return;
	if (!c->free_reqs) {
		c->rx_parked = true; /* resumed by req_free() */
		return;
	}
	c->rx_have = 0;
	c->rx_busy = true;
	sqe = ring_get_sqe(c, c, OP_CONN_RX_HDR);
	io_uring_prep_recv(sqe, c->fd, c->rx_hdr, sizeof(c->rx_hdr), MSG_WAITALL);
}

void conn_transmit_start(struct conn *c)
{
	c->exp = c->sess.export.opaque;
	free(c->hs_buf);
	free(c->hs_out.data);
	c->hs_buf = NULL;
	c->hs_out.data = NULL;
	c->hs_cap = c->hs_out.cap = 0;
	c->state = CONN_TRANSMIT;
	log_info("conn %" PRIu64 ": serving export \"%s\" (%s replies)", c->id, c->exp->name,
		 c->sess.structured ? "structured" : "simple");
	conn_rx_next(c);
}
