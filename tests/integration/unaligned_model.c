// SPDX-License-Identifier: BSD-3-Clause
/*
 * Any offset and length is served exactly: the cases named in the design
 * (1 MiB + 8 at offsets 1 and 2, 2 MiB + 16 at offset 1, single bytes at
 * odd offsets), then random unaligned reads and writes from two
 * connections checked against an in-memory model and against the image.
 * The image size is not a multiple of the alignment, so the partial last
 * block is exercised too. Seed printed; argv[1] repeats a run.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"

#define SIZE ((8u << 20) + 777)

static uint8_t *model, *buf, *img;

static void check_range(struct nbd_handle *h, struct daemon *d, uint64_t off, uint64_t len,
			const char *what)
{
	memset(buf, 0xee, len);
	NBD_OK(nbd_pread(h, buf, len, off, 0));
	CHECK(memcmp(buf, model + off, len) == 0, "%s: read [%" PRIu64 ", +%" PRIu64 ") differs",
	      what, off, len);
	harness_read_image(d, img, len, off);
	CHECK(memcmp(img, model + off, len) == 0, "%s: image [%" PRIu64 ", +%" PRIu64 ") differs",
	      what, off, len);
}

static void write_range(struct nbd_handle *h, uint64_t off, uint64_t len, uint64_t seed)
{
	harness_fill(model + off, len, seed);
	NBD_OK(nbd_pwrite(h, model + off, len, off, seed % 3 == 0 ? LIBNBD_CMD_FLAG_FUA : 0));
}

int main(int argc, char **argv)
{
	uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 0) : (uint64_t)time(NULL);
	struct nbd_handle *h[2];
	struct daemon d;
	uint64_t i;

	harness_init("unaligned_model", 120);
	printf("seed %" PRIu64 "\n", seed);
	srandom((unsigned)seed);
	model = calloc(1, SIZE);
	buf = harness_alloc(4 << 20);
	img = harness_alloc(4 << 20);
	harness_image(&d, SIZE);
	harness_start(&d, "-t", "2", NULL);
	h[0] = harness_connect(&d, true);
	h[1] = harness_connect(&d, false);

	/* Known data everywhere first. */
	write_range(h[0], 0, SIZE / 2, 1);
	write_range(h[1], SIZE / 2, SIZE - SIZE / 2, 2);

	/* The named cases. */
	check_range(h[0], &d, 1, (1 << 20) + 8, "1 MiB + 8 at 1");
	check_range(h[1], &d, 2, (1 << 20) + 8, "1 MiB + 8 at 2");
	check_range(h[0], &d, 1, (2 << 20) + 16, "2 MiB + 16 at 1");
	write_range(h[0], 1, (1 << 20) + 8, 3);
	check_range(h[1], &d, 0, (1 << 20) + 4096, "after a 1 MiB + 8 write at 1");
	write_range(h[1], 3 << 20 | 1, (2 << 20) + 16, 4);
	check_range(h[0], &d, (3 << 20) - 4096, (2 << 20) + 8192, "after 2 MiB + 16 at 3 MiB + 1");
	for (i = 1; i < 64; i += 2) {
		uint64_t off = i * 4099 + 7;

		write_range(h[i % 2], off, 1, 100 + i);
		check_range(h[(i + 1) % 2], &d, off, 1, "single byte");
		check_range(h[(i + 1) % 2], &d, off - 1, 3, "around a single byte");
	}
	/* The partial last block, byte by byte and across its start. */
	write_range(h[0], SIZE - 1, 1, 200);
	write_range(h[1], SIZE - 700, 300, 201);
	write_range(h[0], SIZE - 5000, 4500, 202);
	check_range(h[1], &d, SIZE - 9000, 9000, "the end of the image");

	/* Random unaligned operations. */
	for (i = 0; i < 600; i++) {
		uint64_t len = (uint64_t)random() % (i % 10 == 0 ? (3 << 20) : 20000) + 1;
		uint64_t off = (uint64_t)random() % (SIZE - len + 1);

		if (random() % 2)
			write_range(h[i % 2], off, len, 1000 + i);
		else
			check_range(h[i % 2], &d, off, len, "random read");
	}
	for (i = 0; i < SIZE; i += 4 << 20)
		check_range(h[0], &d, i, SIZE - i < (4 << 20) ? SIZE - i : 4 << 20, "final sweep");
	nbd_close(h[0]);
	nbd_close(h[1]);
	harness_stop(&d);
	return 0;
}
