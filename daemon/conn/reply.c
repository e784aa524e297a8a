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

#include "conn_int.h"

static void reply_send_done(struct conn_op *o, int res);

/*
 * The next reply to send, unlinked from the queue: the head, or while a
 * segmented READ streams, its next segment only (a simple reply's data must
 * not be split by another reply). NULL if none may go now, or none fits in
 * room iovecs.
 */
static struct req *reply_next(struct conn *c, size_t room)
{
	struct req **pq = &c->sendq_head, *q, *prev = NULL;

	if (c->seg_stream)
		for (; *pq && *pq != c->seg_stream; pq = &(*pq)->next)
			prev = *pq;
	q = *pq;
	/* Pieces: a header each, and their data slices at most one more iovec each than chunks. */
	if (!q || (q->npieces ? 2u * q->npieces + q->niov : 1u + (q->reply_data ? q->niov : 0)) >
		  room)
		return NULL;
	*pq = q->next;
	if (c->sendq_tail == q)
		c->sendq_tail = prev;
	q->next = NULL;
	return q;
}

/* Sends what is queued, if no send is in flight. */
static void reply_send(struct conn *c)
{
	struct req *q, **tail = &c->sending;
	struct iovec *iov = c->area->send_iov;
	size_t n = 0;

	if (c->sending || !c->sendq_head || c->state == CONN_CLOSING)
		return;
	while ((q = reply_next(c, CONN_SEND_IOVS - n))) {
		if (q->npieces) {
			const struct reply_piece *pc = (const struct reply_piece *)(void *)
				((uint8_t *)q->bounce.iov_base + REQ_BOUNCE_PIECES_OFF);

			for (unsigned i = 0; i < q->npieces; i++) {
				iov[n].iov_base = (uint8_t *)q->bounce.iov_base + pc[i].hdr_off;
				iov[n].iov_len = pc[i].hdr_len;
				n++;
				if (pc[i].data_len)
					n += iov_slice(q->iov, q->niov, pc[i].data_off, pc[i].data_len,
						       &iov[n]);
			}
		} else if (q->reply_raw_len) {
			/* Built whole in the bounce chunk (block status). */
			iov[n].iov_base = q->bounce.iov_base;
			iov[n].iov_len = q->reply_raw_len;
			n++;
		} else if (q->reply_hdr_len) {
			iov[n].iov_base = q->reply_hdr;
			iov[n].iov_len = q->reply_hdr_len;
			n++;
		}
		if (q->reply_data)
			n += iov_slice(q->iov, q->niov, q->plan.data_off, q->r.len_bytes, &iov[n]);
		*tail = q;
		tail = &q->next;
		/* A segment of a stream: nothing else until its next one. */
		if (q->seg) {
			c->seg_stream = q->state == REQ_SEG_REPLY ? q : NULL;
			if (c->seg_stream)
				break;
		}
	}
	if (!c->sending)
		return;
	memset(&c->send_msg, 0, sizeof(c->send_msg));
	c->send_msg.msg_iov = iov;
	c->send_msg.msg_iovlen = n;
	conn_op_init(&c->send_op, c, reply_send_done);
	conn_progress(c);
	conn_sendmsg(&c->send_op, &c->send_msg);
}

/* The export's counters (its worker's set) and the connection's, for request r. */
static void reply_count(const struct req *q, const struct proto_request *r)
{
	struct conn *c = q->c;
	struct export_stats *st = &c->exp->ctr->slot[c->w->id];
	unsigned op = export_stat_op(r->type);

	stat_bump(&st->requests[op], 1);
	c->requests++;
	if (q->nbd_error != NBD_SUCCESS) {
		stat_bump(&st->errors[op], 1);
		stat_bump(&st->errors_by[op][export_stat_err(q->nbd_error)], 1);
		c->errors++;
		return;
	}
	if (r->type == NBD_CMD_BLOCK_STATUS)
		return;
	stat_bump(&st->bytes[op], r->len_bytes);
	if (r->type == NBD_CMD_READ)
		c->bytes_read += r->len_bytes;
	else if (r->type == NBD_CMD_WRITE)
		c->bytes_written += r->len_bytes;
}

/*
 * A segment of a segmented READ's data: the simple reply's header before
 * the first, nothing before the others; with structured replies an
 * OFFSET_DATA chunk each, DONE on the last; with DF, one OFFSET_DATA chunk
 * for the whole request before the first, its data streamed.
 */
static void reply_encode_segment(struct req *q, bool last)
{
	const struct proto_session *s = &q->c->sess;

	q->reply_hdr_len = 0;
	if (!s->structured) {
		if (!q->seg_sent) {
			proto_encode_simple_reply(q->reply_hdr, NBD_SUCCESS, q->whole.cookie);
			q->reply_hdr_len = PROTO_SIMPLE_REPLY_LEN;
		}
	} else if (q->whole.flags & NBD_CMD_FLAG_DF) {
		if (!q->seg_sent) {
			size_t n = proto_encode_reply_hdr(s, q->reply_hdr, NBD_REPLY_FLAG_DONE,
							  NBD_REPLY_TYPE_OFFSET_DATA, q->whole.cookie,
							  q->whole.offset, 8 + q->whole.len_bytes);

			proto_put_u64(q->reply_hdr + n, q->whole.offset);
			q->reply_hdr_len = (uint32_t)n + 8;
		}
	} else {
		size_t n = proto_encode_reply_hdr(s, q->reply_hdr, last ? NBD_REPLY_FLAG_DONE : 0,
						  NBD_REPLY_TYPE_OFFSET_DATA, q->whole.cookie,
						  q->r.offset, 8 + q->r.len_bytes);

		proto_put_u64(q->reply_hdr + n, q->r.offset);
		q->reply_hdr_len = (uint32_t)n + 8;
	}
	q->reply_data = true;
	q->seg_sent = true;
}

/*
 * A READ that found its holes: OFFSET_DATA chunks for the data, OFFSET_HOLE
 * chunks for the holes (their bytes never sent), DONE on the last.
 */
static void reply_encode_pieces(struct req *q)
{
	const struct proto_session *s = &q->c->sess;
	const struct proto_extent *ext = (const struct proto_extent *)(void *)
		((uint8_t *)q->bounce.iov_base + REQ_BOUNCE_EXTENTS_OFF);
	struct reply_piece *pc = (struct reply_piece *)(void *)
		((uint8_t *)q->bounce.iov_base + REQ_BOUNCE_PIECES_OFF);
	uint8_t *hdrs = q->bounce.iov_base;
	uint64_t pos = q->r.offset, end = q->r.offset + q->r.len_bytes;
	uint32_t hoff = 0;
	size_t i = 0;
	unsigned n = 0;

	while (pos < end) {
		/* The next run: an extent's (clipped), or the rest as data past the last one. */
		bool hole = i < q->nextents && (ext[i].flags & NBD_STATE_HOLE);
		uint64_t len = i < q->nextents ? ext[i].len_bytes : end - pos;
		uint16_t flags;
		size_t h;

		if (len > end - pos)
			len = end - pos;
		/* Runs of one kind merge. */
		while (++i < q->nextents && !!(ext[i].flags & NBD_STATE_HOLE) == hole &&
		       pos + len < end) {
			len += ext[i].len_bytes;
			if (len > end - pos)
				len = end - pos;
		}
		flags = pos + len == end ? NBD_REPLY_FLAG_DONE : 0;
		if (hole) {
			h = proto_encode_reply_hdr(s, hdrs + hoff, flags, NBD_REPLY_TYPE_OFFSET_HOLE,
						   q->r.cookie, pos, 12);
			proto_put_u64(hdrs + hoff + h, pos);
			proto_put_u32(hdrs + hoff + h + 8, (uint32_t)len);
			pc[n] = (struct reply_piece){ hoff, (uint32_t)h + 12, 0, 0 };
			hoff += (uint32_t)h + 12;
		} else {
			h = proto_encode_reply_hdr(s, hdrs + hoff, flags, NBD_REPLY_TYPE_OFFSET_DATA,
						   q->r.cookie, pos, 8 + len);
			proto_put_u64(hdrs + hoff + h, pos);
			pc[n] = (struct reply_piece){ hoff, (uint32_t)h + 8,
						      (uint32_t)(q->plan.data_off + (pos - q->r.offset)),
						      (uint32_t)len };
			hoff += (uint32_t)h + 8;
		}
		n++;
		pos += len;
	}
	q->npieces = (uint16_t)n;
	q->reply_hdr_len = 0;
	q->reply_data = false;
}

void reply_queue(struct req *q)
{
	struct conn *c = q->c;
	bool has_data = false;

	log_debug("conn %" PRIu64 ": reply to %s cookie 0x%" PRIx64 ": %u", c->id,
		  proto_cmd_name(q->r.type), q->r.cookie, q->nbd_error);
	if (c->uq) {
		/* A ublk request: its data and result go back to the kernel. */
		req_set_state(q, REQ_REPLY);
		reply_count(q, &q->r);
		ublk_reply(q);
		return;
	}
	if (q->seg && q->r.type == NBD_CMD_READ && q->nbd_error == NBD_SUCCESS) {
		bool last = req_seg_last(q);

		req_set_state(q, last ? REQ_REPLY : REQ_SEG_REPLY);
		if (last)
			reply_count(q, &q->whole);
		reply_encode_segment(q, last);
	} else {
		/* A segmented request's one reply (a WRITE, or an error) is the whole request's. */
		if (q->seg)
			q->r = q->whole;
		req_set_state(q, REQ_REPLY);
		reply_count(q, &q->r);
		q->npieces = 0;
		if (q->plan.holes && q->nextents && q->nbd_error == NBD_SUCCESS &&
		    q->r.type == NBD_CMD_READ)
			reply_encode_pieces(q);
		else if (!q->reply_raw_len)
			q->reply_hdr_len = (uint32_t)proto_encode_reply(&c->sess, q->reply_hdr, &q->r,
									q->nbd_error, &has_data);
		q->reply_data = has_data;
	}
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
		if (sent && q->state == REQ_SEG_REPLY) {
			req_segment_sent(q); /* the next segment, under the same lock */
			continue;
		}
		if (sent)
			hist_observe(&st->duration[export_stat_op(q->r.type)], now - q->start_ns);
		req_recycle(q);
	}
}

/* The connection closes: recycle every reply not yet sent. */
static void reply_drop_all(struct conn *c)
{
	reply_recycle_sent(c, false);
	c->seg_stream = NULL;
	while (c->sendq_head) {
		struct req *q = c->sendq_head;

		c->sendq_head = q->next;
		req_recycle(q);
	}
	c->sendq_tail = NULL;
}

/* The cookie of the last reply in a sent list (for the debug log). */
static uint64_t last_cookie(const struct req *q)
{
	while (q && q->next)
		q = q->next;
	return q ? q->r.cookie : 0;
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
	log_debug("conn %" PRIu64 ": replies sent, up to cookie 0x%" PRIx64, c->id,
		  last_cookie(c->sending));
	reply_recycle_sent(c, true);
	reply_send(c);
}
