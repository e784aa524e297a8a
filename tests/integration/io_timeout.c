// SPDX-License-Identifier: BSD-3-Clause
/*
 * --io-timeout: a WRITE whose payload stops coming, and a reader that stops
 * reading its replies, are closed after about the timeout, and their
 * buffers come back (a client then reads 32 MiB at once from the smallest
 * pool). A client idle between requests is not an I/O stall and stays.
 * --idle-timeout: an idle client is closed; one with a request in flight
 * is not.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../proto/proto.h"
#include "harness.h"

#define SIZE (64u << 20)

/* Waits up to secs for the daemon to close fd; returns how long it took. */
static double wait_closed(int fd, double secs, const char *what)
{
	double t0 = harness_now();
	struct timeval tv = { .tv_sec = (time_t)secs + 1 };
	static uint8_t sink[1 << 20];
	ssize_t n;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	/* Whatever the daemon sent before closing is drained; then EOF or a reset. */
	while ((n = recv(fd, sink, sizeof(sink), 0)) > 0)
		;
	CHECK(n == 0 || errno == ECONNRESET, "%s: not closed within %.0f s", what, secs);
	close(fd);
	return harness_now() - t0;
}

int main(void)
{
	uint8_t *big = harness_alloc(32u << 20);
	struct daemon d;
	struct nbd_handle *h;
	double t;
	int fd, idle, small = 4096, i;

	harness_init("io_timeout", 120);
	harness_image(&d, SIZE);
	harness_start(&d, "-t", "1", "--pool-size", "32M", "--io-timeout", "1", NULL);

	/* An idle client in transmission, watched all along. */
	idle = raw_transmission(&d, NULL);

	/* A withheld payload holding most of the pool. */
	fd = raw_transmission(&d, NULL);
	raw_request(fd, NBD_REQUEST_MAGIC, 0, NBD_CMD_WRITE, 1, 0, 32u << 20);
	raw_send(fd, "some", 4);
	t = wait_closed(fd, 5.0, "a withheld WRITE payload");
	printf("withheld payload closed after %.2f s (io-timeout 1 s)\n", t);
	CHECK(t > 0.5, "closed after %.2f s, before the timeout", t);

	/* A reader that never reads its 32 MiB replies. */
	fd = raw_transmission(&d, NULL);
	CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)) == 0, "SO_RCVBUF");
	for (i = 0; i < 2; i++)
		raw_request(fd, NBD_REQUEST_MAGIC, 0, NBD_CMD_READ, (uint64_t)i + 1, 0, 32u << 20);
	usleep(3000 * 1000);
	CHECK(harness_log_has(&d, "made no progress for 1 s (io-timeout): closing"),
	      "the stalled reader was not closed");
	close(fd);

	/* Their buffers came back: 32 MiB in one request from the smallest pool. */
	h = harness_connect(&d, true);
	NBD_OK(nbd_pread(h, big, 32u << 20, 0, 0));
	nbd_close(h);

	/* The idle client was left alone, and still works. */
	{
		uint8_t r[16];

		raw_request(idle, NBD_REQUEST_MAGIC, 0, NBD_CMD_FLUSH, 9, 0, 0);
		raw_recv(idle, r, 16);
		CHECK(proto_get_u32(r) == NBD_SIMPLE_REPLY_MAGIC && proto_get_u32(r + 4) == 0,
		      "the idle client's FLUSH failed");
		close(idle);
	}
	harness_stop(&d);

	/* --idle-timeout 1: an idle client goes; a busy one does not. */
	harness_start(&d, "-t", "1", "--idle-timeout", "1", NULL);
	idle = raw_transmission(&d, NULL);
	t = wait_closed(idle, 5.0, "an idle client");
	printf("idle client closed after %.2f s (idle-timeout 1 s)\n", t);
	CHECK(t > 0.5, "closed after %.2f s, before the timeout", t);
	h = harness_connect(&d, true);
	for (i = 0; i < 8; i++) {
		NBD_OK(nbd_pread(h, big, 4096, 0, 0));
		usleep(400 * 1000); /* under the timeout between requests */
	}
	nbd_close(h);
	harness_stop(&d);
	return 0;
}
