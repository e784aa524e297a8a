// SPDX-License-Identifier: BSD-3-Clause
/*
 * A worker's deadlines: a binary min-heap of timers (timer.h).
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>

#include "timer.h"

void timers_init(struct timers *h)
{
	h->heap = NULL;
	h->n = h->reserved = h->cap = 0;
}

void timers_release(struct timers *h)
{
	free(h->heap);
	timers_init(h);
}

int timers_reserve(struct timers *h, unsigned n)
{
	if (h->reserved + n > h->cap) {
		unsigned cap = h->cap ? h->cap : 16;
		struct timer **p;

		while (cap < h->reserved + n)
			cap *= 2;
		p = realloc(h->heap, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		h->heap = p;
		h->cap = cap;
	}
	h->reserved += n;
	return 0;
}

void timers_unreserve(struct timers *h, unsigned n)
{
	assert(n <= h->reserved);
	h->reserved -= n;
	assert(h->n <= h->reserved);
}

static void heap_put(struct timers *h, unsigned i, struct timer *t)
{
	h->heap[i] = t;
	t->slot = i + 1;
}

/* Moves the timer at i up or down until the heap holds again. */
static void heap_fix(struct timers *h, unsigned i)
{
	struct timer *t = h->heap[i];

	while (i > 0) {
		unsigned parent = (i - 1) / 2;

		if (h->heap[parent]->due_ns <= t->due_ns)
			break;
		heap_put(h, i, h->heap[parent]);
		i = parent;
	}
	for (;;) {
		unsigned child = 2 * i + 1;

		if (child >= h->n)
			break;
		if (child + 1 < h->n && h->heap[child + 1]->due_ns < h->heap[child]->due_ns)
			child++;
		if (h->heap[child]->due_ns >= t->due_ns)
			break;
		heap_put(h, i, h->heap[child]);
		i = child;
	}
	heap_put(h, i, t);
}

void timers_arm(struct timers *h, struct timer *t, uint64_t due_ns)
{
	t->due_ns = due_ns;
	if (!t->slot) {
		/* The owner reserved room for it: arming never fails. */
		assert(h->n < h->reserved && h->n < h->cap);
		heap_put(h, h->n++, t);
	}
	heap_fix(h, t->slot - 1);
}

void timers_stop(struct timers *h, struct timer *t)
{
	unsigned i = t->slot - 1;

	if (!t->slot)
		return;
	assert(i < h->n && h->heap[i] == t);
	t->slot = 0;
	if (i == --h->n)
		return;
	heap_put(h, i, h->heap[h->n]);
	heap_fix(h, i);
}

unsigned timers_run(struct timers *h, uint64_t now_ns)
{
	unsigned fired = 0, limit = h->n;

	/* At most those armed on entry: one re-armed for now fires next time. */
	while (h->n && h->heap[0]->due_ns <= now_ns && fired < limit) {
		struct timer *t = h->heap[0];

		timers_stop(h, t);
		fired++;
		t->fire(t);
	}
	return fired;
}
