// SPDX-License-Identifier: BSD-3-Clause
/*
 * Unit tests of cache/ alone (no I/O): hits and misses, one fill for many
 * readers, the stale-fill path, invalidation boundaries, pinned pages,
 * FULL, the budget under a workload ten times its size, and a threaded
 * test against a model "disk" that catches any stale page being served.
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../cache/cache.h"

#define PAGE CACHE_PAGE_BYTES

struct waiter {
	struct cache_waiter w;
	int woken;
};

static void on_wake(struct cache_waiter *w)
{
	((struct waiter *)w)->woken++;
}

static struct cache_stats stats(struct cache *c)
{
	struct cache_stats s;

	cache_get_stats(c, &s);
	return s;
}

/* Fills a MISS page with a byte pattern and installs it. */
static bool fill(struct cache *c, struct cache_page *p, uint8_t v)
{
	memset(cache_page_data(p), v, PAGE);
	return cache_fill_done(c, p, true);
}

START_TEST(test_miss_fill_hit)
{
	struct cache *c = cache_new(16 * PAGE);
	struct cache_page *p;

	ck_assert_int_eq(cache_lookup(c, 1, 7, NULL, &p), CACHE_MISS);
	ck_assert(((uintptr_t)cache_page_data(p) % PAGE) == 0);
	ck_assert(fill(c, p, 0xab));
	ck_assert_int_eq(cache_lookup(c, 1, 7, NULL, &p), CACHE_HIT);
	ck_assert_uint_eq(cache_page_data(p)[PAGE - 1], 0xab);
	cache_unpin(c, p);
	/* Same index, other file: a different page. */
	ck_assert_int_eq(cache_lookup(c, 2, 7, NULL, &p), CACHE_MISS);
	ck_assert(!cache_fill_done(c, p, false)); /* a failed fill is not installed */
	ck_assert_int_eq(cache_lookup(c, 2, 7, NULL, &p), CACHE_MISS);
	cache_fill_done(c, p, false);
	ck_assert(stats(c).hits == 1 && stats(c).misses == 3 && stats(c).fills == 1);
	cache_free(c);
}
END_TEST

START_TEST(test_concurrent_readers_one_fill)
{
	struct cache *c = cache_new(16 * PAGE);
	struct cache_page *p, *q;
	struct waiter w[3] = { { { on_wake, NULL }, 0 }, { { on_wake, NULL }, 0 },
			       { { on_wake, NULL }, 0 } };
	int i;

	ck_assert_int_eq(cache_lookup(c, 1, 0, NULL, &p), CACHE_MISS);
	for (i = 0; i < 3; i++) {
		ck_assert_int_eq(cache_lookup(c, 1, 0, &w[i].w, &q), CACHE_WAIT);
		ck_assert_ptr_null(q);
	}
	ck_assert(fill(c, p, 5));
	for (i = 0; i < 3; i++) {
		ck_assert_int_eq(w[i].woken, 1);
		ck_assert_int_eq(cache_lookup(c, 1, 0, NULL, &q), CACHE_HIT);
		ck_assert_uint_eq(cache_page_data(q)[0], 5);
		cache_unpin(c, q);
	}
	/* Four readers of a cold page: one read of the file. */
	ck_assert(stats(c).misses == 1 && stats(c).fills == 1 && stats(c).waits == 3);
	cache_free(c);
}
END_TEST

START_TEST(test_stale_fill_dropped)
{
	struct cache *c = cache_new(16 * PAGE);
	struct cache_page *p, *q;
	struct waiter w = { { on_wake, NULL }, 0 };

	ck_assert_int_eq(cache_lookup(c, 1, 3, NULL, &p), CACHE_MISS);
	ck_assert_int_eq(cache_lookup(c, 1, 3, &w.w, &q), CACHE_WAIT);
	memset(cache_page_data(p), 1, PAGE); /* the fill read the old data... */
	cache_invalidate(c, 1, 3 * PAGE + 100, 1); /* ...then a write landed */
	/* New readers no longer wait for the stale fill: they start their own. */
	ck_assert_int_eq(cache_lookup(c, 1, 3, NULL, &q), CACHE_MISS);
	ck_assert(!cache_fill_done(c, p, true));
	ck_assert_int_eq(w.woken, 1);
	ck_assert(fill(c, q, 2));
	ck_assert_int_eq(cache_lookup(c, 1, 3, NULL, &q), CACHE_HIT);
	ck_assert_uint_eq(cache_page_data(q)[0], 2);
	cache_unpin(c, q);
	ck_assert(stats(c).stale_fills_dropped == 1 && stats(c).fills == 1);
	cache_free(c);
}
END_TEST

START_TEST(test_invalidate_boundaries)
{
	struct cache *c = cache_new(16 * PAGE);
	struct cache_page *p;
	uint64_t i;

	for (i = 0; i < 4; i++) {
		ck_assert_int_eq(cache_lookup(c, 9, i, NULL, &p), CACHE_MISS);
		fill(c, p, (uint8_t)i);
	}
	cache_invalidate(c, 9, PAGE, PAGE); /* exactly page 1 */
	cache_invalidate(c, 8, 0, 100 * PAGE); /* another file */
	cache_invalidate(c, 9, 0, 0);          /* nothing */
	ck_assert_int_eq(cache_lookup(c, 9, 0, NULL, &p), CACHE_HIT);
	cache_unpin(c, p);
	ck_assert_int_eq(cache_lookup(c, 9, 2, NULL, &p), CACHE_HIT);
	cache_unpin(c, p);
	ck_assert_int_eq(cache_lookup(c, 9, 1, NULL, &p), CACHE_MISS);
	fill(c, p, 1);
	cache_invalidate(c, 9, 3 * PAGE - 1, 2); /* the last byte of 2, the first of 3 */
	ck_assert_int_eq(cache_lookup(c, 9, 1, NULL, &p), CACHE_HIT);
	cache_unpin(c, p);
	ck_assert_int_eq(cache_lookup(c, 9, 2, NULL, &p), CACHE_MISS);
	cache_fill_done(c, p, false);
	ck_assert_int_eq(cache_lookup(c, 9, 3, NULL, &p), CACHE_MISS);
	cache_fill_done(c, p, false);
	/* A huge range (a TRIM of the whole file) takes the scan path. */
	cache_invalidate(c, 9, 0, UINT64_C(1) << 40);
	ck_assert_int_eq(cache_lookup(c, 9, 0, NULL, &p), CACHE_MISS);
	cache_fill_done(c, p, false);
	ck_assert_uint_eq(stats(c).pages_used, 0);
	cache_free(c);
}
END_TEST

START_TEST(test_pinned_page_survives_invalidation)
{
	struct cache *c = cache_new(16 * PAGE);
	struct cache_page *p, *q;

	ck_assert_int_eq(cache_lookup(c, 1, 0, NULL, &p), CACHE_MISS);
	fill(c, p, 7);
	ck_assert_int_eq(cache_lookup(c, 1, 0, NULL, &p), CACHE_HIT);
	cache_invalidate(c, 1, 0, PAGE);
	/* The reader still copies the page it pinned, unchanged... */
	ck_assert_uint_eq(cache_page_data(p)[10], 7);
	/* ...while new readers miss and fill a new page. */
	ck_assert_int_eq(cache_lookup(c, 1, 0, NULL, &q), CACHE_MISS);
	ck_assert_ptr_ne(p, q);
	fill(c, q, 8);
	ck_assert_uint_eq(cache_page_data(p)[10], 7);
	cache_unpin(c, p);
	ck_assert_uint_eq(stats(c).pages_used, 1);
	cache_free(c);
}
END_TEST

START_TEST(test_full_when_everything_pinned)
{
	struct cache *c = cache_new(2 * PAGE);
	struct cache_page *a, *b, *x;

	ck_assert_int_eq(cache_lookup(c, 1, 0, NULL, &a), CACHE_MISS);
	ck_assert_int_eq(cache_lookup(c, 1, 1, NULL, &b), CACHE_MISS);
	ck_assert_int_eq(cache_lookup(c, 1, 2, NULL, &x), CACHE_FULL);
	fill(c, a, 1);
	ck_assert_int_eq(cache_lookup(c, 1, 0, NULL, &a), CACHE_HIT); /* pinned again */
	ck_assert_int_eq(cache_lookup(c, 1, 2, NULL, &x), CACHE_FULL);
	cache_unpin(c, a);
	/* Now page 0 can go (after CLOCK clears its bit). */
	ck_assert_int_eq(cache_lookup(c, 1, 2, NULL, &x), CACHE_MISS);
	fill(c, x, 2);
	cache_fill_done(c, b, false);
	ck_assert(stats(c).evictions == 1 && stats(c).full == 2);
	cache_free(c);
}
END_TEST

START_TEST(test_budget_under_ten_times_workload)
{
	struct cache *c = cache_new(64 * PAGE);
	struct cache_page *p;
	uint64_t x = 1;
	int i, hits = 0;

	for (i = 0; i < 20000; i++) {
		uint64_t idx;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		/* 640 pages in play, a hot tenth of them touched half the time. */
		idx = (x & 1) ? (x >> 8) % 64 : (x >> 8) % 640;
		switch (cache_lookup(c, 5, idx, NULL, &p)) {
		case CACHE_HIT:
			ck_assert_uint_eq(cache_page_data(p)[0], (uint8_t)idx);
			cache_unpin(c, p);
			hits++;
			break;
		case CACHE_MISS:
			fill(c, p, (uint8_t)idx);
			break;
		default:
			ck_abort_msg("unexpected WAIT or FULL");
		}
		ck_assert_uint_le(stats(c).pages_used, 64);
	}
	ck_assert(stats(c).evictions > 0);
	printf("test_budget_under_ten_times_workload: %d hits of 20000, %llu evictions\n", hits,
	       (unsigned long long)stats(c).evictions);
	cache_free(c);
}
END_TEST

/* ---- threads against a model disk ---- */

#define PAGES 32
#define THREADS 4
#define ITERS 20000

static struct cache *tc;
static pthread_mutex_t disk_mu = PTHREAD_MUTEX_INITIALIZER;
static uint32_t disk[PAGES];          /* each page's current version */
static atomic_int bad;

struct twaiter {
	struct cache_waiter w;
	atomic_int woken;
};

static void on_twake(struct cache_waiter *w)
{
	atomic_store(&((struct twaiter *)w)->woken, 1);
}

static void *model_thread(void *arg)
{
	uint64_t x = (uintptr_t)arg * 7919 + 3;
	struct twaiter w = { { on_twake, NULL }, 0 };
	struct cache_page *p;
	int it;

	for (it = 0; it < ITERS; it++) {
		uint64_t idx;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		idx = (x >> 8) % PAGES;
		if (x % 5 == 0) {
			/*
			 * A write: the disk changes, then the cache is told, both under
			 * the writer's lock (the daemon's exclusive range lock). Fills
			 * in flight are outside it: those are what must be dropped.
			 */
			pthread_mutex_lock(&disk_mu);
			disk[idx]++;
			cache_invalidate(tc, 1, idx * PAGE + x % 100, 1 + x % 50);
			pthread_mutex_unlock(&disk_mu);
			continue;
		}
		pthread_mutex_lock(&disk_mu);
		switch (cache_lookup(tc, 1, idx, &w.w, &p)) {
		case CACHE_HIT:
			/* The disk cannot have moved on without invalidating this page. */
			if (memcmp(cache_page_data(p), &disk[idx], 4) != 0)
				atomic_fetch_add(&bad, 1);
			pthread_mutex_unlock(&disk_mu);
			cache_unpin(tc, p);
			break;
		case CACHE_MISS:
			memcpy(cache_page_data(p), &disk[idx], 4); /* "read the file" */
			pthread_mutex_unlock(&disk_mu);
			if (x % 3 == 0)
				sched_yield(); /* let writes overtake the fill */
			cache_fill_done(tc, p, true);
			break;
		case CACHE_WAIT:
			pthread_mutex_unlock(&disk_mu);
			while (!atomic_load(&w.woken))
				sched_yield();
			atomic_store(&w.woken, 0);
			break;
		case CACHE_FULL:
			pthread_mutex_unlock(&disk_mu);
			break;
		}
	}
	return NULL;
}

START_TEST(test_threads_never_stale)
{
	pthread_t t[THREADS];
	struct cache_stats s;
	uintptr_t i;

	tc = cache_new(16 * PAGE); /* fewer pages than in play: evictions too */
	for (i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, model_thread, (void *)(i + 1));
	for (i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	s = stats(tc);
	printf("test_threads_never_stale: %llu hits, %llu fills, %llu stale fills dropped, "
	       "%llu waits, %llu evictions\n", (unsigned long long)s.hits,
	       (unsigned long long)s.fills, (unsigned long long)s.stale_fills_dropped,
	       (unsigned long long)s.waits, (unsigned long long)s.evictions);
	ck_assert_int_eq(atomic_load(&bad), 0);
	ck_assert(s.hits > 0 && s.stale_fills_dropped > 0);
	cache_free(tc);
}
END_TEST

static Suite *cache_suite(void)
{
	Suite *s = suite_create("cache");
	TCase *tc1 = tcase_create("rules"), *tt = tcase_create("threads");

	tcase_add_test(tc1, test_miss_fill_hit);
	tcase_add_test(tc1, test_concurrent_readers_one_fill);
	tcase_add_test(tc1, test_stale_fill_dropped);
	tcase_add_test(tc1, test_invalidate_boundaries);
	tcase_add_test(tc1, test_pinned_page_survives_invalidation);
	tcase_add_test(tc1, test_full_when_everything_pinned);
	tcase_add_test(tc1, test_budget_under_ten_times_workload);
	suite_add_tcase(s, tc1);
	tcase_add_test(tt, test_threads_never_stale);
	tcase_set_timeout(tt, 60);
	suite_add_tcase(s, tt);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(cache_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
