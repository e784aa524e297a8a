// SPDX-License-Identifier: BSD-3-Clause
/*
 * No lost update: 8 connections (on two workers) write interleaved 100-byte
 * pieces that share sectors, many requests in flight each, several rounds;
 * afterwards every piece holds its writer's last data. Each such write is
 * a read-modify-write of the sectors it touches, so without range locks
 * concurrent writers overwrite each other's bytes.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"

#define CONNS 8
#define PIECE 100
#define PIECES_PER_CONN 400
#define ROUNDS 4
#define BASE 4097 /* start unaligned too */

static struct daemon d;

static uint64_t piece_seed(unsigned k, unsigned p, unsigned round)
{
	return ((uint64_t)k << 40) | ((uint64_t)p << 8) | round;
}

static void *writer(void *arg)
{
	unsigned k = (unsigned)(uintptr_t)arg, p, round;
	static __thread uint8_t data[PIECES_PER_CONN][PIECE];
	struct nbd_handle *h = harness_connect(&d, k % 2);

	for (round = 0; round < ROUNDS; round++) {
		for (p = 0; p < PIECES_PER_CONN; p++) {
			uint64_t piece = (uint64_t)p * CONNS + k; /* interleaved with the others */

			harness_fill(data[p], PIECE, piece_seed(k, p, round));
			CHECK(nbd_aio_pwrite(h, data[p], PIECE, BASE + piece * PIECE,
					     NBD_NULL_COMPLETION, 0) > 0,
			      "aio_pwrite: %s", nbd_get_error());
			/* Keep up to 64 in flight. */
			while (nbd_aio_in_flight(h) >= 64)
				CHECK(nbd_poll(h, -1) != -1, "poll: %s", nbd_get_error());
			while (nbd_aio_peek_command_completed(h) > 0)
				CHECK(nbd_aio_command_completed(h, (uint64_t)nbd_aio_peek_command_completed(h)) == 1,
				      "write failed: %s", nbd_get_error());
		}
		while (nbd_aio_in_flight(h) > 0)
			CHECK(nbd_poll(h, -1) != -1, "poll: %s", nbd_get_error());
		while (nbd_aio_peek_command_completed(h) > 0)
			CHECK(nbd_aio_command_completed(h, (uint64_t)nbd_aio_peek_command_completed(h)) == 1,
			      "write failed: %s", nbd_get_error());
	}
	nbd_close(h);
	return NULL;
}

int main(void)
{
	static uint8_t all[CONNS * PIECES_PER_CONN * PIECE], want[PIECE];
	pthread_t t[CONNS];
	struct nbd_handle *h;
	unsigned k, p;

	harness_init("lost_update", 120);
	harness_image(&d, 8 << 20);
	harness_start(&d, "-t", "2", NULL);
	for (k = 0; k < CONNS; k++)
		pthread_create(&t[k], NULL, writer, (void *)(uintptr_t)k);
	for (k = 0; k < CONNS; k++)
		pthread_join(t[k], NULL);

	h = harness_connect(&d, true);
	NBD_OK(nbd_pread(h, all, sizeof(all), BASE, 0));
	for (k = 0; k < CONNS; k++)
		for (p = 0; p < PIECES_PER_CONN; p++) {
			uint64_t piece = (uint64_t)p * CONNS + k;

			harness_fill(want, PIECE, piece_seed(k, p, ROUNDS - 1));
			CHECK(memcmp(all + piece * PIECE, want, PIECE) == 0,
			      "piece %u of connection %u lost its last write", p, k);
		}
	nbd_close(h);
	harness_stop(&d);
	return 0;
}
