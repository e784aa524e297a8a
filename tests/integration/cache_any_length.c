// SPDX-License-Identifier: BSD-3-Clause
/*
 * NBD_CMD_CACHE needs no buffers: prefetches of 1 byte to 200 MiB on a
 * direct, an always and an auto export are all answered while another
 * client pins the whole buffer pool (a 32 MiB WRITE whose payload never
 * comes), and the daemon serves on. The spec lets a client send CACHE
 * longer than the maximum payload; the server must not fail or disconnect.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../../proto/proto.h"
#include "harness.h"

#define SIZE (256u << 20)

/* A raw client on the default export that sends a 32 MiB WRITE and 1 byte of it. */
static int pin_pool(struct daemon *d)
{
	int fd = raw_transmission(d, NULL);

	raw_request(fd, NBD_REQUEST_MAGIC, 0, NBD_CMD_WRITE, 1, 0, 32u << 20);
	raw_send(fd, "x", 1);
	return fd;
}

int main(void)
{
	static const uint64_t lens[] = { 1, 4096, 1 << 20, 32u << 20, 64u << 20, 200u << 20 };
	static const char *const names[] = { "", "always", "auto" };
	char always[3000], autoe[3000];
	uint8_t *buf = harness_alloc(4096);
	struct daemon d;
	size_t i, j;
	int pin;

	harness_init("cache_any_length", 120);
	harness_image(&d, SIZE);
	snprintf(always, sizeof(always), "always=%s,cache=always", d.img);
	snprintf(autoe, sizeof(autoe), "auto=%s,cache=auto", d.img);
	/* One worker with the smallest pool: one 32 MiB request takes nearly all of it. */
	harness_start(&d, "-t", "1", "--pool-size", "32M", "-e", always, "-e", autoe, NULL);
	pin = pin_pool(&d);
	for (j = 0; j < 3; j++) {
		struct nbd_handle *h = harness_connect_export(&d, names[j]);

		for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
			NBD_OK(nbd_cache(h, lens[i], 0, 0));
			NBD_OK(nbd_cache(h, lens[i], SIZE - lens[i], 0));
		}
		/* Past the end is the spec's EINVAL, and the connection lives on. */
		CHECK(nbd_cache(h, 4096, SIZE, 0) == -1, "CACHE past the end succeeded");
		NBD_OK(nbd_cache(h, 1, 0, 0));
		nbd_close(h);
		printf("export \"%s\": CACHE of 1 byte to 200 MiB answered with the pool pinned\n",
		       names[j]);
	}
	/* The pinning client is cut off with nothing lost; others are served. */
	close(pin);
	{
		struct nbd_handle *h = harness_connect_export(&d, "");

		NBD_OK(nbd_pread(h, buf, 4096, 0, 0));
		nbd_close(h);
	}
	harness_stop(&d);
	return 0;
}
