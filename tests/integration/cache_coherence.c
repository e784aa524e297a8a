// SPDX-License-Identifier: BSD-3-Clause
/*
 * The page cache in the daemon: a direct export (cache=none), a cached
 * one (always) and an auto one of the same file, used in turn by three
 * connections with random unaligned reads, writes and zeroes, checked
 * against an in-memory model; 8 concurrent readers of a cold page cause
 * one fill; a fill overtaken by a write to another part of its page is
 * dropped (made deterministic with URINGNBD_TEST_FILL_DELAY_MS); memory
 * stays within --cache-size under ten times that much reading; NBD_CMD_CACHE
 * prefetches; FUA and
 * FLUSH through a cached export survive SIGKILL.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define SIZE (8u << 20)

struct cstats {
	uint64_t hits, misses, waits, fills, stale, evictions, used;
};

/* The cache counters the daemon logged at exit. */
static struct cstats cache_stats(struct daemon *d)
{
	struct cstats s = { .hits = UINT64_MAX };
	char line[1024], *p;
	FILE *f = fopen(d->log, "r");

	CHECK(f, "open %s", d->log);
	while (fgets(line, sizeof(line), f))
		if ((p = strstr(line, "stats: cache ")))
			sscanf(p, "stats: cache %" SCNu64 " hits, %" SCNu64 " misses, %" SCNu64
			       " waits on fills, %" SCNu64 " fills, %" SCNu64
			       " stale fills dropped, %" SCNu64 " evictions, %*u invalidated, %*u full; %"
			       SCNu64, &s.hits, &s.misses, &s.waits, &s.fills, &s.stale, &s.evictions,
			       &s.used);
	fclose(f);
	CHECK(s.hits != UINT64_MAX, "no cache counters in the daemon log");
	CHECK(truncate(d->log, 0) == 0, "truncate");
	return s;
}

static void model_test(struct daemon *d, uint64_t seed)
{
	static const char *const names[] = { "direct", "cached", "auto" };
	uint8_t *model = calloc(1, SIZE), *buf = harness_alloc(2 << 20);
	struct nbd_handle *h[3];
	struct cstats s;
	int i, k;

	for (k = 0; k < 3; k++)
		h[k] = harness_connect_export(d, names[k]);
	srandom((unsigned)seed);
	for (i = 0; i < 3000; i++) {
		uint64_t len = (uint64_t)random() % (i % 20 == 0 ? (1 << 20) : 9000) + 1;
		uint64_t off = (uint64_t)random() % (SIZE - len);
		int op = (int)(random() % 10);

		k = i % 3;
		if (op < 3) {
			harness_fill(model + off, len, seed + (uint64_t)i);
			NBD_OK(nbd_pwrite(h[k], model + off, len, off, 0));
		} else if (op == 3) {
			memset(model + off, 0, len);
			NBD_OK(nbd_zero(h[k], len, off, op % 2 ? LIBNBD_CMD_FLAG_NO_HOLE : 0));
		} else {
			/* Reads cluster so that cached exports hit. */
			if (op >= 7)
				off = off % (256 << 10);
			NBD_OK(nbd_pread(h[k], buf, len, off, 0));
			CHECK(memcmp(buf, model + off, len) == 0,
			      "seed %" PRIu64 " op %d: %s read [%" PRIu64 ", +%" PRIu64 ") is stale or wrong",
			      seed, i, names[k], off, len);
		}
	}
	for (k = 0; k < 3; k++)
		nbd_close(h[k]);
	harness_stop(d);
	s = cache_stats(d);
	printf("model: %" PRIu64 " hits, %" PRIu64 " misses, %" PRIu64 " fills\n", s.hits, s.misses,
	       s.fills);
	CHECK(s.hits > 0 && s.fills > 0, "the cache was not used");
	free(model);
}

static void concurrent_cold_readers(struct daemon *d)
{
	struct nbd_handle *h[8];
	uint8_t *b = harness_alloc(8 * 4096);
	int64_t ck[8];
	struct cstats s;
	int k;

	harness_start(d, "-t", "2", "-n", "cached", "--cache", "always", NULL);
	for (k = 0; k < 8; k++)
		h[k] = harness_connect_export(d, "cached");
	for (k = 0; k < 8; k++)
		ck[k] = nbd_aio_pread(h[k], b + k * 4096, 4096, 1 << 20, NBD_NULL_COMPLETION, 0);
	for (k = 0; k < 8; k++) {
		while (nbd_aio_command_completed(h[k], (uint64_t)ck[k]) == 0)
			CHECK(nbd_poll(h[k], -1) != -1, "poll: %s", nbd_get_error());
		nbd_close(h[k]);
	}
	harness_stop(d);
	s = cache_stats(d);
	printf("8 readers of a cold page: %" PRIu64 " misses, %" PRIu64 " fills, %" PRIu64
	       " waits, %" PRIu64 " hits\n", s.misses, s.fills, s.waits, s.hits);
	CHECK(s.misses == 1 && s.fills == 1, "%" PRIu64 " reads of the file for one page", s.misses);
	/* The other 7 hit: at once, or after waiting for the one fill. */
	CHECK(s.hits == 7 && s.waits <= 7, "the other 7 readers did not all hit");
}

static void stale_fill(struct daemon *d, const char *image, const char *hooks_bin,
		       const char *shipped_bin)
{
	char direct[3000];
	uint8_t *b = harness_alloc(4096), newdata[512];
	struct nbd_handle *a, *w;
	struct timespec t0, t1;
	struct cstats s;
	int64_t ck;

	snprintf(direct, sizeof(direct), "direct=%s", image);
	/* The fill delay is a test hook: only the test build of the daemon has it. */
	if (!hooks_bin)
		harness_skip("URINGNBD_TEST_HOOKS_BIN not set (make check sets it)");
	setenv("URINGNBD", hooks_bin, 1);
	setenv("URINGNBD_TEST_FILL_DELAY_MS", "400", 1);
	/* One worker: the held fill must not stop it from serving the write. */
	harness_start(d, "-t", "1", "-n", "cached", "--cache", "always", "-e", direct, NULL);
	unsetenv("URINGNBD_TEST_FILL_DELAY_MS");
	setenv("URINGNBD", shipped_bin, 1);
	a = harness_connect_export(d, "cached");
	w = harness_connect_export(d, "direct");
	/* A reads bytes [0, 100) of a cold page: its fill reads the page, then lingers. */
	ck = nbd_aio_pread(a, b, 100, 2 << 20, NBD_NULL_COMPLETION, 0);
	CHECK(ck > 0, "aio_pread");
	usleep(100 * 1000);
	/*
	 * Another block of the same page changes while the fill is open (an
	 * aligned write: its lock shares no byte with the read's).
	 */
	harness_fill(newdata, sizeof(newdata), 77);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	NBD_OK(nbd_pwrite(w, newdata, sizeof(newdata), (2 << 20) + 512, 0));
	clock_gettime(CLOCK_MONOTONIC, &t1);
	CHECK((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 < 250,
	      "a write to other bytes of the page waited for the read");
	while (nbd_aio_command_completed(a, (uint64_t)ck) == 0)
		CHECK(nbd_poll(a, -1) != -1, "poll: %s", nbd_get_error());
	/* The stale fill must not be served. */
	NBD_OK(nbd_pread(a, b, 512, (2 << 20) + 512, 0));
	CHECK(memcmp(b, newdata, 512) == 0, "the cached export served a stale page");
	nbd_close(a);
	nbd_close(w);
	harness_stop(d);
	s = cache_stats(d);
	CHECK(s.stale >= 1, "no stale fill was dropped");
	printf("stale fill: dropped %" PRIu64 ", the next read saw the write\n", s.stale);
}

static void budget(struct daemon *d)
{
	uint8_t *b = harness_alloc(1 << 20);
	struct nbd_handle *h;
	struct cstats s;
	int i;

	harness_start(d, "-n", "cached", "--cache", "always", "--cache-size", "1M", NULL);
	h = harness_connect_export(d, "cached");
	for (i = 0; i < 10; i++)
		NBD_OK(nbd_pread(h, b, 1 << 20, (uint64_t)(i % 8) << 20, 0));
	nbd_close(h);
	harness_stop(d);
	s = cache_stats(d);
	printf("10 MiB through a 1 MiB cache: %" PRIu64 " pages used, %" PRIu64 " evictions\n",
	       s.used, s.evictions);
	CHECK(s.used <= 256, "%" PRIu64 " pages cached over a 256-page budget", s.used);
	CHECK(s.evictions >= 2048, "only %" PRIu64 " evictions", s.evictions);
}

/* NBD_CMD_CACHE fills the cache: the read after it is all hits. */
static void prefetch(struct daemon *d)
{
	uint8_t *b = harness_alloc(65536);
	struct nbd_handle *h;
	struct cstats s;

	harness_start(d, "-n", "cached", "--cache", "always", NULL);
	h = harness_connect_export(d, "cached");
	NBD_OK(nbd_cache(h, 65536, 4 << 20, 0));
	NBD_OK(nbd_pread(h, b, 65536, 4 << 20, 0));
	nbd_close(h);
	harness_stop(d);
	s = cache_stats(d);
	printf("prefetch of 64 KiB: %" PRIu64 " misses, then %" PRIu64 " hits\n", s.misses, s.hits);
	CHECK(s.misses == 16 && s.hits == 16, "NBD_CMD_CACHE did not fill the cache");
}

static void durability(struct daemon *d)
{
	uint8_t *a = harness_alloc(65536), *b = harness_alloc(65536), *r = harness_alloc(65536);
	struct nbd_handle *h;

	harness_start(d, "-n", "cached", "--cache", "always", NULL);
	h = harness_connect_export(d, "cached");
	NBD_OK(nbd_pread(h, r, 65536, 0, 0)); /* the pages are cached */
	harness_fill(a, 65536, 5);
	harness_fill(b, 65536, 6);
	NBD_OK(nbd_pwrite(h, a, 65536, 0, LIBNBD_CMD_FLAG_FUA));
	NBD_OK(nbd_pwrite(h, b, 65536, 65536, 0));
	NBD_OK(nbd_flush(h, 0));
	harness_kill(d);
	nbd_close(h);
	harness_read_image(d, r, 65536, 0);
	CHECK(memcmp(r, a, 65536) == 0, "FUA write through a cached export lost");
	harness_read_image(d, r, 65536, 65536);
	CHECK(memcmp(r, b, 65536) == 0, "flushed write through a cached export lost");
}

int main(int argc, char **argv)
{
	uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 0) : (uint64_t)time(NULL);
	char cached[3000], autoe[3000];
	struct daemon d;

	harness_init("cache_coherence", 120);
	printf("seed %" PRIu64 "\n", seed);
	harness_image(&d, SIZE);
	snprintf(cached, sizeof(cached), "cached=%s,cache=always", d.img);
	snprintf(autoe, sizeof(autoe), "auto=%s,cache=auto", d.img);
	harness_start(&d, "-t", "2", "-n", "direct", "-e", cached, "-e", autoe, NULL);
	model_test(&d, seed);
	concurrent_cold_readers(&d);
	budget(&d);
	prefetch(&d);
	durability(&d);
	/* Last: it needs the test build, and skips without one. */
	stale_fill(&d, d.img, getenv("URINGNBD_TEST_HOOKS_BIN"),
		   getenv("URINGNBD") ? getenv("URINGNBD") : "build/uringnbd");
	return 0;
}
