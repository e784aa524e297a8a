/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * timer: a worker's deadlines, on its one clock.
 *
 * Every deadline a worker keeps (a negotiation's limit, a connection's
 * watchdog, a stop's or a hand-over's grace, the oldest-request watch) is
 * a struct timer in the worker's heap, due at a CLOCK_MONOTONIC time in
 * nanoseconds. The worker reads that clock once per pass of its loop,
 * right after any wait, fires what is due, and waits in its ring no longer
 * than until the earliest deadline left (engine/worker.c). No other clock
 * is consulted, so a worker that slept a minute sees a minute gone, and a
 * deadline is never met early or started from a stale time.
 *
 * The heap is a binary min-heap of pointers with each timer's place kept
 * in the timer, so stopping or moving one is O(log n). Arming never
 * allocates: owners reserve room for their timers when they come to exist
 * (timers_reserve, which may fail) and hand it back when they go.
 *
 * Pure code: no io_uring, no event loop, no clock of its own. A heap is
 * owned by one thread and is not thread-safe.
 */
#ifndef URINGNBD_TIMER_H
#define URINGNBD_TIMER_H

#include <stdbool.h>
#include <stdint.h>

#define TIMER_NEVER UINT64_MAX

struct timer {
	uint64_t due_ns;            /* when it fires; meaningful while armed */
	unsigned slot;              /* its index in the heap + 1; 0: not armed */
	void (*fire)(struct timer *t); /* runs once it is due; t is disarmed first */
};

struct timers {
	struct timer **heap;        /* min-heap on due_ns */
	unsigned n;                 /* armed timers */
	unsigned reserved;          /* room promised to owners (heap's capacity >= this) */
	unsigned cap;               /* heap's capacity */
};

static inline void timer_init(struct timer *t, void (*fire)(struct timer *t))
{
	t->due_ns = 0;
	t->slot = 0;
	t->fire = fire;
}

static inline bool timer_armed(const struct timer *t)
{
	return t->slot != 0;
}

void timers_init(struct timers *h);
void timers_release(struct timers *h);
/* Room for n more armed timers; 0 or -ENOMEM. */
int timers_reserve(struct timers *h, unsigned n);
/* Hands back what timers_reserve(h, n) promised (their timers are stopped). */
void timers_unreserve(struct timers *h, unsigned n);
/* Arms t to fire at due_ns, or moves it there if it is armed. */
void timers_arm(struct timers *h, struct timer *t, uint64_t due_ns);
/* Disarms t; a no-op if it is not armed. */
void timers_stop(struct timers *h, struct timer *t);
/* The earliest deadline armed, or TIMER_NEVER. */
static inline uint64_t timers_next(const struct timers *h)
{
	return h->n ? h->heap[0]->due_ns : TIMER_NEVER;
}
/*
 * Fires every timer due at now_ns, earliest first, but never more than
 * were armed on entry (a callback that arms a timer for now_ns again
 * cannot keep the caller here). Returns how many fired.
 */
unsigned timers_run(struct timers *h, uint64_t now_ns);

#endif
