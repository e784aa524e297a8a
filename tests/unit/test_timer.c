// SPDX-License-Identifier: BSD-3-Clause
/*
 * Unit tests of daemon/engine/timer.c, a worker's deadlines: order, moving
 * and stopping armed timers, re-arming from a callback, reservations, and
 * random sequences against a brute-force oracle (TIMER_SEED=N repeats one).
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../daemon/engine/timer.h"

#define NT 64

static struct timer tm[NT];
static unsigned fired_order[4 * NT], nfired;

static void record(struct timer *t)
{
	fired_order[nfired++] = (unsigned)(t - tm);
}

static void setup(struct timers *h, unsigned n)
{
	timers_init(h);
	ck_assert_int_eq(timers_reserve(h, n), 0);
	for (unsigned i = 0; i < n; i++)
		timer_init(&tm[i], record);
	nfired = 0;
}

START_TEST(test_fires_in_due_order)
{
	static const uint64_t due[] = { 50, 10, 40, 10, 30, 20, 60 };
	struct timers h;
	unsigned i;

	setup(&h, 7);
	ck_assert_uint_eq(timers_next(&h), TIMER_NEVER);
	for (i = 0; i < 7; i++)
		timers_arm(&h, &tm[i], due[i]);
	ck_assert_uint_eq(timers_next(&h), 10);
	ck_assert_uint_eq(timers_run(&h, 9), 0);
	ck_assert_uint_eq(timers_run(&h, 35), 4);
	ck_assert_uint_eq(fired_order[2], 5);
	ck_assert_uint_eq(fired_order[3], 4);
	for (i = 0; i < 4; i++)
		ck_assert(!timer_armed(&tm[fired_order[i]]));
	ck_assert_uint_eq(timers_next(&h), 40);
	ck_assert_uint_eq(timers_run(&h, 1000), 3);
	ck_assert_uint_eq(fired_order[4], 2);
	ck_assert_uint_eq(fired_order[5], 0);
	ck_assert_uint_eq(fired_order[6], 6);
	ck_assert_uint_eq(timers_next(&h), TIMER_NEVER);
	timers_release(&h);
}
END_TEST

START_TEST(test_move_and_stop)
{
	struct timers h;

	setup(&h, 3);
	timers_arm(&h, &tm[0], 100);
	timers_arm(&h, &tm[1], 200);
	timers_arm(&h, &tm[2], 300);
	/* Moved later, then earlier; stopped twice; a stopped one never fires. */
	timers_arm(&h, &tm[0], 400);
	ck_assert_uint_eq(timers_next(&h), 200);
	timers_arm(&h, &tm[2], 50);
	ck_assert_uint_eq(timers_next(&h), 50);
	timers_stop(&h, &tm[1]);
	timers_stop(&h, &tm[1]);
	ck_assert(!timer_armed(&tm[1]));
	ck_assert_uint_eq(timers_run(&h, 1000), 2);
	ck_assert_uint_eq(fired_order[0], 2);
	ck_assert_uint_eq(fired_order[1], 0);
	timers_release(&h);
}
END_TEST

static struct timers *rearm_heap;
static unsigned rearm_count;

static void rearm_now(struct timer *t)
{
	/* Arms itself for a time already reached: fires on the next run, not this one. */
	rearm_count++;
	timers_arm(rearm_heap, t, t->due_ns);
}

START_TEST(test_rearm_from_callback_does_not_spin)
{
	struct timers h;

	setup(&h, 1);
	rearm_heap = &h;
	rearm_count = 0;
	timer_init(&tm[0], rearm_now);
	timers_arm(&h, &tm[0], 5);
	ck_assert_uint_eq(timers_run(&h, 10), 1);
	ck_assert(timer_armed(&tm[0]));
	ck_assert_uint_eq(timers_run(&h, 10), 1);
	ck_assert_uint_eq(rearm_count, 2);
	timers_release(&h);
}
END_TEST

START_TEST(test_reservations)
{
	struct timers h;

	timers_init(&h);
	ck_assert_int_eq(timers_reserve(&h, 3), 0);
	ck_assert_int_eq(timers_reserve(&h, 40), 0);
	ck_assert_uint_ge(h.cap, 43);
	for (unsigned i = 0; i < 43; i++) {
		timer_init(&tm[i], record);
		timers_arm(&h, &tm[i], 1000 - i);
	}
	ck_assert_uint_eq(timers_next(&h), 958);
	for (unsigned i = 3; i < 43; i++)
		timers_stop(&h, &tm[i]);
	timers_unreserve(&h, 40);
	ck_assert_uint_eq(h.reserved, 3);
	nfired = 0;
	ck_assert_uint_eq(timers_run(&h, 2000), 3);
	ck_assert_uint_eq(fired_order[0], 2);
	timers_release(&h);
}
END_TEST

START_TEST(test_random_against_oracle)
{
	unsigned seed = getenv("TIMER_SEED") ? (unsigned)atoi(getenv("TIMER_SEED")) :
					       (unsigned)time(NULL);
	bool armed[NT];
	uint64_t due[NT], now = 0;
	struct timers h;
	int step;

	printf("timer random test: TIMER_SEED=%u\n", seed);
	srand(seed);
	setup(&h, NT);
	memset(armed, 0, sizeof(armed));
	for (step = 0; step < 200000; step++) {
		unsigned i = (unsigned)rand() % NT, k;
		int what = rand() % 4;

		if (what < 2) {
			due[i] = now + (uint64_t)(rand() % 1000);
			armed[i] = true;
			timers_arm(&h, &tm[i], due[i]);
		} else if (what == 2) {
			armed[i] = false;
			timers_stop(&h, &tm[i]);
		} else {
			uint64_t last = 0;

			now += (uint64_t)(rand() % 300);
			nfired = 0;
			timers_run(&h, now);
			/* Exactly those due, in order of due time. */
			for (k = 0; k < nfired; k++) {
				unsigned j = fired_order[k];

				if (!armed[j] || due[j] > now)
					ck_abort_msg("seed %u step %d: %u fired early", seed, step, j);
				if (due[j] < last)
					ck_abort_msg("seed %u step %d: out of order", seed, step);
				last = due[j];
				armed[j] = false;
			}
			for (k = 0; k < NT; k++)
				if (armed[k] && due[k] <= now)
					ck_abort_msg("seed %u step %d: %u not fired", seed, step, k);
		}
		/* The earliest is what the heap says. */
		{
			uint64_t min = TIMER_NEVER;

			for (k = 0; k < NT; k++) {
				if (armed[k] != timer_armed(&tm[k]))
					ck_abort_msg("seed %u step %d: %u armed?", seed, step, k);
				if (armed[k] && due[k] < min)
					min = due[k];
			}
			if (timers_next(&h) != min)
				ck_abort_msg("seed %u step %d: earliest", seed, step);
		}
	}
	timers_release(&h);
}
END_TEST

static Suite *timer_suite(void)
{
	Suite *s = suite_create("timer");
	TCase *tc = tcase_create("heap");

	tcase_add_test(tc, test_fires_in_due_order);
	tcase_add_test(tc, test_move_and_stop);
	tcase_add_test(tc, test_rearm_from_callback_does_not_spin);
	tcase_add_test(tc, test_reservations);
	tcase_add_test(tc, test_random_against_oracle);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(timer_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
