// SPDX-License-Identifier: BSD-3-Clause
/*
 * --max-connections: at the limit, a further client is refused at once (the
 * connection is closed and the client says so) instead of hanging silently;
 * the refusal is logged. Connections already open keep working meanwhile,
 * and once one ends a new client is served.
 */
#include <stdio.h>
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

	/* A third client is refused at once: not served, not left hanging. */
	h3 = connect_async(&d);
	{
		double t0 = harness_now();

		while (!nbd_aio_is_dead(h3) && !nbd_aio_is_closed(h3) && !nbd_aio_is_ready(h3) &&
		       harness_now() < t0 + 5.0)
			(void)nbd_poll(h3, 50);
		CHECK(!nbd_aio_is_ready(h3), "a third connection was served over a limit of 2");
		CHECK(nbd_aio_is_dead(h3) || nbd_aio_is_closed(h3),
		      "a client over the limit was left hanging");
		CHECK(harness_now() - t0 < 2.0, "the refusal took %.1f s", harness_now() - t0);
		printf("over the limit: refused in %.3f s (%s)\n", harness_now() - t0,
		       nbd_get_error() ? nbd_get_error() : "closed");
	}
	CHECK(harness_log_has(&d, "2 connections, the limit: refused a client"),
	      "no log line about the limit");
	check_io(h2, 8192, 3); /* the others are undisturbed */

	/* One leaves: a new client is served. */
	NBD_OK(nbd_shutdown(h1, 0));
	nbd_close(h1);
	{
		double end = harness_now() + 5.0;

		/* The daemon counts the closed connection once its worker has freed it. */
		do {
			h4 = connect_async(&d);
			if (harness_wait_ready(h4, 2.0))
				break;
			nbd_close(h4);
			h4 = NULL;
		} while (harness_now() < end);
		CHECK(h4, "no client was served after a connection ended");
	}
	check_io(h4, 12288, 4);
	harness_stop(&d);
	nbd_close(h4);
	nbd_close(h3);
	nbd_close(h2);
	return 0;
}
