// SPDX-License-Identifier: BSD-3-Clause
/*
 * Connections: life cycle on their worker, and the accounting of their ops.
 *
 * A connection is created for an accepted socket (conns_adopt), negotiates
 * (handshake.c), serves requests (rx.c and on), and closes in two phases:
 * conn_close() shuts the socket down, which makes any receive or send in
 * flight complete; the connection is freed once no conn_op of it is pending
 * (c->pending == 0), checked after every op has run. So every SQE, lock
 * wait, cache wait and post that names a connection or one of its requests
 * is counted from the moment it is queued until its fn has run.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "conn_int.h"

static atomic_uint_fast64_t conn_ids;

static void conn_free(struct conn *c)
{
	struct worker *w = c->w;
	unsigned i;

	throttle_release(&c->thr);
	for (i = 0; i < c->reqs_fresh; i++) {
		struct req *q = &c->area->reqs[i];

		/* Nothing is pending, so no request is locked or doing I/O. */
		assert(!req_locked(q));
		if (q->state != REQ_FREE)
			req_recycle(q);
	}
	assert(c->acct.held == 0 && !c->buf_wait.queued && !c->buf_wait.promised);
	if (c->prev)
		c->prev->next = c->next;
	else
		w->clients->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	worker_timer_stop(w, &c->hs_timer);
	worker_timer_stop(w, &c->watchdog);
	worker_timers_unreserve(w, CONN_TIMERS);
	if (c->uq) {
		w->nattached--;
		ublk_queue_closed(c);
	} else {
		atomic_fetch_sub_explicit(&w->nconns, 1, memory_order_relaxed);
		close(c->fd);
		if (c->fd_out != c->fd)
			close(c->fd_out);
		conn_host.conn_gone(conn_host.ctx, &c->key);
	}
	if (c->exp)
		stat_bump(&c->exp->ctr->slot[w->id].conns[c->transport], (uint64_t)-1);
	if (c->result != CONN_RESULT_SERVED)
		stat_add(&w->stats.results[c->result >= 0 ? c->result :
					   c->hs_refusals_logged ? CONN_RESULT_REFUSED :
					   CONN_RESULT_ENDED], 1);
	export_put((struct export *)c->exp);
	free(c->hs_buf);
	free(c->hs_out.data);
	tls_conn_free(c);
	if (c->area)
		munmap(c->area, sizeof(*c->area));
	log_debug("conn %" PRIu64 ": closed", c->id);
	free(c);
}

/* A cancel's own completion: the ops it cancelled say what happened. */
static void conn_cancel_done(struct conn_op *o, int res)
{
	(void)o;
	(void)res;
}

/*
 * MSG_WAITALL for a receive, where the socket takes it: vsock refuses one
 * longer than its receive buffer (256 KiB by default) with ENOMEM, so there
 * a receive may end short, as every caller allows.
 */
static int conn_waitall(const struct conn *c)
{
	return c->key.family == AF_VSOCK ? 0 : MSG_WAITALL;
}

void conn_prep_recv(struct io_uring_sqe *sqe, const struct conn *c, void *buf, size_t len,
		    bool waitall)
{
	if (c->stream)
		io_uring_prep_read(sqe, c->fd, buf, (unsigned)len, (uint64_t)-1);
	else
		io_uring_prep_recv(sqe, c->fd, buf, len, waitall ? conn_waitall(c) : 0);
}

void conn_prep_recvmsg(struct io_uring_sqe *sqe, const struct conn *c, struct msghdr *m)
{
	if (c->stream)
		io_uring_prep_readv(sqe, c->fd, m->msg_iov, (unsigned)m->msg_iovlen, (uint64_t)-1);
	else
		io_uring_prep_recvmsg(sqe, c->fd, m, conn_waitall(c));
}

void conn_prep_send(struct io_uring_sqe *sqe, const struct conn *c, const void *buf, size_t len)
{
	if (c->stream)
		io_uring_prep_write(sqe, c->fd_out, buf, (unsigned)len, (uint64_t)-1);
	else
		io_uring_prep_send(sqe, c->fd, buf, len, MSG_NOSIGNAL | MSG_WAITALL);
}

void conn_prep_sendmsg(struct io_uring_sqe *sqe, const struct conn *c, struct msghdr *m)
{
	if (c->stream)
		io_uring_prep_writev(sqe, c->fd_out, m->msg_iov, (unsigned)m->msg_iovlen,
				     (uint64_t)-1);
	else
		io_uring_prep_sendmsg(sqe, c->fd, m, MSG_NOSIGNAL | MSG_WAITALL);
}

void conn_recv(struct conn_op *o, void *buf, size_t len, bool waitall)
{
	struct iovec v = { buf, len };

	if (o->c->tls) {
		tls_recv(o, &v, 1, waitall);
		return;
	}
	conn_prep_recv(conn_sqe(o), o->c, buf, len, waitall);
}

void conn_recvmsg(struct conn_op *o, struct msghdr *m)
{
	if (o->c->tls) {
		tls_recv(o, m->msg_iov, (unsigned)m->msg_iovlen, true);
		return;
	}
	conn_prep_recvmsg(conn_sqe(o), o->c, m);
}

void conn_send(struct conn_op *o, const void *buf, size_t len)
{
	struct iovec v = { (void *)buf, len };

	if (o->c->tls) {
		tls_send(o, &v, 1);
		return;
	}
	conn_prep_send(conn_sqe(o), o->c, buf, len);
}

void conn_sendmsg(struct conn_op *o, struct msghdr *m)
{
	if (o->c->tls) {
		tls_send(o, m->msg_iov, (unsigned)m->msg_iovlen);
		return;
	}
	conn_prep_sendmsg(conn_sqe(o), o->c, m);
}

const char *conn_peer_name(const struct conn *c, char *buf, size_t len)
{
	if (c->uq)
		ublk_queue_name(c, buf, len);
	else if (c->stream)
		snprintf(buf, len, "stdin/stdout");
	else if (c->key.family == AF_UNIX && c->peer.cred)
		snprintf(buf, len, "uid %u gid %u pid %d", c->key.uid, c->peer.gid, (int)c->peer.pid);
	else if (c->key.family == AF_INET || c->key.family == AF_INET6) {
		char a[64];

		client_name(&c->key, a, sizeof(a));
		snprintf(buf, len, "%s:%u", a, c->peer.port);
	} else if (c->key.family == AF_VSOCK)
		snprintf(buf, len, "vsock cid %u port %u", c->key.cid, c->peer.port);
	else
		snprintf(buf, len, "unknown peer");
	return buf;
}

static void conn_op_done(struct op *op, int res)
{
	struct conn_op *o = container_of(op, struct conn_op, op);
	struct conn *c = o->c;

	assert(c->pending > 0);
	c->pending--;
	o->fn(o, res);
	if (c->state == CONN_CLOSING && c->pending == 0)
		conn_free(c);
}

void conn_op_init(struct conn_op *o, struct conn *c, void (*fn)(struct conn_op *, int))
{
	o->op.done = conn_op_done;
	o->op.next = NULL;
	o->c = c;
	o->fn = fn;
}

struct io_uring_sqe *conn_sqe(struct conn_op *o)
{
	o->c->pending++;
	return worker_sqe(o->c->w, &o->op);
}

void conn_post(struct conn_op *o, int res)
{
	o->c->pending++;
	worker_post(o->c->w, &o->op, res);
}

void conn_expect(struct conn_op *o)
{
	o->c->pending++;
}

void conn_close(struct conn *c, const char *why)
{
	if (c->state == CONN_CLOSING)
		return;
	if (why)
		log_debug("conn %" PRIu64 ": closing: %s", c->id, why);
	c->state = CONN_CLOSING;
	rx_throttle_cancel(c); /* a request waiting for its limits goes */
	c->rx = RX_STOPPED;
	worker_timer_stop(c->w, &c->hs_timer);
	worker_timer_stop(c->w, &c->watchdog);
	/* A request waiting for buffers is told so (its op then recycles it). */
	worker_pool_cancel(c->w, &c->buf_wait);
	/* A receive or send waiting inside TLS for the socket ends too. */
	tls_conn_closing(c);
	/* Completes every receive and send in flight; file I/O finishes on its own. */
	if (c->handover || c->uq) {
		/*
		 * Parked and handed over: the socket lives on elsewhere; only our fd
		 * closes. A ublk queue has no socket: it closes once its fetches ended.
		 */
	} else if (!c->stream) {
		shutdown(c->fd, SHUT_RDWR);
	} else {
		/* Pipes cannot be shut down: cancel what waits on them. */
		conn_op_init(&c->shut_op, c, conn_cancel_done);
		io_uring_prep_cancel_fd(conn_sqe(&c->shut_op), c->fd, IORING_ASYNC_CANCEL_ALL);
		if (c->fd_out != c->fd) {
			io_uring_prep_cancel_fd(conn_sqe(&c->shut_op), c->fd_out,
						IORING_ASYNC_CANCEL_ALL);
		}
	}
	/* Whatever is pending or not, the free is checked from the loop, not here. */
	conn_post(&c->close_op, 0);
}

void conn_close_if_idle(struct conn *c)
{
	if (c->live_reqs)
		return;
	if (c->state == CONN_DRAINING)
		conn_close(c, "client disconnected (NBD_CMD_DISC)");
	else if (c->state == CONN_STOPPING)
		conn_close(c, "server shutting down");
}

/*
 * Gives the area's pages back when the connection has been quiet long
 * enough: no request, nothing sent, nothing buffered, and only a quiet
 * receive in flight (which writes nowhere past CONN_RX_QUIET_BYTES).
 * The caller saw CONN_QUIET_NS pass since bytes last came in.
 */
static void conn_area_release(struct conn *c)
{
	uint8_t *from = c->area->rxbuf + CONN_RX_QUIET_BYTES;

	if (c->area_quiet || c->live_reqs || c->sending || c->rx != RX_RECV || c->rx_end)
		return;
	if (!c->rx_quiet) {
		/* Posted while busy, it may write anywhere: rx.c replaces it with a quiet one. */
		if (!c->rx_cancelling) {
			c->rx_cancelling = true;
			if (c->tls) {
				/* Not an SQE: TLS ends it if nothing was decrypted into it yet. */
				if (!tls_cancel_recv(c, &c->rx_op))
					c->rx_cancelling = false;
			} else {
				conn_op_init(&c->cancel_op, c, conn_cancel_done);
				io_uring_prep_cancel(conn_sqe(&c->cancel_op), &c->rx_op.op, 0);
			}
		}
		return;
	}
	if (madvise(from, (size_t)((uint8_t *)(c->area + 1) - from), MADV_DONTNEED) < 0)
		return;
	/* The slots read as zeroes now: free and never used. */
	c->free_reqs = NULL;
	c->reqs_fresh = 0;
	c->area_quiet = true;
}

/*
 * When a watchdog rule counting len_ns from since_ns must be looked at
 * next. Not yet due: when it is. Due but not in force (nothing moving, a
 * request in flight): if only a fresh stamp can bring it into force (a
 * send or payload starting stamps last_progress, bytes coming in stamp
 * last_active, and a stamp pulls the watchdog in: conn_int.h), never;
 * otherwise (a request that ends stamps nothing) CONN_RECHECK_NS from now.
 */
static uint64_t conn_rule_due(uint64_t since_ns, uint64_t len_ns, uint64_t now,
			      bool stamped_to_apply)
{
	if (since_ns + len_ns > now)
		return since_ns + len_ns;
	return stamped_to_apply ? TIMER_NEVER : now + CONN_RECHECK_NS;
}

/*
 * The watchdog, one timer per connection on its worker's clock: a reply
 * batch or a payload that has not moved for io-timeout, or a connection
 * with nothing in flight that has sent nothing for idle-timeout, is
 * closed; its buffers come back as its ops complete. A quiet connection
 * gives its area's pages back. The timer is armed for the earliest moment
 * any rule could apply, so each fires when due, not at a tick after it,
 * and left unarmed when none can without a fresh stamp.
 */
static void conn_watchdog_fire(struct timer *t)
{
	struct conn *c = container_of(t, struct conn, watchdog);
	uint64_t now = worker_now(c->w), io_ns = c->progress_len_ns,
		 idle_ns = conn_host.idle_timeout_s * 1000000000ull, due = TIMER_NEVER;
	bool moving = c->sending || c->rx == RX_PAYLOAD || c->rx == RX_SKIP;
	bool idle = !c->live_reqs && c->rx == RX_RECV;

	if (c->state == CONN_CLOSING)
		return;
	if (c->stop_by_ns && now >= c->stop_by_ns) {
		log_info("conn %" PRIu64 ": still busy %d s after a disconnect: closing", c->id,
			 WORKER_STOP_GRACE_S);
		conn_close(c, NULL);
		return;
	}
	if (io_ns && moving && now - c->last_progress_ns >= io_ns) {
		log_info("conn %" PRIu64 ": %s made no progress for %u s (io-timeout): closing",
			 c->id, c->sending ? "a reply" : "a WRITE payload", conn_host.io_timeout_s);
		stat_add(&c->w->stats.io_timeouts, 1);
		conn_close(c, NULL);
		return;
	}
	if (idle_ns && idle && now - c->last_active_ns >= idle_ns) {
		log_info("conn %" PRIu64 ": idle for %u s (idle-timeout): closing", c->id,
			 conn_host.idle_timeout_s);
		conn_close(c, NULL);
		return;
	}
	if (now - c->last_active_ns >= CONN_QUIET_NS)
		conn_area_release(c);

	if (c->stop_by_ns)
		due = c->stop_by_ns;
	if (io_ns)
		due = min_u64(due, conn_rule_due(c->last_progress_ns, io_ns, now, true));
	if (idle_ns)
		due = min_u64(due, conn_rule_due(c->last_active_ns, idle_ns, now, false));
	due = min_u64(due, conn_rule_due(c->last_active_ns, CONN_QUIET_NS, now, c->area_quiet));
	/* A quiet connection with no timeout to keep wakes its worker no more. */
	if (due != TIMER_NEVER)
		worker_timer_at(c->w, &c->watchdog, due);
}

int conn_transmit_start(struct conn *c)
{
	const struct conn_host *h = &conn_host;
	void *area;

	area = mmap(NULL, sizeof(*c->area), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		    -1, 0);
	if (area == MAP_FAILED)
		return -errno;
	c->area = area;
	c->rxbuf = c->area->rxbuf;
	c->progress_len_ns = h->io_timeout_s * 1000000000ull;
	c->active_len_ns = h->idle_timeout_s && h->idle_timeout_s * 1000000000ull < CONN_QUIET_NS ?
			   h->idle_timeout_s * 1000000000ull : CONN_QUIET_NS;
	conn_progress(c);
	conn_active(c);
	/* Its first look works out when the rules are due. */
	worker_timer_in(c->w, &c->watchdog, 0);
	return 0;
}

static void conn_closed(struct conn_op *o, int res)
{
	(void)o;
	(void)res; /* conn_op_done frees the connection once nothing else is pending */
}

struct conn *conn_attach(struct worker *w, struct export *e, enum transport t)
{
	struct conn *c = calloc(1, sizeof(*c));
	void *area;

	if (!c || worker_timers_reserve(w, CONN_TIMERS) < 0) {
		free(c);
		export_put(e);
		return NULL;
	}
	area = mmap(NULL, sizeof(*c->area), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		    -1, 0);
	if (area == MAP_FAILED) {
		worker_timers_unreserve(w, CONN_TIMERS);
		free(c);
		export_put(e);
		return NULL;
	}
	c->w = w;
	c->fd = c->fd_out = -1;
	c->id = atomic_fetch_add_explicit(&conn_ids, 1, memory_order_relaxed) + 1;
	c->area = area;
	c->rxbuf = c->area->rxbuf;
	c->started_ns = now_ns();
	c->result = CONN_RESULT_SERVED;
	c->exp = e;
	c->transport = t;
	c->sess.phase = PROTO_PHASE_TRANSMISSION;
	export_describe(e, &c->sess.export);
	c->sess.tflags = e->tflags;
	c->state = CONN_TRANSMIT;
	c->rx = RX_IDLE;
	conn_op_init(&c->close_op, c, conn_closed);
	conn_op_init(&c->resume_op, c, NULL);
	timer_init(&c->watchdog, NULL);
	timer_init(&c->hs_timer, NULL);
	timer_init(&c->thr_timer, NULL);
	throttle_init(&c->thr);
	c->thr_gen = UINT_MAX;
	c->last_progress_ns = c->last_active_ns = worker_now(w);
	c->next = w->clients->conns;
	if (c->next)
		c->next->prev = c;
	w->clients->conns = c;
	w->nattached++;
	stat_bump(&e->ctr->slot[w->id].conns[t], 1);
	conns_watch_arm(w);
	return c;
}

void conn_forget(struct conn *c)
{
	assert(!c->live_reqs);
	throttle_release(&c->thr);
	export_put((struct export *)c->exp);
	munmap(c->area, sizeof(*c->area));
	free(c);
}

static void conns_adopt(struct worker *w, const struct client *cl)
{
	struct conn *c;

	c = calloc(1, sizeof(*c));
	if (!c || worker_timers_reserve(w, CONN_TIMERS) < 0) {
		free(c);
		log_error("worker %d: out of memory for a new connection", w->id);
		close(cl->fd);
		if (cl->fd_out != cl->fd)
			close(cl->fd_out);
		conn_host.conn_gone(conn_host.ctx, &cl->key);
		return;
	}
	c->w = w;
	c->fd = cl->fd;
	c->fd_out = cl->fd_out;
	c->stream = cl->stream;
	c->key = cl->key;
	c->peer = cl->peer;
	if (cl->resume) {
		uint64_t seen = atomic_load(&conn_ids);

		/* Its old id, and new ones after every id handed over. */
		c->id = cl->resume->id;
		while (seen < c->id && !atomic_compare_exchange_weak(&conn_ids, &seen, c->id))
			;
	} else {
		c->id = atomic_fetch_add_explicit(&conn_ids, 1, memory_order_relaxed) + 1;
	}
	c->state = CONN_HANDSHAKE;
	c->rx = RX_STOPPED;
	c->started_ns = now_ns();
	c->result = -1;
	conn_op_init(&c->close_op, c, conn_closed);
	timer_init(&c->watchdog, conn_watchdog_fire);
	timer_init(&c->hs_timer, NULL);  /* handshake.c sets it up if it negotiates */
	timer_init(&c->thr_timer, NULL); /* rx.c's, when a request is throttled */
	throttle_init(&c->thr);
	c->thr_gen = UINT_MAX;           /* the export's connection limits not copied yet */
	c->next = w->clients->conns;
	if (c->next)
		c->next->prev = c;
	w->clients->conns = c;
	atomic_fetch_add_explicit(&w->nconns, 1, memory_order_relaxed);
	conns_watch_arm(w);
	if (cl->resume) {
		struct conn_resume *r = cl->resume;

		/* Handed over in transmission: it goes on where it stopped. */
		c->sess = r->sess;
		c->exp = r->exp;
		c->transport = transport_of(c->key.family);
		stat_bump(&c->exp->ctr->slot[w->id].conns[c->transport], 1);
		c->result = CONN_RESULT_SERVED;
		log_info("conn %" PRIu64 ": adopted on worker %d, fd %d: export \"%s\", %zu bytes "
			 "received and not parsed yet", c->id, w->id, c->fd, c->exp->name, r->npending);
		/* A hand-over under way on this worker takes it too: parked, it does not receive. */
		c->handover = w->clients->handover_done != NULL;
		rx_start_resumed(c, r->pending, r->npending);
		free(r->pending);
		free(r);
		return;
	}
	{
		char who[96];

		log_info("conn %" PRIu64 ": from %s (worker %d)", c->id,
			 conn_peer_name(c, who, sizeof(who)), w->id);
	}
	handshake_start(c);
}

/* ---- hand-over (handover.c drives it from the main thread) ---- */

static atomic_uint handover_closed_tls, handover_closed_negotiating; /* this process's hand-over */

static bool conn_parked(const struct conn *c)
{
	if (c->uq)
		return true; /* a ublk queue goes on until the exec, and the next process recovers it */
	return c->handover && c->state == CONN_TRANSMIT && c->rx == RX_IDLE && !c->live_reqs &&
	       !c->sending && !c->sendq_head && !c->pending;
}

static void handover_check_fire(struct timer *t)
{
	struct worker_clients *wc = container_of(t, struct worker_clients, handover_check);
	struct worker *w = wc->w;
	struct op *done;
	struct conn *c, *next;
	bool all = true;

	for (c = w->clients->conns; c && all; c = c->next)
		all = conn_parked(c);
	if (!all && worker_now(w) - wc->handover_since_ns < WORKER_STOP_GRACE_NS) {
		worker_timer_in(w, t, HANDOVER_CHECK_NS);
		return;
	}
	if (!all) {
		/* Still busy after the grace period: closed; the rest go on. */
		for (c = w->clients->conns; c; c = next) {
			next = c->next;
			if (!conn_parked(c) && c->state != CONN_CLOSING) {
				log_info("conn %" PRIu64 ": still busy %d s into a restart (state %d, "
					 "receive %d%s, %u requests, %s, %u ops pending): closing", c->id,
					 WORKER_STOP_GRACE_S, (int)c->state, (int)c->rx,
					 c->rx_cancelling ? " cancelling" : "", c->live_reqs,
					 c->sending || c->sendq_head ? "replies unsent" : "replies sent",
					 c->pending);
				conn_close(c, NULL);
			}
		}
		for (c = w->clients->conns; c; c = c->next) {
			if (!conn_parked(c)) {
				/* The closing ones are freed as their ops end. */
				worker_timer_in(w, t, HANDOVER_CHECK_NS);
				return;
			}
		}
	}
	done = wc->handover_done;
	wc->handover_done = NULL;
	worker_post(w, done, 0);
}

void conns_handover(struct worker *w, struct op *done)
{
	struct conn *c, *next;

	for (c = w->clients->conns; c; c = next) {
		next = c->next;
		if (c->uq)
			continue;
		if (c->state == CONN_HANDSHAKE) {
			/* Mid-negotiation there is no state worth handing over: it reconnects. */
			log_info("conn %" PRIu64 ": negotiating during a restart: closing", c->id);
			atomic_fetch_add(&handover_closed_negotiating, 1);
			conn_close(c, NULL);
		} else if (c->state == CONN_TRANSMIT && (c->tls || c->stream)) {
			/* GnuTLS cannot hand over its record state: answered, then closed. */
			log_info("conn %" PRIu64 ": TLS cannot be handed over: closing once its "
				 "requests are answered (the client must reconnect)", c->id);
			atomic_fetch_add(&handover_closed_tls, 1);
			c->state = CONN_STOPPING;
			conn_close_if_idle(c);
		} else if (c->state == CONN_TRANSMIT) {
			c->handover = true;
			/* A receive in flight ends (what it got stays in the buffer, unparsed). */
			if (c->rx == RX_RECV && !c->rx_cancelling) {
				c->rx_cancelling = true;
				conn_op_init(&c->cancel_op, c, conn_cancel_done);
				io_uring_prep_cancel(conn_sqe(&c->cancel_op), &c->rx_op.op, 0);
			}
		}
	}
	w->clients->handover_done = done;
	w->clients->handover_since_ns = worker_now(w);
	worker_timer_in(w, &w->clients->handover_check, HANDOVER_CHECK_NS);
}

int conns_parked(struct worker *w, struct conn_parked **out)
{
	struct conn *c;
	int n = 0, i = 0;

	for (c = w->clients->conns; c; c = c->next)
		n++;
	*out = calloc(n ? (size_t)n : 1, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	for (c = w->clients->conns; c; c = c->next) {
		struct conn_parked *p = &(*out)[i];

		if (c->uq || !conn_parked(c))
			continue;
		p->fd = c->fd;
		p->id = c->id;
		p->exp = (struct export *)c->exp;
		export_get(p->exp);
		p->sess = c->sess;
		p->key = c->key;
		p->peer = c->peer;
		p->npending = c->rx_end - c->rx_start;
		p->pending = malloc(p->npending ? p->npending : 1);
		if (!p->pending) {
			export_put(p->exp);
			continue;
		}
		memcpy(p->pending, c->rxbuf + c->rx_start, p->npending);
		i++;
	}
	return i;
}

void conns_unpark(struct worker *w)
{
	struct conn *c;

	worker_timer_stop(w, &w->clients->handover_check);
	w->clients->handover_done = NULL;
	for (c = w->clients->conns; c; c = c->next) {
		if (!c->handover)
			continue;
		c->handover = false;
		if (c->state == CONN_TRANSMIT && c->rx == RX_IDLE)
			rx_next(c);
	}
}

void conns_handover_closed(unsigned *tls, unsigned *negotiating)
{
	*tls = atomic_load(&handover_closed_tls);
	*negotiating = atomic_load(&handover_closed_negotiating);
}
static void conns_stop(struct worker *w)
{
	struct conn *c;

	/*
	 * Graceful: negotiations get ERR_SHUTDOWN on their next option;
	 * connections finish their requests (new ones get ESHUTDOWN) and
	 * close when idle; the grace timer closes the rest.
	 */
	for (c = w->clients->conns; c; c = c->next) {
		/* A ublk queue ends when its device is removed (ublk_detach), not here. */
		if (c->state != CONN_TRANSMIT || c->uq)
			continue;
		c->state = CONN_STOPPING;
		conn_close_if_idle(c);
	}
}

int conns_report(struct worker *w, struct conn_info **out)
{
	unsigned n = 0, i = 0;
	uint64_t now = now_ns();
	struct conn_info *a;
	struct conn *c;

	for (c = w->clients->conns; c; c = c->next)
		n++;
	*out = NULL;
	a = calloc(n ? n : 1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	for (c = w->clients->conns; c && i < n; c = c->next, i++) {
		struct conn_info *ci = &a[i];
		const char *ident = c->tls ? tls_conn_identity(c) : NULL;

		ci->id = c->id;
		ci->exp = (struct export *)c->exp;
		if (ci->exp)
			export_get(ci->exp);
		conn_peer_name(c, ci->peer, sizeof(ci->peer));
		ci->tls = c->tls && tls_conn_up(c);
		ci->tls_identity = ident ? strdup(ident) : NULL;
		ci->state = c->state == CONN_HANDSHAKE ? "negotiating" :
			    c->state == CONN_TRANSMIT ? "serving" : "closing";
		ci->worker = w->id;
		ci->age_s = (double)(now - c->started_ns) / 1e9;
		ci->in_flight = c->live_reqs;
		ci->requests = c->requests;
		ci->errors = c->errors;
		ci->bytes_read = c->bytes_read;
		ci->bytes_written = c->bytes_written;
	}
	*out = a;
	return (int)i;
}

unsigned conns_disconnect(struct worker *w, uint64_t id, const char *export)
{
	unsigned n = 0;
	struct conn *c;

	for (c = w->clients->conns; c; c = c->next) {
		if ((id && c->id != id) || (export && (!c->exp || strcmp(c->exp->name, export))))
			continue;
		if (c->uq)
			continue; /* a ublk device's queue: ublk-remove ends it */
		if (c->state == CONN_CLOSING)
			continue;
		n++;
		log_info("conn %" PRIu64 ": disconnected by the control socket%s", c->id,
			 c->live_reqs ? " once its requests are done" : "");
		if (c->state != CONN_TRANSMIT) {
			/* Negotiating, draining or stopping already: nothing to wait for. */
			if (c->state == CONN_HANDSHAKE)
				conn_close(c, "disconnected by the control socket");
			continue;
		}
		c->state = CONN_STOPPING;
		c->stop_by_ns = worker_now(w) + WORKER_STOP_GRACE_NS;
		conn_watchdog_by(c, c->stop_by_ns);
		conn_close_if_idle(c);
	}
	return n;
}

static void conns_close_all(struct worker *w)
{
	struct conn *c;

	for (c = w->clients->conns; c; c = c->next)
		if (!c->uq)
			conn_close(c, "server shut down: grace period over");
}

/* ---- a worker's clients are connections: the table the worker calls ---- */

struct conn_host conn_host;

void conns_init(const struct conn_host *host)
{
	conn_host = *host;
}

static int conns_worker_init(struct worker *w)
{
	struct worker_clients *wc = calloc(1, sizeof(*wc));

	if (!wc || worker_timers_reserve(w, CONNS_WORKER_TIMERS) < 0) {
		free(wc);
		return -ENOMEM;
	}
	wc->w = w;
	timer_init(&wc->watch, conns_watch_fire);
	timer_init(&wc->handover_check, handover_check_fire);
	w->clients = wc;
	return 0;
}

static void conns_worker_fini(struct worker *w)
{
	struct worker_clients *wc = w->clients;

	if (!wc)
		return;
	worker_timer_stop(w, &wc->watch);
	worker_timer_stop(w, &wc->handover_check);
	worker_timers_unreserve(w, CONNS_WORKER_TIMERS);
	free(wc);
	w->clients = NULL;
}

static void conns_dropped(const struct client *cl)
{
	conn_host.conn_gone(conn_host.ctx, &cl->key);
}

const struct worker_clients_ops conns_worker_ops = {
	.init = conns_worker_init,
	.fini = conns_worker_fini,
	.adopt = conns_adopt,
	.dropped = conns_dropped,
	.stop = conns_stop,
	.close_all = conns_close_all,
};
