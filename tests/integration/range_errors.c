// SPDX-License-Identifier: BSD-3-Clause
/*
 * Requests the daemon must refuse, sent for real with libnbd's strict mode
 * off: past the end (EINVAL for reads, ENOSPC for writes),
 * a 36 MiB write across the end (ENOSPC, the payload consumed), writes to a
 * read-only export (EPERM). Requests over 32 MiB are served (in segments:
 * tests/integration/any_size.c). After each one,
 * the same connection still works. Unaligned requests are not errors.
 */
#include <errno.h>
#include <string.h>

#include "harness.h"

#define SIZE (8 << 20)

static void expect_err(int ret, int err, const char *what)
{
	CHECK(ret == -1, "%s succeeded", what);
	CHECK(nbd_get_errno() == err, "%s: errno %d (%s), expected %d", what, nbd_get_errno(),
	      nbd_get_error(), err);
}

static void still_works(struct nbd_handle *h, uint8_t *buf)
{
	NBD_OK(nbd_pread(h, buf, 4096, 0, 0));
}

int main(void)
{
	uint8_t *buf = harness_alloc(40 << 20);
	struct daemon d;
	struct nbd_handle *h;
	int round;

	harness_init("range_errors", 60);
	harness_image(&d, SIZE);
	harness_start(&d, NULL);

	for (round = 0; round < 2; round++) {
		h = harness_connect(&d, round == 0);
		NBD_OK(nbd_set_strict_mode(h, 0));
		expect_err(nbd_pread(h, buf, 4096, SIZE, 0), EINVAL, "read at the end");
		still_works(h, buf);
		expect_err(nbd_pread(h, buf, 8192, SIZE - 4096, 0), EINVAL, "read across the end");
		expect_err(nbd_pwrite(h, buf, 8192, SIZE - 4096, 0), ENOSPC, "write across the end");
		still_works(h, buf);
		expect_err(nbd_pwrite(h, buf, 4096, UINT64_MAX - 100, 0), ENOSPC,
			   "write at 2^64 - 100");
		expect_err(nbd_pread(h, buf, 4096, SIZE - 4095, 0), EINVAL,
			   "unaligned read across the end");
		expect_err(nbd_pwrite(h, buf, 100, SIZE - 99, 0), ENOSPC,
			   "unaligned write across the end");
		NBD_OK(nbd_pwrite(h, buf, 99, SIZE - 99, 0));
		still_works(h, buf);
		expect_err(nbd_pread(h, buf, (32 << 20) + 4096, SIZE - 4096, 0), EINVAL,
			   "read over 32 MiB across the end");
		/* The 36 MiB payload is read and dropped; the stream stays in sync. */
		expect_err(nbd_pwrite(h, buf, 36 << 20, SIZE - 4096, 0), ENOSPC,
			   "write over 32 MiB across the end");
		still_works(h, buf);
		/* DF without structured replies. */
		if (round == 1)
			expect_err(nbd_pread(h, buf, 4096, 0, LIBNBD_CMD_FLAG_DF), EINVAL,
				   "DF without structured replies");
		still_works(h, buf);
		nbd_close(h);
	}
	harness_stop(&d);

	/* Read-only export. */
	harness_start(&d, "-r", NULL);
	h = harness_connect(&d, true);
	CHECK(nbd_is_read_only(h) == 1, "read-only export not advertised as such");
	NBD_OK(nbd_set_strict_mode(h, 0));
	expect_err(nbd_pwrite(h, buf, 4096, 0, 0), EPERM, "write to a read-only export");
	still_works(h, buf);
	NBD_OK(nbd_flush(h, 0));
	nbd_close(h);
	harness_stop(&d);
	return 0;
}
