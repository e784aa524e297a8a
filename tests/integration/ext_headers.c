// SPDX-License-Identifier: BSD-3-Clause
/*
 * Extended headers over a raw socket (Debian's libnbd cannot speak them):
 * negotiation rules, 32-byte requests with 64-bit lengths, extended reply
 * headers for every reply type, BLOCK_STATUS_EXT, PAYLOAD_LEN (on WRITE, and
 * on BLOCK_STATUS naming its contexts: valid, split, repeated, unknown, none), oversized
 * payloads; then the shutdown answers: ERR_SHUTDOWN to a negotiating
 * client, ESHUTDOWN (or a clean close) after in-flight requests finish.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../proto/proto.h"
#include "harness.h"

#define SIZE (8u << 20)

struct xreply {
	uint16_t flags, type;
	uint64_t cookie, offset, len;
};

#define xrequest raw_request_ext

static struct xreply xreply(int fd, uint64_t cookie)
{
	uint8_t h[PROTO_EXT_REPLY_LEN];
	struct xreply r;

	raw_recv(fd, h, sizeof(h));
	CHECK(proto_get_u32(h) == NBD_EXTENDED_REPLY_MAGIC, "reply magic 0x%x", proto_get_u32(h));
	r.flags = proto_get_u16(h + 4);
	r.type = proto_get_u16(h + 6);
	r.cookie = proto_get_u64(h + 8);
	r.offset = proto_get_u64(h + 16);
	r.len = proto_get_u64(h + 24);
	CHECK(r.cookie == cookie, "cookie %llu, expected %llu", (unsigned long long)r.cookie,
	      (unsigned long long)cookie);
	CHECK(r.flags & NBD_REPLY_FLAG_DONE, "reply not final");
	return r;
}

/* A final reply carrying nbd_error (ERROR chunk) or success (NONE). */
static void expect_status(int fd, uint64_t cookie, uint32_t nbd_error)
{
	struct xreply r = xreply(fd, cookie);
	uint8_t p[6];

	if (nbd_error == 0) {
		CHECK(r.type == NBD_REPLY_TYPE_NONE && r.len == 0, "type %u len %llu, expected NONE",
		      r.type, (unsigned long long)r.len);
		return;
	}
	CHECK(r.type == NBD_REPLY_TYPE_ERROR && r.len == 6, "type %u, expected ERROR", r.type);
	raw_recv(fd, p, 6);
	CHECK(proto_get_u32(p) == nbd_error, "error %u, expected %u", proto_get_u32(p), nbd_error);
}

/* BLOCK_STATUS with PAYLOAD_LEN: an effect length and context ids, maybe in two sends. */
static void bs_payload(int fd, uint64_t cookie, const uint32_t *ids, unsigned n, bool split)
{
	uint8_t p[8 + 4 * 8];
	unsigned i;

	proto_put_u64(p, SIZE);
	for (i = 0; i < n; i++)
		proto_put_u32(p + 8 + 4 * i, ids[i]);
	xrequest(fd, NBD_CMD_FLAG_PAYLOAD_LEN, NBD_CMD_BLOCK_STATUS, cookie, 0, 8 + 4 * n);
	if (split) {
		raw_send(fd, p, 6);
		usleep(100000);
		raw_send(fd, p + 6, 8 + 4 * n - 6);
	} else {
		raw_send(fd, p, 8 + 4 * n);
	}
}

/* The BLOCK_STATUS_EXT reply to cookie: base:allocation, covering some of the export. */
static void bs_reply(int fd, uint64_t cookie)
{
	struct xreply r = xreply(fd, cookie);
	uint8_t bs[1100];

	CHECK(r.type == NBD_REPLY_TYPE_BLOCK_STATUS_EXT && r.len >= 24 && r.len <= sizeof(bs),
	      "block status reply type %u len %llu", r.type, (unsigned long long)r.len);
	raw_recv(fd, bs, r.len);
	CHECK(proto_get_u32(bs) == PROTO_META_ID_BASE_ALLOCATION, "context id");
}

static void meta_set(int fd)
{
	uint8_t p[64];

	proto_put_u32(p, 0);
	proto_put_u32(p + 4, 1);
	proto_put_u32(p + 8, 15);
	memcpy(p + 12, "base:allocation", 15);
	raw_option(fd, NBD_IHAVEOPT, NBD_OPT_SET_META_CONTEXT, p, 27);
	CHECK(raw_option_reply(fd, NBD_OPT_SET_META_CONTEXT) == NBD_REP_META_CONTEXT, "context");
	CHECK(raw_option_reply(fd, NBD_OPT_SET_META_CONTEXT) == NBD_REP_ACK, "context ack");
}

static int connect_extended(struct daemon *d)
{
	uint8_t go[6] = { 0 };
	int fd = raw_hello(d, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	uint8_t h[PROTO_OPTREPLY_HDR_LEN], info[64];
	uint32_t type, len;

	raw_option(fd, NBD_IHAVEOPT, NBD_OPT_EXTENDED_HEADERS, NULL, 0);
	CHECK(raw_option_reply(fd, NBD_OPT_EXTENDED_HEADERS) == NBD_REP_ACK, "EXTENDED_HEADERS");
	/* Extended headers imply structured replies: contexts may follow. */
	meta_set(fd);
	raw_option(fd, NBD_IHAVEOPT, NBD_OPT_EXTENDED_HEADERS, NULL, 0);
	CHECK(raw_option_reply(fd, NBD_OPT_EXTENDED_HEADERS) == NBD_REP_ERR_INVALID,
	      "second EXTENDED_HEADERS accepted");
	raw_option(fd, NBD_IHAVEOPT, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	CHECK(raw_option_reply(fd, NBD_OPT_STRUCTURED_REPLY) == NBD_REP_ERR_EXT_HEADER_REQD,
	      "STRUCTURED_REPLY after EXTENDED_HEADERS");
	raw_option(fd, NBD_IHAVEOPT, NBD_OPT_GO, go, sizeof(go));
	do {
		raw_recv(fd, h, sizeof(h));
		type = proto_get_u32(h + 12);
		len = proto_get_u32(h + 16);
		CHECK(len <= sizeof(info), "info length %u", len);
		raw_recv(fd, info, len);
		if (type == NBD_REP_INFO && proto_get_u16(info) == NBD_INFO_EXPORT) {
			CHECK(proto_get_u64(info + 2) == SIZE, "size");
			/* Extended headers and a context: BLOCK_STATUS may name its contexts. */
			CHECK(proto_get_u16(info + 10) & NBD_FLAG_BLOCK_STAT_PAYLOAD,
			      "NBD_FLAG_BLOCK_STATUS_PAYLOAD not advertised");
		}
	} while (type == NBD_REP_INFO);
	CHECK(type == NBD_REP_ACK, "GO: reply type 0x%x", type);
	return fd;
}

int main(void)
{
	uint8_t *buf = harness_alloc(48 << 20), *rd = harness_alloc(1 << 20);
	struct daemon d;
	struct xreply r;
	uint8_t p[64];
	int fd, fd2, fd3, i = 0;

	harness_init("ext_headers", 60);
	harness_image(&d, SIZE);
	harness_start(&d, "-t", "1", NULL);

	/* Negotiation order: SET_META_CONTEXT before structured replies is invalid. */
	fd = raw_hello(&d, NBD_FLAG_C_FIXED_NEWSTYLE);
	proto_put_u32(p, 0);
	proto_put_u32(p + 4, 0);
	raw_option(fd, NBD_IHAVEOPT, NBD_OPT_SET_META_CONTEXT, p, 8);
	CHECK(raw_option_reply(fd, NBD_OPT_SET_META_CONTEXT) == NBD_REP_ERR_INVALID,
	      "SET_META_CONTEXT without structured replies");
	raw_option(fd, NBD_IHAVEOPT, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	CHECK(raw_option_reply(fd, NBD_OPT_STRUCTURED_REPLY) == NBD_REP_ACK, "STRUCTURED_REPLY");
	raw_option(fd, NBD_IHAVEOPT, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	CHECK(raw_option_reply(fd, NBD_OPT_STRUCTURED_REPLY) == NBD_REP_ERR_INVALID,
	      "repeated STRUCTURED_REPLY");
	raw_option(fd, NBD_IHAVEOPT, NBD_OPT_ABORT, NULL, 0);
	CHECK(raw_option_reply(fd, NBD_OPT_ABORT) == NBD_REP_ACK, "ABORT");
	raw_expect_closed(fd, "after ABORT");

	fd = connect_extended(&d);

	/* WRITE (PAYLOAD_LEN allowed and redundant), READ back at an odd offset. */
	harness_fill(buf, 1 << 20, 11);
	xrequest(fd, NBD_CMD_FLAG_PAYLOAD_LEN, NBD_CMD_WRITE, 1, 4097, 1 << 20);
	raw_send(fd, buf, 1 << 20);
	expect_status(fd, 1, 0);
	xrequest(fd, 0, NBD_CMD_READ, 2, 4097, 1 << 20);
	r = xreply(fd, 2);
	CHECK(r.type == NBD_REPLY_TYPE_OFFSET_DATA && r.len == 8 + (1 << 20) && r.offset == 4097,
	      "READ reply type %u len %llu", r.type, (unsigned long long)r.len);
	raw_recv(fd, p, 8);
	CHECK(proto_get_u64(p) == 4097, "OFFSET_DATA offset");
	raw_recv(fd, rd, 1 << 20);
	CHECK(memcmp(rd, buf, 1 << 20) == 0, "READ data differs");

	/* BLOCK_STATUS_EXT with 64-bit descriptors. */
	xrequest(fd, 0, NBD_CMD_BLOCK_STATUS, 3, 0, SIZE);
	r = xreply(fd, 3);
	CHECK(r.type == NBD_REPLY_TYPE_BLOCK_STATUS_EXT, "block status type %u", r.type);
	CHECK(r.len >= 8 + 16 && (r.len - 8) % 16 == 0 && r.len <= sizeof(p) + 1000, "len %llu",
	      (unsigned long long)r.len);
	{
		uint8_t bs[1100];
		uint64_t total = 0, k, n;

		raw_recv(fd, bs, r.len);
		CHECK(proto_get_u32(bs) == PROTO_META_ID_BASE_ALLOCATION, "context id");
		n = proto_get_u32(bs + 4);
		CHECK(n == (r.len - 8) / 16, "descriptor count %llu", (unsigned long long)n);
		for (k = 0; k < n; k++)
			total += proto_get_u64(bs + 8 + 16 * k);
		CHECK(total <= SIZE && total > 0, "extents cover %llu bytes", (unsigned long long)total);
		CHECK(proto_get_u64(bs + 8 + 8) == (NBD_STATE_HOLE | NBD_STATE_ZERO),
		      "first extent of a sparse image is not a hole");
	}

	/* BLOCK_STATUS naming its contexts (PAYLOAD_LEN), whole or in two sends. */
	{
		uint32_t base = PROTO_META_ID_BASE_ALLOCATION, twice[2] = { base, base }, bad = 7;

		bs_payload(fd, 20, &base, 1, false);
		bs_reply(fd, 20);
		bs_payload(fd, 21, &base, 1, true);
		bs_reply(fd, 21);
		bs_payload(fd, 22, twice, 2, false);
		expect_status(fd, 22, NBD_EINVAL);
		bs_payload(fd, 23, &bad, 1, false);
		expect_status(fd, 23, NBD_EINVAL);
		bs_payload(fd, 24, NULL, 0, false);
		expect_status(fd, 24, NBD_EINVAL);
		xrequest(fd, 0, NBD_CMD_FLUSH, 25, 0, 0);
		expect_status(fd, 25, 0);
	}

	/* 64-bit lengths: TRIM and WRITE_ZEROES of the whole export; over-long READ refused. */
	xrequest(fd, 0, NBD_CMD_TRIM, 4, 0, SIZE);
	expect_status(fd, 4, 0);
	xrequest(fd, NBD_CMD_FLAG_NO_HOLE, NBD_CMD_WRITE_ZEROES, 5, 0, SIZE);
	expect_status(fd, 5, 0);
	xrequest(fd, 0, NBD_CMD_READ, 6, 0, UINT64_C(1) << 40);
	expect_status(fd, 6, NBD_EINVAL);
	xrequest(fd, 0, NBD_CMD_WRITE_ZEROES, 7, 0, UINT64_C(1) << 40);
	expect_status(fd, 7, NBD_ENOSPC);
	/* Zero-length requests are answered. */
	xrequest(fd, 0, NBD_CMD_WRITE, 8, 0, 0);
	expect_status(fd, 8, 0);
	xrequest(fd, 0, NBD_CMD_BLOCK_STATUS, 9, 0, 0);
	expect_status(fd, 9, NBD_EINVAL);
	/* PAYLOAD_LEN on READ: the payload is read and dropped, then EINVAL. */
	xrequest(fd, NBD_CMD_FLAG_PAYLOAD_LEN, NBD_CMD_READ, 10, 0, 5000);
	raw_send(fd, buf, 5000);
	expect_status(fd, 10, NBD_EINVAL);
	/* A 40 MiB WRITE past the end: consumed and refused; the stream stays in sync. */
	xrequest(fd, 0, NBD_CMD_WRITE, 11, 0, 40 << 20);
	raw_send(fd, buf, 40 << 20);
	expect_status(fd, 11, NBD_ENOSPC);
	xrequest(fd, 0, NBD_CMD_FLUSH, 12, 0, 0);
	expect_status(fd, 12, 0);
	/* A compact header now is a bad magic: disconnect. */
	{
		uint8_t h[PROTO_EXT_REQUEST_LEN] = { 0 };

		proto_put_u32(h, NBD_REQUEST_MAGIC);
		raw_send(fd, h, sizeof(h));
		raw_expect_closed(fd, "compact request after extended headers");
	}

	/* Shutdown: one client negotiating, one with a slow request in flight. */
	fd2 = raw_hello(&d, NBD_FLAG_C_FIXED_NEWSTYLE);
	fd3 = connect_extended(&d);
	harness_fill(buf, 8 << 20, 12);
	xrequest(fd3, NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, 20, 0, 8 << 20);
	raw_send(fd3, buf, (8 << 20) - 1);
	kill(d.pid, SIGTERM);
	/* The last byte, then another request behind it. */
	usleep(100 * 1000);
	raw_send(fd3, buf + (8 << 20) - 1, 1);
	xrequest(fd3, 0, NBD_CMD_READ, 21, 0, 4096);
	/* Replies come in completion order: the write's, and ESHUTDOWN or a close. */
	{
		bool write_done = false, refused = false;
		uint8_t h[PROTO_EXT_REPLY_LEN];

		while (!(write_done && refused)) {
			ssize_t n = recv(fd3, h, sizeof(h), MSG_WAITALL);

			if (n == 0 && write_done)
				break; /* a clean close instead of ESHUTDOWN */
			CHECK(n == (ssize_t)sizeof(h), "reply header: %zd", n);
			CHECK(proto_get_u16(h + 4) & NBD_REPLY_FLAG_DONE, "reply not final");
			if (proto_get_u64(h + 8) == 20) {
				CHECK(proto_get_u16(h + 6) == NBD_REPLY_TYPE_NONE,
				      "write in flight at SIGTERM failed");
				write_done = true;
			} else {
				CHECK(proto_get_u64(h + 8) == 21, "unknown cookie");
				CHECK(proto_get_u16(h + 6) == NBD_REPLY_TYPE_ERROR,
				      "request after SIGTERM served");
				raw_recv(fd3, p, 6);
				CHECK(proto_get_u32(p) == NBD_ESHUTDOWN, "error %u, not ESHUTDOWN",
				      proto_get_u32(p));
				refused = true;
			}
		}
		raw_expect_closed(fd3, "after the last reply");
	}
	raw_option(fd2, NBD_IHAVEOPT, NBD_OPT_LIST, NULL, 0);
	CHECK(raw_option_reply(fd2, NBD_OPT_LIST) == NBD_REP_ERR_SHUTDOWN, "LIST while stopping");
	raw_option(fd2, NBD_IHAVEOPT, NBD_OPT_ABORT, NULL, 0);
	CHECK(raw_option_reply(fd2, NBD_OPT_ABORT) == NBD_REP_ACK, "ABORT while stopping");
	raw_expect_closed(fd2, "after ABORT");
	harness_read_image(&d, rd, 1 << 20, 7 << 20);
	CHECK(memcmp(rd, buf + (7 << 20), 1 << 20) == 0, "write in flight at SIGTERM lost");
	(void)i;
	harness_wait(&d); /* it was sent SIGTERM above; a second one would exit at once */
	return 0;
}
