// SPDX-License-Identifier: BSD-3-Clause
/*
 * FUA and FLUSH: FUA writes and flushes are accepted on every command as
 * the spec says, and data acknowledged with FUA or followed by an
 * acknowledged FLUSH (on another connection: CAN_MULTI_CONN) is in the
 * image after SIGKILL of the daemon.
 */
#include <string.h>

#include "harness.h"

#define LEN (1 << 20)

int main(void)
{
	uint8_t *a = harness_alloc(LEN), *b = harness_alloc(LEN), *r = harness_alloc(LEN);
	struct daemon d;
	struct nbd_handle *h, *h2;

	harness_init("fua_flush", 60);
	harness_image(&d, 16 << 20);
	harness_start(&d, "-t", "2", NULL);
	h = harness_connect(&d, true);
	h2 = harness_connect(&d, false);

	harness_fill(a, LEN, 1);
	harness_fill(b, LEN, 2);
	NBD_OK(nbd_pwrite(h, a, LEN, 0, LIBNBD_CMD_FLAG_FUA));
	NBD_OK(nbd_pwrite(h, b, LEN, LEN, 0));
	/* A flush on the other connection covers the first one's writes. */
	NBD_OK(nbd_flush(h2, 0));
	/* libnbd refuses FUA on FLUSH itself; the spec allows it on every command. */
	NBD_OK(nbd_set_strict_mode(h2, 0));
	NBD_OK(nbd_flush(h2, LIBNBD_CMD_FLAG_FUA));
	/* FUA is valid on reads too once advertised. */
	NBD_OK(nbd_pread(h2, r, LEN, 0, LIBNBD_CMD_FLAG_FUA));
	CHECK(memcmp(r, a, LEN) == 0, "read with FUA differs");

	harness_kill(&d);
	harness_read_image(&d, r, LEN, 0);
	CHECK(memcmp(r, a, LEN) == 0, "FUA write lost after SIGKILL");
	harness_read_image(&d, r, LEN, LEN);
	CHECK(memcmp(r, b, LEN) == 0, "flushed write lost after SIGKILL");
	nbd_close(h);
	nbd_close(h2);
	return 0;
}
