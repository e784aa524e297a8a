// SPDX-License-Identifier: BSD-3-Clause
/*
 * Unit tests of daemon/engine/plan.c: the arithmetic that turns any offset and
 * length into O_DIRECT spans, edge blocks, buffered tails, cache pages and
 * lock ranges; and a random test of its invariants against a direct reading
 * of the rules (seed printed; PLAN_SEED=N repeats it).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "../../daemon/engine/plan.h"
#include "../../daemon/engine/pool.h"
#include "../../proto/proto.h"

#define A 4096u
#define PAGE 4096u

static struct plan plan(uint16_t type, uint64_t off, uint64_t len, uint64_t size,
			enum cache_mode mode)
{
	struct plan_in in = {
		.type = type, .offset = off, .len_bytes = len, .align_bytes = A,
		.direct_end = size / A * A, .cache = mode, .cache_page_bytes = PAGE,
	};
	struct plan p;

	plan_request(&in, &p);
	return p;
}

START_TEST(test_aligned_read)
{
	struct plan p = plan(NBD_CMD_READ, 8192, 65536, 1 << 20, CACHE_MODE_NONE);

	ck_assert_uint_eq(p.io_off, 8192);
	ck_assert_uint_eq(p.io_len, 65536);
	ck_assert_uint_eq(p.data_off, 0);
	ck_assert_uint_eq(p.chunks, 1);
	ck_assert(!p.bounce && !p.buffered && !p.rmw_head && !p.rmw_tail && !p.cached);
	ck_assert(p.locks && !p.exclusive);
	ck_assert_uint_eq(p.lock_first, 8192);
	ck_assert_uint_eq(p.lock_last, 8192 + 65536 - 1);
}
END_TEST

START_TEST(test_unaligned_read_reads_span_locks_bytes)
{
	struct plan p = plan(NBD_CMD_READ, 4097, 100, 1 << 20, CACHE_MODE_NONE);

	ck_assert_uint_eq(p.io_off, 4096);
	ck_assert_uint_eq(p.io_len, 4096);
	ck_assert_uint_eq(p.data_off, 1);
	ck_assert(!p.rmw_head && !p.rmw_tail && !p.bounce);
	/* A reader locks only the bytes it returns. */
	ck_assert_uint_eq(p.lock_first, 4097);
	ck_assert_uint_eq(p.lock_last, 4196);
}
END_TEST

START_TEST(test_unaligned_write_edges_and_span_lock)
{
	struct plan p = plan(NBD_CMD_WRITE, 4097, 8192, 1 << 20, CACHE_MODE_NONE);

	ck_assert_uint_eq(p.io_off, 4096);
	ck_assert_uint_eq(p.io_len, 3 * 4096);
	ck_assert_uint_eq(p.data_off, 1);
	ck_assert(p.rmw_head && p.rmw_tail && p.bounce);
	ck_assert(p.exclusive);
	/* A writer locks every block it rewrites. */
	ck_assert_uint_eq(p.lock_first, 4096);
	ck_assert_uint_eq(p.lock_last, 4 * 4096 - 1);
}
END_TEST

START_TEST(test_write_head_only_and_tail_only)
{
	struct plan h = plan(NBD_CMD_WRITE, 100, 4096 - 100, 1 << 20, CACHE_MODE_NONE);
	struct plan t = plan(NBD_CMD_WRITE, 4096, 100, 1 << 20, CACHE_MODE_NONE);

	ck_assert(h.rmw_head && !h.rmw_tail);
	ck_assert(!t.rmw_head && t.rmw_tail);
	ck_assert_uint_eq(h.io_len, 4096);
	ck_assert_uint_eq(t.io_len, 4096);
}
END_TEST

START_TEST(test_partial_last_block_is_buffered)
{
	/* A file of 10000 bytes: direct I/O ends at 8192. */
	struct plan r = plan(NBD_CMD_READ, 8000, 2000, 10000, CACHE_MODE_NONE);
	struct plan w = plan(NBD_CMD_WRITE, 9000, 1000, 10000, CACHE_MODE_NONE);

	ck_assert(r.buffered && w.buffered);
	ck_assert_uint_eq(r.io_off, 8000);
	ck_assert_uint_eq(r.io_len, 2000);
	ck_assert_uint_eq(r.data_off, 0);
	ck_assert(!w.rmw_head && !w.rmw_tail && !w.bounce);
	/* Buffered writes lock their bytes. */
	ck_assert_uint_eq(w.lock_first, 9000);
	ck_assert_uint_eq(w.lock_last, 9999);
}
END_TEST

START_TEST(test_largest_request_fits)
{
	struct plan p = plan(NBD_CMD_WRITE, 1, 32u << 20, UINT64_C(1) << 40, CACHE_MODE_NONE);

	ck_assert_uint_eq(p.io_len, (32u << 20) + 4096);
	ck_assert_uint_eq(p.chunks, pool_chunks_for(p.io_len));
	ck_assert_uint_eq(p.chunks, 513);
}
END_TEST

START_TEST(test_no_lock_for_flush_and_empty)
{
	ck_assert(!plan(NBD_CMD_FLUSH, 0, 0, 1 << 20, CACHE_MODE_NONE).locks);
	ck_assert(!plan(NBD_CMD_READ, 4096, 0, 1 << 20, CACHE_MODE_NONE).locks);
	ck_assert(!plan(NBD_CMD_WRITE, 4096, 0, 1 << 20, CACHE_MODE_NONE).locks);
	/* CACHE without a page cache is answered at once. */
	ck_assert(!plan(NBD_CMD_CACHE, 0, 1 << 20, 1 << 20, CACHE_MODE_NONE).locks);
}
END_TEST

START_TEST(test_trim_zero_block_status)
{
	struct plan t = plan(NBD_CMD_TRIM, 100, 5000, 1 << 20, CACHE_MODE_ALWAYS);
	struct plan z = plan(NBD_CMD_WRITE_ZEROES, 100, 5000, 1 << 20, CACHE_MODE_NONE);
	struct plan b = plan(NBD_CMD_BLOCK_STATUS, 100, 5000, 1 << 20, CACHE_MODE_NONE);

	ck_assert(t.exclusive && z.exclusive && !b.exclusive);
	ck_assert(!t.cached && t.chunks == 0 && !t.bounce);
	ck_assert_uint_eq(z.lock_first, 100);
	ck_assert_uint_eq(z.lock_last, 5099);
	/* Block status builds its reply in a bounce chunk. */
	ck_assert(b.bounce && b.chunks == 0 && b.locks);
}
END_TEST

/* On an overlay, WRITE_ZEROES rewrites whole granules: it locks them all. */
START_TEST(test_overlay_zero_locks_granules)
{
	struct plan_in in = {
		.type = NBD_CMD_WRITE_ZEROES, .offset = 40000, .len_bytes = 30000, .align_bytes = A,
		.direct_end = 1 << 20, .cache_page_bytes = PAGE, .granule_bytes = 32768,
	};
	struct plan p;

	plan_request(&in, &p);
	ck_assert(p.locks && p.exclusive);
	ck_assert_uint_eq(p.lock_first, 32768);
	ck_assert_uint_eq(p.lock_last, 3 * 32768 - 1);
	/* Granule-aligned: exactly its granules. */
	in.offset = 65536;
	in.len_bytes = 32768;
	plan_request(&in, &p);
	ck_assert_uint_eq(p.lock_first, 65536);
	ck_assert_uint_eq(p.lock_last, 98303);
	/* Other requests are not widened. */
	in.type = NBD_CMD_READ;
	in.offset = 40000;
	in.len_bytes = 100;
	plan_request(&in, &p);
	ck_assert_uint_eq(p.lock_first, 40000);
	ck_assert_uint_eq(p.lock_last, 40099);
}
END_TEST

START_TEST(test_cache_modes)
{
	struct plan_in in = { .type = NBD_CMD_READ, .offset = 0, .len_bytes = 1 << 20,
			      .align_bytes = A, .direct_end = 1 << 30, .cache_page_bytes = PAGE };

	in.cache = CACHE_MODE_NONE;
	ck_assert(!plan_wants_cache(&in));
	in.cache = CACHE_MODE_ALWAYS;
	ck_assert(plan_wants_cache(&in));
	in.cache = CACHE_MODE_AUTO;
	ck_assert(!plan_wants_cache(&in));   /* large and aligned: direct */
	in.len_bytes = 4096;
	ck_assert(plan_wants_cache(&in));    /* small */
	in.len_bytes = 1 << 20;
	in.offset = 512;
	ck_assert(plan_wants_cache(&in));    /* unaligned */
	in.type = NBD_CMD_WRITE;
	ck_assert(!plan_wants_cache(&in));   /* writes never */
}
END_TEST

START_TEST(test_cached_read_and_prefetch)
{
	struct plan r = plan(NBD_CMD_READ, 5000, 100, 1 << 20, CACHE_MODE_ALWAYS);
	struct plan c = plan(NBD_CMD_CACHE, 5000, 200u << 20, UINT64_C(1) << 30,
			     CACHE_MODE_ALWAYS);

	ck_assert(r.cached && !r.exclusive && r.locks);
	ck_assert_uint_eq(r.io_off, 4096);
	ck_assert_uint_eq(r.io_len, 4096);
	ck_assert_uint_eq(r.data_off, 904);
	ck_assert_uint_eq(r.chunks, 1);
	/* A prefetch of any length needs no buffer, and fills (and locks) its first 32 MiB. */
	ck_assert(c.cached && c.locks);
	ck_assert_uint_eq(c.chunks, 0);
	ck_assert(!c.bounce);
	ck_assert_uint_eq(c.io_off, 4096);
	ck_assert_uint_eq(c.io_len, (32u << 20) + 4096);
	ck_assert_uint_eq(c.lock_first, 4096);
	ck_assert_uint_eq(c.lock_last, 4096 + c.io_len - 1);
}
END_TEST

/* A block device takes discards and zeroing in whole blocks only. */
START_TEST(test_blockdev_trim_and_zero)
{
	struct plan_in in = { .type = NBD_CMD_TRIM, .offset = 512, .len_bytes = 9000,
			      .align_bytes = A, .direct_end = 1 << 20, .blockdev = true };
	struct plan p;

	plan_request(&in, &p);
	ck_assert_uint_eq(p.io_off, 4096);      /* the whole blocks inside */
	ck_assert_uint_eq(p.io_len, 4096);
	ck_assert(!p.zero_write && p.chunks == 0);
	ck_assert_uint_eq(p.lock_first, 512);
	in.len_bytes = 512;                     /* no whole block: nothing to discard */
	plan_request(&in, &p);
	ck_assert_uint_eq(p.io_len, 0);
	ck_assert(p.locks);

	in.type = NBD_CMD_WRITE_ZEROES;
	in.offset = 8192 + 7;
	in.len_bytes = 100;
	plan_request(&in, &p);
	ck_assert(p.zero_write && p.rmw_head && p.rmw_tail && p.bounce && p.exclusive);
	ck_assert_uint_eq(p.io_off, 8192);
	ck_assert_uint_eq(p.io_len, 4096);
	ck_assert_uint_eq(p.data_off, 7);
	ck_assert_uint_eq(p.chunks, 1);
	ck_assert_uint_eq(p.lock_first, 8192);  /* the span it rewrites */
	ck_assert_uint_eq(p.lock_last, 8192 + 4095);
	in.offset = 8192;                        /* aligned: fallocate as on a file */
	in.len_bytes = 8192;
	plan_request(&in, &p);
	ck_assert(!p.zero_write && p.chunks == 0);
	ck_assert_uint_eq(p.io_off, 8192);
	ck_assert_uint_eq(p.io_len, 8192);
	in.blockdev = false;                     /* a file: any bytes */
	in.offset = 8199;
	plan_request(&in, &p);
	ck_assert(!p.zero_write);
	ck_assert_uint_eq(p.io_off, 8199);
}
END_TEST

/* Invariants over random requests, against the rules read directly. */
START_TEST(test_random_invariants)
{
	const char *env = getenv("PLAN_SEED");
	unsigned seed = env ? (unsigned)strtoul(env, NULL, 10) : (unsigned)time(NULL);
	static const uint16_t types[] = { NBD_CMD_READ, NBD_CMD_WRITE, NBD_CMD_TRIM,
					  NBD_CMD_WRITE_ZEROES, NBD_CMD_CACHE };
	int i;

	printf("test_random_invariants: seed %u (PLAN_SEED=%u repeats it)\n", seed, seed);
	srandom(seed);
	for (i = 0; i < 200000; i++) {
		uint32_t a = 512u << (random() % 4);
		uint64_t size = (uint64_t)(random() % (64 << 20)) + 1;
		uint64_t off = (uint64_t)random() % size;
		uint64_t len = 1 + (uint64_t)random() % (size - off < (4u << 20) ? size - off : 4u << 20);
		struct plan_in in = {
			.type = types[random() % 5], .offset = off, .len_bytes = len,
			.align_bytes = a, .direct_end = size / a * a,
			.cache = (enum cache_mode)(random() % 3), .cache_page_bytes = PAGE,
		};
		struct plan p;

		plan_request(&in, &p);
		if (in.type == NBD_CMD_READ || in.type == NBD_CMD_WRITE ||
		    (p.cached && len <= PLAN_PREFETCH_MAX_BYTES)) {
			/* The buffer covers the request. */
			ck_assert_uint_le(p.io_off, off);
			ck_assert_uint_eq(p.io_off + p.data_off, off);
			ck_assert_uint_ge(p.io_off + p.io_len, off + len);
		}
		if (p.cached) {
			ck_assert_uint_eq(p.io_off % PAGE, 0);
			ck_assert_uint_eq(p.io_len % PAGE, 0);
			ck_assert_uint_eq(p.chunks, in.type == NBD_CMD_READ ? pool_chunks_for(p.io_len) : 0);
		} else if (in.type == NBD_CMD_READ || in.type == NBD_CMD_WRITE) {
			ck_assert_uint_eq(p.chunks, pool_chunks_for(p.io_len));
			if (p.buffered) {
				/* Only requests reaching past the last whole block. */
				ck_assert_uint_gt((off + len + a - 1) / a * a, in.direct_end);
				ck_assert_uint_eq(p.io_len, len);
			} else {
				ck_assert_uint_eq(p.io_off % a, 0);
				ck_assert_uint_eq(p.io_len % a, 0);
				ck_assert_uint_le(p.io_off + p.io_len, in.direct_end);
				ck_assert_uint_lt(p.io_len, len + 2 * a);
			}
			ck_assert(p.rmw_head == (in.type == NBD_CMD_WRITE && !p.buffered && off % a));
			ck_assert(p.rmw_tail == (in.type == NBD_CMD_WRITE && !p.buffered &&
						 (off + len) % a));
			ck_assert(p.bounce == (p.rmw_head || p.rmw_tail));
		} else {
			ck_assert_uint_eq(p.chunks, 0);
		}
		/* Locks: writers cover every byte they rewrite; readers their bytes. */
		ck_assert(p.locks == (in.type != NBD_CMD_CACHE || p.cached));
		ck_assert(p.exclusive == (in.type == NBD_CMD_WRITE || in.type == NBD_CMD_TRIM ||
					  in.type == NBD_CMD_WRITE_ZEROES));
		if (p.locks && in.type == NBD_CMD_CACHE) {
			/* A prefetch locks the pages it fills, and only those. */
			ck_assert_uint_eq(p.lock_first, p.io_off);
			ck_assert_uint_eq(p.lock_last, p.io_off + p.io_len - 1);
			ck_assert_uint_le(p.io_len, PLAN_PREFETCH_MAX_BYTES + 2 * PAGE);
		} else if (p.locks) {
			ck_assert_uint_le(p.lock_first, off);
			ck_assert_uint_ge(p.lock_last, off + len - 1);
			if (in.type == NBD_CMD_WRITE && !p.buffered) {
				ck_assert_uint_eq(p.lock_first, p.io_off);
				ck_assert_uint_eq(p.lock_last, p.io_off + p.io_len - 1);
			} else {
				ck_assert_uint_eq(p.lock_first, off);
				ck_assert_uint_eq(p.lock_last, off + len - 1);
			}
		}
	}
}
END_TEST

static Suite *plan_suite(void)
{
	Suite *s = suite_create("plan");
	TCase *tc = tcase_create("rules");

	tcase_add_test(tc, test_aligned_read);
	tcase_add_test(tc, test_unaligned_read_reads_span_locks_bytes);
	tcase_add_test(tc, test_unaligned_write_edges_and_span_lock);
	tcase_add_test(tc, test_write_head_only_and_tail_only);
	tcase_add_test(tc, test_partial_last_block_is_buffered);
	tcase_add_test(tc, test_largest_request_fits);
	tcase_add_test(tc, test_no_lock_for_flush_and_empty);
	tcase_add_test(tc, test_trim_zero_block_status);
	tcase_add_test(tc, test_overlay_zero_locks_granules);
	tcase_add_test(tc, test_cache_modes);
	tcase_add_test(tc, test_cached_read_and_prefetch);
	tcase_add_test(tc, test_blockdev_trim_and_zero);
	tcase_add_test(tc, test_random_invariants);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(plan_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
