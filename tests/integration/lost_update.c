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
#define PIECES_PER_CONN 400
#define ROUNDS 4
#define BASE 4097 /* start unaligned too */

static struct daemon d;

static void *writer(void *arg)
{
	unsigned k = (unsigned)(uintptr_t)arg;
	struct nbd_handle *h = harness_connect(&d, k % 2);

	harness_write_pieces(h, k, CONNS, PIECES_PER_CONN, ROUNDS, BASE);
	nbd_close(h);
	return NULL;
}

int main(void)
{
	pthread_t t[CONNS];
	struct nbd_handle *h;
	unsigned k;

	harness_init("lost_update", 120);
	harness_image(&d, 8 << 20);
	harness_start(&d, "-t", "2", NULL);
	for (k = 0; k < CONNS; k++)
		pthread_create(&t[k], NULL, writer, (void *)(uintptr_t)k);
	for (k = 0; k < CONNS; k++)
		pthread_join(t[k], NULL);

	h = harness_connect(&d, true);
	harness_check_pieces(h, CONNS, PIECES_PER_CONN, ROUNDS, BASE);
	nbd_close(h);
	harness_stop(&d);
	return 0;
}
