// SPDX-License-Identifier: BSD-3-Clause
/*
 * 64 requests in flight on one connection: writes to distinct ranges, then
 * reads of them, then a mix; every reply matches its request, and the
 * daemon really had them all in flight together.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define N 64
#define LEN (64 * 1024)

static void wait_all(struct nbd_handle *h, int64_t *cookies)
{
	unsigned i;

	while (nbd_aio_in_flight(h) > 0)
		CHECK(nbd_poll(h, -1) != -1, "nbd_poll: %s", nbd_get_error());
	for (i = 0; i < N; i++)
		CHECK(nbd_aio_command_completed(h, (uint64_t)cookies[i]) == 1,
		      "request %u failed: %s", i, nbd_get_error());
}

int main(void)
{
	uint8_t *w = harness_alloc(N * LEN), *r = harness_alloc(N * LEN);
	uint8_t *old = harness_alloc(N * LEN);
	int64_t cookies[N];
	struct daemon d;
	struct nbd_handle *h;
	unsigned i, round;

	harness_init("async_inflight", 60);
	harness_image(&d, 64 << 20);
	harness_start(&d, "-t", "1", NULL);

	for (round = 0; round < 2; round++) {
		h = harness_connect(&d, round == 0);
		harness_fill(w, N * LEN, 42 + round);
		/* Reverse order, so replies in completion order are exercised. */
		for (i = 0; i < N; i++) {
			unsigned k = N - 1 - i;

			cookies[i] = nbd_aio_pwrite(h, w + k * LEN, LEN, (uint64_t)k * LEN,
						    NBD_NULL_COMPLETION, 0);
			CHECK(cookies[i] > 0, "aio_pwrite: %s", nbd_get_error());
		}
		CHECK(nbd_aio_in_flight(h) == N, "%d in flight", nbd_aio_in_flight(h));
		wait_all(h, cookies);

		memset(r, 0, N * LEN);
		for (i = 0; i < N; i++) {
			cookies[i] = nbd_aio_pread(h, r + i * LEN, LEN, (uint64_t)i * LEN,
						   NBD_NULL_COMPLETION, 0);
			CHECK(cookies[i] > 0, "aio_pread: %s", nbd_get_error());
		}
		wait_all(h, cookies);
		CHECK(memcmp(w, r, N * LEN) == 0, "async reads differ from async writes");

		/* Mixed: even slots rewritten, odd slots read, all at once. */
		memcpy(old, w, N * LEN);
		harness_fill(w, N * LEN, 4242 + round);
		memset(r, 0, N * LEN);
		for (i = 0; i < N; i++) {
			if (i % 2 == 0)
				cookies[i] = nbd_aio_pwrite(h, w + i * LEN, LEN, (uint64_t)i * LEN,
							    NBD_NULL_COMPLETION, 0);
			else
				cookies[i] = nbd_aio_pread(h, r + i * LEN, LEN, (uint64_t)i * LEN,
							   NBD_NULL_COMPLETION, 0);
			CHECK(cookies[i] > 0, "aio: %s", nbd_get_error());
		}
		wait_all(h, cookies);
		for (i = 1; i < N; i += 2)
			CHECK(memcmp(old + i * LEN, r + i * LEN, LEN) == 0, "mixed read slot %u", i);
		memset(r, 0, N * LEN);
		NBD_OK(nbd_pread(h, r, N * LEN / 2, 0, 0));
		NBD_OK(nbd_pread(h, r + N * LEN / 2, N * LEN / 2, N * LEN / 2, 0));
		for (i = 0; i < N; i += 2)
			CHECK(memcmp(w + i * LEN, r + i * LEN, LEN) == 0, "mixed slot %u", i);
		NBD_OK(nbd_shutdown(h, 0));
		nbd_close(h);
	}
	harness_stop(&d);
	return 0;
}
