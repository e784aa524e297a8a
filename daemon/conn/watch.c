// SPDX-License-Identifier: BSD-3-Clause
/*
 * The worker watches its own requests: once a second it finds the oldest
 * request in flight on its connections, publishes when it began (a
 * per-worker gauge that metrics.c turns into an age, for
 * uringnbd_oldest_request_seconds and uringnbdctl stats), and warns, rate
 * limited, about one older than CONN_WATCH_WARN_S: which connection,
 * command, offset and length, and the state it waits in. A request the
 * daemon forgot to answer is then seen in the log and on a dashboard, not
 * only by the client that waits for it. With an io-timeout, a connection
 * whose request has waited that long for its storage (a cluster that does
 * not answer, a disk that hangs) is closed: its client sees the end and
 * may retry elsewhere, instead of waiting as long as the storage does. The
 * call itself stays in flight, and the connection's buffers with it,
 * until the storage answers.
 *
 * It is a timer of the worker's (engine/timer.h), armed while the worker
 * has connections, and reads only the worker's own connections; other
 * threads see the one atomic it stores.
 */
#define _GNU_SOURCE
#include <inttypes.h>

#include "conn_int.h"

#define CONN_WATCH_NS 1000000000ull /* how often the requests are looked at */
#define CONN_WATCH_WARN_S 10   /* a request this old is logged */

static const char *const req_state_names[REQ_NSTATES] = {
	[REQ_FREE] = "free", [REQ_NEW] = "new", [REQ_BUFFERS] = "waiting for buffers",
	[REQ_PAYLOAD] = "receiving its payload", [REQ_SKIP] = "discarding its payload",
	[REQ_LOCK_WAIT] = "waiting for its range lock", [REQ_LOCKED] = "locked",
	[REQ_BITMAP] = "waiting for dirty-bitmap bits", [REQ_RMW] = "reading edge blocks",
	[REQ_IO] = "storage I/O", [REQ_FALLOC] = "trim or zero", [REQ_ZERO_WRITE] = "writing zeroes",
	[REQ_SYNC] = "sync after FUA", [REQ_CACHED] = "page cache", [REQ_EXTENTS] = "extent query",
	[REQ_SEG_REPLY] = "sending a segment", [REQ_SEG_PAYLOAD] = "receiving a segment",
	[REQ_FLUSH] = "flush", [REQ_REPLY] = "replying", [REQ_THROTTLED] = "throttled",
};

static const char *const rx_state_names[] = {
	[RX_IDLE] = "idle", [RX_RECV] = "receiving", [RX_PAYLOAD] = "a payload",
	[RX_SKIP] = "skipping", [RX_WAIT_SLOT] = "waiting for a slot",
	[RX_WAIT_BUFFERS] = "waiting for buffers", [RX_STREAM] = "a segmented write",
	[RX_WAIT_THROTTLE] = "throttled",
	[RX_STOPPED] = "stopped",
};

static struct log_limit watch_limit;

/* Waiting for its storage (not for the client, nor for another request). */
static bool conn_req_in_storage(const struct req *q)
{
	switch (q->state) {
	case REQ_RMW:
	case REQ_IO:
	case REQ_FALLOC:
	case REQ_ZERO_WRITE:
	case REQ_SYNC:
	case REQ_CACHED:
	case REQ_EXTENTS:
	case REQ_FLUSH:
		return true;
	default:
		return false;
	}
}

void conns_watch_fire(struct timer *t)
{
	struct worker_clients *wc = container_of(t, struct worker_clients, watch);
	struct worker *w = wc->w;
	const struct req *old = NULL;
	uint64_t now = now_ns(); /* request ages are now_ns() differences */
	uint64_t io_ns = (uint64_t)conn_host.io_timeout_s * 1000000000ull;
	struct conn *c;
	unsigned i;

	if (wc->conns)
		worker_timer_in(w, &wc->watch, CONN_WATCH_NS);
	for (c = wc->conns; c; c = c->next) {
		const struct req *stuck = NULL;

		if (!c->live_reqs || !c->area)
			continue;
		for (i = 0; i < c->reqs_fresh; i++) {
			const struct req *q = &c->area->reqs[i];

			if (q->state != REQ_FREE && (!old || q->start_ns < old->start_ns))
				old = q;
			if (io_ns && conn_req_in_storage(q) && now - q->start_ns >= io_ns)
				stuck = q;
		}
		if (stuck && c->state != CONN_CLOSING) {
			log_warn("conn %" PRIu64 ": %s offset %" PRIu64 " unanswered by its storage "
				 "for %.1f s (%s; io-timeout %u s): closing the connection", c->id,
				 proto_cmd_name(stuck->r.type), stuck->r.offset,
				 (double)(now - stuck->start_ns) / 1e9, req_state_names[stuck->state],
				 conn_host.io_timeout_s);
			stat_add(&w->stats.io_timeouts, 1);
			conn_close(c, NULL);
		}
	}
	atomic_store_explicit(&w->stats.oldest_req_start_ns, old ? old->start_ns : 0,
			      memory_order_relaxed);
	if (old && now - old->start_ns >= CONN_WATCH_WARN_S * 1000000000ull) {
		const struct proto_request *r = old->seg ? &old->whole : &old->r;

		c = old->c;
		log_msg_limited(&watch_limit, LOG_WARN,
				"conn %" PRIu64 ": %s cookie 0x%" PRIx64 " offset %" PRIu64
				" length %" PRIu64 " unanswered for %.1f s, %s (receive: %s, "
				"%u requests, %u ops pending)",
				c->id, proto_cmd_name(r->type), r->cookie, r->offset, r->len_bytes,
				(double)(now - old->start_ns) / 1e9, req_state_names[old->state],
				rx_state_names[c->rx], c->live_reqs, c->pending);
	}
}

void conns_watch_arm(struct worker *w)
{
	if (!timer_armed(&w->clients->watch))
		worker_timer_in(w, &w->clients->watch, CONN_WATCH_NS);
}
