// SPDX-License-Identifier: BSD-3-Clause
/*
 * Memory per idle connection: 1000 clients each send a burst of 32 reads of
 * 4 KiB (so 32 request slots and the receive buffer are touched) and then
 * fall quiet. Once they have been quiet a few seconds, the daemon's resident
 * memory may have grown by at most 32 KiB per connection (request slots,
 * reply iovecs and most of the receive buffer are given back), and every
 * connection still works.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../proto/proto.h"
#include "harness.h"

#define CONNS 1000

static long rss_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	CHECK(f, "open %s", path);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

/* n reads of 4 KiB in flight at once, then their replies. */
static void read_burst(int fd, unsigned n)
{
	static uint8_t r[PROTO_SIMPLE_REPLY_LEN + 4096];
	unsigned i;

	for (i = 0; i < n; i++)
		raw_request(fd, NBD_REQUEST_MAGIC, 0, NBD_CMD_READ, i, (uint64_t)i * 4096, 4096);
	for (i = 0; i < n; i++) {
		raw_recv(fd, r, sizeof(r));
		CHECK(proto_get_u32(r) == NBD_SIMPLE_REPLY_MAGIC && proto_get_u32(r + 4) == 0,
		      "bad reply to a 4 KiB read");
	}
}

int main(void)
{
	static int fds[CONNS];
	struct daemon d;
	long before, busy, idle;
	int i;

	harness_init("idle_memory", 120);
	harness_image(&d, 16 << 20);
	harness_start(&d, "-t", "2", "--max-connections", "0", NULL);
	harness_wait_memory(&d);
	fds[0] = raw_transmission(&d, NULL);
	read_burst(fds[0], 32);
	close(fds[0]);
	usleep(200 * 1000);
	before = rss_kib(d.pid);
	for (i = 0; i < CONNS; i++) {
		fds[i] = raw_transmission(&d, NULL);
		read_burst(fds[i], 32);
	}
	busy = rss_kib(d.pid);
	/* Quiet for CONN_QUIET_NS (2 s): its watchdog gives the pages back then (5 s: room to spare). */
	sleep(5);
	idle = rss_kib(d.pid);
	printf("%d connections after 32 reads of 4 KiB each: %.1f KiB each at once, %.1f KiB each "
	       "once quiet (RSS %ld -> %ld -> %ld KiB)\n", CONNS, (double)(busy - before) / CONNS,
	       (double)(idle - before) / CONNS, before, busy, idle);
	CHECK((idle - before) * 1024 / CONNS <= 32 * 1024,
	      "%.1f KiB per idle connection, over 32 KiB", (double)(idle - before) / CONNS);
	for (i = 0; i < CONNS; i++) {
		read_burst(fds[i], 1);
		close(fds[i]);
	}
	harness_stop(&d);
	return 0;
}
