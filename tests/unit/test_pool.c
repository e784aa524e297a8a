// SPDX-License-Identifier: BSD-3-Clause
/*
 * Unit tests of daemon/engine/pool.c: chunk accounting, alignment, exhaustion,
 * and the iovec helpers (slicing at every boundary, copying in).
 */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../daemon/engine/pool.h"

#define CH POOL_CHUNK_BYTES

START_TEST(test_get_put_counts_and_alignment)
{
	struct pool p;
	struct iovec iov[8], one;
	int n;

	ck_assert_int_eq(pool_init(&p, 8 * CH, 2), 0);
	ck_assert_uint_eq(p.nchunks, 8);
	ck_assert_uint_eq(p.reserve, 1);
	ck_assert_uint_eq(p.cap, 3);
	n = pool_get(&p, 3 * CH + 100, iov);
	ck_assert_int_eq(n, 4);
	ck_assert_uint_eq(p.nfree, 4);
	ck_assert_uint_eq(iov[0].iov_len, CH);
	ck_assert_uint_eq(iov[3].iov_len, 100);
	for (int i = 0; i < n; i++)
		ck_assert_uint_eq((uintptr_t)iov[i].iov_base % 4096, 0);
	ck_assert_int_eq(pool_get(&p, CH, &one), 1);
	ck_assert_uint_eq(one.iov_len, CH);
	pool_put(&p, 4, iov);
	pool_put(&p, 1, &one);
	ck_assert_uint_eq(p.nfree, 8);
	pool_release(&p);
}
END_TEST

START_TEST(test_exhaustion_takes_nothing)
{
	struct pool p;
	struct iovec iov[8];

	ck_assert_int_eq(pool_init(&p, 0, 3), 0);
	/* The minimum wins: one largest request fits beside the reserve. */
	ck_assert_uint_eq(p.nchunks, 4);
	ck_assert_uint_ge(p.nchunks - p.reserve, 3);
	ck_assert_int_eq(pool_get(&p, 3 * CH, iov), 3);
	ck_assert_int_eq(pool_get(&p, 2 * CH, iov + 3), -ENOBUFS);
	ck_assert_uint_eq(p.nfree, 1);
	ck_assert_int_eq(pool_get(&p, 0, iov + 3), 0);
	pool_put(&p, 3, iov);
	ck_assert_uint_eq(p.nfree, 4);
	pool_release(&p);
}
END_TEST

START_TEST(test_chunks_for)
{
	ck_assert_uint_eq(pool_chunks_for(0), 0);
	ck_assert_uint_eq(pool_chunks_for(1), 1);
	ck_assert_uint_eq(pool_chunks_for(CH), 1);
	ck_assert_uint_eq(pool_chunks_for(CH + 1), 2);
	ck_assert_uint_eq(pool_chunks_for(32u << 20), 512);
}
END_TEST

/* Every (off, len) over three uneven iovecs: the slice is those bytes, in order. */
START_TEST(test_slice_every_range)
{
	static uint8_t a[5], b[3], c[7];
	struct iovec src[3] = { { a, 5 }, { b, 3 }, { c, 7 } }, dst[3];
	uint8_t *flat[15];
	size_t off, len, i, k;
	unsigned n, j;

	for (i = 0, k = 0; i < 3; i++)
		for (j = 0; j < src[i].iov_len; j++)
			flat[k++] = (uint8_t *)src[i].iov_base + j;
	for (off = 0; off <= 15; off++)
		for (len = 0; off + len <= 15; len++) {
			n = iov_slice(src, 3, off, len, dst);
			ck_assert_uint_le(n, 3);
			for (j = 0, k = off; j < n; j++) {
				ck_assert_uint_gt(dst[j].iov_len, 0);
				ck_assert_ptr_eq(dst[j].iov_base, flat[k]);
				k += dst[j].iov_len;
			}
			ck_assert_uint_eq(k, off + len);
		}
}
END_TEST

START_TEST(test_copy_in_across_iovecs)
{
	uint8_t a[4], b[4], c[4], src[7] = { 1, 2, 3, 4, 5, 6, 7 };
	struct iovec iov[3] = { { a, 4 }, { b, 4 }, { c, 4 } };

	memset(a, 0, 4);
	memset(b, 0, 4);
	memset(c, 0, 4);
	iov_copy_in(iov, 3, 3, src, 7);
	ck_assert_int_eq(a[2], 0);
	ck_assert_int_eq(a[3], 1);
	ck_assert_int_eq(b[0], 2);
	ck_assert_int_eq(b[3], 5);
	ck_assert_int_eq(c[0], 6);
	ck_assert_int_eq(c[1], 7);
	ck_assert_int_eq(c[2], 0);
}
END_TEST

/* Takes n chunks for account a, as the daemon does. */
static void take(struct pool *p, struct pool_account *a, uint32_t n, struct iovec *iov)
{
	ck_assert_int_eq(pool_get(p, (uint64_t)n * CH, iov), (int)n);
	a->held += n;
}

/* A client that holds its chunks forever cannot keep a light client out. */
START_TEST(test_share_reserve_for_light_clients)
{
	struct pool p;
	struct pool_account hog = { 0 }, fresh = { 0 };
	static struct iovec iov[1024];

	ck_assert_int_eq(pool_init(&p, 64 * CH, 16), 0);
	ck_assert_uint_eq(p.nchunks, 64);
	ck_assert_uint_eq(p.reserve, 8);
	ck_assert_uint_eq(p.cap, 28);
	/* The hog takes up to its cap of the general pool, never the reserve. */
	ck_assert(pool_may_take(&p, &hog, 16, 2));
	take(&p, &hog, 16, iov);
	ck_assert(pool_may_take(&p, &hog, 12, 2));
	take(&p, &hog, 12, iov + 16);
	ck_assert(!pool_may_take(&p, &hog, 1, 2)); /* its cap */
	/* A second hog fills the general pool but not the reserve. */
	{
		struct pool_account hog2 = { 0 };

		take(&p, &hog2, 28, iov + 28);
		ck_assert_uint_eq(p.nfree, 8);
		ck_assert(!pool_may_take(&p, &hog2, 1, 3));
		/* A fresh client's small requests still fit: the reserve, split three ways. */
		ck_assert(pool_may_take(&p, &fresh, 2, 3));
		take(&p, &fresh, 2, iov + 56);
		ck_assert(!pool_may_take(&p, &fresh, 1, 3)); /* 8 / 3 = 2: its share is used */
		ck_assert(pool_may_take(&p, &fresh, 1, 2) == 1); /* fewer clients, a larger share */
	}
	pool_release(&p);
}
END_TEST

/* Waiters for the general pool are served oldest first; newcomers do not overtake. */
START_TEST(test_share_waiters_in_order)
{
	struct pool p;
	struct pool_account a = { 0 }, b = { 0 }, c = { 0 }, d = { 0 };
	struct pool_waiter wb = { .acct = &b, .chunks = 20 }, wc = { .acct = &c, .chunks = 20 };
	static struct iovec iov[1024];

	ck_assert_int_eq(pool_init(&p, 64 * CH, 16), 0);
	take(&p, &a, 28, iov);           /* 36 free, 28 of them general */
	take(&p, &d, 20, iov + 28);      /* 16 free: 8 general, 8 reserve */
	ck_assert(!pool_may_take(&p, &b, 20, 4));
	pool_wait(&p, &wb);
	ck_assert(!pool_may_take(&p, &c, 20, 4));
	pool_wait(&p, &wc);
	/* While b waits, nobody takes the general pool, even what would fit. */
	ck_assert(!pool_may_take(&p, &c, 4, 4));
	ck_assert_ptr_null(pool_next_ready(&p, 4));
	/* a gives back 28: b first (promised), then c must wait for more. */
	pool_put(&p, 28, iov);
	a.held = 0;
	ck_assert_ptr_eq(pool_next_ready(&p, 4), &wb);
	ck_assert_uint_eq(p.promised, 20);
	ck_assert_ptr_null(pool_next_ready(&p, 4)); /* 44 free, 20 promised, reserve 8 */
	ck_assert(!pool_may_take(&p, &a, 20, 4));   /* c is in line */
	pool_claim(&p, &wb);
	take(&p, &b, 20, iov + 48);
	ck_assert_uint_eq(p.promised, 0);
	pool_unwait(&p, &wc);
	ck_assert_ptr_null(p.waiters);
	pool_release(&p);
}
END_TEST

/* A waiter stuck on its own cap does not hold up those behind it. */
START_TEST(test_share_capped_waiter_does_not_block)
{
	struct pool p;
	struct pool_account a = { 0 }, b = { 0 };
	struct pool_waiter wa = { .acct = &a, .chunks = 16 }, wb = { .acct = &b, .chunks = 16 };
	static struct iovec iov[1024];

	ck_assert_int_eq(pool_init(&p, 64 * CH, 16), 0);
	take(&p, &a, 20, iov);
	ck_assert(!pool_may_take(&p, &a, 16, 2)); /* 36 > cap 28 */
	pool_wait(&p, &wa);
	ck_assert(pool_may_take(&p, &b, 16, 2));  /* a is not in line */
	pool_wait(&p, &wb);
	ck_assert_ptr_eq(pool_next_ready(&p, 2), &wb);
	ck_assert_ptr_null(pool_next_ready(&p, 2));
	pool_claim(&p, &wb);
	pool_unwait(&p, &wa);
	pool_release(&p);
}
END_TEST

static Suite *pool_suite(void)
{
	Suite *s = suite_create("pool");
	TCase *tc = tcase_create("rules");

	tcase_add_test(tc, test_get_put_counts_and_alignment);
	tcase_add_test(tc, test_exhaustion_takes_nothing);
	tcase_add_test(tc, test_chunks_for);
	tcase_add_test(tc, test_slice_every_range);
	tcase_add_test(tc, test_copy_in_across_iovecs);
	tcase_add_test(tc, test_share_reserve_for_light_clients);
	tcase_add_test(tc, test_share_waiters_in_order);
	tcase_add_test(tc, test_share_capped_waiter_does_not_block);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(pool_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
