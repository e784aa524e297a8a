// SPDX-License-Identifier: BSD-3-Clause
/*
 * A request's state machine (the life cycle is drawn in conn.h): slots,
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
#include <stdlib.h>

#include "conn.h"

#define S(x) (1u << (x))
#define LOCKED_STATES \
	(S(REQ_LOCKED) | S(REQ_RMW) | S(REQ_IO) | S(REQ_FALLOC) | S(REQ_ZERO_WRITE) | \
	 S(REQ_SYNC) | S(REQ_CACHED) | S(REQ_EXTENTS))

/* For each state, the states a request may enter it from. */
static const uint32_t req_from[REQ_NSTATES] = {
	[REQ_FREE] = ~S(REQ_FREE),     /* done, or dropped with its connection */
	[REQ_NEW] = S(REQ_FREE),
	[REQ_BUFFERS] = S(REQ_NEW),
	[REQ_PAYLOAD] = S(REQ_NEW) | S(REQ_BUFFERS),
	[REQ_SKIP] = S(REQ_NEW) | S(REQ_BUFFERS),
	[REQ_LOCK_WAIT] = S(REQ_NEW) | S(REQ_BUFFERS) | S(REQ_PAYLOAD),
	[REQ_LOCKED] = S(REQ_NEW) | S(REQ_BUFFERS) | S(REQ_PAYLOAD) | S(REQ_LOCK_WAIT),
	[REQ_RMW] = S(REQ_LOCKED),
	[REQ_IO] = S(REQ_LOCKED) | S(REQ_RMW),
	[REQ_FALLOC] = S(REQ_LOCKED) | S(REQ_FALLOC),
	[REQ_ZERO_WRITE] = S(REQ_FALLOC),
	[REQ_SYNC] = S(REQ_LOCKED) | S(REQ_FALLOC) | S(REQ_ZERO_WRITE) | S(REQ_IO),
	[REQ_CACHED] = S(REQ_LOCKED),
	[REQ_EXTENTS] = S(REQ_LOCKED),
	[REQ_FLUSH] = S(REQ_NEW),
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
	q->start_ns = now_ns();
	c->live_reqs++;
	stat_bump(&c->exp->ctr->slot[c->w->id].in_flight, 1);
	return q;
}

int req_get_buffers(struct req *q)
{
	struct conn *c = q->c;
	struct pool *pool = &c->w->pool;
	uint32_t n = q->plan.chunks, need = n + q->plan.bounce;
	int got;

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
		got = pool_get(pool, q->plan.io_len, q->iov);
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

	if (q->niov) {
		pool_put(pool, q->niov, q->iov);
		a->held -= q->niov;
	}
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

static void req_run_locked(struct req *q)
{
	if (q->plan.cached)
		cached_start(q);
	else
		fileio_start(q);
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

void req_finish(struct req *q, uint32_t nbd_error)
{
	struct conn *c = q->c;
	struct cache *cache = c->w->srv->cache;

	if (req_locked(q)) {
		/* Before unlocking, so that no read can fill a page from before it afterwards. */
		/* An overlay's writes leave its base, the cached file, as it was. */
		if (cache && q->plan.exclusive && !c->exp->ov)
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

	req_release_buffers(q);
	req_set_state(q, REQ_FREE);
	q->next = c->free_reqs;
	c->free_reqs = q;
	c->live_reqs--;
	stat_bump(&c->exp->ctr->slot[c->w->id].in_flight, (uint64_t)-1);
	if (c->state == CONN_CLOSING)
		return;
	conn_close_if_idle(c);
	rx_slot_freed(c);
}
