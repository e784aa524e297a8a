// SPDX-License-Identifier: BSD-3-Clause
/*
 * Unit tests of daemon/pool.c: chunk accounting, alignment, exhaustion,
 * and the iovec helpers (slicing at every boundary, copying in).
 */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../daemon/pool.h"

#define CH POOL_CHUNK_BYTES

START_TEST(test_get_put_counts_and_alignment)
{
	struct pool p;
	struct iovec iov[8], one;
	int n;

	ck_assert_int_eq(pool_init(&p, 8 * CH, 2), 0);
	ck_assert_uint_eq(p.nchunks, 8);
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
	ck_assert_uint_eq(p.nchunks, 3); /* the minimum wins */
	ck_assert_int_eq(pool_get(&p, 2 * CH, iov), 2);
	ck_assert_int_eq(pool_get(&p, 2 * CH, iov + 2), -ENOBUFS);
	ck_assert_uint_eq(p.nfree, 1);
	ck_assert_int_eq(pool_get(&p, 0, iov + 2), 0);
	pool_put(&p, 2, iov);
	ck_assert_uint_eq(p.nfree, 3);
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

static Suite *pool_suite(void)
{
	Suite *s = suite_create("pool");
	TCase *tc = tcase_create("rules");

	tcase_add_test(tc, test_get_put_counts_and_alignment);
	tcase_add_test(tc, test_exhaustion_takes_nothing);
	tcase_add_test(tc, test_chunks_for);
	tcase_add_test(tc, test_slice_every_range);
	tcase_add_test(tc, test_copy_in_across_iovecs);
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
