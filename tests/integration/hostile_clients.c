// SPDX-License-Identifier: BSD-3-Clause
/*
 * Hostile clients cannot freeze the others. Eight are connected at once,
 * spread over both workers: four slow readers (a 4 KiB receive buffer, four
 * 32 MiB READs each, replies never read), two writers that withhold a 32 MiB
 * payload, two that send garbage. Meanwhile a fresh client's 4 KiB reads
 * must each be answered within 1 s; their p99 is printed (the goal is under
 * 100 ms). io-timeout is off here, so only the buffer pool's fair shares
 * keep the fresh client going. Fails on a daemon whose pool a few stalled
 * connections can empty.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../proto/proto.h"
#include "harness.h"

#define SIZE (256u << 20)
#define READS 500

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int slow_reader(struct daemon *d)
{
	int fd = raw_transmission(d, NULL), small = 4096, i;

	CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)) == 0, "SO_RCVBUF");
	for (i = 0; i < 4; i++)
		raw_request(fd, NBD_REQUEST_MAGIC, 0, NBD_CMD_READ, (uint64_t)i + 1,
			    (uint64_t)i * (32u << 20), 32u << 20);
	return fd;
}

static int withholder(struct daemon *d)
{
	int fd = raw_transmission(d, NULL);

	raw_request(fd, NBD_REQUEST_MAGIC, 0, NBD_CMD_WRITE, 1, 0, 32u << 20);
	raw_send(fd, "partial", 7);
	return fd;
}

static int garbage(struct daemon *d)
{
	int fd = raw_transmission(d, NULL);
	char junk[64];

	memset(junk, 0xa5, sizeof(junk));
	(void)send(fd, junk, sizeof(junk), MSG_NOSIGNAL);
	return fd;
}

int main(void)
{
	static double lat[READS];
	uint8_t *buf = harness_alloc(4096);
	struct daemon d;
	struct nbd_handle *h = NULL;
	int fds[8], i, n = 0;
	double worst;

	harness_init("hostile_clients", 120);
	harness_image(&d, SIZE);
	harness_start(&d, "-t", "2", "--io-timeout", "0", NULL);
	/* Placed round-robin: every worker gets its share of them. */
	for (i = 0; i < 4; i++)
		fds[n++] = slow_reader(&d);
	for (i = 0; i < 2; i++)
		fds[n++] = withholder(&d);
	for (i = 0; i < 2; i++)
		fds[n++] = garbage(&d);
	usleep(300 * 1000); /* let them take what they can */

	/* Two fresh clients, so both workers are tried. */
	for (i = 0; i < READS; i++) {
		double t0;

		if (i % (READS / 2) == 0) {
			if (i)
				nbd_close(h);
			h = harness_connect(&d, true);
		}
		t0 = harness_now();
		NBD_OK(nbd_pread(h, buf, 4096, (uint64_t)(i * 7919 % (SIZE / 4096)) * 4096, 0));
		lat[i] = harness_now() - t0;
		CHECK(lat[i] < 1.0, "a 4 KiB read took %.3f s with hostile clients connected", lat[i]);
	}
	nbd_close(h);
	qsort(lat, READS, sizeof(lat[0]), cmp_double);
	worst = lat[READS - 1];
	printf("fresh client, %d reads of 4 KiB beside 8 hostile clients: median %.2f ms, "
	       "p99 %.2f ms, max %.2f ms\n", READS, lat[READS / 2] * 1e3,
	       lat[READS * 99 / 100] * 1e3, worst * 1e3);
	for (i = 0; i < n; i++)
		close(fds[i]);
	harness_stop(&d);
	return 0;
}
