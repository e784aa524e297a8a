// SPDX-License-Identifier: BSD-3-Clause
/*
 * --max-connections: at the limit, a further client is not refused but
 * waits (in the listen backlog, its handshake unanswered) until a connection
 * ends; then it is served. Connections already open keep working meanwhile,
 * and a stop with a client still waiting exits cleanly.
 */
#include <string.h>

#include "harness.h"

/* Starts a handshake without waiting for it. */
static struct nbd_handle *connect_async(struct daemon *d)
{
	struct nbd_handle *h = nbd_create();

	CHECK(h, "nbd_create: %s", nbd_get_error());
	NBD_OK(nbd_set_export_name(h, ""));
	NBD_OK(nbd_aio_connect_unix(h, d->sock));
	return h;
}

static void check_io(struct nbd_handle *h, uint64_t off, uint8_t seed)
{
	uint8_t w[4096], r[4096];

	memset(w, seed, sizeof(w));
	NBD_OK(nbd_pwrite(h, w, sizeof(w), off, 0));
	NBD_OK(nbd_pread(h, r, sizeof(r), off, 0));
	CHECK(memcmp(w, r, sizeof(w)) == 0, "read back differs at %llu", (unsigned long long)off);
}

int main(void)
{
	struct nbd_handle *h1, *h2, *h3, *h4;
	struct daemon d;

	harness_init("max_connections", 60);
	harness_image(&d, 16 << 20);
	harness_start(&d, "-t", "2", "--max-connections", "2", NULL);

	h1 = harness_connect(&d, true);
	h2 = harness_connect(&d, true);
	check_io(h1, 0, 1);
	check_io(h2, 4096, 2);

	/* A third client waits: not served, not refused. */
	h3 = connect_async(&d);
	CHECK(!harness_wait_ready(h3, 0.5), "a third connection was served over a limit of 2");
	CHECK(harness_log_has(&d, "2 connections, the limit"), "no log line about the limit");
	check_io(h2, 8192, 3); /* the others are undisturbed */

	/* One leaves: the waiting client is served. */
	NBD_OK(nbd_shutdown(h1, 0));
	nbd_close(h1);
	CHECK(harness_wait_ready(h3, 5.0), "the waiting client was not served after a connection ended");
	check_io(h3, 12288, 4);

	/* Full again; a stop with a client still waiting exits 0 and lets it go. */
	h4 = connect_async(&d);
	CHECK(!harness_wait_ready(h4, 0.3), "a connection was served over the limit again");
	harness_stop(&d);
	{
		double end = harness_now() + 5.0;

		while (!nbd_aio_is_dead(h4) && !nbd_aio_is_closed(h4) && harness_now() < end)
			(void)nbd_poll(h4, 50);
		CHECK(nbd_aio_is_dead(h4) || nbd_aio_is_closed(h4),
		      "the waiting client was left hanging after the daemon stopped");
	}
	nbd_close(h4);
	nbd_close(h3);
	nbd_close(h2);
	return 0;
}
