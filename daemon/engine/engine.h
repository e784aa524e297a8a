/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * engine: threads, rings and buffers; no NBD here. A worker is a thread
 * with one io_uring, one buffer pool and one clock; offload threads run
 * blocking calls and post their ends back. pool.h, plan.h, throttle.h and
 * timer.h are its pure parts.
 */
#ifndef URINGNBD_ENGINE_H
#define URINGNBD_ENGINE_H

#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "../base/base.h"
#include "plan.h"
#include "pool.h"
#include "throttle.h"
#include "timer.h"

/* ---- worker.c: the loop-and-ring layer ---- */

struct conn_resume;
/* An accepted client, handed from the main thread to a worker. */
struct client {
	int fd;                   /* its socket; or stdin of a single-connection daemon */
	int fd_out;               /* fd, or stdout */
	bool stream;              /* fd and fd_out are pipes: read/write, not recv/send */
	struct client_key key;
	struct client_peer peer;
	struct conn_resume *resume; /* handed over in transmission (heap, the conn's), or NULL */
};

/*
 * An operation the loop completes: an SQE (user_data points at it) or a
 * post to the ready list. Embedded in whatever waits for it; done() runs on
 * the owning worker's thread, from the loop, never from inside another
 * handler, and may queue SQEs and post more ops but never waits.
 */
struct op {
	void (*done)(struct op *op, int res); /* res: cqe->res, or what was posted */
	struct op *next;       /* ready list */
	int res;               /* the posted result */
};

/* A completion taken off a full ring, to run from the loop. */
struct deferred_cqe {
	struct op *op;
	int res;
};

/* How a connection's negotiation ended (counted once per connection). */
enum conn_result {
	CONN_RESULT_SERVED,        /* chose an export: transmission */
	CONN_RESULT_REFUSED,       /* refused by access rules, never served */
	CONN_RESULT_TLS_FAILED,    /* the TLS handshake failed */
	CONN_RESULT_HS_TIMEOUT,    /* no export chosen within the handshake timeout */
	CONN_RESULT_ENDED,         /* closed during negotiation otherwise (ABORT, LIST only, errors) */
	CONN_RESULTS
};

/*
 * Counters a worker updates and other threads read (relaxed); the gauges
 * are stored once per loop iteration.
 */
struct worker_stats {
	atomic_uint_fast64_t lock_acquired;  /* range locks taken */
	atomic_uint_fast64_t lock_waited;    /* of which had to wait */
	atomic_uint_fast64_t lock_wait_ns;   /* total time waited */
	atomic_uint_fast64_t rmw_writes;     /* unaligned writes done by read-modify-write */
	atomic_uint_fast64_t buffered_ios;   /* requests on the partial last block */
	atomic_uint_fast64_t iterations;     /* passes of the worker's loop (worker_turn) */
	atomic_uint_fast64_t poll_hits;      /* completions found by polling instead of waking */
	atomic_uint_fast64_t poll_ns;        /* time spent polling */
	atomic_uint_fast64_t ring_waits;     /* waits that slept in the ring */
	atomic_uint_fast64_t ring_wait_ns;   /* ...and their time, until work or a deadline */
	atomic_uint_fast64_t submits;        /* io_uring_submit calls that submitted */
	atomic_uint_fast64_t sqes;           /* SQEs they submitted */
	atomic_uint_fast64_t completions;    /* CQEs handled */
	atomic_uint_fast64_t io_timeouts;    /* connections closed by io-timeout */
	atomic_uint_fast64_t bitmap_waits;   /* writes that waited for a dirty-bitmap commit */
	atomic_uint_fast64_t results[CONN_RESULTS]; /* conn_result */
	atomic_uint_fast64_t pool_used_bytes; /* gauge: pool chunks held */
	atomic_uint_fast64_t pool_waiters;   /* gauge: connections waiting for chunks */
	atomic_uint_fast64_t oldest_req_start_ns; /* gauge: now_ns() its oldest request in flight
						     began, as of the last look; 0: none */
	struct hist lock_wait;               /* waits for a range lock */
	struct hist pool_wait;               /* waits for pool chunks */
};

/* The settings a worker runs with. */
struct worker_config {
	size_t pool_bytes;        /* its buffer pool */
	uint32_t max_chunks_per_req; /* the most chunks one request takes (pool.h's fair shares) */
	unsigned busy_poll_us;    /* polls this long before waiting; 0: as poll_max_us says */
	unsigned poll_max_us;     /* the adaptive poll's longest wait; 0: no adaptive polling */
	unsigned poll_depth;      /* adaptive polling only while it held this many requests lately */
	bool defer_taskrun;       /* its ring defers task work where the kernel can */
};

struct worker;
struct worker_clients; /* the clients' layer's own, per worker */
/*
 * What a worker asks of the layer that serves its clients: one table,
 * registered once at start-up (worker_set_clients), before any worker
 * starts. The worker never calls that layer by name.
 */
struct worker_clients_ops {
	/* In worker_start, before its thread runs: sets w->clients (and may reserve timers). */
	int (*init)(struct worker *w);
	/* Once its thread is gone (or its start failed): frees w->clients. */
	void (*fini)(struct worker *w);
	/* On w's thread: a client handed over to w (worker_adopt); it takes the descriptors. */
	void (*adopt)(struct worker *w, const struct client *cl);
	/* Any thread: a client was closed before it was adopted (a stop, out of memory). */
	void (*dropped)(const struct client *cl);
	/* On w's thread: a graceful stop; then, after WORKER_STOP_GRACE_S, close_all. */
	void (*stop)(struct worker *w);
	void (*close_all)(struct worker *w);
};
void worker_set_clients(const struct worker_clients_ops *ops);

struct worker {
	int id;
	struct worker_config cfg; /* as worker_start was given it */
	pthread_t thread;
	struct io_uring ring;
	uint64_t now_ns;          /* its clock: CLOCK_MONOTONIC, read once per pass (worker_now) */
	struct timers timers;     /* its deadlines, on that clock (timer.h) */
	bool defer;               /* the ring defers task work (worker.c) */
	int64_t poll_credit_ns;   /* polling it may still do: earned by work, spent by polls */
	uint64_t busy_since_ns;   /* now_ns() its last wait ended */
	unsigned depth_peak;      /* the most requests it held lately (worker_depth) */
	uint64_t depth_peak_ns;   /* ...since this now_ns() */
	unsigned reqs_live;       /* requests its connections hold (received, not yet done with)
				     whose ends polling the ring may find sooner: the depth that
				     allows adaptive polling */
	int wake_fd;              /* eventfd: other threads wake the worker through it */
	atomic_bool woken;        /* ...written, and the worker has not looked yet */
	uint64_t wake_count;      /* ...the ring's read of it lands here */
	struct op wake_op;        /* ...and completes here */
	struct timer grace;       /* bounds a graceful stop */
	pthread_mutex_t inbox_lock;
	struct client *inbox;     /* accepted clients waiting to be adopted */
	size_t inbox_len, inbox_cap;
	struct op *ready_remote;  /* posted by other threads (under inbox_lock) */
	bool stop;                /* set under inbox_lock by the main thread */
	bool stopping;            /* worker-local copy once it acted on stop */
	struct op *ready_head, *ready_tail; /* posted on this thread, FIFO */
	struct deferred_cqe *deferred; /* taken off a full ring, run before newer ones */
	size_t ndeferred, deferred_cap;
	struct io_uring_sqe void_sqe; /* handed out when the ring refuses work */
	struct pool pool;         /* with its fair shares and waiters (pool.h) */
	struct worker_clients *clients; /* its clients' layer's state for it (worker_clients_ops) */
	atomic_uint nconns;       /* live clients (their layer counts them; the main thread reads) */
	unsigned nattached;       /* served but not clients: no socket, no stop waits for them
	                           * (a ublk device's queues); polling serves them too */
	struct worker_stats stats;
	void *zeroes;             /* WORKER_ZEROES_BYTES of zeroes, never written */
};
#define WORKER_ZEROES_BYTES (1u << 20)
#define WORKER_STOP_GRACE_S 5     /* a stop closes whatever is left after this */
#define WORKER_STOP_GRACE_NS (WORKER_STOP_GRACE_S * 1000000000ull)
/* The longest a worker sleeps without looking at its inbox (worker_check_posts). */
#define WORKER_WAKE_CHECK_NS 1000000000ull

/* Starts worker id with cfg's settings (worker_set_clients first). */
int worker_start(struct worker *w, const struct worker_config *cfg, int id);
/* Hands an accepted client to w (from the main thread); w owns its descriptors. */
void worker_adopt(struct worker *w, const struct client *cl);
void worker_stop(struct worker *w);
void worker_join(struct worker *w);
/* A fresh SQE whose completion is op. Never NULL (submits to make room). */
struct io_uring_sqe *worker_sqe(struct worker *w, struct op *op);
/* The worker whose thread this is, or NULL (the main thread, any other). */
struct worker *worker_self(void);
/* Queues op->done(op, res) on w's loop; from any thread. */
void worker_post(struct worker *w, struct op *op, int res);
/* Whether a client may take need chunks now (its fair share, pool.h). */
bool worker_pool_may_take(struct worker *w, const struct pool_account *a, uint32_t need);
/*
 * Parks a wait for chunks; pw->ctx is a struct op, posted with res 0 once
 * the chunks are promised to it (it must pool_claim() them), or with
 * -ECANCELED by worker_pool_cancel().
 */
void worker_pool_wait(struct worker *w, struct pool_waiter *pw);
/* Ends a parked wait early. No-op if it is not parked. */
void worker_pool_cancel(struct worker *w, struct pool_waiter *pw);
/* Adds a worker's counters into *sum. */
void worker_stats_add(const struct worker *w, struct worker_stats *sum);

/*
 * The worker's clock, on its own thread: CLOCK_MONOTONIC as read at the
 * start of this pass of its loop (after any wait), so every deadline and
 * every "last moved" stamp of one pass agree. Its timers are armed on it.
 */
static inline uint64_t worker_now(const struct worker *w)
{
	return w->now_ns;
}
/* Room in w's heap for n more timers (when their owner comes to be); 0 or -ENOMEM. */
int worker_timers_reserve(struct worker *w, unsigned n);
/* Gives that room back (the owner's timers are stopped). */
void worker_timers_unreserve(struct worker *w, unsigned n);
/* Arms t on w's thread to fire after_ns from worker_now(w) (moves it if armed). */
static inline void worker_timer_in(struct worker *w, struct timer *t, uint64_t after_ns)
{
	timers_arm(&w->timers, t, w->now_ns + after_ns);
}
/* Arms t at due_ns on w's clock. */
static inline void worker_timer_at(struct worker *w, struct timer *t, uint64_t due_ns)
{
	timers_arm(&w->timers, t, due_ns);
}
static inline void worker_timer_stop(struct worker *w, struct timer *t)
{
	timers_stop(&w->timers, t);
}
/* The rings' way with task work, for the start-up log (after worker_start). */
const char *worker_ring_features(void);

/* ---- offload.c: blocking calls on threads of their own ---- */
/*
 * fn runs on an offload thread (it may block: lseek, ioctl); then op is
 * posted to w with the res fn set (0 unless it sets one). The job and what fn touches belong to the
 * offload thread until op runs.
 */
struct offload_job {
	void (*fn)(struct offload_job *j);
	int res;                  /* what fn sets: op is posted with it */
	struct worker *w;
	struct op *op;
	struct offload_job *next;
};
void offload_queue(struct offload_job *j);

#endif
