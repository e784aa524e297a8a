/*
 * Replies: queued per connection in completion order and sent by one
 * sendmsg at a time, each carrying as many queued replies (header iovec
 * plus data chunks) as fit in 1024 iovecs. One send in flight keeps replies
 * whole on the wire; batching keeps it to about one syscall-free SQE per
 * loop iteration under load.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <sys/socket.h>

#include "daemon.h"

#define SEND_IOV_MAX (sizeof(((struct conn *)0)->send_iov) / sizeof(struct iovec))

void req_reply(struct req *q)
{
	struct conn *c = q->c;
	bool has_data = false;

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
	conn_send_kick(c);
}

void conn_send_kick(struct conn *c)
{
	struct io_uring_sqe *sqe;
	struct req *q, **tail = &c->sending;
	size_t n = 0;

	if (c->sending || !c->sendq_head || c->state == CONN_CLOSING)
		return;
	while ((q = c->sendq_head)) {
		size_t need = 1 + (q->reply_data ? q->niov : 0);

		if (n + need > SEND_IOV_MAX)
			break;
		if (q->reply_raw_len) {
			/* Built whole in the bounce chunk (block status). */
			c->send_iov[n].iov_base = q->bounce.iov_base;
			c->send_iov[n].iov_len = q->reply_raw_len;
		} else {
			c->send_iov[n].iov_base = q->reply_hdr;
			c->send_iov[n].iov_len = q->reply_hdr_len;
		}
		n++;
		if (q->reply_data)
			n += iov_slice(q->iov, q->niov, q->data_off, q->r.len_bytes, &c->send_iov[n]);
		c->sendq_head = q->next;
		if (!c->sendq_head)
			c->sendq_tail = NULL;
		q->next = NULL;
		*tail = q;
		tail = &q->next;
	}
	assert(n > 0);
	memset(&c->send_msg, 0, sizeof(c->send_msg));
	c->send_msg.msg_iov = c->send_iov;
	c->send_msg.msg_iovlen = n;
	sqe = ring_get_sqe(c, c, OP_CONN_SEND);
	io_uring_prep_sendmsg(sqe, c->fd, &c->send_msg, MSG_NOSIGNAL | MSG_WAITALL);
}

static void conn_free_sending(struct conn *c)
{
	struct req *q = c->sending, *next;

	c->sending = NULL;
	for (; q; q = next) {
		next = q->next;
		req_free(q);
	}
}

void conn_send_done(struct conn *c, int res)
{
	struct msghdr *m = &c->send_msg;
	size_t left = res > 0 ? (size_t)res : 0;

	if (c->state == CONN_CLOSING || res <= 0) {
		if (c->state != CONN_CLOSING)
			conn_close(c, res == 0 ? "send made no progress" : strerror(-res));
		conn_free_sending(c);
		/* Replies still queued go with the connection. */
		while (c->sendq_head) {
			struct req *q = c->sendq_head;

			c->sendq_head = q->next;
			req_free(q);
		}
		c->sendq_tail = NULL;
		return;
	}
	/* Skip what was sent; resubmit the rest of a short send. */
	while (m->msg_iovlen && left >= m->msg_iov->iov_len) {
		left -= m->msg_iov->iov_len;
		m->msg_iov++;
		m->msg_iovlen--;
	}
	if (m->msg_iovlen) {
		struct io_uring_sqe *sqe;

		m->msg_iov->iov_base = (uint8_t *)m->msg_iov->iov_base + left;
		m->msg_iov->iov_len -= left;
		sqe = ring_get_sqe(c, c, OP_CONN_SEND);
		io_uring_prep_sendmsg(sqe, c->fd, m, MSG_NOSIGNAL | MSG_WAITALL);
		return;
	}
	conn_free_sending(c);
	conn_send_kick(c);
}
