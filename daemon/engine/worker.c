// SPDX-License-Identifier: BSD-3-Clause
/*
 * Workers: one thread, one libev loop, one io_uring, one buffer pool each.
 * This is the loop-and-ring layer; it knows no NBD types.
 *
 * libev owns waiting. The ring's own descriptor is in libev's epoll set
 * (it polls readable when completions are posted); its ev_io reaps the
 * completion queue. Before the loop sleeps, completions already queued are
 * handled (a few rounds, then the loop goes round without blocking): one
 * posted during the worker's own submit does not always wake the epoll.
 * Every SQE's user_data points at a struct op, and a completion is
 * op->done(op, cqe->res). Work that a completion (or another thread)
 * unblocks is posted to the worker's ready list and run from the loop,
 * never from inside the handler that freed it: handlers only change state,
 * queue SQEs and post ops, they never wait and never recurse. Requests
 * waiting for buffer chunks are posted when the pool can give them their
 * fair share (pool.h). SQEs are submitted once per loop iteration from an
 * ev_prepare watcher (or early, if the submission queue fills; if the
 * completion queue is full too, completions are moved aside to be run
 * later, and if the ring refuses work the op is failed with the ring's
 * error instead of aborting).
 *
 * Polling: before the loop would sleep, a worker with connections may wait
 * a while for a completion by yielding the CPU in a loop. sched_yield()
 * hands the CPU to any other runnable thread, and its return to user space
 * runs io_uring's pending task work, so a completion is seen without first
 * waking an idle CPU, which is the larger part of a request's latency at
 * queue depth 1 in a VM (tests/bench/README.md has the figures). By default
 * the window adapts, as qemu's poll-max-ns does: each time the loop wakes,
 * the time it waited since its last work is measured; a wait longer than
 * the cap (--poll-max, 100 us) sets the window to 0 (polling would not have
 * caught it), a shorter one doubles it (from 4 us, up to the cap). So a
 * client that answers quickly gets a polling worker, and a worker whose
 * connections pause, or that has none, sleeps as before. --busy-poll US
 * fixes the window instead (it keeps a core busy at queue depth 1).
 *
 * Deferred task work: where the kernel has it (6.1 on), the ring is made
 * with IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN, so a completion's task
 * work (a socket receive's copy, a block I/O's end) waits on a list until
 * the worker enters the ring to collect it, in one batch, instead of
 * interrupting the thread wherever it is. Two consequences shape the loop:
 * - such work does not make the ring's fd readable (Linux 6.18 does not wake
 *   an epoll on it), so a registered eventfd does: it is switched on
 *   (IORING_CQ_EVENTFD_DISABLED cleared) only while the loop may sleep, so a
 *   worker that is busy is not signalled for every completion;
 * - the kernel raises IORING_SQ_TASKRUN when such work waits, and liburing's
 *   peek enters the ring to run it when it sees the flag, so the reaping
 *   loop is unchanged; polling watches the flag as well as the queue.
 * The ring is made disabled and enabled by the worker's thread (the single
 * issuer), which also registers the ring's fd (io_uring_enter without the
 * descriptor table). Whether deferred work signals an eventfd is probed
 * once with a throwaway ring; without it the ring is made as before.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "../daemon.h"

#define RING_ENTRIES 1024
#define RING_CQ_ENTRIES 8192
#define SLEEP_CHECK_ROUNDS 4 /* rounds of work found before sleeping, then libev's turn */
/* Completions handled by polling before libev gets a turn (timers, adoption). */
#define BUSY_POLL_PASSES 16
#define POLL_START_NS 4000  /* an adaptive window's first length; it doubles from here */

#define PROBE_TIMEOUT_NS 1000000  /* the probe's timer: 1 ms */
#define PROBE_WAIT_MS 1000        /* ...and how long its eventfd may take to say so */

/* The worker whose loop runs on this thread (NULL on the main thread). */
static __thread struct worker *tls_worker;

static struct log_limit submit_limit;

/* Deferred task work: -1 not probed yet, 0 not usable, 1 in use. */
static int defer_taskrun = -1;
static const char *defer_why = "";  /* ...why not, for the log */

/*
 * Whether this kernel has DEFER_TASKRUN and signals a registered eventfd
 * when deferred work waits: a throwaway ring's 1 ms timer must do so. If
 * not, *why says which, for the log.
 */
static bool ring_probe_defer(const char **why)
{
	struct __kernel_timespec ts = { .tv_sec = 0, .tv_nsec = PROBE_TIMEOUT_NS };
	struct io_uring_params params;
	struct io_uring ring;
	struct pollfd pfd;
	bool ok = false;
	int efd;

	memset(&params, 0, sizeof(params));
	params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
		       IORING_SETUP_TASKRUN_FLAG;
	*why = " (the kernel has no IORING_SETUP_DEFER_TASKRUN)";
	if (io_uring_queue_init_params(4, &ring, &params) < 0)
		return false;
	*why = " (the kernel's deferred task work does not signal an eventfd)";
	efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (efd >= 0 && io_uring_register_eventfd(&ring, efd) == 0) {
		io_uring_prep_timeout(io_uring_get_sqe(&ring), &ts, 0, 0);
		pfd.fd = efd;
		pfd.events = POLLIN;
		ok = io_uring_submit(&ring) == 1 && poll(&pfd, 1, PROBE_WAIT_MS) == 1;
	}
	if (efd >= 0)
		close(efd);
	io_uring_queue_exit(&ring);
	return ok;
}

const char *worker_ring_features(void)
{
	static char s[96];

	if (defer_taskrun == 1)
		return "deferred task work";
	snprintf(s, sizeof(s), "task work as it comes%s", defer_why);
	return s;
}

/* Whether workers' rings defer task work: asked, and the kernel passes the probe. */
static bool ring_use_defer(const struct server *srv)
{
	if (!srv->defer_taskrun)
		return false;
	return ring_probe_defer(&defer_why);
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

/* The loop is busy: deferred work need not signal the eventfd. */
static void worker_awake(struct worker *w)
{
	if (w->defer)
		io_uring_cq_eventfd_toggle(&w->ring, false);
}

/*
 * The loop may sleep. With deferred task work, what wakes it is the
 * eventfd, which the kernel signals only when its list of deferred work
 * goes from empty to not: so the eventfd goes on, and work that came while
 * it was off is collected now. And in either mode the worker sleeps only
 * with no completion in the queue: one posted while it was busy (a receive
 * that found its data at submission) does not reliably make the ring's fd
 * readable (under Linux 6.1 with deferral it did not, and a connection
 * waited for its handshake timeout). Returns true if there is such work.
 */
static bool worker_may_sleep(struct worker *w)
{
	if (w->defer) {
		io_uring_cq_eventfd_toggle(&w->ring, true);
		/* Pairs with the kernel's barrier between raising SQ_TASKRUN and reading the switch. */
		atomic_thread_fence(memory_order_seq_cst);
		if (worker_taskrun(w))
			io_uring_get_events(&w->ring);
	}
	return io_uring_cq_ready(&w->ring) || w->ndeferred || w->ready_head;
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
	ev_async_send(w->loop, &w->wake);
}

static unsigned worker_clients(struct worker *w)
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

static void worker_cq_cb(struct ev_loop *loop, ev_io *watcher, int revents)
{
	struct worker *w = watcher->data;

	(void)loop;
	(void)revents;
	worker_awake(w);
	worker_reap(w);
	worker_run_ready(w);
}

/* Deferred work waits (the eventfd said so): collect it, then as above. */
static void worker_evfd_cb(struct ev_loop *loop, ev_io *watcher, int revents)
{
	struct worker *w = watcher->data;
	uint64_t n;

	(void)loop;
	(void)revents;
	worker_awake(w);
	if (read(w->evfd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		log_msg_limited(&submit_limit, LOG_ERROR, "worker %d: eventfd: %s", w->id,
				strerror(errno));
	worker_reap(w);
	worker_run_ready(w);
}

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Waits up to window_ns for each completion, handling what arrives; leaves in
 * w->idle_from when the worker last had work (the wait the loop then measures).
 */
static void worker_poll(struct worker *w, uint64_t window_ns)
{
	uint64_t t = now_ns(), from = t;
	int pass;

	w->idle_from = t;
	for (pass = 0; pass < BUSY_POLL_PASSES; pass++) {
		uint64_t end;

		/* libev's turn: it has work (a post from another thread too), or nothing will come. */
		if (worker_cq_pending(w) || !worker_clients(w) || w->ready_head ||
		    ev_async_pending(&w->wake))
			break;
		end = t + window_ns;
		while (!worker_cq_pending(w) && (t = now_ns()) < end)
			sched_yield();
		if (!worker_cq_pending(w))
			break;
		stat_bump(&w->stats.poll_hits, 1);
		worker_reap(w);
		worker_run_ready(w);
		if (io_uring_sq_ready(&w->ring))
			worker_submit(w);
		t = now_ns();
		w->idle_from = t;
	}
	stat_bump(&w->stats.poll_ns, t - from);
}

static void worker_prepare_cb(struct ev_loop *loop, ev_prepare *watcher, int revents)
{
	struct worker *w = watcher->data;
	uint64_t window;
	unsigned rounds;

	(void)revents;
	stat_bump(&w->stats.iterations, 1);
	if (w->ndeferred)
		worker_reap(w);
	worker_run_ready(w);
	/* The pool's gauges, for whoever reads the counters. */
	atomic_store_explicit(&w->stats.pool_used_bytes,
			      (uint64_t)(w->pool.nchunks - w->pool.nfree) * POOL_CHUNK_BYTES,
			      memory_order_relaxed);
	atomic_store_explicit(&w->stats.pool_waiters, w->pool.nwaiting, memory_order_relaxed);
	if (io_uring_sq_ready(&w->ring))
		worker_submit(w);
	for (rounds = 0;; rounds++) {
		window = w->srv->busy_poll_us ? (uint64_t)w->srv->busy_poll_us * 1000 :
			 w->poll_window_ns;
		if (!worker_clients(w)) {
			w->poll_window_ns = 0;
			w->idle_from = 0;
		} else if (window) {
			worker_poll(w, window);
		} else if (w->srv->poll_max_us) {
			w->idle_from = now_ns();
		}
		if (!worker_may_sleep(w))
			return;
		/* Work first (and polling again after it, as a pass of the loop would). */
		worker_awake(w);
		if (rounds == SLEEP_CHECK_ROUNDS) {
			/* Still busy: the loop goes round without blocking, timers get a turn. */
			ev_idle_start(loop, &w->no_sleep);
			return;
		}
		worker_reap(w);
		worker_run_ready(w);
		if (io_uring_sq_ready(&w->ring))
			worker_submit(w);
	}
}

static void worker_no_sleep_cb(struct ev_loop *loop, ev_idle *watcher, int revents)
{
	(void)revents;
	ev_idle_stop(loop, watcher);
}

/* The loop woke: the wait since the worker's last work sizes the next poll window. */
static void worker_check_cb(struct ev_loop *loop, ev_check *watcher, int revents)
{
	struct worker *w = watcher->data;
	uint64_t max = (uint64_t)w->srv->poll_max_us * 1000, idle;

	(void)loop;
	(void)revents;
	if (!w->idle_from)
		return;
	idle = now_ns() - w->idle_from;
	w->idle_from = 0;
	if (idle > max)
		w->poll_window_ns = 0;
	else if (w->poll_window_ns < max)
		w->poll_window_ns = w->poll_window_ns ? w->poll_window_ns * 2 : POLL_START_NS;
	if (w->poll_window_ns > max)
		w->poll_window_ns = max;
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
			if (stop) {
				close(cl[i].fd);
				if (cl[i].fd_out != cl[i].fd)
					close(cl[i].fd_out);
				server_conn_gone(w->srv, &cl[i].key);
			} else {
				conns_adopt(w, &cl[i]);
			}
		}
	} while (n == 64);
	return stop;
}

static void worker_wake_cb(struct ev_loop *loop, ev_async *watcher, int revents)
{
	struct worker *w = watcher->data;
	bool stop;

	(void)revents;
	stop = worker_adopt_inbox(w);
	worker_run_ready(w);

	if (stop && !w->stopping) {
		w->stopping = true;
		ev_timer_start(loop, &w->grace);
		conns_stop(w);
	}
	if (w->stopping && atomic_load_explicit(&w->nconns, memory_order_relaxed) == 0)
		ev_break(loop, EVBREAK_ALL);
}

static void worker_grace_cb(struct ev_loop *loop, ev_timer *watcher, int revents)
{
	(void)loop;
	(void)revents;
	conns_close_all(watcher->data);
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
	ev_run(w->loop, 0);
	if (reg)
		io_uring_unregister_ring_fd(&w->ring);
	return NULL;
}

int worker_start(struct worker *w, struct server *srv, int id)
{
	struct io_uring_params params;
	int ret;

	memset(w, 0, sizeof(*w));
	w->id = id;
	w->srv = srv;
	pthread_mutex_init(&w->inbox_lock, NULL);

	w->zeroes = mmap(NULL, WORKER_ZEROES_BYTES, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (w->zeroes == MAP_FAILED) {
		ret = -errno;
		log_error("worker %d: %s", id, strerror(-ret));
		return ret;
	}
	ret = pool_init(&w->pool, srv->pool_bytes, EXPORT_MAX_CHUNKS_PER_REQ);
	if (ret < 0) {
		log_error("worker %d: buffer pool of %zu bytes: %s", id, srv->pool_bytes,
			  strerror(-ret));
		goto out_unmap_zeroes;
	}
	if (defer_taskrun < 0)
		defer_taskrun = ring_use_defer(srv);
	w->evfd = -1;
	memset(&params, 0, sizeof(params));
	params.flags = IORING_SETUP_CQSIZE;
	if (defer_taskrun)
		params.flags |= IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
				IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_R_DISABLED;
	params.cq_entries = RING_CQ_ENTRIES;
	ret = io_uring_queue_init_params(RING_ENTRIES, &w->ring, &params);
	if (ret < 0) {
		log_error("worker %d: io_uring_queue_init: %s", id, strerror(-ret));
		goto out_pool;
	}
	if (defer_taskrun) {
		w->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (w->evfd < 0 || (ret = io_uring_register_eventfd(&w->ring, w->evfd)) < 0) {
			ret = w->evfd < 0 ? -errno : ret;
			log_error("worker %d: the ring's eventfd: %s", id, strerror(-ret));
			goto out_ring;
		}
		w->defer = true;
	}
	w->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
	if (!w->loop) {
		ret = -ENOMEM;
		log_error("worker %d: cannot create an event loop", id);
		goto out_ring;
	}
	ev_io_init(&w->cq_watcher, worker_cq_cb, w->ring.ring_fd, EV_READ);
	w->cq_watcher.data = w;
	ev_io_start(w->loop, &w->cq_watcher);
	ev_idle_init(&w->no_sleep, worker_no_sleep_cb);
	if (w->defer) {
		ev_io_init(&w->evfd_watcher, worker_evfd_cb, w->evfd, EV_READ);
		w->evfd_watcher.data = w;
		ev_io_start(w->loop, &w->evfd_watcher);
	}
	ev_prepare_init(&w->submit_watcher, worker_prepare_cb);
	w->submit_watcher.data = w;
	ev_prepare_start(w->loop, &w->submit_watcher);
	if (srv->poll_max_us && !srv->busy_poll_us) {
		ev_check_init(&w->poll_watcher, worker_check_cb);
		w->poll_watcher.data = w;
		ev_check_start(w->loop, &w->poll_watcher);
	}
	ev_timer_init(&w->grace, worker_grace_cb, WORKER_STOP_GRACE_S, 0.);
	w->grace.data = w;
	ev_async_init(&w->wake, worker_wake_cb);
	w->wake.data = w;
	ev_async_start(w->loop, &w->wake);

	ret = -pthread_create(&w->thread, NULL, worker_main, w);
	if (ret < 0) {
		log_error("worker %d: pthread_create: %s", id, strerror(-ret));
		goto out_loop;
	}
	return 0;

out_loop:
	ev_loop_destroy(w->loop);
out_ring:
	io_uring_queue_exit(&w->ring);
	if (w->evfd >= 0)
		close(w->evfd);
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
			close(cl->fd);
			if (cl->fd_out != cl->fd)
				close(cl->fd_out);
			server_conn_gone(w->srv, &cl->key);
			return;
		}
		w->inbox = p;
		w->inbox_cap = cap;
	}
	w->inbox[w->inbox_len++] = *cl;
	pthread_mutex_unlock(&w->inbox_lock);
	ev_async_send(w->loop, &w->wake);
}

void worker_stop(struct worker *w)
{
	pthread_mutex_lock(&w->inbox_lock);
	w->stop = true;
	pthread_mutex_unlock(&w->inbox_lock);
	ev_async_send(w->loop, &w->wake);
}

void worker_join(struct worker *w)
{
	pthread_join(w->thread, NULL);
	ev_loop_destroy(w->loop);
	io_uring_queue_exit(&w->ring);
	if (w->evfd >= 0)
		close(w->evfd);
	pool_release(&w->pool);
	munmap(w->zeroes, WORKER_ZEROES_BYTES);
	free(w->inbox);
	free(w->deferred);
	pthread_mutex_destroy(&w->inbox_lock);
}
