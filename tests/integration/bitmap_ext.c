// SPDX-License-Identifier: BSD-3-Clause
/*
 * A dirty bitmap over extended headers, on a raw socket (Debian's libnbd
 * speaks only compact replies; tests/interop/bitmaps.py covers those):
 * SET_META_CONTEXT gives base:allocation id 1 and qemu:dirty-bitmap:x
 * id 2; one BLOCK_STATUS answers both as BLOCK_STATUS_EXT chunks, DONE
 * on the last only, the bitmap's extents on granule edges, dirty where a
 * write went; a BLOCK_STATUS whose payload names id 2 alone gets that
 * context alone; one naming a context not chosen gets EINVAL.
 */
#include <stdio.h>
#include <string.h>

#include "../../proto/proto.h"
#include "harness.h"

#define SIZE (8u << 20)
#define GRAN (64u << 10)

struct chunk {
	uint16_t flags, type;
	uint64_t len;
	uint8_t body[2048];
};

static void chunk(int fd, uint64_t cookie, struct chunk *c)
{
	uint8_t h[PROTO_EXT_REPLY_LEN];

	raw_recv(fd, h, sizeof(h));
	CHECK(proto_get_u32(h) == NBD_EXTENDED_REPLY_MAGIC, "reply magic 0x%x", proto_get_u32(h));
	CHECK(proto_get_u64(h + 8) == cookie, "cookie");
	c->flags = proto_get_u16(h + 4);
	c->type = proto_get_u16(h + 6);
	c->len = proto_get_u64(h + 24);
	CHECK(c->len <= sizeof(c->body), "chunk of %llu bytes", (unsigned long long)c->len);
	raw_recv(fd, c->body, c->len);
}

/* The extents of a BLOCK_STATUS_EXT chunk for context id: count, and each (len, flags). */
static unsigned extents(const struct chunk *c, uint32_t id, uint64_t *len, uint64_t *flags)
{
	unsigned n, i;

	CHECK(c->type == NBD_REPLY_TYPE_BLOCK_STATUS_EXT, "chunk type %u", c->type);
	CHECK(proto_get_u32(c->body) == id, "context id %u, expected %u", proto_get_u32(c->body), id);
	n = proto_get_u32(c->body + 4);
	CHECK(c->len == 8 + 16ull * n && n > 0, "%u extents in %llu bytes", n,
	      (unsigned long long)c->len);
	for (i = 0; i < n; i++) {
		len[i] = proto_get_u64(c->body + 8 + 16 * i);
		flags[i] = proto_get_u64(c->body + 16 + 16 * i);
	}
	return n;
}

int main(void)
{
	static const char *const q[] = { "base:allocation", "qemu:dirty-bitmap:x" };
	uint8_t p[128], h[PROTO_OPTREPLY_HDR_LEN], info[64], *data = harness_alloc(8192);
	uint64_t len[64], flags[64], total;
	char arg[2200];
	struct daemon d;
	struct chunk c;
	uint32_t type, rlen, off, i;
	unsigned n;
	int fd;

	harness_init("bitmap_ext", 60);
	harness_image(&d, SIZE);
	snprintf(arg, sizeof(arg), "bm=%s,bitmap=x", d.img);
	harness_start(&d, "-t", "1", "-e", arg, NULL);

	fd = raw_hello(&d, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	raw_option(fd, NBD_IHAVEOPT, NBD_OPT_EXTENDED_HEADERS, NULL, 0);
	CHECK(raw_option_reply(fd, NBD_OPT_EXTENDED_HEADERS) == NBD_REP_ACK, "EXTENDED_HEADERS");
	proto_put_u32(p, 2);
	memcpy(p + 4, "bm", 2);
	proto_put_u32(p + 6, 2);
	off = 10;
	for (i = 0; i < 2; i++) {
		proto_put_u32(p + off, (uint32_t)strlen(q[i]));
		memcpy(p + off + 4, q[i], strlen(q[i]));
		off += 4 + (uint32_t)strlen(q[i]);
	}
	raw_option(fd, NBD_IHAVEOPT, NBD_OPT_SET_META_CONTEXT, p, off);
	for (i = 0; i < 2; i++) {
		raw_recv(fd, h, sizeof(h));
		CHECK(proto_get_u32(h + 12) == NBD_REP_META_CONTEXT, "context reply %u", i);
		rlen = proto_get_u32(h + 16);
		CHECK(rlen == 4 + strlen(q[i]), "context reply length");
		raw_recv(fd, info, rlen);
		CHECK(proto_get_u32(info) == PROTO_META_ID_BASE_ALLOCATION + i, "context id %u",
		      proto_get_u32(info));
		CHECK(memcmp(info + 4, q[i], strlen(q[i])) == 0, "context name");
	}
	CHECK(raw_option_reply(fd, NBD_OPT_SET_META_CONTEXT) == NBD_REP_ACK, "SET ack");
	proto_put_u32(p, 2);
	memcpy(p + 4, "bm", 2);
	proto_put_u16(p + 6, 0);
	raw_option(fd, NBD_IHAVEOPT, NBD_OPT_GO, p, 8);
	do {
		raw_recv(fd, h, sizeof(h));
		type = proto_get_u32(h + 12);
		rlen = proto_get_u32(h + 16);
		CHECK(rlen <= sizeof(info), "info length");
		raw_recv(fd, info, rlen);
	} while (type == NBD_REP_INFO);
	CHECK(type == NBD_REP_ACK, "GO bm");

	/* A write across granules 3 and 4 (unaligned): they become dirty. */
	memset(data, 0x5a, 8192);
	raw_request_ext(fd, 0, NBD_CMD_WRITE, 1, 4 * GRAN - 100, 200);
	raw_send(fd, data, 200);
	chunk(fd, 1, &c);
	CHECK(c.type == NBD_REPLY_TYPE_NONE && (c.flags & NBD_REPLY_FLAG_DONE), "write reply");

	/* Both contexts: base:allocation first, then the bitmap, DONE on it only. */
	raw_request_ext(fd, 0, NBD_CMD_BLOCK_STATUS, 2, 0, SIZE);
	chunk(fd, 2, &c);
	CHECK(!(c.flags & NBD_REPLY_FLAG_DONE), "first chunk marked DONE");
	extents(&c, PROTO_META_ID_BASE_ALLOCATION, len, flags);
	chunk(fd, 2, &c);
	CHECK(c.flags & NBD_REPLY_FLAG_DONE, "last chunk not DONE");
	n = extents(&c, PROTO_META_ID_EXTRA, len, flags);
	CHECK(n == 3, "%u bitmap extents, expected 3", n);
	CHECK(len[0] == 3 * GRAN && flags[0] == 0, "clean head %llu", (unsigned long long)len[0]);
	CHECK(len[1] == 2 * GRAN && flags[1] == NBD_STATE_DIRTY, "dirty %llu",
	      (unsigned long long)len[1]);
	for (i = 0, total = 0; i < n; i++)
		total += len[i];
	CHECK(total == SIZE && flags[2] == 0, "extents cover %llu", (unsigned long long)total);

	/* PAYLOAD_LEN naming the bitmap alone, from an unaligned offset, REQ_ONE. */
	proto_put_u64(p, 3 * GRAN);
	proto_put_u32(p + 8, PROTO_META_ID_EXTRA);
	raw_request_ext(fd, NBD_CMD_FLAG_PAYLOAD_LEN | NBD_CMD_FLAG_REQ_ONE, NBD_CMD_BLOCK_STATUS, 3,
			3 * GRAN + 5, 12);
	raw_send(fd, p, 12);
	chunk(fd, 3, &c);
	CHECK(c.flags & NBD_REPLY_FLAG_DONE, "single chunk not DONE");
	n = extents(&c, PROTO_META_ID_EXTRA, len, flags);
	CHECK(n == 1 && len[0] == 2 * GRAN - 5 && flags[0] == NBD_STATE_DIRTY, "REQ_ONE: %u, %llu", n,
	      (unsigned long long)len[0]);

	/* A context id never chosen: EINVAL. */
	proto_put_u32(p + 8, PROTO_META_ID_EXTRA + 1);
	raw_request_ext(fd, NBD_CMD_FLAG_PAYLOAD_LEN, NBD_CMD_BLOCK_STATUS, 4, 0, 12);
	raw_send(fd, p, 12);
	chunk(fd, 4, &c);
	CHECK(c.type == NBD_REPLY_TYPE_ERROR && proto_get_u32(c.body) == NBD_EINVAL,
	      "an unknown context id: type %u", c.type);

	raw_request_ext(fd, 0, NBD_CMD_DISC, 5, 0, 0);
	raw_expect_closed(fd, "after DISC");
	harness_stop(&d);
	return 0;
}
