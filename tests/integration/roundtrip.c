// SPDX-License-Identifier: BSD-3-Clause
/*
 * Data round trips: patterns written at many offsets and sizes (up to the
 * 32 MiB maximum) read back through NBD and straight from the image file,
 * with simple and with structured replies. The seed is printed; pass it as
 * argv[1] to repeat a run.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"

#define IMG_BYTES (256ull << 20)

int main(int argc, char **argv)
{
	static const uint64_t sizes[] = { 512, 4096, 65536 - 512, 65536, 65536 + 512, 200704,
					  1 << 20, (1 << 20) + 512, (4 << 20) + 4096, 32 << 20 };
	uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 0) : (uint64_t)time(NULL);
	uint8_t *wbuf = harness_alloc(32 << 20), *rbuf = harness_alloc(32 << 20);
	struct daemon d;
	unsigned i, round;

	harness_init("roundtrip", 120);
	printf("seed %" PRIu64 "\n", seed);
	srandom((unsigned)seed);
	harness_image(&d, IMG_BYTES);
	harness_start(&d, "-t", "2", NULL);

	for (round = 0; round < 2; round++) {
		struct nbd_handle *h = harness_connect(&d, round == 1);

		for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]) * 3; i++) {
			uint64_t len = sizes[i % (sizeof(sizes) / sizeof(sizes[0]))];
			uint64_t off = ((uint64_t)random() % ((IMG_BYTES - len) / 512)) * 512;

			if (i % 7 == 0)
				off = IMG_BYTES - len; /* the very end */
			harness_fill(wbuf, len, seed + i + 100 * round);
			NBD_OK(nbd_pwrite(h, wbuf, len, off, 0));
			memset(rbuf, 0xee, len);
			NBD_OK(nbd_pread(h, rbuf, len, off, 0));
			CHECK(memcmp(wbuf, rbuf, len) == 0,
			      "read back differs: offset %" PRIu64 " length %" PRIu64, off, len);
			memset(rbuf, 0xee, len);
			harness_read_image(&d, rbuf, len, off);
			CHECK(memcmp(wbuf, rbuf, len) == 0,
			      "image file differs: offset %" PRIu64 " length %" PRIu64, off, len);
		}
		NBD_OK(nbd_shutdown(h, 0));
		nbd_close(h);
	}
	harness_stop(&d);
	return 0;
}
