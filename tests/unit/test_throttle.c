// SPDX-License-Identifier: BSD-3-Clause
/*
 * Unit tests of daemon/engine/throttle.c on a simulated clock: a client
 * that sends its next request as soon as the last one may run gets the
 * average rate; a burst lasts its length and no longer; iops-size, read
 * and write limits, live changes, and the checks of a set of limits.
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../daemon/engine/throttle.h"

#define NS 1000000000ull

/*
 * Requests of bytes sent back to back from start_ns for secs seconds (each
 * waits what throttle_charge says). Returns how many ran; *end_ns: when the
 * last one ran.
 */
static unsigned run(struct throttle *t, bool write, uint64_t bytes, uint64_t start_ns,
		    double secs, uint64_t *end_ns)
{
	uint64_t now = start_ns, stop = start_ns + (uint64_t)(secs * NS);
	unsigned n = 0;

	for (;;) {
		uint64_t wait = throttle_charge(t, write, bytes, now);

		if (now + wait >= stop)
			break;
		now += wait;
		n++;
	}
	if (end_ns)
		*end_ns = now;
	return n;
}

static void limit(struct throttle *t, const char *key, uint64_t v)
{
	struct throttle_limits lim;
	int k = throttle_key_find(key);

	ck_assert_int_ge(k, 0);
	throttle_get(t, &lim);
	throttle_key_set(&lim, (unsigned)k, v);
	throttle_set(t, &lim);
}

START_TEST(test_average_rate)
{
	struct throttle t;
	unsigned n;

	throttle_init(&t);
	limit(&t, "iops-total", 2000);
	n = run(&t, false, 4096, NS, 10.0, NULL);
	/* 10 s at 2000, plus the bucket's tenth of a second at the start. */
	ck_assert_uint_ge(n, 20000);
	ck_assert_uint_le(n, 20000 + 200 + 1);
	throttle_release(&t);
}
END_TEST

START_TEST(test_bps_rate)
{
	struct throttle t;
	unsigned n;

	throttle_init(&t);
	limit(&t, "bps-total", 100 << 20);
	n = run(&t, true, 1 << 20, NS, 10.0, NULL);
	ck_assert_uint_ge(n, 1000);
	ck_assert_uint_le(n, 1000 + 11);
	throttle_release(&t);
}
END_TEST

START_TEST(test_burst_length)
{
	struct throttle t;
	uint64_t end;
	unsigned burst, after;

	throttle_init(&t);
	limit(&t, "iops-total", 500);
	limit(&t, "iops-total-max", 2000);
	limit(&t, "iops-total-max-length", 2);
	/* From idle: the burst rate for 2 s (within its tenth-of-a-second bucket)... */
	burst = run(&t, false, 4096, 100 * NS, 2.0, &end);
	ck_assert_uint_ge(burst, 3950);
	ck_assert_uint_le(burst, 4000 + 200 + 1);
	/* ...then the average rate, however long the client keeps asking. */
	after = run(&t, false, 4096, 102 * NS, 4.0, NULL);
	ck_assert_uint_ge(after, 1950);
	ck_assert_uint_le(after, 2050);
	/* Idle long enough, the burst is there again. */
	burst = run(&t, false, 4096, 200 * NS, 1.0, NULL);
	ck_assert_uint_ge(burst, 1950);
	throttle_release(&t);
}
END_TEST

START_TEST(test_iops_size)
{
	struct throttle t;
	unsigned n;

	throttle_init(&t);
	limit(&t, "iops-total", 100);
	limit(&t, "iops-size", 65536);
	/* A 1 MiB request counts as 16 ops: 100 ops/s are 6.25 of them. */
	n = run(&t, false, 1 << 20, NS, 8.0, NULL);
	ck_assert_uint_ge(n, 50);
	ck_assert_uint_le(n, 52);
	throttle_release(&t);
}
END_TEST

START_TEST(test_read_write_separate)
{
	struct throttle t;

	throttle_init(&t);
	limit(&t, "iops-write", 100);
	unsigned i;

	/* Reads are not limited at all; writes are. */
	for (i = 0; i < 100000; i++)
		ck_assert_uint_eq(throttle_charge(&t, false, 4096, NS), 0);
	ck_assert_uint_le(run(&t, true, 4096, 10 * NS, 1.0, NULL), 111);
	throttle_release(&t);
}
END_TEST

START_TEST(test_live_change)
{
	struct throttle t;
	unsigned gen;

	throttle_init(&t);
	limit(&t, "iops-total", 2000);
	run(&t, false, 4096, NS, 1.0, NULL);
	gen = atomic_load(&t.gen);
	limit(&t, "iops-total", 500);
	ck_assert_uint_ne(atomic_load(&t.gen), gen);
	/* What was owed stays; from then on, the new rate. */
	ck_assert_uint_le(run(&t, false, 4096, 2 * NS, 2.0, NULL), 1000 + 50 + 1);
	/* No limit: nothing waits, and nothing is owed when one comes back. */
	limit(&t, "iops-total", 0);
	ck_assert(!throttle_on(&t));
	ck_assert_uint_eq(throttle_charge(&t, false, 4096, 5 * NS), 0);
	throttle_release(&t);
}
END_TEST

START_TEST(test_fifo)
{
	struct throttle t;
	uint64_t last = 0, w;
	unsigned i;

	throttle_init(&t);
	limit(&t, "iops-total", 1000);
	/* Arrivals at one moment: the bucket's 100 at once, then in their order, 1 ms apart. */
	for (i = 0; i < 120; i++) {
		w = throttle_charge(&t, false, 4096, 2 * NS);
		if (i <= 100)
			ck_assert_uint_le(w, 1000000);
		else
			ck_assert_uint_ge(w - last, 999000);
		last = w;
	}
	throttle_release(&t);
}
END_TEST

START_TEST(test_checks)
{
	struct throttle_limits lim;
	char err[200];

	memset(&lim, 0, sizeof(lim));
	ck_assert_int_eq(throttle_limits_check(&lim, err, sizeof(err)), 0);
	lim.max[THROTTLE_IOPS_TOTAL] = 100;
	ck_assert_int_eq(throttle_limits_check(&lim, err, sizeof(err)), -1);
	ck_assert(strstr(err, "iops-total-max needs iops-total"));
	lim.avg[THROTTLE_IOPS_TOTAL] = 200;
	ck_assert_int_eq(throttle_limits_check(&lim, err, sizeof(err)), -1);
	ck_assert(strstr(err, "must be above"));
	lim.max[THROTTLE_IOPS_TOTAL] = 400;
	ck_assert_int_eq(throttle_limits_check(&lim, err, sizeof(err)), 0);
	lim.avg[THROTTLE_IOPS_READ] = 10;
	ck_assert_int_eq(throttle_limits_check(&lim, err, sizeof(err)), -1);
	memset(&lim, 0, sizeof(lim));
	lim.max_length_s[THROTTLE_BPS_WRITE] = 5;
	ck_assert_int_eq(throttle_limits_check(&lim, err, sizeof(err)), -1);
	ck_assert_int_eq(throttle_key_find("bps-read-max-length"), 3 * THROTTLE_BPS_READ + 2);
	ck_assert_int_eq(throttle_key_find("iops-size"), THROTTLE_KEYS - 1);
	ck_assert_int_eq(throttle_key_find("iops"), -1);
	ck_assert_str_eq(throttle_key_name(3 * THROTTLE_IOPS_WRITE + 1), "iops-write-max");
}
END_TEST

static Suite *throttle_suite(void)
{
	Suite *s = suite_create("throttle");
	TCase *tc = tcase_create("buckets");

	tcase_add_test(tc, test_average_rate);
	tcase_add_test(tc, test_bps_rate);
	tcase_add_test(tc, test_burst_length);
	tcase_add_test(tc, test_iops_size);
	tcase_add_test(tc, test_read_write_separate);
	tcase_add_test(tc, test_live_change);
	tcase_add_test(tc, test_fifo);
	tcase_add_test(tc, test_checks);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(throttle_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
