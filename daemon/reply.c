// SPDX-License-Identifier: BSD-3-Clause
/*
 * Replies: queued per connection in completion order and sent by one
 * sendmsg at a time, each carrying as many queued replies (header iovec
 * plus data chunks) as fit in 1024 iovecs. One send in flight keeps replies
 * whole on the wire; batching keeps it to about one SQE per loop iteration
 * under load. A reply's request is recycled once the send has carried it.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "conn.h"

static void reply_send_done(struct conn_op *o, int res);

/* Sends what is queued, if no send is in flight. */
static void reply_send(struct conn *c)
{
	struct req *q, **tail = &c->sending;
	struct iovec *iov = c->area->send_iov;
	size_t n = 0;

	if (c->sending || !c->sendq_head || c->state == CONN_CLOSING)
		return;
	while ((q = c->sendq_head)) {
		size_t need = 1 + (q->reply_data ? q->niov : 0);

		if (n + need > CONN_SEND_IOVS)
			break;
		if (q->reply_raw_len) {
			/* Built whole in the bounce chunk (block status). */
			iov[n].iov_base = q->bounce.iov_base;
			iov[n].iov_len = q->reply_raw_len;
		} else {
			iov[n].iov_base = q->reply_hdr;
			iov[n].iov_len = q->reply_hdr_len;
		}
		n++;
		if (q->reply_data)
			n += iov_slice(q->iov, q->niov, q->plan.data_off, q->r.len_bytes, &iov[n]);
		c->sendq_head = q->next;
		if (!c->sendq_head)
			c->sendq_tail = NULL;
		q->next = NULL;
		*tail = q;
		tail = &q->next;
	}
	assert(n > 0);
	memset(&c->send_msg, 0, sizeof(c->send_msg));
	c->send_msg.msg_iov = iov;
	c->send_msg.msg_iovlen = n;
	conn_op_init(&c->send_op, c, reply_send_done);
	conn_progress(c);
	conn_sendmsg(&c->send_op, &c->send_msg);
}

/* The export's counters (its worker's set) and the connection's. */
static void reply_count(const struct req *q)
{
	struct conn *c = q->c;
	struct export_stats *st = &c->exp->ctr->slot[c->w->id];
	unsigned op = export_stat_op(q->r.type);

	stat_bump(&st->requests[op], 1);
	c->requests++;
	if (q->nbd_error != NBD_SUCCESS) {
		stat_bump(&st->errors[op], 1);
		stat_bump(&st->errors_by[op][export_stat_err(q->nbd_error)], 1);
		c->errors++;
		return;
	}
	if (q->r.type == NBD_CMD_BLOCK_STATUS)
		return;
	stat_bump(&st->bytes[op], q->r.len_bytes);
	if (q->r.type == NBD_CMD_READ)
		c->bytes_read += q->r.len_bytes;
	else if (q->r.type == NBD_CMD_WRITE)
		c->bytes_written += q->r.len_bytes;
}

void reply_queue(struct req *q)
{
	struct conn *c = q->c;
	bool has_data = false;

	req_set_state(q, REQ_REPLY);
	reply_count(q);
	if (!q->reply_raw_len)
		q->reply_hdr_len = (uint32_t)proto_encode_reply(&c->sess, q->reply_hdr, &q->r,
								q->nbd_error, &has_data);
	q->reply_data = has_data;
	q->next = NULL;
	if (c->sendq_tail)
		c->sendq_tail->next = q;
	else
		c->sendq_head = q;
	c->sendq_tail = q;
	reply_send(c);
}

/* The replies the finished send carried: each request's time is up. */
static void reply_recycle_sent(struct conn *c, bool sent)
{
	struct req *q = c->sending, *next;
	struct export_stats *st = &c->exp->ctr->slot[c->w->id];
	uint64_t now = sent ? now_ns() : 0;

	c->sending = NULL;
	for (; q; q = next) {
		next = q->next;
		if (sent)
			hist_observe(&st->duration[export_stat_op(q->r.type)], now - q->start_ns);
		req_recycle(q);
	}
}

/* The connection closes: recycle every reply not yet sent. */
static void reply_drop_all(struct conn *c)
{
	reply_recycle_sent(c, false);
	while (c->sendq_head) {
		struct req *q = c->sendq_head;

		c->sendq_head = q->next;
		req_recycle(q);
	}
	c->sendq_tail = NULL;
}

static void reply_send_done(struct conn_op *o, int res)
{
	struct conn *c = o->c;
	struct msghdr *m = &c->send_msg;
	size_t left = res > 0 ? (size_t)res : 0;

	if (c->state == CONN_CLOSING || res <= 0) {
		if (c->state != CONN_CLOSING)
			conn_close(c, res == 0 ? "send made no progress" : strerror(-res));
		/* Replies still queued go with the connection. */
		reply_drop_all(c);
		return;
	}
	/* Skip what was sent; resubmit the rest of a short send. */
	while (m->msg_iovlen && left >= m->msg_iov->iov_len) {
		left -= m->msg_iov->iov_len;
		m->msg_iov++;
		m->msg_iovlen--;
	}
	if (m->msg_iovlen) {
		m->msg_iov->iov_base = (uint8_t *)m->msg_iov->iov_base + left;
		m->msg_iov->iov_len -= left;
		conn_sendmsg(&c->send_op, m);
		return;
	}
	reply_recycle_sent(c, true);
	reply_send(c);
}
