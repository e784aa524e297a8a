// SPDX-License-Identifier: BSD-3-Clause
/*
 * New clients are served while the daemon faults in its buffers. After
 * start-up a thread of the daemon's own writes every page of the pools and
 * the cache (main.c, prefault_main); with 2 GiB pools that takes seconds.
 * Meanwhile clients connect one after another, each doing the handshake and
 * one 4 KiB read: each must be answered within 0.5 s, and several must be
 * served before the daemon says it is done.
 *
 * When the whole range was faulted in by one madvise(MADV_POPULATE_WRITE),
 * it held the process's mmap lock throughout, and a worker's mmap() of a
 * new connection's area waited for it: the first client waited the whole
 * 1.3-3.9 s and no other was served meanwhile.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "../../proto/proto.h"
#include "harness.h"

#define LIMIT_S 0.5

int main(void)
{
	uint8_t r[16], *data = harness_alloc(4096);
	double t0, worst = 0, took;
	unsigned served = 0;
	struct daemon d;

	harness_init("start_faulting", 120);
	harness_image(&d, 16 << 20);
	harness_start(&d, "-t", "2", "--pool-size", "2G", NULL);
	t0 = harness_now();
	while (!harness_log_has(&d, "buffer pools and cache fault")) {
		double t = harness_now();
		int fd;

		CHECK(t - t0 < 100, "the daemon did not fault in its buffers within 100 s");
		fd = raw_transmission(&d, NULL);
		raw_request(fd, NBD_REQUEST_MAGIC, 0, NBD_CMD_READ, served, 0, 4096);
		raw_recv(fd, r, sizeof(r));
		CHECK(proto_get_u32(r) == NBD_SIMPLE_REPLY_MAGIC && proto_get_u32(r + 4) == 0,
		      "bad reply to a 4 KiB read");
		raw_recv(fd, data, 4096);
		close(fd);
		took = harness_now() - t;
		if (took > worst)
			worst = took;
		CHECK(took < LIMIT_S, "a new client waited %.2f s for its handshake and first read, "
		      "%.2f s after the daemon started faulting in its buffers (%u served before)",
		      took, t - t0, served);
		served++;
	}
	took = harness_now() - t0;
	printf("%u clients connected and read while the daemon faulted in 2 x 2 GiB of pools "
	       "(%.1f s), the slowest in %.3f s\n", served, took, worst);
	if (took < 4 * LIMIT_S && served < 5) {
		harness_stop(&d);
		harness_skip("the pools were faulted in too fast to tell");
	}
	CHECK(served >= 5, "only %u clients served in the %.1f s the daemon faulted in its "
	      "buffers", served, took);
	harness_stop(&d);
	return 0;
}
