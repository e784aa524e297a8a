// SPDX-License-Identifier: BSD-3-Clause
/*
 * libFuzzer target over proto/: the input is what a client sends. Client
 * flags, then options until an export is chosen, then requests: each is
 * decoded, validated and answered with the encoders, and the invariants a
 * server relies on are asserted (replies well formed, nothing validated
 * that reaches past the export, reply sizes as promised).
 */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../proto/proto.h"

static const char *const bitmaps[] = { "qemu:dirty-bitmap:a", "qemu:dirty-bitmap:nightly" };
static const struct proto_export exports[] = {
	{ .name = "", .description = "default", .size_bytes = 1 << 20,
	  .tflags = NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_DF |
		    NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO |
		    NBD_FLAG_SEND_CACHE | NBD_FLAG_CAN_MULTI_CONN,
	  .min_block = 1, .pref_block = 4096, .max_block = 1 << 25, .opaque = (void *)1 },
	{ .name = "ro", .description = "", .size_bytes = 12345,
	  .tflags = NBD_FLAG_READ_ONLY | NBD_FLAG_SEND_FLUSH, .min_block = 1,
	  .pref_block = 4096, .max_block = 1 << 25, .contexts = bitmaps, .ncontexts = 2,
	  .opaque = (void *)2 },
};

static int lookup(void *ctx, const char *name, size_t len, struct proto_export *out)
{
	size_t i;

	(void)ctx;
	for (i = 0; i < 2; i++)
		if (strlen(exports[i].name) == len && memcmp(exports[i].name, name, len) == 0) {
			*out = exports[i];
			return 0;
		}
	return -ENOENT;
}

static int nth(void *ctx, size_t i, struct proto_export *out)
{
	(void)ctx;
	if (i >= 2)
		return -ENOENT;
	*out = exports[i];
	return 0;
}

/* Every reply negotiation produced is a sequence of well-formed option replies. */
static void check_option_replies(const struct proto_buf *b, uint32_t option, bool phase_entered)
{
	size_t off = 0;

	if (phase_entered && option == NBD_OPT_EXPORT_NAME) {
		assert(b->len == 10 || b->len == 134);
		return;
	}
	while (off < b->len) {
		assert(b->len - off >= PROTO_OPTREPLY_HDR_LEN);
		assert(proto_get_u64(b->data + off) == NBD_REP_MAGIC);
		assert(proto_get_u32(b->data + off + 8) == option);
		off += PROTO_OPTREPLY_HDR_LEN + proto_get_u32(b->data + off + 16);
		assert(off <= b->len);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t outbuf[1 << 16];
	struct proto_exports ex = { .lookup = lookup, .nth = nth };
	struct proto_session s;
	struct proto_buf out = { .data = outbuf, .cap = sizeof(outbuf) };
	size_t pos = 0;

	if (size < 4 || proto_session_start(&s, data) < 0)
		return 0;
	pos = 4;
	ex.shutting_down = size & 1 && size % 7 == 0;
	while (s.phase == PROTO_PHASE_OPTIONS) {
		struct proto_option opt;
		const uint8_t *payload;
		int ret;

		if (size - pos < PROTO_OPTION_HDR_LEN || proto_decode_option(data + pos, &opt) < 0)
			return 0;
		pos += PROTO_OPTION_HDR_LEN;
		if (opt.len_bytes > PROTO_OPTION_DATA_MAX) {
			payload = NULL; /* skipped by the daemon */
		} else {
			if (size - pos < opt.len_bytes)
				return 0;
			payload = data + pos;
			pos += opt.len_bytes;
		}
		out.len = 0;
		ret = proto_negotiate(&s, &ex, &opt, payload, &out);
		assert(ret == 0);
		check_option_replies(&out, opt.option, s.phase == PROTO_PHASE_TRANSMISSION);
	}
	if (s.phase != PROTO_PHASE_TRANSMISSION)
		return 0;
	assert(s.meta_base_allocation ? s.structured : true);
	assert(s.meta_extra ? s.structured && s.meta_extra < 4 : true);

	while (size - pos >= proto_request_hdr_len(&s)) {
		struct proto_request r;
		uint8_t reply[PROTO_REPLY_MAX_LEN], bs[1024];
		struct proto_extent ext[3] = { { 1, 0 }, { 2, 3 }, { 3, 1 } };
		uint32_t err;
		size_t n;
		bool has_data;

		if (proto_decode_request(&s, data + pos, &r) < 0)
			return 0; /* the daemon disconnects */
		pos += proto_request_hdr_len(&s);
		/* A BLOCK_STATUS payload naming contexts, as the daemon reads it. */
		if (proto_block_status_payload(&s, &r)) {
			uint64_t effect = 0;

			if (size - pos < r.len_bytes)
				return 0;
			err = proto_decode_block_status_payload(&s, data + pos, r.len_bytes, &effect);
			assert(err == NBD_SUCCESS || err == NBD_EINVAL);
			if (err == NBD_SUCCESS) {
				uint32_t m = proto_block_status_contexts(&s, data + pos, r.len_bytes);

				assert(m && !(m & ~proto_block_status_contexts(&s, NULL, 0)));
			}
			pos += (size_t)r.len_bytes;
			r.flags &= (uint16_t)~NBD_CMD_FLAG_PAYLOAD_LEN;
			r.len_bytes = effect;
		}
		err = proto_validate_request(&s, &r, 1 << 25);
		if (err == NBD_SUCCESS && r.type != NBD_CMD_FLUSH) {
			/* Whatever is accepted stays inside the export. */
			assert(r.offset <= s.export.size_bytes);
			assert(r.len_bytes <= s.export.size_bytes - r.offset);
			if (r.type == NBD_CMD_WRITE || r.type == NBD_CMD_TRIM ||
			    r.type == NBD_CMD_WRITE_ZEROES)
				assert(!(s.tflags & NBD_FLAG_READ_ONLY));
			if (r.type == NBD_CMD_BLOCK_STATUS)
				assert((s.meta_base_allocation || s.meta_extra) && r.len_bytes > 0);
		}
		n = proto_encode_reply(&s, reply, &r, err, &has_data);
		assert(n <= sizeof(reply));
		assert(!has_data || (r.type == NBD_CMD_READ && err == NBD_SUCCESS));
		if (err == NBD_SUCCESS && r.type == NBD_CMD_BLOCK_STATUS) {
			int len = proto_encode_block_status(&s, bs, sizeof(bs), &r, ext, 3);

			assert(len > 0 && (size_t)len == proto_block_status_len(&s, 3));
		}
		/* Skip the payload, as the daemon would. */
		n = proto_request_payload_len(&s, &r) > size - pos ? size - pos
								   : proto_request_payload_len(&s, &r);
		pos += n;
	}
	return 0;
}
