// SPDX-License-Identifier: BSD-3-Clause
/*
 * Range lock manager benchmark (not a test): acquire + release of a lock
 * that does not conflict, with 1, 64 and 4096 other ranges held, single
 * threaded and with 2 threads on one manager. Prints the median of 5 runs.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "../../lock/rangelock.h"

#define OPS 1000000

static void no_grant(struct rl_lock *l, void *arg)
{
	(void)l;
	(void)arg;
	abort(); /* nothing here ever waits */
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct run {
	struct rl_manager *m;
	unsigned held;
	unsigned seed;
};

/* Held ranges are 4 KiB shared locks spread over 1 TiB; probes are
 * 4 KiB shared or exclusive locks between them. */
static void *probe(void *arg)
{
	struct run *r = arg;
	uint64_t x = r->seed * 2654435761u + 1;
	struct rl_lock l;
	int i;

	for (i = 0; i < OPS; i++) {
		uint64_t slot;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		slot = x % (r->held ? r->held : 1);
		/* Between held range `slot` and the next one. */
		/* Each thread has its own probe ranges: nothing ever waits. */
		rl_acquire(r->m, &l, (slot * 2 + 1) * 4096 * 64 + r->seed * 8192,
			   (slot * 2 + 1) * 4096 * 64 + r->seed * 8192 + 4095, x & 1, no_grant, NULL);
		rl_release(r->m, &l);
	}
	return NULL;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double measure(unsigned held, unsigned threads)
{
	struct rl_lock *locks = calloc(held, sizeof(*locks));
	struct rl_manager *m = rl_manager_new();
	struct run runs[2];
	pthread_t t[2];
	double t0, t1;
	unsigned i;

	for (i = 0; i < held; i++)
		rl_acquire(m, &locks[i], (uint64_t)i * 2 * 4096 * 64,
			   (uint64_t)i * 2 * 4096 * 64 + 4095, false, no_grant, NULL);
	t0 = now_s();
	for (i = 0; i < threads; i++) {
		runs[i] = (struct run){ .m = m, .held = held, .seed = i + 1 };
		pthread_create(&t[i], NULL, probe, &runs[i]);
	}
	for (i = 0; i < threads; i++)
		pthread_join(t[i], NULL);
	t1 = now_s();
	for (i = 0; i < held; i++)
		rl_release(m, &locks[i]);
	rl_manager_free(m);
	free(locks);
	return (double)OPS * threads / (t1 - t0);
}

int main(void)
{
	static const unsigned helds[] = { 1, 64, 4096 };
	unsigned h, threads, k;

	setvbuf(stdout, NULL, _IONBF, 0);
	printf("%-8s %-8s %16s %12s\n", "held", "threads", "acq+rel/s", "ns/pair");
	for (threads = 1; threads <= 2; threads++) {
		for (h = 0; h < 3; h++) {
			double v[5];

			for (k = 0; k < 5; k++)
				v[k] = measure(helds[h], threads);
			qsort(v, 5, sizeof(v[0]), cmp);
			printf("%-8u %-8u %16.0f %12.1f\n", helds[h], threads, v[2],
			       1e9 / v[2] * threads);
		}
	}
	return 0;
}
