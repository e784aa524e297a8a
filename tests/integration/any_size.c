// SPDX-License-Identifier: BSD-3-Clause
/*
 * Requests of any size, over raw sockets (libnbd stops at 64 MiB): READ,
 * WRITE and WRITE_ZEROES of 33 MiB, 100 MiB and 1 GiB at unaligned offsets
 * through compact headers with simple replies (a client that chose its
 * export with EXPORT_NAME and never learnt the block-size limit), compact
 * headers with structured replies (the data in several OFFSET_DATA chunks,
 * DONE on the last; with DF in one chunk) and extended headers, on exports with cache=none,
 * always and auto and on an overlay, with a 32 MiB pool per worker; every
 * read is compared with a model of the image and the image file with it.
 * While 1 GiB moves, the daemon's RSS stays within its pools and cache, and
 * another client's 4 KiB reads are served (p99 < 100 ms). A client that
 * stops reading a 1 GiB reply is cut by --io-timeout.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../proto/proto.h"
#include "harness.h"

#define SIZE ((1ull << 30) + (64ull << 20))
#define BASE_SIZE (256ull << 20)
#define GIB (1ull << 30)

enum mode { SIMPLE = RAW_SIMPLE, STRUCTURED = RAW_STRUCTURED, EXTENDED = RAW_EXTENDED };
static const char *const mode_name[] = { "simple", "structured", "extended" };

static uint8_t *model, *obuf, *ovl_model;
static uint64_t cookie_next = 1;

static int connect_mode(struct daemon *d, enum mode m, const char *name)
{
	return raw_connect_mode(d, (enum raw_mode)m, name);
}

static void request_flags(int fd, enum mode m, uint16_t flags, uint16_t type, uint64_t cookie,
			  uint64_t off, uint64_t len)
{
	if (m != EXTENDED) {
		CHECK(len < (1ull << 32), "compact request of %llu bytes", (unsigned long long)len);
		raw_request(fd, NBD_REQUEST_MAGIC, flags, type, cookie, off, (uint32_t)len);
		return;
	}
	raw_request_ext(fd, flags, type, cookie, off, len);
}

static void request(int fd, enum mode m, uint16_t type, uint64_t cookie, uint64_t off,
		    uint64_t len)
{
	request_flags(fd, m, 0, type, cookie, off, len);
}

/*
 * The reply to cookie: its error; a READ's data lands in dst (len bytes from
 * off), checked to be covered exactly once. *chunks counts OFFSET_DATA chunks.
 */
static uint32_t reply(int fd, enum mode m, uint64_t cookie, uint8_t *dst, uint64_t off,
		      uint64_t len, unsigned *chunks)
{
	uint8_t h[PROTO_EXT_REPLY_LEN], p[8];
	uint64_t covered = 0;

	*chunks = 0;
	if (m == SIMPLE) {
		raw_recv(fd, h, PROTO_SIMPLE_REPLY_LEN);
		CHECK(proto_get_u32(h) == NBD_SIMPLE_REPLY_MAGIC, "simple reply magic");
		CHECK(proto_get_u64(h + 8) == cookie, "cookie");
		if (dst && proto_get_u32(h + 4) == 0)
			raw_recv(fd, dst, len);
		return proto_get_u32(h + 4);
	}
	for (;;) {
		uint16_t flags, type;
		uint64_t clen, coff;

		if (m == EXTENDED) {
			raw_recv(fd, h, PROTO_EXT_REPLY_LEN);
			CHECK(proto_get_u32(h) == NBD_EXTENDED_REPLY_MAGIC, "extended reply magic");
			clen = proto_get_u64(h + 24);
		} else {
			raw_recv(fd, h, 4);
			if (proto_get_u32(h) == NBD_SIMPLE_REPLY_MAGIC && !dst && !*chunks) {
				/* Allowed for a command without data, even with structured replies. */
				raw_recv(fd, h + 4, PROTO_SIMPLE_REPLY_LEN - 4);
				CHECK(proto_get_u64(h + 8) == cookie, "cookie");
				return proto_get_u32(h + 4);
			}
			raw_recv(fd, h + 4, PROTO_CHUNK_HDR_LEN - 4);
			CHECK(proto_get_u32(h) == NBD_STRUCTURED_REPLY_MAGIC, "chunk magic");
			clen = proto_get_u32(h + 16);
		}
		flags = proto_get_u16(h + 4);
		type = proto_get_u16(h + 6);
		CHECK(proto_get_u64(h + 8) == cookie, "chunk cookie");
		if (type == NBD_REPLY_TYPE_ERROR) {
			raw_recv(fd, p, 6);
			CHECK(clen == 6 && (flags & NBD_REPLY_FLAG_DONE), "error chunk");
			return proto_get_u32(p);
		}
		if (type == NBD_REPLY_TYPE_OFFSET_DATA) {
			CHECK(dst && clen > 8, "data chunk of %llu", (unsigned long long)clen);
			raw_recv(fd, p, 8);
			coff = proto_get_u64(p);
			CHECK(coff >= off && coff + clen - 8 <= off + len && coff - off == covered,
			      "chunk at %llu+%llu out of order", (unsigned long long)coff,
			      (unsigned long long)(clen - 8));
			raw_recv(fd, dst + (coff - off), clen - 8);
			covered += clen - 8;
			(*chunks)++;
		} else {
			CHECK(type == NBD_REPLY_TYPE_NONE && clen == 0, "chunk type %u", type);
		}
		if (flags & NBD_REPLY_FLAG_DONE)
			break;
	}
	CHECK(!dst || covered == len, "data covers %llu of %llu bytes",
	      (unsigned long long)covered, (unsigned long long)len);
	return 0;
}

static void do_write(int fd, enum mode m, uint8_t *mdl, uint64_t off, uint64_t len, uint64_t seed)
{
	uint64_t cookie = cookie_next++;
	unsigned chunks;

	harness_fill(mdl + off, len, seed);
	request(fd, m, NBD_CMD_WRITE, cookie, off, len);
	raw_send(fd, mdl + off, len);
	CHECK(reply(fd, m, cookie, NULL, off, len, &chunks) == 0, "WRITE %llu+%llu (%s)",
	      (unsigned long long)off, (unsigned long long)len, mode_name[m]);
}

static void do_zero(int fd, enum mode m, uint8_t *mdl, uint64_t off, uint64_t len)
{
	uint64_t cookie = cookie_next++;
	unsigned chunks;

	memset(mdl + off, 0, len);
	request(fd, m, NBD_CMD_WRITE_ZEROES, cookie, off, len);
	CHECK(reply(fd, m, cookie, NULL, off, len, &chunks) == 0, "WRITE_ZEROES (%s)", mode_name[m]);
}

static void do_read_flags(int fd, enum mode m, const uint8_t *mdl, uint64_t off, uint64_t len,
			  uint16_t flags)
{
	uint64_t cookie = cookie_next++;
	unsigned chunks;

	memset(obuf, 0x5a, len);
	request_flags(fd, m, flags, NBD_CMD_READ, cookie, off, len);
	CHECK(reply(fd, m, cookie, obuf, off, len, &chunks) == 0, "READ %llu+%llu (%s)",
	      (unsigned long long)off, (unsigned long long)len, mode_name[m]);
	/* Structured: a chunk per segment; with DF, one chunk whatever the length. */
	if (flags & NBD_CMD_FLAG_DF)
		CHECK(chunks == 1, "DF: a %llu-byte read in %u chunks", (unsigned long long)len,
		      chunks);
	else
		CHECK(m == SIMPLE || len <= (32u << 20) || chunks > 1,
		      "a %llu-byte read in %u chunk(s)", (unsigned long long)len, chunks);
	for (uint64_t i = 0; i < len; i++)
		CHECK(obuf[i] == mdl[off + i], "READ %llu+%llu (%s): byte %llu differs",
		      (unsigned long long)off, (unsigned long long)len, mode_name[m],
		      (unsigned long long)(off + i));
}

static void do_read(int fd, enum mode m, const uint8_t *mdl, uint64_t off, uint64_t len)
{
	do_read_flags(fd, m, mdl, off, len, 0);
}

/* The daemon's resident memory, in bytes. */
static uint64_t rss(pid_t pid)
{
	char path[64], line[256];
	uint64_t kib = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %llu", (unsigned long long *)&kib) == 1)
			break;
	fclose(f);
	return kib << 10;
}

/* Meanwhile: the daemon's peak RSS, and another client's 4 KiB read latencies. */
static struct {
	struct daemon *d;
	volatile int stop;
	uint64_t peak;
	double lat[200000];
	unsigned n;
} side;

static void *sampler(void *arg)
{
	(void)arg;
	while (!side.stop) {
		uint64_t r = rss(side.d->pid);

		if (r > side.peak)
			side.peak = r;
		usleep(20000);
	}
	return NULL;
}

static void *reader(void *arg)
{
	struct nbd_handle *h = harness_connect(side.d, true);
	char buf[4096];

	(void)arg;
	while (!side.stop && side.n < sizeof(side.lat) / sizeof(side.lat[0])) {
		double t = harness_now();

		NBD_OK(nbd_pread(h, buf, sizeof(buf), (side.n * 4096ull) % (1ull << 30), 0));
		side.lat[side.n++] = harness_now() - t;
		usleep(1000);
	}
	nbd_close(h);
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int main(void)
{
	struct daemon d;
	char always[2300], autoe[2300], ovl[2300], base[2150];
	pthread_t ts, tr;
	uint64_t before;
	double t0;
	int fd, m;
	FILE *f;

	harness_init("any_size", 600);
	harness_image(&d, SIZE);
	model = harness_alloc(SIZE);
	obuf = harness_alloc(GIB + (1u << 20));
	ovl_model = harness_alloc(BASE_SIZE);
	memset(model, 0, SIZE);
	memset(ovl_model, 0, BASE_SIZE);
	snprintf(base, sizeof(base), "%s/base.img", d.dir);
	f = fopen(base, "w");
	CHECK(f && ftruncate(fileno(f), (off_t)BASE_SIZE) == 0, "base image");
	fclose(f);
	snprintf(always, sizeof(always), "always=%s,cache=always", d.img);
	snprintf(autoe, sizeof(autoe), "auto=%s,cache=auto", d.img);
	snprintf(ovl, sizeof(ovl), "ovl=%s,overlay=temporary", base);
	harness_start(&d, "-t", "2", "--pool-size", "32M", "--cache-size", "16M", "-e", always,
		      "-e", autoe, "-e", ovl, NULL);

	/* 33 MiB and 100 MiB, every header and reply form, on every cache mode. */
	for (m = SIMPLE; m <= EXTENDED; m++) {
		const char *names[] = { "", "always", "auto" };

		for (unsigned e = 0; e < 3; e++) {
			uint64_t off = 7777 + (uint64_t)m * (200u << 20) + e * (60u << 20);

			fd = connect_mode(&d, (enum mode)m, names[e]);
			do_write(fd, (enum mode)m, model, off, (33u << 20) + 12345, (uint64_t)m * 10 + e);
			do_read(fd, (enum mode)m, model, off - 999, (33u << 20) + 20000);
			close(fd);
		}
		fd = connect_mode(&d, (enum mode)m, "");
		do_write(fd, (enum mode)m, model, 3333 + (uint64_t)m * 300, 100u << 20, 40 + m);
		do_read(fd, (enum mode)m, model, 3000 + (uint64_t)m * 300, (100u << 20) + 1000);
		do_zero(fd, (enum mode)m, model, 5555 + (uint64_t)m * 300, (50u << 20) + 77);
		do_read(fd, (enum mode)m, model, 5000, 100u << 20);
		close(fd);
	}
	/* Through an overlay (granule copy-up at the edges). */
	fd = connect_mode(&d, STRUCTURED, "ovl");
	do_write(fd, STRUCTURED, ovl_model, 40000, (100u << 20) + 3, 77);
	do_read(fd, STRUCTURED, ovl_model, 0, 128u << 20);
	close(fd);
	fd = connect_mode(&d, SIMPLE, "ovl");
	do_read(fd, SIMPLE, ovl_model, 12345, (40u << 20) + 1);
	close(fd);

	/* 1 GiB each way, with the RSS watched and another client reading. */
	harness_wait_memory(&d);
	before = rss(d.pid);
	side.d = &d;
	CHECK(pthread_create(&ts, NULL, sampler, NULL) == 0, "sampler");
	CHECK(pthread_create(&tr, NULL, reader, NULL) == 0, "reader");
	t0 = harness_now();
	fd = connect_mode(&d, EXTENDED, "");
	do_write(fd, EXTENDED, model, 4097, GIB, 99);
	close(fd);
	fd = connect_mode(&d, STRUCTURED, "");
	do_read(fd, STRUCTURED, model, 4000, GIB);
	/* Don't fragment: one chunk, streamed. */
	do_read_flags(fd, STRUCTURED, model, 1234, 100u << 20, NBD_CMD_FLAG_DF);
	close(fd);
	fd = connect_mode(&d, EXTENDED, "auto");
	do_read_flags(fd, EXTENDED, model, 99, (40u << 20) + 1, NBD_CMD_FLAG_DF);
	close(fd);
	fd = connect_mode(&d, SIMPLE, "always");
	do_read(fd, SIMPLE, model, 1, GIB - 2);
	close(fd);
	fd = connect_mode(&d, EXTENDED, "auto");
	do_zero(fd, EXTENDED, model, 3 << 20, GIB + 12345);
	do_read(fd, EXTENDED, model, 0, GIB);
	close(fd);
	side.stop = 1;
	pthread_join(ts, NULL);
	pthread_join(tr, NULL);
	qsort(side.lat, side.n, sizeof(double), cmp_double);
	printf("1 GiB write, 1 GiB zeroes and three 1 GiB reads in %.1f s; daemon RSS %llu MiB before, %llu MiB at "
	       "most; meanwhile %u 4 KiB reads, p50 %.2f ms, p99 %.2f ms\n", harness_now() - t0,
	       (unsigned long long)(before >> 20), (unsigned long long)(side.peak >> 20), side.n,
	       side.lat[side.n / 2] * 1e3, side.lat[side.n * 99 / 100] * 1e3);
	/* Two 32 MiB pools and the 16 MiB cache, touched, and 32 MiB of anything else. */
	CHECK(side.peak < before + (2 * 32 + 16 + 32) * (1ull << 20),
	      "RSS grew from %llu to %llu MiB", (unsigned long long)(before >> 20),
	      (unsigned long long)(side.peak >> 20));
	CHECK(side.n > 10 && side.lat[side.n * 99 / 100] < 0.1, "p99 %.3f s",
	      side.lat[side.n * 99 / 100]);
	harness_stop(&d);

	/* The file is the model. */
	for (uint64_t off = 0; off < SIZE; off += GIB / 4) {
		uint64_t n = SIZE - off < GIB / 4 ? SIZE - off : GIB / 4;

		harness_read_image(&d, obuf, n, off);
		CHECK(memcmp(obuf, model + off, n) == 0, "the image differs from the model near %llu",
		      (unsigned long long)off);
	}

	/* A client that stops reading a 1 GiB reply is cut by io-timeout. */
	harness_start(&d, "--io-timeout", "2", NULL);
	fd = connect_mode(&d, SIMPLE, "");
	request(fd, SIMPLE, NBD_CMD_READ, 1, 0, GIB);
	t0 = harness_now();
	while (!harness_log_has(&d, "made no progress") && harness_now() - t0 < 15)
		usleep(50000);
	CHECK(harness_log_has(&d, "made no progress"), "the stalled reader was not cut");
	printf("a reader that stopped was cut after %.1f s\n", harness_now() - t0);
	close(fd);
	fd = connect_mode(&d, EXTENDED, "");
	do_read(fd, EXTENDED, model, 0, 40u << 20);
	close(fd);
	harness_stop(&d);
	return 0;
}
