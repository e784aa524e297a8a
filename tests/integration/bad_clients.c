// SPDX-License-Identifier: BSD-3-Clause
/*
 * Broken and vanishing clients, over a raw socket and libnbd: each is
 * answered as the spec says or cut off, and a good client connected all the
 * while is still served and its data intact.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../proto/proto.h"
#include "harness.h"

/* Old-style EXPORT_NAME of the default export; returns the socket in transmission. */
static int bad_transmission(struct daemon *d)
{
	uint64_t size;
	int fd = raw_transmission(d, &size);

	CHECK(size == 4 << 20, "EXPORT_NAME size");
	return fd;
}

static uint32_t recv_simple_reply(int fd, uint64_t cookie)
{
	uint8_t r[PROTO_SIMPLE_REPLY_LEN];

	raw_recv(fd, r, sizeof(r));
	CHECK(proto_get_u32(r) == NBD_SIMPLE_REPLY_MAGIC, "simple reply magic");
	CHECK(proto_get_u64(r + 8) == cookie, "reply cookie");
	return proto_get_u32(r + 4);
}

int main(void)
{
	uint8_t *good = harness_alloc(2 << 20), *buf = harness_alloc(4 << 20);
	struct daemon d;
	struct nbd_handle *g, *h;
	int64_t cookies[64];
	int fd, i;

	harness_init("bad_clients", 60);
	harness_image(&d, 4 << 20);
	harness_start(&d, "-t", "1", NULL);

	/* A good client, connected throughout. */
	g = harness_connect(&d, true);
	harness_fill(good, 1 << 20, 7);
	NBD_OK(nbd_pwrite(g, good, 1 << 20, 3 << 20, 0));

	/* Unknown client flags: dropped. */
	fd = raw_hello(&d, NBD_FLAG_C_FIXED_NEWSTYLE | (1u << 5));
	raw_expect_closed(fd, "unknown client flags");

	/* Bad option magic: dropped. */
	fd = raw_hello(&d, NBD_FLAG_C_FIXED_NEWSTYLE);
	raw_option(fd, NBD_IHAVEOPT ^ 1, NBD_OPT_LIST, NULL, 0);
	raw_expect_closed(fd, "bad option magic");

	/* Unknown option: ERR_UNSUP and its payload skipped; a huge one: ERR_TOO_BIG. */
	fd = raw_hello(&d, NBD_FLAG_C_FIXED_NEWSTYLE);
	raw_option(fd, NBD_IHAVEOPT, 4242, "garbage!", 8);
	CHECK(raw_option_reply(fd, 4242) == NBD_REP_ERR_UNSUP, "unknown option not ERR_UNSUP");
	memset(buf, 'x', 1 << 20);
	raw_option(fd, NBD_IHAVEOPT, NBD_OPT_GO, buf, 1 << 20);
	CHECK(raw_option_reply(fd, NBD_OPT_GO) == NBD_REP_ERR_TOO_BIG,
	      "1 MiB option not ERR_TOO_BIG");
	raw_option(fd, NBD_IHAVEOPT, NBD_OPT_LIST, "x", 1);
	CHECK(raw_option_reply(fd, NBD_OPT_LIST) == NBD_REP_ERR_INVALID,
	      "LIST with data not ERR_INVALID");
	raw_option(fd, NBD_IHAVEOPT, NBD_OPT_STARTTLS, NULL, 0);
	CHECK(raw_option_reply(fd, NBD_OPT_STARTTLS) == NBD_REP_ERR_POLICY,
	      "STARTTLS not ERR_POLICY");
	raw_option(fd, NBD_IHAVEOPT, NBD_OPT_ABORT, NULL, 0);
	CHECK(raw_option_reply(fd, NBD_OPT_ABORT) == NBD_REP_ACK, "ABORT not acknowledged");
	raw_expect_closed(fd, "after ABORT");

	/* EXPORT_NAME of an unknown export: closed, no reply. */
	fd = raw_hello(&d, NBD_FLAG_C_FIXED_NEWSTYLE);
	raw_option(fd, NBD_IHAVEOPT, NBD_OPT_EXPORT_NAME, "nope", 4);
	raw_expect_closed(fd, "EXPORT_NAME of an unknown export");

	/* Transmission: unknown command and bad flags get EINVAL; bad magic is a disconnect. */
	fd = bad_transmission(&d);
	raw_request(fd, NBD_REQUEST_MAGIC, 0, 77, 1, 0, 512);
	CHECK(recv_simple_reply(fd, 1) == NBD_EINVAL, "unknown command not EINVAL");
	raw_request(fd, NBD_REQUEST_MAGIC, 1u << 12, NBD_CMD_READ, 2, 0, 512);
	CHECK(recv_simple_reply(fd, 2) == NBD_EINVAL, "unknown flag not EINVAL");
	raw_request(fd, NBD_REQUEST_MAGIC, 0, NBD_CMD_READ, 3, 0, 0);
	CHECK(recv_simple_reply(fd, 3) == 0, "zero-length read not answered");
	raw_request(fd, NBD_REQUEST_MAGIC, 0, NBD_CMD_FLUSH, 4, 0, 0);
	CHECK(recv_simple_reply(fd, 4) == 0, "flush failed");
	raw_request(fd, 0x12345678, 0, NBD_CMD_READ, 5, 0, 512);
	raw_expect_closed(fd, "bad request magic");

	/* A WRITE whose payload never fully arrives. */
	fd = bad_transmission(&d);
	raw_request(fd, NBD_REQUEST_MAGIC, 0, NBD_CMD_WRITE, 6, 0, 4096);
	raw_send(fd, buf, 100);
	close(fd);

	/* 64 requests in flight, then the socket closed under them. */
	h = harness_connect(&d, true);
	for (i = 0; i < 64; i++)
		CHECK(nbd_aio_pwrite(h, buf, 65536, (uint64_t)i * 65536 % (3 << 20),
				     NBD_NULL_COMPLETION, 0) > 0, "aio_pwrite");
	for (i = 0; i < 3; i++)
		nbd_poll(h, 0);
	nbd_close(h);

	/* 64 requests in flight, then NBD_CMD_DISC: all of them done before the close. */
	h = harness_connect(&d, false);
	harness_fill(buf, 2 << 20, 99);
	for (i = 0; i < 32; i++) {
		cookies[i] = nbd_aio_pwrite(h, buf + i * 65536, 65536, (uint64_t)i * 65536,
					    NBD_NULL_COMPLETION, 0);
		CHECK(cookies[i] > 0, "aio_pwrite");
	}
	NBD_OK(nbd_shutdown(h, 0));
	while (!nbd_aio_is_closed(h) && !nbd_aio_is_dead(h))
		CHECK(nbd_poll(h, 5000) != -1 || nbd_aio_is_closed(h), "poll: %s",
		      nbd_get_error());
	nbd_close(h);

	/* The good client never noticed. */
	memset(buf, 0, 1 << 20);
	NBD_OK(nbd_pread(g, buf, 1 << 20, 3 << 20, 0));
	CHECK(memcmp(buf, good, 1 << 20) == 0, "good client's data changed");
	nbd_close(g);

	/* The writes before DISC are in the image. */
	harness_fill(good, 2 << 20, 99);
	harness_read_image(&d, buf, 2 << 20, 0);
	CHECK(memcmp(buf, good, 2 << 20) == 0, "writes sent before NBD_CMD_DISC were lost");
	harness_stop(&d);
	return 0;
}
