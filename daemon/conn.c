/*
 * Connections: life cycle and the handshake.
 *
 * A connection lives on one worker. Handshake I/O is exact: each step sends
 * or receives a known number of bytes (short transfers are resubmitted), and
 * option replies come from proto_negotiate(). Once an export is chosen, the
 * connection moves to transmit.c for good.
 *
 * A negotiation that has not chosen an export within the handshake timeout
 * is closed, so silent clients cannot hold connection slots.
 *
 * Closing is two-phase: conn_close() shuts the socket down, which makes any
 * recv or send in flight complete; the connection is freed by conn_put()
 * once no SQE names it or its requests (c->sqes == 0).
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon.h"

enum hs_step {
	HS_GREETING,
	HS_CLIENT_FLAGS,
	HS_OPT_HDR,
	HS_OPT_DATA,
	HS_OPT_SKIP,
	HS_REPLY,
};

#define HS_SKIP_CHUNK 65536

static atomic_uint_fast64_t conn_ids;
static uint8_t greeting[PROTO_GREETING_LEN];
static pthread_once_t greeting_once = PTHREAD_ONCE_INIT;

static void greeting_init(void)
{
	proto_encode_greeting(greeting);
}

static void conn_hs_io(struct conn *c, enum hs_step step, bool send, void *p, size_t len)
{
	struct io_uring_sqe *sqe = ring_get_sqe(c, c, OP_CONN_HS);

	c->hs_step = step;
	c->io_ptr = p;
	c->io_left = len;
	if (send)
		io_uring_prep_send(sqe, c->fd, p, len, MSG_NOSIGNAL | MSG_WAITALL);
	else
		io_uring_prep_recv(sqe, c->fd, p, len, MSG_WAITALL);
}

static bool hs_step_sends(enum hs_step step)
{
	return step == HS_GREETING || step == HS_REPLY;
}

static void conn_hs_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct conn *c = t->data;

	(void)loop;
	(void)revents;
	if (c->state != CONN_HANDSHAKE)
		return;
	log_info("conn %" PRIu64 ": no export chosen within %u s: closing", c->id,
		 c->w->srv->handshake_timeout_s);
	conn_close(c, NULL);
	conn_put(c);
}

void conn_new(struct worker *w, int fd)
{
	struct conn *c;
	unsigned i;

	c = aligned_alloc(64, (sizeof(*c) + 63) & ~(size_t)63);
	if (!c) {
		log_error("worker %d: out of memory for a new connection", w->id);
		close(fd);
		server_conn_gone(w->srv);
		return;
	}
	memset(c, 0, sizeof(*c));
	c->w = w;
	c->fd = fd;
	c->id = atomic_fetch_add(&conn_ids, 1) + 1;
	c->state = CONN_HANDSHAKE;
	for (i = CONN_MAX_REQS; i-- > 0;) {
		c->reqs[i].c = c;
		c->reqs[i].next = c->free_reqs;
		c->free_reqs = &c->reqs[i];
	}
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	__atomic_add_fetch(&w->nconns, 1, __ATOMIC_RELAXED);
	log_debug("conn %" PRIu64 ": accepted on worker %d", c->id, w->id);
	ev_timer_init(&c->hs_timer, conn_hs_timeout_cb, w->srv->handshake_timeout_s, 0.);
	c->hs_timer.data = c;
	if (w->srv->handshake_timeout_s)
		ev_timer_start(w->loop, &c->hs_timer);

	pthread_once(&greeting_once, greeting_init);
	conn_hs_io(c, HS_GREETING, true, greeting, sizeof(greeting));
}

void conn_close(struct conn *c, const char *why)
{
	if (c->state == CONN_CLOSING)
		return;
	if (why)
		log_debug("conn %" PRIu64 ": closing: %s", c->id, why);
	c->state = CONN_CLOSING;
	ev_timer_stop(c->w->loop, &c->hs_timer);
	worker_pool_unwait(c->w, c);
	/* Completes every recv/send in flight; file I/O finishes on its own. */
	shutdown(c->fd, SHUT_RDWR);
}

static void conn_free(struct conn *c)
{
	struct worker *w = c->w;
	unsigned i;

	for (i = 0; i < CONN_MAX_REQS; i++) {
		struct req *q = &c->reqs[i];

		/* Replies that were still queued: their I/O is done, their locks released. */
		assert(!q->locked);
		if (q->in_use)
			req_release_buffers(q, &w->pool);
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	__atomic_sub_fetch(&w->nconns, 1, __ATOMIC_RELAXED);
	close(c->fd);
	server_conn_gone(w->srv);
	export_put((struct export *)c->exp);
	free(c->hs_buf);
	free(c->hs_out.data);
	free(c->rxbuf);
	log_debug("conn %" PRIu64 ": closed", c->id);
	free(c);
	worker_pool_kick(w);
	if (w->stopping && w->nconns == 0)
		ev_break(w->loop, EVBREAK_ALL);
}

void conn_put(struct conn *c)
{
	if (c->state == CONN_CLOSING && c->sqes == 0)
		conn_free(c);
}


static void conn_hs_option(struct conn *c)
{
	const uint8_t *data = c->opt.len_bytes <= PROTO_OPTION_DATA_MAX ? c->hs_buf : NULL;
	struct proto_exports ex = {
		.lookup = server_export_lookup,
		.nth = server_export_nth,
		.ctx = c->w->srv,
		.shutting_down = c->w->srv->shutting_down,
	};
	int ret;

	if (!data && c->opt.len_bytes == 0)
		data = (const uint8_t *)"";
	c->hs_out.len = 0;
	/* The table may be replaced by a reload; not while this looks in it. */
	pthread_rwlock_rdlock(&c->w->srv->exports_lock);
	while ((ret = proto_negotiate(&c->sess, &ex, &c->opt, data,
				      &c->hs_out)) == -ENOBUFS) {
		size_t cap = c->hs_out.cap ? c->hs_out.cap * 2 : 4096;
		uint8_t *p = realloc(c->hs_out.data, cap);

		if (!p)
			break;
		c->hs_out.data = p;
		c->hs_out.cap = cap;
	}
	if (ret == 0 && c->sess.phase == PROTO_PHASE_TRANSMISSION) {
		c->exp = c->sess.export.opaque;
		export_get((struct export *)c->exp); /* ours until the connection goes */
	}
	pthread_rwlock_unlock(&c->w->srv->exports_lock);
	if (ret < 0) {
		conn_close(c, "negotiation failed");
		return;
	}
	log_debug("conn %" PRIu64 ": %s (%u bytes of data)", c->id,
		  proto_opt_name(c->opt.option), c->opt.len_bytes);
	if (c->hs_out.len) {
		conn_hs_io(c, HS_REPLY, true, c->hs_out.data, c->hs_out.len);
		return;
	}
	if (c->sess.phase == PROTO_PHASE_CLOSE) {
		if (c->opt.option == NBD_OPT_EXPORT_NAME)
			log_info("conn %" PRIu64 ": refused NBD_OPT_EXPORT_NAME \"%.*s\"", c->id,
				 c->opt.len_bytes > 64 || !data ? 64 : (int)c->opt.len_bytes,
				 data ? (const char *)data : "(too long)");
		conn_close(c, "negotiation ended");
	} else {
		conn_hs_io(c, HS_OPT_HDR, false, c->hs_hdr, sizeof(c->hs_hdr));
	}
}

static void conn_hs_opt_hdr(struct conn *c)
{
	uint32_t len;

	if (proto_decode_option(c->hs_hdr, &c->opt) < 0) {
		conn_close(c, "bad option magic");
		return;
	}
	len = c->opt.len_bytes;
	if (len > PROTO_OPTION_DATA_MAX) {
		if (c->opt.option == NBD_OPT_EXPORT_NAME) {
			conn_close(c, "export name too long");
			return;
		}
		c->skip_left = len;
		if (c->hs_cap < HS_SKIP_CHUNK) {
			uint8_t *p = realloc(c->hs_buf, HS_SKIP_CHUNK);

			if (!p) {
				conn_close(c, "out of memory for option data");
				return;
			}
			c->hs_buf = p;
			c->hs_cap = HS_SKIP_CHUNK;
		}
		conn_hs_io(c, HS_OPT_SKIP, false, c->hs_buf,
			   c->skip_left < HS_SKIP_CHUNK ? c->skip_left : HS_SKIP_CHUNK);
		return;
	}
	if (len == 0) {
		conn_hs_option(c);
		return;
	}
	if (c->hs_cap < len + 1) {
		uint8_t *p = realloc(c->hs_buf, len + 1);

		if (!p) {
			conn_close(c, "out of memory for option data");
			return;
		}
		c->hs_buf = p;
		c->hs_cap = len + 1;
	}
	conn_hs_io(c, HS_OPT_DATA, false, c->hs_buf, len);
}

static void conn_hs_step_done(struct conn *c)
{
	switch (c->hs_step) {
	case HS_GREETING:
		conn_hs_io(c, HS_CLIENT_FLAGS, false, c->hs_hdr, PROTO_CLIENT_FLAGS_LEN);
		break;
	case HS_CLIENT_FLAGS:
		if (proto_session_start(&c->sess, c->hs_hdr) < 0) {
			conn_close(c, "client sent unknown flags");
			return;
		}
		conn_hs_io(c, HS_OPT_HDR, false, c->hs_hdr, sizeof(c->hs_hdr));
		break;
	case HS_OPT_HDR:
		conn_hs_opt_hdr(c);
		break;
	case HS_OPT_DATA:
		c->hs_buf[c->opt.len_bytes] = 0;
		conn_hs_option(c);
		break;
	case HS_OPT_SKIP:
		c->skip_left -= HS_SKIP_CHUNK < c->skip_left ? HS_SKIP_CHUNK : c->skip_left;
		if (c->skip_left)
			conn_hs_io(c, HS_OPT_SKIP, false, c->hs_buf,
				   c->skip_left < HS_SKIP_CHUNK ? c->skip_left : HS_SKIP_CHUNK);
		else
			conn_hs_option(c);
		break;
	case HS_REPLY:
		if (c->sess.phase == PROTO_PHASE_TRANSMISSION)
			conn_transmit_start(c);
		else if (c->sess.phase == PROTO_PHASE_CLOSE)
			conn_close(c, "negotiation ended");
		else
			conn_hs_io(c, HS_OPT_HDR, false, c->hs_hdr, sizeof(c->hs_hdr));
		break;
	default:
		assert(0);
	}
}

void conn_hs_done(struct conn *c, int res)
{
	if (c->state == CONN_CLOSING)
		return;
	if (res <= 0) {
		conn_close(c, res == 0 ? "client closed during handshake" : strerror(-res));
		return;
	}
	assert((size_t)res <= c->io_left);
	c->io_ptr += res;
	c->io_left -= (size_t)res;
	if (c->io_left) {
		/* Short transfer: the rest of the same step. */
		conn_hs_io(c, (enum hs_step)c->hs_step, hs_step_sends(c->hs_step), c->io_ptr,
			   c->io_left);
		return;
	}
	conn_hs_step_done(c);
}
