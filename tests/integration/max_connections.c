// SPDX-License-Identifier: BSD-3-Clause
/*
 * --max-connections: at the limit, a further client is refused at once (the
 * connection is closed and the client says so) instead of hanging silently;
 * the refusal is logged. Connections already open keep working meanwhile,
 * and once one ends a new client is served.
 */
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../proto/proto.h"

#include "harness.h"

/*
 * A raw connection's fate: 1 if the greeting came (served), 0 if the daemon
 * closed it first (refused), -1 if neither within secs.
 */
static int greeted(struct daemon *d, double secs, int *fd_out)
{
	uint8_t g[PROTO_GREETING_LEN];
	struct pollfd pfd = { .fd = harness_raw_connect(d), .events = POLLIN };
	size_t got = 0;
	ssize_t n;

	*fd_out = pfd.fd;
	while (got < sizeof(g)) {
		if (poll(&pfd, 1, (int)(secs * 1000)) <= 0)
			return -1;
		n = recv(pfd.fd, g + got, sizeof(g) - got, 0);
		if (n <= 0)
			return 0;
		got += (size_t)n;
	}
	return 1;
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
	struct nbd_handle *h1, *h2;
	struct daemon d;
	int fd;

	harness_init("max_connections", 60);
	harness_image(&d, 16 << 20);
	harness_start(&d, "-t", "2", "--max-connections", "2", NULL);

	h1 = harness_connect(&d, true);
	h2 = harness_connect(&d, true);
	check_io(h1, 0, 1);
	check_io(h2, 4096, 2);

	/* A third client is refused at once: not served, not left hanging. */
	{
		double t0 = harness_now();
		int r = greeted(&d, 5.0, &fd);

		CHECK(r != 1, "a third connection was served over a limit of 2");
		CHECK(r == 0, "a client over the limit was left hanging");
		CHECK(harness_now() - t0 < 2.0, "the refusal took %.1f s", harness_now() - t0);
		printf("over the limit: refused in %.3f s\n", harness_now() - t0);
		close(fd);
	}
	CHECK(harness_log_has(&d, "2 connections, the limit: refused a client"),
	      "no log line about the limit");
	check_io(h2, 8192, 3); /* the others are undisturbed */

	/* One leaves: a new client is served (once its worker has let it go). */
	NBD_OK(nbd_shutdown(h1, 0));
	nbd_close(h1);
	{
		double end = harness_now() + 5.0;
		int r;

		while ((r = greeted(&d, 2.0, &fd)) != 1 && harness_now() < end) {
			close(fd);
			usleep(20 * 1000);
		}
		CHECK(r == 1, "no client was served after a connection ended");
	}
	/* That client goes on to negotiate and use the export. */
	{
		uint8_t f[4], r[16];

		proto_put_u32(f, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
		raw_send(fd, f, 4);
		raw_option(fd, NBD_IHAVEOPT, NBD_OPT_EXPORT_NAME, NULL, 0);
		raw_recv(fd, r, 10);
		raw_request(fd, NBD_REQUEST_MAGIC, 0, NBD_CMD_FLUSH, 7, 0, 0);
		raw_recv(fd, r, 16);
		CHECK(proto_get_u32(r + 4) == 0 && proto_get_u64(r + 8) == 7, "FLUSH on it failed");
		close(fd);
	}
	harness_stop(&d);
	nbd_close(h2);
	return 0;
}
