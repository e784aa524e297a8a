// SPDX-License-Identifier: BSD-3-Clause
/*
 * Workers: one thread, one io_uring, one heap of timers, one buffer pool each.
 * This is the loop-and-ring layer; it knows no NBD types.
 *
 * The ring is where a worker sleeps, and the only place. Each pass of the
 * worker's loop (worker_loop):
 *   1. the worker's clock is read (worker_now: CLOCK_MONOTONIC, once per
 *      pass, after any wait), and its timers that are due fire (timer.h:
 *      a negotiation's limit, a connection's watchdog, a stop's or a
 *      hand-over's grace, the oldest-request watch);
 *   2. completions are handled and posted work run until none is left
 *      (handlers only change state, queue SQEs, arm timers and post ops:
 *      they never wait and never recurse), then everything queued is
 *      submitted;
 *   3. if nothing more is to be done, the worker may poll for a while and
 *      then waits in io_uring_enter for one completion (submitting and
 *      waiting in one call), bounded by its earliest deadline; with none,
 *      it waits until a completion or a post wakes it.
 * One clock, read where the worker wakes: a worker that slept a minute
 * starts a new client's timers from now, not from a minute ago, and a
 * deadline fires when it is due (the ring's wait ends then), not at the
 * next tick of something else.
 * So the kernel runs io_uring's task work where the worker waits: deferred
 * task work (IORING_SETUP_DEFER_TASKRUN, run only when the issuer enters
 * the ring) cannot be left behind while the thread sleeps somewhere else,
 * and a completion posted during the worker's own submit is seen by the
 * same wait. Other threads reach the worker through its inbox and an
 * eventfd that the ring always has a read on (worker_wake_done): a post
 * writes it once until the worker has looked. A worker never sleeps more
 * than WORKER_WAKE_CHECK_NS without looking at its inbox anyway, and
 * re-arms the read if a wake-up was lost (worker_check_posts).
 *
 * Every SQE's user_data points at a struct op, and a completion is
 * op->done(op, cqe->res). Work that a completion (or another thread)
 * unblocks is posted to the worker's ready list. Requests waiting for
 * buffer chunks are posted when the pool can give them their fair share
 * (pool.h). If the submission queue fills, it is submitted early; if the
 * completion queue is full too, completions are moved aside to be run
 * later, and if the ring refuses work the op is failed with the ring's
 * error instead of aborting.
 *
 * Polling: before it would wait, a worker with connections (or a ublk
 * device's queues, w->nattached) may watch for a completion for a while,
 * yielding the CPU in a loop. sched_yield() hands
 * the CPU to any other runnable thread, and its return to user space runs
 * io_uring's pending task work (not deferred), so a completion is seen
 * without first waking an idle CPU. With deferral, IORING_SQ_TASKRUN says
 * work waits, and the reaping enters the ring to run it.
 *
 * When to poll. A worker that sleeps while its disk and its clients keep
 * it busy pays, per wait, the wake-up of an idle CPU (hundreds of us in a
 * VM, a deep C-state's exit on metal): measured at 4k QD32 with polling
 * off, its waits took 256-1023 us, against 0-7 us for most of them while
 * it polled, and the disk held fewer requests for it. So by default it
 * polls, up to --poll-max per wait, while it held cfg->poll_depth requests
 * or more lately (worker_depth: the most it held over WORKER_DEPTH_NS, so
 * the gaps where a client's next batch is on its way count too), and not
 * at depth 1, where the ring's own wait serves as well for less CPU.
 * What bounds it is not the disk's speed but the worker's own work: each
 * nanosecond of work earns POLL_CREDIT_RATIO of polling (up to
 * POLL_CREDIT_MAX_NS banked), a poll spends what it took, and a worker
 * in debt waits at once. Polling thus costs at most POLL_CREDIT_RATIO
 * times the CPU the work itself takes, on a slow disk (few completions,
 * little work) as on a fast one; a poll is whole or none, since a poll
 * cut short and then a sleep pays for both. --poll-max given polls so at
 * any depth; --busy-poll US polls a fixed window at any depth, unbounded.
 *
 * Deferred task work: where the kernel has it (6.1 on), the ring is made
 * with IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG, so a
 * completion's task work (a socket receive's copy, a block I/O's end)
 * waits on a list until the worker enters the ring, and runs there in one
 * batch instead of interrupting the thread. The ring is made disabled and
 * enabled by the worker's thread (the single issuer), which also registers
 * the ring's fd (io_uring_enter without the descriptor table).
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"

#define RING_ENTRIES 1024
#define RING_CQ_ENTRIES 8192
#define POLL_CREDIT_RATIO 2                 /* ns of polling a ns of work earns */
#define POLL_CREDIT_MAX_NS 1000000ull       /* credit banked at most */
#define WORKER_DEPTH_NS (10 * 1000000ull)   /* "lately", for the depth that allows polling */
/* Timers of the worker's own: the stop's grace (its clients' layer reserves its own). */
#define WORKER_OWN_TIMERS 1

/* The layer that serves the workers' clients (worker_set_clients, once at start-up). */
static const struct worker_clients_ops *clients_ops;

void worker_set_clients(const struct worker_clients_ops *ops)
{
	clients_ops = ops;
}

/* A client closed without being adopted: its descriptors, and its place in the counts. */
static void worker_drop(const struct client *cl)
{
	close(cl->fd);
	if (cl->fd_out != cl->fd)
		close(cl->fd_out);
	clients_ops->dropped(cl);
}

/* The worker whose loop runs on this thread (NULL on the main thread). */
static __thread struct worker *tls_worker;

static struct log_limit submit_limit;

/* Deferred task work: -1 not tried yet, 0 not used, 1 in use. */
static int defer_taskrun = -1;
static const char *defer_why = "";  /* ...why not, for the log */

const char *worker_ring_features(void)
{
	static char s[96];

	if (defer_taskrun == 1)
		return "deferred task work";
	snprintf(s, sizeof(s), "task work as it comes%s", defer_why);
	return s;
}

/* Deferred task work is waiting for this worker to enter the ring. */
static bool worker_taskrun(struct worker *w)
{
	return w->defer &&
	       (IO_URING_READ_ONCE(*w->ring.sq.kflags) & IORING_SQ_TASKRUN);
}

/* A completion to reap, or deferred work that will make one. */
static bool worker_cq_pending(struct worker *w)
{
	return io_uring_cq_ready(&w->ring) || worker_taskrun(w);
}

/* Something to do before waiting: a completion, deferred work, posted work. */
static bool worker_has_work(struct worker *w)
{
	return worker_cq_pending(w) || w->ready_head || w->ndeferred;
}

/* Submits what is queued; returns 0 or the error io_uring_submit gave. */
static int worker_submit(struct worker *w)
{
	int ret = io_uring_submit(&w->ring);

	if (ret > 0) {
		stat_add(&w->stats.submits, 1);
		stat_add(&w->stats.sqes, (uint64_t)ret);
	}
	if (ret >= 0 || ret == -EINTR)
		return 0;
	/* EBUSY/EAGAIN: completions must be reaped first; the loop does that. */
	if (ret != -EBUSY && ret != -EAGAIN)
		log_msg_limited(&submit_limit, LOG_ERROR, "worker %d: io_uring_submit: %s", w->id,
				strerror(-ret));
	return ret;
}

/*
 * Moves every completion off the ring without running it (it runs from the
 * loop, in order, before newer ones), so that a submit can go on from
 * inside a handler when the completion queue is full.
 */
static void worker_defer_cqes(struct worker *w)
{
	struct io_uring_cqe *cqe;

	while (io_uring_peek_cqe(&w->ring, &cqe) == 0) {
		if (w->ndeferred == w->deferred_cap) {
			size_t cap = w->deferred_cap ? 2 * w->deferred_cap : 256;
			struct deferred_cqe *d = realloc(w->deferred, cap * sizeof(*d));

			if (!d) {
				log_error("worker %d: out of memory holding completions", w->id);
				abort();
			}
			w->deferred = d;
			w->deferred_cap = cap;
		}
		w->deferred[w->ndeferred].op = io_uring_cqe_get_data(cqe);
		w->deferred[w->ndeferred].res = cqe->res;
		w->ndeferred++;
		io_uring_cqe_seen(&w->ring, cqe);
	}
}

struct io_uring_sqe *worker_sqe(struct worker *w, struct op *op)
{
	struct io_uring_sqe *sqe;
	int ret;

	assert(w == tls_worker);
	while (!(sqe = io_uring_get_sqe(&w->ring))) {
		ret = worker_submit(w);
		if (ret == -EBUSY || ret == -EAGAIN) {
			worker_defer_cqes(w);
		} else if (ret < 0) {
			/* The ring refuses work: this op fails, the caller's SQE goes nowhere. */
			worker_post(w, op, ret);
			memset(&w->void_sqe, 0, sizeof(w->void_sqe));
			return &w->void_sqe;
		}
	}
	io_uring_sqe_set_data(sqe, op);
	return sqe;
}

static void ready_push(struct worker *w, struct op *op)
{
	op->next = NULL;
	if (w->ready_tail)
		w->ready_tail->next = op;
	else
		w->ready_head = op;
	w->ready_tail = op;
}

/*
 * From another thread, after adding to the inbox: the eventfd is written
 * once until the worker clears w->woken (before it reads the inbox again).
 */
static void worker_wake(struct worker *w)
{
	uint64_t one = 1;

	if (atomic_exchange(&w->woken, true))
		return;
	if (write(w->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_msg_limited(&submit_limit, LOG_ERROR, "worker %d: waking it: %s", w->id,
				strerror(errno));
}

struct worker *worker_self(void)
{
	return tls_worker;
}

void worker_post(struct worker *w, struct op *op, int res)
{
	op->res = res;
	if (w == tls_worker) {
		ready_push(w, op);
		return;
	}
	pthread_mutex_lock(&w->inbox_lock);
	op->next = w->ready_remote;
	w->ready_remote = op;
	pthread_mutex_unlock(&w->inbox_lock);
	worker_wake(w);
}

static unsigned worker_clients(const struct worker *w)
{
	return atomic_load_explicit(&w->nconns, memory_order_relaxed);
}

bool worker_pool_may_take(struct worker *w, const struct pool_account *a, uint32_t need)
{
	return pool_may_take(&w->pool, a, need, worker_clients(w));
}

void worker_pool_wait(struct worker *w, struct pool_waiter *pw)
{
	pool_wait(&w->pool, pw);
}

void worker_pool_cancel(struct worker *w, struct pool_waiter *pw)
{
	if (!pw->queued)
		return;
	pool_unwait(&w->pool, pw);
	worker_post(w, pw->ctx, -ECANCELED);
}

/* Posts the waiters the free chunks can satisfy now; true if any. */
static bool worker_pool_kick(struct worker *w)
{
	struct pool_waiter *pw;
	bool any = false;

	while ((pw = pool_next_ready(&w->pool, worker_clients(w)))) {
		worker_post(w, pw->ctx, 0);
		any = true;
	}
	return any;
}

static void worker_reap(struct worker *w)
{
	struct io_uring_cqe *cqe;
	uint64_t n = w->ndeferred;
	size_t i;

	/* Those a full queue made us take off the ring first, in their order. */
	for (i = 0; i < w->ndeferred; i++)
		w->deferred[i].op->done(w->deferred[i].op, w->deferred[i].res);
	w->ndeferred = 0;

	while (io_uring_peek_cqe(&w->ring, &cqe) == 0) {
		struct op *op = io_uring_cqe_get_data(cqe);
		int res = cqe->res;

		/* Free the CQ slot first: the handler may queue (and submit) more. */
		io_uring_cqe_seen(&w->ring, cqe);
		op->done(op, res);
		n++;
	}
	stat_bump(&w->stats.completions, n);
}

static bool worker_adopt_inbox(struct worker *w);
static void worker_wake_arm(struct worker *w);

/* Runs posted ops until none is left (those they post run in the same pass). */
static void worker_run_ready(struct worker *w)
{
	for (;;) {
		struct op *op = w->ready_head;

		if (!op) {
			bool inbox;

			pthread_mutex_lock(&w->inbox_lock);
			op = w->ready_remote;
			w->ready_remote = NULL;
			inbox = w->inbox_len != 0;
			pthread_mutex_unlock(&w->inbox_lock);
			/*
			 * Clients handed over before these ops were posted are adopted
			 * first (a restart's parking must find a client adopted just
			 * before it; the async callback may not have run yet).
			 */
			if (op && inbox)
				worker_adopt_inbox(w);
			/* Remote posts come LIFO; their order does not matter. */
			while (op) {
				struct op *next = op->next;

				ready_push(w, op);
				op = next;
			}
			if (!w->ready_head && !worker_pool_kick(w))
				return;
			continue;
		}
		w->ready_head = op->next;
		if (!w->ready_head)
			w->ready_tail = NULL;
		op->next = NULL;
		op->done(op, op->res);
	}
}

void worker_stats_add(const struct worker *w, struct worker_stats *sum)
{
	unsigned i;

#define ADD(f) stat_add(&sum->f, atomic_load_explicit(&w->stats.f, memory_order_relaxed))
	ADD(lock_acquired);
	ADD(lock_waited);
	ADD(lock_wait_ns);
	ADD(rmw_writes);
	ADD(buffered_ios);
	ADD(iterations);
	ADD(poll_hits);
	ADD(poll_ns);
	ADD(ring_waits);
	ADD(ring_wait_ns);
	ADD(submits);
	ADD(sqes);
	ADD(completions);
	ADD(io_timeouts);
	ADD(bitmap_waits);
	ADD(pool_used_bytes);
	ADD(pool_waiters);
	for (i = 0; i < CONN_RESULTS; i++)
		ADD(results[i]);
#undef ADD
	hist_add(&sum->lock_wait, &w->stats.lock_wait);
	hist_add(&sum->pool_wait, &w->stats.pool_wait);
}

int worker_timers_reserve(struct worker *w, unsigned n)
{
	return timers_reserve(&w->timers, n);
}

void worker_timers_unreserve(struct worker *w, unsigned n)
{
	timers_unreserve(&w->timers, n);
}

/* Completions, then posted work until none is left, then one submit. */
static void worker_turn(struct worker *w)
{
	stat_bump(&w->stats.iterations, 1);
	worker_reap(w);
	worker_run_ready(w);
	/* The pool's gauges, for whoever reads the counters. */
	atomic_store_explicit(&w->stats.pool_used_bytes,
			      (uint64_t)(w->pool.nchunks - w->pool.nfree) * POOL_CHUNK_BYTES,
			      memory_order_relaxed);
	atomic_store_explicit(&w->stats.pool_waiters, w->pool.nwaiting, memory_order_relaxed);
	if (io_uring_sq_ready(&w->ring))
		worker_submit(w);
}

/*
 * The most requests the worker held over the last WORKER_DEPTH_NS or so:
 * a client at depth leaves gaps where the worker holds few (its replies
 * are out, the next batch is on its way), and those waits are as short.
 */
static unsigned worker_depth(struct worker *w, uint64_t now)
{
	if (w->reqs_live >= w->depth_peak || now - w->depth_peak_ns > WORKER_DEPTH_NS) {
		w->depth_peak = w->reqs_live;
		w->depth_peak_ns = now;
	}
	return w->depth_peak;
}

/* How long to poll before this wait (see the top); 0: wait at once. */
static uint64_t worker_poll_window(struct worker *w, uint64_t now)
{
	const struct worker_config *cfg = &w->cfg;

	if (!worker_clients(w) && !w->nattached)
		return 0;
	if (cfg->busy_poll_us)
		return (uint64_t)cfg->busy_poll_us * 1000;
	/* The work since the last wait earns credit. */
	w->poll_credit_ns += (int64_t)(now - w->busy_since_ns) * POLL_CREDIT_RATIO;
	if (w->poll_credit_ns > (int64_t)POLL_CREDIT_MAX_NS)
		w->poll_credit_ns = (int64_t)POLL_CREDIT_MAX_NS;
	if (!cfg->poll_max_us || w->poll_credit_ns <= 0 || worker_depth(w, now) < cfg->poll_depth)
		return 0;
	return (uint64_t)cfg->poll_max_us * 1000;
}

/*
 * Nothing to do: poll for a completion for a while (see the top), then wait
 * in the ring for one, or until the earliest deadline (due_ns on the
 * worker's clock; TIMER_NEVER: no limit).
 */
static void worker_idle(struct worker *w, uint64_t due_ns)
{
	uint64_t start = now_ns(), t = start, window = worker_poll_window(w, start);
	struct __kernel_timespec ts;
	struct io_uring_cqe *cqe;
	bool found = false;
	int ret;

	if (window) {
		uint64_t end = start + window;

		while (!(found = worker_cq_pending(w)) && (t = now_ns()) < end)
			sched_yield();
		stat_bump(&w->stats.poll_ns, t - start);
		w->poll_credit_ns -= (int64_t)(t - start);
		if (found)
			stat_bump(&w->stats.poll_hits, 1);
	}
	if (!found && t < due_ns) {
		uint64_t ns = due_ns - t;

		ts.tv_sec = (long long)(ns / 1000000000u);
		ts.tv_nsec = (long long)(ns % 1000000000u);
		ret = io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1,
						       due_ns == TIMER_NEVER ? NULL : &ts, NULL);
		if (ret > 0) {
			stat_add(&w->stats.submits, 1);
			stat_add(&w->stats.sqes, (uint64_t)ret);
		} else if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EBUSY &&
			   ret != -EAGAIN) {
			log_msg_limited(&submit_limit, LOG_ERROR, "worker %d: waiting in the ring: %s",
					w->id, strerror(-ret));
		}
		w->busy_since_ns = now_ns();
		stat_bump(&w->stats.ring_waits, 1);
		stat_bump(&w->stats.ring_wait_ns, w->busy_since_ns - t);
	} else {
		w->busy_since_ns = t;
	}
}

/* Stopping, and its last connection is gone. */
static bool worker_finished(struct worker *w)
{
	return w->stopping && !worker_clients(w);
}

/*
 * After a wait of WORKER_WAKE_CHECK_NS that no completion ended: work was
 * posted and the eventfd written (w->woken), yet the eventfd's read, which
 * completes at once on a written eventfd, never came back. Its completion
 * is lost (seen once, in a CI rehearsal's ASan run with task work as it
 * comes: both workers asleep, no read on either eventfd in the rings), and
 * with it every later wake-up. The worker runs the posted work now
 * (worker_turn reads the inbox whatever woke it) and arms a fresh read, so
 * a lost wake-up costs a second instead of a hang. Logged, with the
 * completions the ring says it dropped. A post that lands between the
 * wait's end and this look can make it arm a read needlessly: one more
 * read on the eventfd, which does no harm.
 */
static struct log_limit lost_wake_limit;

static void worker_check_posts(struct worker *w)
{
	bool posted;

	pthread_mutex_lock(&w->inbox_lock);
	posted = w->ready_remote || w->inbox_len;
	pthread_mutex_unlock(&w->inbox_lock);
	if (!posted || !atomic_load(&w->woken) || worker_cq_pending(w))
		return;
	log_msg_limited(&lost_wake_limit, LOG_WARN, "worker %d: posted work waited %u s for "
			"a wake-up that did not come (completions the ring dropped: %u); "
			"its eventfd is read again", w->id,
			(unsigned)(WORKER_WAKE_CHECK_NS / 1000000000u),
			IO_URING_READ_ONCE(*w->ring.cq.koverflow));
	atomic_store(&w->woken, false);
	worker_wake_arm(w);
}

/* The worker's thread: its clock and timers, the work, the wait, until stopped. */
static void worker_loop(struct worker *w)
{
	worker_wake_arm(w);
	while (!worker_finished(w)) {
		w->now_ns = now_ns();
		timers_run(&w->timers, w->now_ns);
		worker_turn(w);
		if (!worker_has_work(w) && !worker_finished(w)) {
			uint64_t due = timers_next(&w->timers), check = w->now_ns + WORKER_WAKE_CHECK_NS;

			worker_idle(w, due < check ? due : check);
			if (due >= check && now_ns() >= check)
				worker_check_posts(w);
		}
	}
}

/* Adopts the clients in the inbox (or, stopping, closes them); returns whether to stop. */
static bool worker_adopt_inbox(struct worker *w)
{
	struct client cl[64];
	size_t n, i;
	bool stop;

	do {
		pthread_mutex_lock(&w->inbox_lock);
		n = w->inbox_len < 64 ? w->inbox_len : 64;
		if (n) {
			memcpy(cl, w->inbox, n * sizeof(*cl));
			memmove(w->inbox, w->inbox + n, (w->inbox_len - n) * sizeof(*cl));
			w->inbox_len -= n;
		}
		stop = w->stop;
		pthread_mutex_unlock(&w->inbox_lock);
		for (i = 0; i < n; i++) {
			if (stop)
				worker_drop(&cl[i]);
			else
				clients_ops->adopt(w, &cl[i]);
		}
	} while (n == 64);
	return stop;
}

/* A read on the eventfd, in the ring whenever the worker waits. */
static void worker_wake_arm(struct worker *w)
{
	io_uring_prep_read(worker_sqe(w, &w->wake_op), w->wake_fd, &w->wake_count,
			   sizeof(w->wake_count), 0);
}

/* Another thread posted, handed over a client, or asked the worker to stop. */
static void worker_wake_done(struct op *op, int res)
{
	struct worker *w = container_of(op, struct worker, wake_op);
	bool stop;

	if (res < 0 && res != -EINTR && res != -EAGAIN)
		log_msg_limited(&submit_limit, LOG_ERROR, "worker %d: its eventfd: %s", w->id,
				strerror(-res));
	/* Pairs with worker_wake(): what is posted after this writes again. */
	atomic_store(&w->woken, false);
	stop = worker_adopt_inbox(w);
	worker_run_ready(w);

	if (stop && !w->stopping) {
		w->stopping = true;
		worker_timer_in(w, &w->grace, WORKER_STOP_GRACE_NS);
		clients_ops->stop(w);
	}
	worker_wake_arm(w);
}

static void worker_grace_fire(struct timer *t)
{
	clients_ops->close_all(container_of(t, struct worker, grace));
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	bool reg;

	tls_worker = w;
	if (w->defer) {
		/* This thread is the ring's single issuer: it enables it. */
		if (syscall(__NR_io_uring_register, w->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS,
			    NULL, 0) < 0) {
			log_error("worker %d: enabling its ring: %s", w->id, strerror(errno));
			abort();
		}
	}
	/* io_uring_enter by index rather than through the descriptor table. */
	reg = io_uring_register_ring_fd(&w->ring) == 1;
	worker_loop(w);
	if (reg)
		io_uring_unregister_ring_fd(&w->ring);
	return NULL;
}

int worker_start(struct worker *w, const struct worker_config *cfg, int id)
{
	struct io_uring_params params;
	int ret;

	memset(w, 0, sizeof(*w));
	w->id = id;
	w->wake_fd = -1;
	w->cfg = *cfg;
	pthread_mutex_init(&w->inbox_lock, NULL);

	w->zeroes = mmap(NULL, WORKER_ZEROES_BYTES, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (w->zeroes == MAP_FAILED) {
		ret = -errno;
		log_error("worker %d: %s", id, strerror(-ret));
		return ret;
	}
	ret = pool_init(&w->pool, cfg->pool_bytes, cfg->max_chunks_per_req);
	if (ret < 0) {
		log_error("worker %d: buffer pool of %zu bytes: %s", id, cfg->pool_bytes,
			  strerror(-ret));
		goto out_unmap_zeroes;
	}
	memset(&params, 0, sizeof(params));
	params.flags = IORING_SETUP_CQSIZE;
	params.cq_entries = RING_CQ_ENTRIES;
	if (cfg->defer_taskrun && defer_taskrun != 0) {
		params.flags |= IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
				IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_R_DISABLED;
		ret = io_uring_queue_init_params(RING_ENTRIES, &w->ring, &params);
		if (ret == -EINVAL) {
			defer_why = " (the kernel has no IORING_SETUP_DEFER_TASKRUN)";
			memset(&params, 0, sizeof(params));
			params.flags = IORING_SETUP_CQSIZE;
			params.cq_entries = RING_CQ_ENTRIES;
		}
	}
	if (!(params.flags & IORING_SETUP_DEFER_TASKRUN))
		ret = io_uring_queue_init_params(RING_ENTRIES, &w->ring, &params);
	if (ret < 0) {
		log_error("worker %d: io_uring_queue_init: %s", id, strerror(-ret));
		goto out_pool;
	}
	w->defer = params.flags & IORING_SETUP_DEFER_TASKRUN;
	defer_taskrun = w->defer;
	if (!cfg->defer_taskrun)
		defer_why = " (--no-defer-taskrun)";
	timers_init(&w->timers);
	if (timers_reserve(&w->timers, WORKER_OWN_TIMERS) < 0) {
		ret = -ENOMEM;
		log_error("worker %d: out of memory for its timers", id);
		goto out_ring;
	}
	w->now_ns = now_ns();
	w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->wake_fd < 0) {
		ret = -errno;
		log_error("worker %d: eventfd: %s", id, strerror(-ret));
		goto out_timers;
	}
	w->wake_op.done = worker_wake_done;
	timer_init(&w->grace, worker_grace_fire);
	ret = clients_ops->init(w);
	if (ret < 0) {
		log_error("worker %d: %s", id, strerror(-ret));
		goto out_timers;
	}
	ret = -pthread_create(&w->thread, NULL, worker_main, w);
	if (ret < 0) {
		log_error("worker %d: pthread_create: %s", id, strerror(-ret));
		goto out_clients;
	}
	return 0;

out_clients:
	clients_ops->fini(w);
out_timers:
	if (w->wake_fd >= 0)
		close(w->wake_fd);
	timers_release(&w->timers);
out_ring:
	io_uring_queue_exit(&w->ring);
out_pool:
	pool_release(&w->pool);
out_unmap_zeroes:
	munmap(w->zeroes, WORKER_ZEROES_BYTES);
	return ret;
}

void worker_adopt(struct worker *w, const struct client *cl)
{
	pthread_mutex_lock(&w->inbox_lock);
	if (w->inbox_len == w->inbox_cap) {
		size_t cap = w->inbox_cap ? w->inbox_cap * 2 : 16;
		struct client *p = realloc(w->inbox, cap * sizeof(*p));

		if (!p) {
			pthread_mutex_unlock(&w->inbox_lock);
			log_error("worker %d: out of memory adopting a connection", w->id);
			worker_drop(cl);
			return;
		}
		w->inbox = p;
		w->inbox_cap = cap;
	}
	w->inbox[w->inbox_len++] = *cl;
	pthread_mutex_unlock(&w->inbox_lock);
	worker_wake(w);
}

void worker_stop(struct worker *w)
{
	pthread_mutex_lock(&w->inbox_lock);
	w->stop = true;
	pthread_mutex_unlock(&w->inbox_lock);
	worker_wake(w);
}

void worker_join(struct worker *w)
{
	pthread_join(w->thread, NULL);
	clients_ops->fini(w);
	timers_release(&w->timers);
	io_uring_queue_exit(&w->ring);
	close(w->wake_fd);
	pool_release(&w->pool);
	munmap(w->zeroes, WORKER_ZEROES_BYTES);
	free(w->inbox);
	free(w->deferred);
	pthread_mutex_destroy(&w->inbox_lock);
}
