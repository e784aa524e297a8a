// SPDX-License-Identifier: BSD-3-Clause
/*
 * Requests on disjoint ranges are not serialised: 4 connections x 16 in
 * flight, each in its own region, aligned and unaligned, and the daemon's
 * lock counters (logged at exit) show no lock waited. The same workload on
 * one shared region shows waits, so the counter is not always zero.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define CONNS 4
#define REGION (4u << 20)
#define OPS 2000

static struct daemon d;
static bool shared_region;

static void *worker(void *arg)
{
	unsigned k = (unsigned)(uintptr_t)arg, i;
	struct nbd_handle *h = harness_connect(&d, k % 2);
	uint8_t *buf = harness_alloc(16 * 8192);
	uint64_t base = shared_region ? 0 : (uint64_t)k * REGION, x = k + 1;
	int64_t cookie[16] = { 0 };

	for (i = 0; i < OPS; i++) {
		unsigned slot = i % 16;
		uint64_t off, len, sub = REGION / 16;
		uint8_t *b = buf + slot * 8192;
		int r;

		/* Each of the 16 slots in flight has its own sub-region (when disjoint). */
		while (cookie[slot] && (r = nbd_aio_command_completed(h, (uint64_t)cookie[slot])) != 1) {
			CHECK(r != -1, "request failed: %s", nbd_get_error());
			CHECK(nbd_poll(h, -1) != -1, "poll: %s", nbd_get_error());
		}
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		/* Aligned 4k, or unaligned (read-modify-write) within an 8 KiB cell. */
		len = x % 3 ? 4096 : 100 + x % 3000;
		off = (x >> 16) % (sub / 8192) * 8192 + (len == 4096 ? 0 : x % 1000);
		off += shared_region ? 0 : base + slot * sub;
		if (x & 1)
			cookie[slot] = nbd_aio_pwrite(h, b, len, off, NBD_NULL_COMPLETION, 0);
		else
			cookie[slot] = nbd_aio_pread(h, b, len, off, NBD_NULL_COMPLETION, 0);
		CHECK(cookie[slot] > 0, "aio: %s", nbd_get_error());
	}
	while (nbd_aio_in_flight(h) > 0)
		CHECK(nbd_poll(h, -1) != -1, "poll: %s", nbd_get_error());
	nbd_close(h);
	return NULL;
}

/* Runs the workload on a fresh daemon; returns (acquired, waited) from its log. */
static void run(uint64_t *acquired, uint64_t *waited)
{
	char line[1024];
	pthread_t t[CONNS];
	uintptr_t k;
	FILE *f;

	harness_start(&d, "-t", "2", NULL);
	for (k = 0; k < CONNS; k++)
		pthread_create(&t[k], NULL, worker, (void *)k);
	for (k = 0; k < CONNS; k++)
		pthread_join(t[k], NULL);
	harness_stop(&d);
	*acquired = *waited = UINT64_MAX;
	f = fopen(d.log, "r");
	CHECK(f, "open %s", d.log);
	while (fgets(line, sizeof(line), f)) {
		const char *p = strstr(line, "stats: range locks ");

		if (p)
			sscanf(p, "stats: range locks %" SCNu64 " acquired, %" SCNu64 " waited",
			       acquired, waited);
	}
	fclose(f);
	CHECK(truncate(d.log, 0) == 0, "truncate %s", d.log);
	CHECK(*acquired != UINT64_MAX, "no lock counters in the daemon log");
}

int main(void)
{
	uint64_t acquired, waited;

	harness_init("disjoint", 120);
	harness_image(&d, CONNS * REGION);
	run(&acquired, &waited);
	printf("disjoint regions: %" PRIu64 " locks, %" PRIu64 " waited\n", acquired, waited);
	CHECK(acquired == CONNS * OPS, "%" PRIu64 " locks for %d requests", acquired, CONNS * OPS);
	CHECK(waited == 0, "%" PRIu64 " requests on disjoint ranges waited for a lock", waited);

	shared_region = true;
	run(&acquired, &waited);
	printf("one shared region: %" PRIu64 " locks, %" PRIu64 " waited\n", acquired, waited);
	CHECK(waited > 0, "no request waited on a shared region: is the counter alive?");
	return 0;
}
