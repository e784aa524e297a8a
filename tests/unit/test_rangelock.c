// SPDX-License-Identifier: BSD-3-Clause
/*
 * Unit tests of lock/: the rules one by one, random sequences against a
 * brute-force oracle (seed printed; RL_SEED=N repeats a run), and a
 * multi-threaded stress test that checks mutual exclusion directly.
 */
#include <check.h>
#include <inttypes.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../lock/rangelock.h"

static int grants;

static void on_grant(struct rl_lock *l, void *arg)
{
	(void)l;
	(*(int *)arg)++;
	grants++;
}

START_TEST(test_shared_share)
{
	struct rl_manager *m = rl_manager_new();
	struct rl_lock a, b;

	ck_assert(rl_acquire(m, &a, 0, 99, false, on_grant, NULL));
	ck_assert(rl_acquire(m, &b, 50, 150, false, on_grant, NULL));
	rl_release(m, &a);
	rl_release(m, &b);
	rl_manager_free(m);
}
END_TEST

START_TEST(test_exclusive_waits_then_granted)
{
	struct rl_manager *m = rl_manager_new();
	struct rl_lock r, w;
	int n = 0;

	ck_assert(rl_acquire(m, &r, 0, 99, false, on_grant, &n));
	ck_assert(!rl_acquire(m, &w, 99, 200, true, on_grant, &n));
	ck_assert(!w.granted);
	rl_release(m, &r);
	ck_assert_int_eq(n, 1);
	ck_assert(w.granted);
	rl_release(m, &w);
	rl_manager_free(m);
}
END_TEST

START_TEST(test_adjacent_do_not_conflict)
{
	struct rl_manager *m = rl_manager_new();
	struct rl_lock a, b, c;

	ck_assert(rl_acquire(m, &a, 0, 9, true, on_grant, NULL));
	ck_assert(rl_acquire(m, &b, 10, 19, true, on_grant, NULL));
	/* One byte of overlap is a conflict. */
	ck_assert(!rl_acquire(m, &c, 19, 19, false, on_grant, &(int){ 0 }));
	rl_release(m, &a);
	ck_assert(!c.granted);
	rl_release(m, &b);
	ck_assert(c.granted);
	rl_release(m, &c);
	rl_manager_free(m);
}
END_TEST

START_TEST(test_fifo_no_writer_starvation)
{
	struct rl_manager *m = rl_manager_new();
	struct rl_lock r1, w, r2, r3;
	int nw = 0, nr = 0;

	ck_assert(rl_acquire(m, &r1, 0, 4095, false, on_grant, NULL));
	ck_assert(!rl_acquire(m, &w, 0, 4095, true, on_grant, &nw));
	/* A reader arriving after a waiting writer waits behind it... */
	ck_assert(!rl_acquire(m, &r2, 100, 200, false, on_grant, &nr));
	/* ...but a reader elsewhere does not. */
	ck_assert(rl_acquire(m, &r3, 8192, 9000, false, on_grant, NULL));
	rl_release(m, &r1);
	ck_assert_int_eq(nw, 1);
	ck_assert_int_eq(nr, 0);
	rl_release(m, &w);
	ck_assert_int_eq(nr, 1);
	rl_release(m, &r2);
	rl_release(m, &r3);
	rl_manager_free(m);
}
END_TEST

START_TEST(test_full_range_and_stats)
{
	struct rl_manager *m = rl_manager_new();
	struct rl_lock a, b;
	struct rl_stats st;
	int n = 0;

	ck_assert(rl_acquire(m, &a, 0, UINT64_MAX, true, on_grant, NULL));
	ck_assert(!rl_acquire(m, &b, UINT64_MAX, UINT64_MAX, false, on_grant, &n));
	rl_get_stats(m, &st);
	ck_assert(st.acquired == 2 && st.waited == 1 && st.in_tree == 2);
	rl_release(m, &a);
	ck_assert_int_eq(n, 1);
	rl_release(m, &b);
	rl_get_stats(m, &st);
	ck_assert(st.in_tree == 0);
	rl_manager_free(m);
}
END_TEST

/* ---- random sequences against a brute-force oracle ---- */

#define NLOCKS 300

struct olock {
	struct rl_lock l;
	bool present;
	bool granted;       /* oracle's view */
	int cb_count;
	uint64_t order;     /* arrival */
	uint64_t first, last;
	bool exclusive;
};

static bool oconflict(const struct olock *a, const struct olock *b)
{
	return (a->exclusive || b->exclusive) && a->first <= b->last && b->first <= a->last;
}

static void on_ogrant(struct rl_lock *l, void *arg)
{
	(void)l;
	((struct olock *)arg)->cb_count++;
}

static uint64_t rng_state;
static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

START_TEST(test_random_vs_oracle)
{
	static struct olock o[NLOCKS];
	struct rl_manager *m = rl_manager_new();
	uint64_t seed = getenv("RL_SEED") ? strtoull(getenv("RL_SEED"), NULL, 0)
					  : (uint64_t)time(NULL) ^ (uint64_t)clock();
	uint64_t arrivals = 0, space;
	int step, i, j;

	printf("test_random_vs_oracle: seed %" PRIu64 " (RL_SEED=%" PRIu64 " repeats it)\n", seed,
	       seed);
	fflush(stdout);
	rng_state = seed | 1;
	memset(o, 0, sizeof(o));
	for (step = 0; step < 30000; step++) {
		/* Vary the density: a small space means many overlaps. */
		space = (step / 3000) % 2 ? 1000 : 100000;
		i = (int)(rnd() % NLOCKS);
		if (!o[i].present) {
			uint64_t a = rnd() % space, len = rnd() % (space / 10) + 1;

			if (rnd() % 50 == 0)
				len = space; /* an occasional huge range */
			o[i].first = a;
			o[i].last = a + len - 1;
			o[i].exclusive = rnd() % 3 == 0;
			o[i].present = true;
			o[i].cb_count = 0;
			o[i].order = ++arrivals;
			o[i].granted = rl_acquire(m, &o[i].l, o[i].first, o[i].last, o[i].exclusive,
						  on_ogrant, &o[i]);
		} else if (o[i].l.granted) {
			rl_release(m, &o[i].l);
			o[i].present = false;
		} else {
			continue;
		}
		/* Oracle: granted iff no earlier present lock conflicts. */
		for (j = 0; j < NLOCKS; j++) {
			bool want = true;
			int k;

			if (!o[j].present)
				continue;
			for (k = 0; k < NLOCKS && want; k++)
				if (k != j && o[k].present && o[k].order < o[j].order &&
				    oconflict(&o[k], &o[j]))
					want = false;
			if (want != o[j].l.granted)
				ck_abort_msg("seed %" PRIu64 " step %d: lock %d [%" PRIu64 ",%" PRIu64
					     "] %s granted=%d, oracle says %d", seed, step, j,
					     o[j].first, o[j].last, o[j].exclusive ? "ex" : "sh",
					     o[j].l.granted, want);
			/* The callback ran once exactly for locks granted after waiting. */
			ck_assert_int_eq(o[j].cb_count, (want && !o[j].granted) ? 1 : 0);
		}
		if (step % 1000 == 999) {
			/* Occasionally drain everything. */
			bool any = true;

			while (any) {
				any = false;
				for (j = 0; j < NLOCKS; j++)
					if (o[j].present && o[j].l.granted) {
						rl_release(m, &o[j].l);
						o[j].present = false;
						any = true;
					}
			}
			for (j = 0; j < NLOCKS; j++)
				ck_assert(!o[j].present);
		}
	}
	for (j = 0; j < NLOCKS; j++)
		ck_assert(!o[j].present || o[j].l.granted || o[j].present);
	/* Release the rest in grant order. */
	for (;;) {
		bool any = false;

		for (j = 0; j < NLOCKS; j++)
			if (o[j].present && o[j].l.granted) {
				rl_release(m, &o[j].l);
				o[j].present = false;
				any = true;
			}
		if (!any)
			break;
	}
	rl_manager_free(m);
}
END_TEST

/* ---- threads ---- */

#define UNITS 128
#define THREADS 4
#define ITERS 4000

static struct rl_manager *sm;
static atomic_int readers[UNITS], writers[UNITS];
static atomic_int violations;

struct waiter {
	sem_t sem;
};

static void on_sem_grant(struct rl_lock *l, void *arg)
{
	(void)l;
	sem_post(&((struct waiter *)arg)->sem);
}

static void *stress_thread(void *arg)
{
	uint64_t x = (uintptr_t)arg * 7919 + 1;
	struct waiter w;
	struct rl_lock l;
	int it, u;

	sem_init(&w.sem, 0, 0);
	for (it = 0; it < ITERS; it++) {
		unsigned a, len;
		bool ex;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		a = (unsigned)(x % UNITS);
		len = (unsigned)((x >> 20) % 8) + 1;
		if (a + len > UNITS)
			len = UNITS - a;
		ex = (x >> 40) % 2;
		if (!rl_acquire(sm, &l, a * 512ull, (a + len) * 512ull - 1, ex, on_sem_grant, &w))
			sem_wait(&w.sem);
		for (u = (int)a; u < (int)(a + len); u++) {
			if (ex) {
				if (atomic_fetch_add(&writers[u], 1) != 0 || atomic_load(&readers[u]))
					atomic_fetch_add(&violations, 1);
			} else {
				atomic_fetch_add(&readers[u], 1);
				if (atomic_load(&writers[u]))
					atomic_fetch_add(&violations, 1);
			}
		}
		for (u = (int)a; u < (int)(a + len); u++) {
			if (ex)
				atomic_fetch_sub(&writers[u], 1);
			else
				atomic_fetch_sub(&readers[u], 1);
		}
		rl_release(sm, &l);
	}
	sem_destroy(&w.sem);
	return NULL;
}

START_TEST(test_threads_mutual_exclusion)
{
	pthread_t t[THREADS];
	struct rl_stats st;
	uintptr_t i;

	sm = rl_manager_new();
	for (i = 0; i < THREADS; i++)
		ck_assert_int_eq(pthread_create(&t[i], NULL, stress_thread, (void *)(i + 1)), 0);
	for (i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	ck_assert_int_eq(atomic_load(&violations), 0);
	rl_get_stats(sm, &st);
	ck_assert(st.acquired == THREADS * ITERS);
	ck_assert(st.in_tree == 0);
	printf("test_threads_mutual_exclusion: %" PRIu64 " of %" PRIu64 " acquisitions waited\n",
	       st.waited, st.acquired);
	rl_manager_free(sm);
}
END_TEST

static Suite *rangelock_suite(void)
{
	Suite *s = suite_create("rangelock");
	TCase *tc = tcase_create("rules"), *tr = tcase_create("random"), *tt = tcase_create("threads");

	tcase_add_test(tc, test_shared_share);
	tcase_add_test(tc, test_exclusive_waits_then_granted);
	tcase_add_test(tc, test_adjacent_do_not_conflict);
	tcase_add_test(tc, test_fifo_no_writer_starvation);
	tcase_add_test(tc, test_full_range_and_stats);
	suite_add_tcase(s, tc);
	tcase_add_test(tr, test_random_vs_oracle);
	tcase_set_timeout(tr, 60);
	suite_add_tcase(s, tr);
	tcase_add_test(tt, test_threads_mutual_exclusion);
	tcase_set_timeout(tt, 60);
	suite_add_tcase(s, tt);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(rangelock_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
