// SPDX-License-Identifier: BSD-3-Clause
/*
 * Polling: the worker waits for completions by polling instead of
 * sleeping, and nothing else changes. By default a worker polls only
 * while it holds 4 requests or more: at queue depth 1 it never polls, with
 * 64 writes in flight it does (the daemon's polling count at exit).
 * Checked with the daemon's own
 * counters from /proc: at queue depth 1, reading blocks that are on the
 * disk, a worker polling adaptively (--poll-max 100) and one with
 * --busy-poll sleep (voluntary context switches; a yield is not one) less
 * than half as often per request as one that does not (--poll-max 0), and
 * an adaptive worker with idle connections stops polling (no CPU used);
 * with --busy-poll replies stay right with 64 requests in flight from two connections;
 * libev still gets its turn while the worker polls non-stop (an idle
 * connection is closed by --idle-timeout during a steady stream of reads
 * on another, and a new connection is served at once); and an idle worker
 * with connections open does not poll (it uses almost no CPU).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

#define SIZE (64u << 20)
#define READS 3000
#define DATA (16u << 20) /* written, so reads go to the disk */

/* Voluntary context switches of every thread of pid. */
static unsigned long long sleeps(pid_t pid, unsigned *threads)
{
	char path[320], line[256];
	unsigned long long sum = 0, v;
	struct dirent *e;
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	dir = opendir(path);
	CHECK(dir, "%s: %s", path, strerror(errno));
	while ((e = readdir(dir))) {
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/status", (int)pid, e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;  /* a thread that just ended */
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "voluntary_ctxt_switches: %llu", &v) == 1)
				sum += v;
		fclose(f);
		(*threads)++;
	}
	closedir(dir);
	return sum;
}

/* CPU seconds (user + system) the daemon has used. */
static double cpu_seconds(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long ut, st;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	CHECK(f, "%s: %s", path, strerror(errno));
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	CHECK(p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
			  &st) == 2, "cannot parse %s", path);
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/*
 * Sleeps per 4 KiB read at queue depth 1. The sum is over the threads
 * alive at each reading: one that ends meanwhile (an idle io-wq thread of
 * the kernel's) takes its count with it, and one that starts adds its own
 * (CI saw the sum go down once, under ASan), so a round in which the
 * number of threads changed is measured again.
 */
static double sleeps_per_read(struct daemon *d, struct nbd_handle *h, uint8_t *buf)
{
	unsigned long long before, after;
	unsigned i, round = 0, n0, n1;

	do {
		CHECK(round++ < 5, "the daemon's threads came or went in each of 5 rounds");
		n0 = n1 = 0;
		before = sleeps(d->pid, &n0);
		for (i = 0; i < READS; i++)
			NBD_OK(nbd_pread(h, buf, 4096, (uint64_t)(i * 7919u % (DATA / 4096)) * 4096,
					 0));
		after = sleeps(d->pid, &n1);
	} while (n0 != n1 || after < before);
	return (double)(after - before) / READS;
}

/* Waits up to secs for the daemon to close fd. */
static bool closed_within(int fd, double secs)
{
	struct timeval tv = { .tv_sec = 0, .tv_usec = 100 * 1000 };
	double end = harness_now() + secs;
	uint8_t sink[4096];
	ssize_t n;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	while (harness_now() < end) {
		n = recv(fd, sink, sizeof(sink), 0);
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return true;
	}
	return false;
}

int main(void)
{
	uint8_t *buf = harness_alloc(4096);
	struct nbd_handle *h[2], *late;
	double off, adaptive, on, t0, c0, c1;
	struct daemon d;
	unsigned i;
	int idle, fd;

	harness_init("busy_poll", 120);
	harness_image(&d, SIZE);
	fd = open(d.img, O_WRONLY);
	CHECK(fd >= 0, "%s: %s", d.img, strerror(errno));
	for (i = 0; i < DATA / (1u << 20); i++) {
		static uint8_t mib[1u << 20];

		harness_fill(mib, sizeof(mib), i);
		CHECK(pwrite(fd, mib, sizeof(mib), (off_t)i << 20) == (ssize_t)sizeof(mib),
		      "writing %s", d.img);
	}
	CHECK(fsync(fd) == 0 && close(fd) == 0, "%s: %s", d.img, strerror(errno));

	/* The defaults: no polling at depth 1, polling with 64 requests in flight. */
	harness_start(&d, "-t", "1", NULL);
	h[0] = harness_connect(&d, true);
	(void)sleeps_per_read(&d, h[0], buf);
	nbd_close(h[0]);
	harness_stop(&d);
	CHECK(harness_log_has(&d, "; 0 completions found by polling, 0.000 s polled"),
	      "the default worker polled at queue depth 1");
	CHECK(truncate(d.log, 0) == 0, "%s: %s", d.log, strerror(errno));
	harness_start(&d, "-t", "1", NULL);
	h[0] = harness_connect(&d, true);
	harness_write_pieces(h[0], 0, 1, 2000, 3, DATA);
	nbd_close(h[0]);
	harness_stop(&d);
	CHECK(harness_log_has(&d, "completions found by polling") &&
		      !harness_log_has(&d, "; 0 completions found by polling"),
	      "the default worker did not poll with 64 requests in flight");
	CHECK(truncate(d.log, 0) == 0, "%s: %s", d.log, strerror(errno));

	/* The reference: a worker that sleeps between completions. */
	harness_start(&d, "-t", "1", "--poll-max", "0", NULL);
	h[0] = harness_connect(&d, true);
	off = sleeps_per_read(&d, h[0], buf);
	nbd_close(h[0]);
	harness_stop(&d);

	/* Adaptive: the window grows while requests follow replies quickly. */
	harness_start(&d, "-t", "1", "--poll-max", "100", NULL);
	h[0] = harness_connect(&d, true);
	adaptive = sleeps_per_read(&d, h[0], buf);
	c0 = cpu_seconds(d.pid);
	usleep(1000 * 1000);
	c1 = cpu_seconds(d.pid);
	printf("adaptive polling: CPU while idle with a connection: %.3f s in 1 s\n", c1 - c0);
	CHECK(c1 - c0 < 0.1, "an idle adaptive worker used %.3f s of CPU in 1 s", c1 - c0);
	nbd_close(h[0]);
	harness_stop(&d);

	harness_start(&d, "-t", "1", "--busy-poll", "500", "--idle-timeout", "3", NULL);
	h[0] = harness_connect(&d, true);
	on = sleeps_per_read(&d, h[0], buf);
	printf("sleeps per read at QD1: %.2f with --poll-max 0, %.2f adaptive, %.2f with "
	       "--busy-poll 500\n", off, adaptive, on);
	CHECK(off >= 0.1, "without polling the worker slept only %.2f times per read: "
	      "the measure cannot tell them apart", off);
	CHECK(on < off / 2, "busy polling slept %.2f times per read (%.2f without)", on, off);
	CHECK(adaptive < off / 2, "adaptive polling slept %.2f times per read (%.2f without)",
	      adaptive, off);

	/* Right replies with many in flight, two connections sharing sectors. */
	h[1] = harness_connect(&d, false);
	for (i = 0; i < 2; i++)
		harness_write_pieces(h[i], i, 2, 2000, 3, 4096 + 1);
	harness_check_pieces(h[0], 2, 2000, 3, 4096 + 1);
	harness_check_pieces(h[1], 2, 2000, 3, 4096 + 1);
	nbd_close(h[1]);

	/*
	 * Timers and new connections while the worker polls non-stop: an idle
	 * connection goes after --idle-timeout, one made now is served.
	 */
	idle = raw_transmission(&d, NULL);
	t0 = harness_now();
	late = NULL;
	while (harness_now() - t0 < 8.0) {
		for (i = 0; i < 100; i++)
			NBD_OK(nbd_pread(h[0], buf, 4096, (uint64_t)i * 4096, 0));
		if (!late && harness_now() - t0 > 0.5) {
			double t1 = harness_now();

			late = harness_connect(&d, true);
			NBD_OK(nbd_pread(late, buf, 4096, 0, 0));
			CHECK(harness_now() - t1 < 1.0, "a new connection waited %.2f s",
			      harness_now() - t1);
		}
		if (harness_log_has(&d, "(idle-timeout): closing"))
			break;
	}
	CHECK(harness_log_has(&d, "(idle-timeout): closing"),
	      "no idle-timeout within 8 s while the worker polled");
	CHECK(closed_within(idle, 1.0), "the idle connection is still open");
	printf("idle connection closed after %.2f s of steady reads\n", harness_now() - t0);

	/* Connections open, no requests: no polling. */
	NBD_OK(nbd_pread(late, buf, 4096, 0, 0));
	c0 = cpu_seconds(d.pid);
	usleep(1000 * 1000);
	c1 = cpu_seconds(d.pid);
	printf("CPU while idle with 2 connections: %.3f s in 1 s\n", c1 - c0);
	CHECK(c1 - c0 < 0.1, "an idle polling worker used %.3f s of CPU in 1 s", c1 - c0);

	nbd_close(late);
	nbd_close(h[0]);
	harness_stop(&d);
	return 0;
}
