// SPDX-License-Identifier: BSD-3-Clause
/*
 * --handshake-timeout: a client that connects and never chooses an export
 * is closed after the timeout, freeing its connection slot (at
 * --max-connections 1, clients are refused until then, and served after);
 * a connection already serving an export is never timed out however long it
 * stays idle.
 */
#include <string.h>
#include <unistd.h>

#include "../../proto/proto.h"
#include "harness.h"

int main(void)
{
	struct nbd_handle *h;
	struct daemon d;
	uint8_t buf[4096];
	double t0, waited;
	int silent;

	harness_init("handshake_timeout", 60);
	harness_image(&d, 16 << 20);
	harness_start(&d, "--max-connections", "1", "--handshake-timeout", "1", NULL);

	/* A client that takes the only slot and then says nothing. */
	silent = raw_hello(&d, NBD_FLAG_C_FIXED_NEWSTYLE);
	t0 = harness_now();

	/* The next client is refused while the slot is taken... */
	h = nbd_create();
	CHECK(h, "nbd_create: %s", nbd_get_error());
	NBD_OK(nbd_set_export_name(h, ""));
	CHECK(nbd_connect_unix(h, d.sock) == -1, "served while the only slot was taken");
	nbd_close(h);

	/* ...until the silent one is cut off. */
	raw_expect_closed(silent, "a client silent in negotiation");
	waited = harness_now() - t0;
	CHECK(waited > 0.8 && waited < 5.0, "the silent client was closed after %.2f s, not ~1 s",
	      waited);
	CHECK(harness_log_has(&d, "no export chosen within 1 s"), "no log line about the timeout");
	/* The slot is free once the worker has let the connection go. */
	h = NULL;
	while (!h && harness_now() < t0 + 10.0) {
		h = nbd_create();
		CHECK(h, "nbd_create: %s", nbd_get_error());
		NBD_OK(nbd_set_export_name(h, ""));
		if (nbd_connect_unix(h, d.sock) == -1) {
			nbd_close(h);
			h = NULL;
			usleep(50 * 1000);
		}
	}
	CHECK(h, "no client was served once the slot was freed");

	/* Idle in transmission for longer than the timeout: still served. */
	sleep(2);
	memset(buf, 0x5a, sizeof(buf));
	NBD_OK(nbd_pwrite(h, buf, sizeof(buf), 0, 0));
	memset(buf, 0, sizeof(buf));
	NBD_OK(nbd_pread(h, buf, sizeof(buf), 0, 0));
	CHECK(buf[0] == 0x5a && buf[4095] == 0x5a, "read back differs after an idle spell");
	NBD_OK(nbd_shutdown(h, 0));
	nbd_close(h);
	harness_stop(&d);
	return 0;
}
