// SPDX-License-Identifier: BSD-3-Clause
/*
 * No torn read: one connection rewrites a 1 MiB range alternately with two
 * uniform patterns while three others read it with requests in flight;
 * every read is uniform (all old or all new), never a mix. Done for an
 * aligned range and for an unaligned one.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define LEN (1 << 20)
#define WRITES 200
#define READERS 3
#define QD 4

static struct daemon d;
static uint64_t range_off;
static atomic_bool writer_done;
static atomic_ulong reads_done, reads_a, reads_b;

static void check_uniform(const uint8_t *b)
{
	size_t i;

	for (i = 1; i < LEN; i++)
		CHECK(b[i] == b[0], "torn read at offset %zu of the range: 0x%02x then 0x%02x", i,
		      b[0], b[i]);
	CHECK(b[0] == 0xaa || b[0] == 0x55, "read 0x%02x, not a written pattern", b[0]);
	atomic_fetch_add(b[0] == 0xaa ? &reads_a : &reads_b, 1);
	atomic_fetch_add(&reads_done, 1);
}

static void *reader(void *arg)
{
	struct nbd_handle *h = harness_connect(&d, (uintptr_t)arg % 2);
	uint8_t *b[QD];
	int64_t cookie[QD];
	int i;

	for (i = 0; i < QD; i++) {
		b[i] = harness_alloc(LEN);
		cookie[i] = nbd_aio_pread(h, b[i], LEN, range_off, NBD_NULL_COMPLETION, 0);
	}
	while (!atomic_load(&writer_done)) {
		for (i = 0; i < QD; i++) {
			int r = nbd_aio_command_completed(h, (uint64_t)cookie[i]);

			CHECK(r != -1, "read failed: %s", nbd_get_error());
			if (r == 1) {
				check_uniform(b[i]);
				cookie[i] = nbd_aio_pread(h, b[i], LEN, range_off,
							  NBD_NULL_COMPLETION, 0);
				CHECK(cookie[i] > 0, "aio_pread: %s", nbd_get_error());
			}
		}
		CHECK(nbd_poll(h, 1000) != -1, "poll: %s", nbd_get_error());
	}
	nbd_close(h);
	return NULL;
}

static void run(uint64_t off)
{
	uint8_t *a = harness_alloc(LEN), *bb = harness_alloc(LEN);
	struct nbd_handle *w = harness_connect(&d, true);
	pthread_t t[READERS];
	uintptr_t i;
	int k;

	memset(a, 0xaa, LEN);
	memset(bb, 0x55, LEN);
	range_off = off;
	NBD_OK(nbd_pwrite(w, a, LEN, off, 0));
	atomic_store(&writer_done, false);
	atomic_store(&reads_done, 0);
	atomic_store(&reads_a, 0);
	atomic_store(&reads_b, 0);
	for (i = 0; i < READERS; i++)
		pthread_create(&t[i], NULL, reader, (void *)i);
	for (k = 0; k < WRITES; k++)
		NBD_OK(nbd_pwrite(w, k % 2 ? a : bb, LEN, off, 0));
	atomic_store(&writer_done, true);
	for (i = 0; i < READERS; i++)
		pthread_join(t[i], NULL);
	printf("range at %llu: %lu uniform reads (%lu of 0xaa, %lu of 0x55) during %d writes\n",
	       (unsigned long long)off, atomic_load(&reads_done), atomic_load(&reads_a),
	       atomic_load(&reads_b), WRITES);
	CHECK(atomic_load(&reads_done) > 0, "no read completed during the writes");
	nbd_close(w);
}

int main(void)
{
	harness_init("torn_read", 120);
	harness_image(&d, 16 << 20);
	harness_start(&d, "-t", "2", NULL);
	run(4 << 20);
	run((8 << 20) + 1234);
	harness_stop(&d);
	return 0;
}
