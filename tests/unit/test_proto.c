// SPDX-License-Identifier: BSD-3-Clause
/*
 * Unit tests of proto/: every option and each error reply of negotiation,
 * request validation and the reply encoders, without sockets.
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../../proto/proto.h"

/* ---- fixtures: two exports, "" and "disk"; "bm", with two bitmaps, is not listed ---- */
static const char *const bm_contexts[] = { "qemu:dirty-bitmap:a", "qemu:dirty-bitmap:b" };
static const struct proto_export exports[] = {
	{ .name = "", .description = "", .size_bytes = 1 << 20, .tflags = NBD_FLAG_SEND_FLUSH |
	  NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_DF | NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES |
	  NBD_FLAG_SEND_FAST_ZERO | NBD_FLAG_SEND_CACHE, .min_block = 512, .pref_block = 4096,
	  .max_block = 1 << 25, .opaque = (void *)&exports[0] },
	{ .name = "disk", .description = "a disk", .size_bytes = 8192, .tflags =
	  NBD_FLAG_READ_ONLY | NBD_FLAG_SEND_FLUSH, .min_block = 1, .pref_block = 4096,
	  .max_block = 1 << 25, .opaque = (void *)&exports[1] },
	{ .name = "bm", .description = "", .size_bytes = 1 << 20, .tflags = NBD_FLAG_SEND_FLUSH,
	  .min_block = 1, .pref_block = 4096, .max_block = 1 << 25, .contexts = bm_contexts,
	  .ncontexts = 2, .opaque = (void *)&exports[2] },
};

/* "disk" may be made TLS-only, or refused to this client by access rules. */
static bool tls_only_disk, denied_disk;

static int lookup(void *ctx, const char *name, size_t len, struct proto_export *out)
{
	size_t i;

	(void)ctx;
	for (i = 0; i < 3; i++)
		if (strlen(exports[i].name) == len && !memcmp(exports[i].name, name, len)) {
			if (i == 1 && denied_disk)
				return -EACCES;
			*out = exports[i];
			out->tls_only = i == 1 && tls_only_disk;
			return 0;
		}
	return -ENOENT;
}

static int nth(void *ctx, size_t i, struct proto_export *out)
{
	(void)ctx;
	if (i >= (denied_disk ? 1u : 2u))
		return -ENOENT;
	*out = exports[i];
	out->tls_only = i == 1 && tls_only_disk;
	return 0;
}

static struct proto_exports ex = { .lookup = lookup, .nth = nth };
static struct proto_session sess;
static uint8_t outbuf[65536];
static struct proto_buf out;

static void setup(void)
{
	uint8_t flags[4];

	ex.shutting_down = false;
	ex.tls = PROTO_TLS_OFF;
	ex.list_refused = false;
	tls_only_disk = false;
	denied_disk = false;
	proto_put_u32(flags, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	ck_assert_int_eq(proto_session_start(&sess, flags), 0);
	out.data = outbuf;
	out.len = 0;
	out.cap = sizeof(outbuf);
}

/* One option reply parsed back from out. */
struct reply {
	uint32_t option, type, len;
	const uint8_t *data;
};

static size_t parse_replies(struct reply *r, size_t max)
{
	size_t off = 0, n = 0;

	while (off < out.len && n < max) {
		ck_assert_uint_ge(out.len - off, PROTO_OPTREPLY_HDR_LEN);
		ck_assert(proto_get_u64(out.data + off) == NBD_REP_MAGIC);
		r[n].option = proto_get_u32(out.data + off + 8);
		r[n].type = proto_get_u32(out.data + off + 12);
		r[n].len = proto_get_u32(out.data + off + 16);
		r[n].data = out.data + off + 20;
		off += 20 + r[n].len;
		n++;
	}
	ck_assert_uint_eq(off, out.len);
	return n;
}

static int negotiate(uint32_t option, const void *data, uint32_t len)
{
	struct proto_option opt = { .option = option, .len_bytes = len };

	out.len = 0;
	return proto_negotiate(&sess, &ex, &opt, data ? data : (const uint8_t *)"", &out);
}

/* GO/INFO payload: name, then the information requests. */
static uint32_t info_payload(uint8_t *p, const char *name, const uint16_t *reqs, uint16_t n)
{
	uint32_t len = (uint32_t)strlen(name), i;

	proto_put_u32(p, len);
	memcpy(p + 4, name, len);
	proto_put_u16(p + 4 + len, n);
	for (i = 0; i < n; i++)
		proto_put_u16(p + 6 + len + 2 * i, reqs[i]);
	return 6 + len + 2u * n;
}

/* Asserts a single error reply of the given type to option. */
static void assert_one_error(uint32_t option, uint32_t type)
{
	struct reply r[4];

	ck_assert_uint_eq(parse_replies(r, 4), 1);
	ck_assert_uint_eq(r[0].option, option);
	ck_assert_uint_eq(r[0].type, type);
	ck_assert_int_eq(sess.phase, PROTO_PHASE_OPTIONS);
}

/* ---- handshake ---- */

START_TEST(test_greeting)
{
	uint8_t g[PROTO_GREETING_LEN];

	proto_encode_greeting(g);
	ck_assert(memcmp(g, "NBDMAGICIHAVEOPT", 16) == 0);
	ck_assert_uint_eq(proto_get_u16(g + 16), NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
}
END_TEST

START_TEST(test_client_flags)
{
	uint8_t f[4];
	struct proto_session s;

	proto_put_u32(f, NBD_FLAG_C_FIXED_NEWSTYLE);
	ck_assert_int_eq(proto_session_start(&s, f), 0);
	ck_assert(!s.no_zeroes);
	proto_put_u32(f, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	ck_assert_int_eq(proto_session_start(&s, f), 0);
	ck_assert(s.no_zeroes);
	/* Unknown flags: the server must drop the connection. */
	proto_put_u32(f, NBD_FLAG_C_FIXED_NEWSTYLE | (1u << 2));
	ck_assert_int_eq(proto_session_start(&s, f), -EPROTO);
	proto_put_u32(f, 1u << 31);
	ck_assert_int_eq(proto_session_start(&s, f), -EPROTO);
}
END_TEST

START_TEST(test_option_magic)
{
	uint8_t h[PROTO_OPTION_HDR_LEN];
	struct proto_option o;

	proto_put_u64(h, NBD_IHAVEOPT);
	proto_put_u32(h + 8, NBD_OPT_GO);
	proto_put_u32(h + 12, 77);
	ck_assert_int_eq(proto_decode_option(h, &o), 0);
	ck_assert_uint_eq(o.option, NBD_OPT_GO);
	ck_assert_uint_eq(o.len_bytes, 77);
	h[0] ^= 1;
	ck_assert_int_eq(proto_decode_option(h, &o), -EPROTO);
}
END_TEST

START_TEST(test_export_name_no_zeroes)
{
	ck_assert_int_eq(negotiate(NBD_OPT_EXPORT_NAME, "", 0), 0);
	ck_assert_int_eq(sess.phase, PROTO_PHASE_TRANSMISSION);
	ck_assert_uint_eq(out.len, 10);
	ck_assert(proto_get_u64(out.data) == (1 << 20));
	ck_assert_uint_eq(proto_get_u16(out.data + 8) & NBD_FLAG_HAS_FLAGS, NBD_FLAG_HAS_FLAGS);
	/* DF is only advertised with structured replies. */
	ck_assert_uint_eq(proto_get_u16(out.data + 8) & NBD_FLAG_SEND_DF, 0);
}
END_TEST

START_TEST(test_export_name_zeroes)
{
	uint8_t f[4];
	size_t i;

	proto_put_u32(f, NBD_FLAG_C_FIXED_NEWSTYLE);
	ck_assert_int_eq(proto_session_start(&sess, f), 0);
	ck_assert_int_eq(negotiate(NBD_OPT_EXPORT_NAME, "disk", 4), 0);
	ck_assert_uint_eq(out.len, 134);
	ck_assert(proto_get_u64(out.data) == 8192);
	ck_assert_uint_eq(proto_get_u16(out.data + 8), NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY |
						  NBD_FLAG_SEND_FLUSH);
	for (i = 10; i < 134; i++)
		ck_assert_uint_eq(out.data[i], 0);
	ck_assert(sess.export.size_bytes == 8192);
}
END_TEST

START_TEST(test_export_name_unknown_closes)
{
	ck_assert_int_eq(negotiate(NBD_OPT_EXPORT_NAME, "nope", 4), 0);
	ck_assert_int_eq(sess.phase, PROTO_PHASE_CLOSE);
	ck_assert_uint_eq(out.len, 0);
}
END_TEST

START_TEST(test_export_name_prefix_is_not_a_match)
{
	/* "dis" must not find "disk", nor "disk\0x" find "disk". */
	ck_assert_int_eq(negotiate(NBD_OPT_EXPORT_NAME, "dis", 3), 0);
	ck_assert_int_eq(sess.phase, PROTO_PHASE_CLOSE);
	setup();
	ck_assert_int_eq(negotiate(NBD_OPT_EXPORT_NAME, "disk\0x", 6), 0);
	ck_assert_int_eq(sess.phase, PROTO_PHASE_CLOSE);
}
END_TEST

START_TEST(test_export_name_shutting_down_closes)
{
	ex.shutting_down = true;
	ck_assert_int_eq(negotiate(NBD_OPT_EXPORT_NAME, "", 0), 0);
	ck_assert_int_eq(sess.phase, PROTO_PHASE_CLOSE);
	ck_assert_uint_eq(out.len, 0);
}
END_TEST

START_TEST(test_abort)
{
	struct reply r[2];

	ck_assert_int_eq(negotiate(NBD_OPT_ABORT, NULL, 0), 0);
	ck_assert_uint_eq(parse_replies(r, 2), 1);
	ck_assert_uint_eq(r[0].type, NBD_REP_ACK);
	ck_assert_uint_eq(r[0].option, NBD_OPT_ABORT);
	ck_assert_int_eq(sess.phase, PROTO_PHASE_CLOSE);
}
END_TEST

START_TEST(test_list)
{
	struct reply r[4];

	ck_assert_int_eq(negotiate(NBD_OPT_LIST, NULL, 0), 0);
	ck_assert_uint_eq(parse_replies(r, 4), 3);
	ck_assert_uint_eq(r[0].type, NBD_REP_SERVER);
	ck_assert_uint_eq(r[0].len, 4);
	ck_assert_uint_eq(proto_get_u32(r[0].data), 0);
	ck_assert_uint_eq(r[1].type, NBD_REP_SERVER);
	ck_assert_uint_eq(proto_get_u32(r[1].data), 4);
	ck_assert(memcmp(r[1].data + 4, "diska disk", 10) == 0);
	ck_assert_uint_eq(r[1].len, 14);
	ck_assert_uint_eq(r[2].type, NBD_REP_ACK);
	ck_assert_int_eq(sess.phase, PROTO_PHASE_OPTIONS);
}
END_TEST

START_TEST(test_list_with_data_is_invalid)
{
	ck_assert_int_eq(negotiate(NBD_OPT_LIST, "x", 1), 0);
	assert_one_error(NBD_OPT_LIST, NBD_REP_ERR_INVALID);
}
END_TEST

START_TEST(test_list_shutting_down)
{
	ex.shutting_down = true;
	ck_assert_int_eq(negotiate(NBD_OPT_LIST, NULL, 0), 0);
	assert_one_error(NBD_OPT_LIST, NBD_REP_ERR_SHUTDOWN);
}
END_TEST

START_TEST(test_info_all_items)
{
	uint8_t p[64];
	uint16_t reqs[] = { NBD_INFO_NAME, NBD_INFO_DESCRIPTION, NBD_INFO_BLOCK_SIZE, 999,
			    NBD_INFO_NAME };
	uint32_t len = info_payload(p, "disk", reqs, 5);
	struct reply r[8];
	size_t n;

	ck_assert_int_eq(negotiate(NBD_OPT_INFO, p, len), 0);
	n = parse_replies(r, 8);
	ck_assert_uint_eq(n, 5);
	ck_assert_uint_eq(r[0].type, NBD_REP_INFO);
	ck_assert_uint_eq(proto_get_u16(r[0].data), NBD_INFO_EXPORT);
	ck_assert_uint_eq(r[0].len, 12);
	ck_assert(proto_get_u64(r[0].data + 2) == 8192);
	ck_assert_uint_eq(proto_get_u16(r[1].data), NBD_INFO_NAME);
	ck_assert(r[1].len == 6 && memcmp(r[1].data + 2, "disk", 4) == 0);
	ck_assert_uint_eq(proto_get_u16(r[2].data), NBD_INFO_DESCRIPTION);
	ck_assert(r[2].len == 8 && memcmp(r[2].data + 2, "a disk", 6) == 0);
	ck_assert_uint_eq(proto_get_u16(r[3].data), NBD_INFO_BLOCK_SIZE);
	ck_assert_uint_eq(r[3].len, 14);
	ck_assert_uint_eq(proto_get_u32(r[3].data + 2), 1);
	ck_assert_uint_eq(proto_get_u32(r[3].data + 6), 4096);
	ck_assert_uint_eq(proto_get_u32(r[3].data + 10), 1 << 25);
	ck_assert_uint_eq(r[4].type, NBD_REP_ACK);
	/* INFO does not leave option haggling. */
	ck_assert_int_eq(sess.phase, PROTO_PHASE_OPTIONS);
}
END_TEST

START_TEST(test_go_enters_transmission)
{
	uint8_t p[16];
	uint32_t len = info_payload(p, "", NULL, 0);
	struct reply r[4];

	ck_assert_int_eq(negotiate(NBD_OPT_STRUCTURED_REPLY, NULL, 0), 0);
	ck_assert_int_eq(negotiate(NBD_OPT_GO, p, len), 0);
	/* INFO_EXPORT, INFO_BLOCK_SIZE (always sent), ACK. */
	ck_assert_uint_eq(parse_replies(r, 4), 3);
	ck_assert_uint_eq(proto_get_u16(r[1].data), NBD_INFO_BLOCK_SIZE);
	ck_assert_uint_eq(proto_get_u32(r[1].data + 2), 512);
	ck_assert_uint_eq(r[2].type, NBD_REP_ACK);
	ck_assert_int_eq(sess.phase, PROTO_PHASE_TRANSMISSION);
	ck_assert(sess.structured);
	ck_assert_uint_eq(sess.tflags & NBD_FLAG_SEND_DF, NBD_FLAG_SEND_DF);
	ck_assert_uint_eq(proto_get_u16(r[0].data + 10), sess.tflags);
}
END_TEST

START_TEST(test_go_no_description_when_empty)
{
	uint8_t p[16];
	uint16_t reqs[] = { NBD_INFO_DESCRIPTION };
	uint32_t len = info_payload(p, "", reqs, 1);
	struct reply r[4];

	ck_assert_int_eq(negotiate(NBD_OPT_GO, p, len), 0);
	ck_assert_uint_eq(parse_replies(r, 4), 3);
}
END_TEST

START_TEST(test_go_unknown_export)
{
	uint8_t p[16];
	uint32_t len = info_payload(p, "nope", NULL, 0);

	ck_assert_int_eq(negotiate(NBD_OPT_GO, p, len), 0);
	assert_one_error(NBD_OPT_GO, NBD_REP_ERR_UNKNOWN);
}
END_TEST

START_TEST(test_go_short_payload)
{
	ck_assert_int_eq(negotiate(NBD_OPT_GO, "\0\0\0\0\0", 5), 0);
	assert_one_error(NBD_OPT_GO, NBD_REP_ERR_INVALID);
}
END_TEST

START_TEST(test_go_name_past_option)
{
	uint8_t p[16];
	uint32_t len = info_payload(p, "disk", NULL, 0);

	proto_put_u32(p, 100);
	ck_assert_int_eq(negotiate(NBD_OPT_GO, p, len), 0);
	assert_one_error(NBD_OPT_GO, NBD_REP_ERR_INVALID);
	/* A huge name length must not wrap around. */
	proto_put_u32(p, 0xffffffffu);
	ck_assert_int_eq(negotiate(NBD_OPT_INFO, p, len), 0);
	assert_one_error(NBD_OPT_INFO, NBD_REP_ERR_INVALID);
}
END_TEST

START_TEST(test_go_request_count_mismatch)
{
	uint8_t p[32];
	uint16_t reqs[] = { NBD_INFO_NAME, NBD_INFO_NAME };
	uint32_t len = info_payload(p, "disk", reqs, 2);

	ck_assert_int_eq(negotiate(NBD_OPT_GO, p, len - 1), 0);
	assert_one_error(NBD_OPT_GO, NBD_REP_ERR_INVALID);
	ck_assert_int_eq(negotiate(NBD_OPT_GO, p, len + 2), 0);
	assert_one_error(NBD_OPT_GO, NBD_REP_ERR_INVALID);
}
END_TEST

START_TEST(test_go_shutting_down)
{
	uint8_t p[16];
	uint32_t len = info_payload(p, "", NULL, 0);

	ex.shutting_down = true;
	ck_assert_int_eq(negotiate(NBD_OPT_GO, p, len), 0);
	assert_one_error(NBD_OPT_GO, NBD_REP_ERR_SHUTDOWN);
}
END_TEST

START_TEST(test_structured_reply)
{
	struct reply r[2];

	ck_assert_int_eq(negotiate(NBD_OPT_STRUCTURED_REPLY, "x", 1), 0);
	assert_one_error(NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_INVALID);
	ck_assert(!sess.structured);
	ck_assert_int_eq(negotiate(NBD_OPT_STRUCTURED_REPLY, NULL, 0), 0);
	ck_assert_uint_eq(parse_replies(r, 2), 1);
	ck_assert_uint_eq(r[0].type, NBD_REP_ACK);
	ck_assert(sess.structured);
}
END_TEST

START_TEST(test_starttls_policy)
{
	ck_assert_int_eq(negotiate(NBD_OPT_STARTTLS, NULL, 0), 0);
	assert_one_error(NBD_OPT_STARTTLS, NBD_REP_ERR_POLICY);
	ck_assert_int_eq(negotiate(NBD_OPT_STARTTLS, "x", 1), 0);
	assert_one_error(NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID);
}
END_TEST

/* FORCEDTLS: everything but STARTTLS and ABORT is TLS_REQD; EXPORT_NAME closes. */
START_TEST(test_tls_forced)
{
	static const uint32_t opts[] = { NBD_OPT_LIST, NBD_OPT_STRUCTURED_REPLY,
					 NBD_OPT_EXTENDED_HEADERS, 99 };
	uint8_t p[64];
	uint32_t len = info_payload(p, "", NULL, 0);
	struct reply r[4];
	size_t i;

	ex.tls = PROTO_TLS_REQUIRE;
	for (i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
		ck_assert_int_eq(negotiate(opts[i], NULL, 0), 0);
		assert_one_error(opts[i], NBD_REP_ERR_TLS_REQD);
	}
	ck_assert_int_eq(negotiate(NBD_OPT_GO, p, len), 0);
	assert_one_error(NBD_OPT_GO, NBD_REP_ERR_TLS_REQD);
	ck_assert_int_eq(negotiate(NBD_OPT_INFO, p, len), 0);
	assert_one_error(NBD_OPT_INFO, NBD_REP_ERR_TLS_REQD);
	ck_assert(!sess.structured);
	ck_assert_int_eq(negotiate(NBD_OPT_STARTTLS, NULL, 0), 0);
	ck_assert_uint_eq(parse_replies(r, 4), 1);
	ck_assert_uint_eq(r[0].type, NBD_REP_ACK);
	ck_assert(sess.starttls);
	proto_session_tls_started(&sess);
	ck_assert(sess.tls && !sess.starttls);
	/* Inside TLS: served, and no TLS_REQD ever. */
	ck_assert_int_eq(negotiate(NBD_OPT_STARTTLS, NULL, 0), 0);
	assert_one_error(NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID);
	ck_assert_int_eq(negotiate(NBD_OPT_GO, p, len), 0);
	ck_assert_int_eq(sess.phase, PROTO_PHASE_TRANSMISSION);
}
END_TEST

START_TEST(test_tls_forced_export_name_closes)
{
	ex.tls = PROTO_TLS_REQUIRE;
	ck_assert_int_eq(negotiate(NBD_OPT_EXPORT_NAME, "", 0), 0);
	ck_assert_uint_eq(out.len, 0);
	ck_assert_int_eq(sess.phase, PROTO_PHASE_CLOSE);
}
END_TEST

/* What was negotiated before STARTTLS is forgotten after it. */
START_TEST(test_tls_forgets_options)
{
	ex.tls = PROTO_TLS_ON;
	ck_assert_int_eq(negotiate(NBD_OPT_EXTENDED_HEADERS, NULL, 0), 0);
	ck_assert(sess.extended && sess.structured);
	ck_assert_int_eq(negotiate(NBD_OPT_STARTTLS, NULL, 0), 0);
	proto_session_tls_started(&sess);
	ck_assert(!sess.extended && !sess.structured && !sess.meta_base_allocation);
	ck_assert(sess.no_zeroes); /* client flags stay: they came before options */
}
END_TEST

/* SELECTIVETLS: a TLS-only export is hidden, TLS_REQD for INFO/GO, POLICY otherwise. */
START_TEST(test_tls_selective)
{
	uint8_t p[64], m[64];
	uint32_t len = info_payload(p, "disk", NULL, 0);
	struct reply r[8];

	ex.tls = PROTO_TLS_ON;
	tls_only_disk = true;
	ck_assert_int_eq(negotiate(NBD_OPT_LIST, NULL, 0), 0);
	ck_assert_uint_eq(parse_replies(r, 8), 2); /* "" and ACK */
	ck_assert_uint_eq(r[0].type, NBD_REP_SERVER);
	ck_assert_uint_eq(proto_get_u32(r[0].data), 0);
	ck_assert_int_eq(negotiate(NBD_OPT_INFO, p, len), 0);
	assert_one_error(NBD_OPT_INFO, NBD_REP_ERR_TLS_REQD);
	ck_assert_int_eq(negotiate(NBD_OPT_GO, p, len), 0);
	assert_one_error(NBD_OPT_GO, NBD_REP_ERR_TLS_REQD);
	ck_assert_int_eq(negotiate(NBD_OPT_STRUCTURED_REPLY, NULL, 0), 0);
	proto_put_u32(m, 4);
	memcpy(m + 4, "disk", 4);
	proto_put_u32(m + 8, 0);
	ck_assert_int_eq(negotiate(NBD_OPT_LIST_META_CONTEXT, m, 12), 0);
	assert_one_error(NBD_OPT_LIST_META_CONTEXT, NBD_REP_ERR_POLICY);
	/* The other export is served without TLS. */
	len = info_payload(p, "", NULL, 0);
	ck_assert_int_eq(negotiate(NBD_OPT_INFO, p, len), 0);
	ck_assert_uint_eq(parse_replies(r, 8), 3);
	ck_assert_uint_eq(r[2].type, NBD_REP_ACK);
	ck_assert_int_eq(negotiate(NBD_OPT_EXPORT_NAME, "disk", 4), 0);
	ck_assert_int_eq(sess.phase, PROTO_PHASE_CLOSE);
}
END_TEST

START_TEST(test_tls_selective_after_starttls)
{
	uint8_t p[64];
	uint32_t len = info_payload(p, "disk", NULL, 0);
	struct reply r[8];

	ex.tls = PROTO_TLS_ON;
	tls_only_disk = true;
	ck_assert_int_eq(negotiate(NBD_OPT_STARTTLS, NULL, 0), 0);
	proto_session_tls_started(&sess);
	ck_assert_int_eq(negotiate(NBD_OPT_LIST, NULL, 0), 0);
	ck_assert_uint_eq(parse_replies(r, 8), 3);
	ck_assert_int_eq(negotiate(NBD_OPT_GO, p, len), 0);
	ck_assert_int_eq(sess.phase, PROTO_PHASE_TRANSMISSION);
}
END_TEST

/* Access refused: ERR_POLICY, and (nth skips it) absent from LIST; EXPORT_NAME closes. */
START_TEST(test_access_refused)
{
	uint8_t p[64];
	uint32_t len = info_payload(p, "disk", NULL, 0);
	struct reply r[8];

	denied_disk = true;
	ck_assert_int_eq(negotiate(NBD_OPT_GO, p, len), 0);
	assert_one_error(NBD_OPT_GO, NBD_REP_ERR_POLICY);
	ck_assert_int_eq(negotiate(NBD_OPT_LIST, NULL, 0), 0);
	ck_assert_uint_eq(parse_replies(r, 8), 2);
	ck_assert_int_eq(negotiate(NBD_OPT_EXPORT_NAME, "disk", 4), 0);
	ck_assert_int_eq(sess.phase, PROTO_PHASE_CLOSE);
}
END_TEST

START_TEST(test_list_refused)
{
	ex.list_refused = true;
	ck_assert_int_eq(negotiate(NBD_OPT_LIST, NULL, 0), 0);
	assert_one_error(NBD_OPT_LIST, NBD_REP_ERR_POLICY);
}
END_TEST

START_TEST(test_unknown_option_unsup)
{
	ck_assert_int_eq(negotiate(12345, "abc", 3), 0);
	assert_one_error(12345, NBD_REP_ERR_UNSUP);
	ck_assert_int_eq(negotiate(NBD_OPT_PEEK_EXPORT, NULL, 0), 0);
	assert_one_error(NBD_OPT_PEEK_EXPORT, NBD_REP_ERR_UNSUP);
}
END_TEST

START_TEST(test_oversized_option_too_big)
{
	struct proto_option opt = { .option = NBD_OPT_GO, .len_bytes = 1u << 20 };

	out.len = 0;
	ck_assert_int_eq(proto_negotiate(&sess, &ex, &opt, NULL, &out), 0);
	assert_one_error(NBD_OPT_GO, NBD_REP_ERR_TOO_BIG);
	opt.option = NBD_OPT_EXPORT_NAME;
	out.len = 0;
	ck_assert_int_eq(proto_negotiate(&sess, &ex, &opt, NULL, &out), 0);
	ck_assert_int_eq(sess.phase, PROTO_PHASE_CLOSE);
	ck_assert_uint_eq(out.len, 0);
}
END_TEST

START_TEST(test_enobufs_changes_nothing)
{
	uint8_t p[16];
	uint32_t len = info_payload(p, "", NULL, 0);
	struct proto_option opt = { .option = NBD_OPT_GO, .len_bytes = len };
	struct proto_session before = sess;
	size_t cap;

	/* Every buffer size short of the full reply fails cleanly. */
	for (cap = 0; cap < 3 * 20 + 12 + 14; cap++) {
		out.len = 0;
		out.cap = cap;
		ck_assert_int_eq(proto_negotiate(&sess, &ex, &opt, p, &out), -ENOBUFS);
		ck_assert_uint_eq(out.len, 0);
		ck_assert(memcmp(&sess, &before, sizeof(sess)) == 0);
	}
	out.len = 0;
	out.cap = cap;
	ck_assert_int_eq(proto_negotiate(&sess, &ex, &opt, p, &out), 0);
	ck_assert_int_eq(sess.phase, PROTO_PHASE_TRANSMISSION);
}
END_TEST

START_TEST(test_negotiate_after_transmission)
{
	ck_assert_int_eq(negotiate(NBD_OPT_EXPORT_NAME, "", 0), 0);
	ck_assert_int_eq(negotiate(NBD_OPT_LIST, NULL, 0), -EINVAL);
}
END_TEST

/* ---- transmission ---- */

static void enter(const char *name, bool structured)
{
	if (structured)
		ck_assert_int_eq(negotiate(NBD_OPT_STRUCTURED_REPLY, NULL, 0), 0);
	ck_assert_int_eq(negotiate(NBD_OPT_EXPORT_NAME, name, (uint32_t)strlen(name)), 0);
	ck_assert_int_eq(sess.phase, PROTO_PHASE_TRANSMISSION);
}

static uint32_t check(uint16_t type, uint16_t flags, uint64_t off, uint64_t len)
{
	struct proto_request r = { .type = type, .flags = flags, .offset = off, .len_bytes = len };

	return proto_validate_request(&sess, &r, 1 << 25);
}

START_TEST(test_request_decode)
{
	uint8_t h[PROTO_REQUEST_LEN];
	struct proto_request r;

	proto_put_u32(h, NBD_REQUEST_MAGIC);
	proto_put_u16(h + 4, NBD_CMD_FLAG_FUA);
	proto_put_u16(h + 6, NBD_CMD_WRITE);
	proto_put_u64(h + 8, UINT64_C(0x1122334455667788));
	proto_put_u64(h + 16, UINT64_C(1) << 40);
	proto_put_u32(h + 24, 4096);
	ck_assert_int_eq(proto_decode_request(&sess, h, &r), 0);
	ck_assert_uint_eq(r.flags, NBD_CMD_FLAG_FUA);
	ck_assert_uint_eq(r.type, NBD_CMD_WRITE);
	ck_assert(r.cookie == UINT64_C(0x1122334455667788));
	ck_assert(r.offset == UINT64_C(1) << 40);
	ck_assert(r.len_bytes == 4096);
	ck_assert(proto_request_payload_len(&sess, &r) == 4096);
	r.type = NBD_CMD_READ;
	ck_assert(proto_request_payload_len(&sess, &r) == 0);
	proto_put_u32(h, NBD_SIMPLE_REPLY_MAGIC);
	ck_assert_int_eq(proto_decode_request(&sess, h, &r), -EPROTO);
}
END_TEST

START_TEST(test_validate_ranges)
{
	enter("", false);
	ck_assert_uint_eq(check(NBD_CMD_READ, 0, 0, 4096), NBD_SUCCESS);
	ck_assert_uint_eq(check(NBD_CMD_READ, 0, (1 << 20) - 512, 512), NBD_SUCCESS);
	ck_assert_uint_eq(check(NBD_CMD_READ, 0, (1 << 20) - 512, 1024), NBD_EINVAL);
	ck_assert_uint_eq(check(NBD_CMD_WRITE, 0, (1 << 20) - 512, 1024), NBD_ENOSPC);
	ck_assert_uint_eq(check(NBD_CMD_WRITE, 0, 1 << 20, 0), NBD_SUCCESS);
	ck_assert_uint_eq(check(NBD_CMD_READ, 0, (1 << 20) + 512, 0), NBD_EINVAL);
	/* offset + length wrapping past 2^64 is out of range, not small. */
	ck_assert_uint_eq(check(NBD_CMD_READ, 0, UINT64_MAX - 511, 1024), NBD_EINVAL);
	ck_assert_uint_eq(check(NBD_CMD_WRITE, 0, UINT64_MAX - 511, 1024), NBD_ENOSPC);
	/* Any offset and length is valid. */
	ck_assert_uint_eq(check(NBD_CMD_READ, 0, 1, 511), NBD_SUCCESS);
	ck_assert_uint_eq(check(NBD_CMD_WRITE, 0, 7, 100), NBD_SUCCESS);
	/* Larger than the maximum. */
	ck_assert_uint_eq(check(NBD_CMD_READ, 0, 0, (1 << 25) + 512), NBD_EINVAL);
}
END_TEST

START_TEST(test_validate_flags)
{
	enter("", false);
	/* FUA is valid on every command once advertised. */
	ck_assert_uint_eq(check(NBD_CMD_READ, NBD_CMD_FLAG_FUA, 0, 512), NBD_SUCCESS);
	ck_assert_uint_eq(check(NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, 0, 512), NBD_SUCCESS);
	ck_assert_uint_eq(check(NBD_CMD_FLUSH, NBD_CMD_FLAG_FUA, 0, 0), NBD_SUCCESS);
	/* DF needs structured replies. */
	ck_assert_uint_eq(check(NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 512), NBD_EINVAL);
	ck_assert_uint_eq(check(NBD_CMD_READ, 1u << 15, 0, 512), NBD_EINVAL);
	ck_assert_uint_eq(check(NBD_CMD_WRITE, NBD_CMD_FLAG_NO_HOLE, 0, 512), NBD_EINVAL);
	ck_assert_uint_eq(check(99, 0, 0, 512), NBD_EINVAL);
	/* Flags valid only on other commands. */
	ck_assert_uint_eq(check(NBD_CMD_TRIM, NBD_CMD_FLAG_NO_HOLE, 0, 512), NBD_EINVAL);
	ck_assert_uint_eq(check(NBD_CMD_READ, NBD_CMD_FLAG_REQ_ONE, 0, 512), NBD_EINVAL);
	/* PAYLOAD_LEN exists only with extended headers. */
	ck_assert_uint_eq(check(NBD_CMD_WRITE, NBD_CMD_FLAG_PAYLOAD_LEN, 0, 512), NBD_EINVAL);
}
END_TEST

START_TEST(test_validate_df_structured)
{
	enter("", true);
	ck_assert_uint_eq(check(NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 512), NBD_SUCCESS);
	ck_assert_uint_eq(check(NBD_CMD_WRITE, NBD_CMD_FLAG_DF, 0, 512), NBD_EINVAL);
}
END_TEST

START_TEST(test_validate_readonly)
{
	enter("disk", false);
	ck_assert_uint_eq(check(NBD_CMD_WRITE, 0, 0, 512), NBD_EPERM);
	ck_assert_uint_eq(check(NBD_CMD_READ, 0, 0, 512), NBD_SUCCESS);
	/* No FUA advertised on this export. */
	ck_assert_uint_eq(check(NBD_CMD_READ, NBD_CMD_FLAG_FUA, 0, 512), NBD_EINVAL);
	ck_assert_uint_eq(check(NBD_CMD_FLUSH, 0, 0, 0), NBD_SUCCESS);
}
END_TEST

START_TEST(test_reply_encoders)
{
	uint8_t b[64];

	proto_encode_simple_reply(b, NBD_EINVAL, 42);
	ck_assert_uint_eq(proto_get_u32(b), NBD_SIMPLE_REPLY_MAGIC);
	ck_assert_uint_eq(proto_get_u32(b + 4), NBD_EINVAL);
	ck_assert(proto_get_u64(b + 8) == 42);

	proto_encode_chunk_hdr(b, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, 7, 8 + 512);
	ck_assert_uint_eq(proto_get_u32(b), NBD_STRUCTURED_REPLY_MAGIC);
	ck_assert_uint_eq(proto_get_u16(b + 4), NBD_REPLY_FLAG_DONE);
	ck_assert_uint_eq(proto_get_u16(b + 6), NBD_REPLY_TYPE_OFFSET_DATA);
	ck_assert(proto_get_u64(b + 8) == 7);
	ck_assert_uint_eq(proto_get_u32(b + 16), 8 + 512);
}
END_TEST

START_TEST(test_errno_map)
{
	ck_assert_uint_eq(proto_errno_to_nbd(0), NBD_SUCCESS);
	ck_assert_uint_eq(proto_errno_to_nbd(EROFS), NBD_EPERM);
	ck_assert_uint_eq(proto_errno_to_nbd(EIO), NBD_EIO);
	ck_assert_uint_eq(proto_errno_to_nbd(ENOSPC), NBD_ENOSPC);
	ck_assert_uint_eq(proto_errno_to_nbd(EDQUOT), NBD_ENOSPC);
	ck_assert_uint_eq(proto_errno_to_nbd(EOPNOTSUPP), NBD_ENOTSUP);
	ck_assert_uint_eq(proto_errno_to_nbd(ESHUTDOWN), NBD_ESHUTDOWN);
	ck_assert_uint_eq(proto_errno_to_nbd(EBADF), NBD_EIO);
	ck_assert_uint_eq(proto_errno_to_nbd(ENOMEM), NBD_ENOMEM);
	ck_assert_uint_eq(proto_errno_to_nbd(EOVERFLOW), NBD_EOVERFLOW);
}
END_TEST


/* ---- meta contexts, extended headers, new commands ---- */

/* META_CONTEXT payload: export name, then the queries. */
static uint32_t meta_payload(uint8_t *p, const char *name, const char *const *q, uint32_t nq)
{
	uint32_t len = (uint32_t)strlen(name), off, i;

	proto_put_u32(p, len);
	memcpy(p + 4, name, len);
	proto_put_u32(p + 4 + len, nq);
	off = 8 + len;
	for (i = 0; i < nq; i++) {
		uint32_t ql = (uint32_t)strlen(q[i]);

		proto_put_u32(p + off, ql);
		memcpy(p + off + 4, q[i], ql);
		off += 4 + ql;
	}
	return off;
}

static void assert_contexts(uint32_t option, size_t n_expected, uint32_t id)
{
	struct reply r[4];
	size_t n = parse_replies(r, 4), i;

	ck_assert_uint_eq(n, n_expected + 1);
	for (i = 0; i < n_expected; i++) {
		ck_assert_uint_eq(r[i].option, option);
		ck_assert_uint_eq(r[i].type, NBD_REP_META_CONTEXT);
		ck_assert_uint_eq(proto_get_u32(r[i].data), id);
		ck_assert(r[i].len == 4 + 15 && memcmp(r[i].data + 4, "base:allocation", 15) == 0);
	}
	ck_assert_uint_eq(r[n_expected].type, NBD_REP_ACK);
}

START_TEST(test_meta_needs_structured)
{
	uint8_t p[64];
	uint32_t len = meta_payload(p, "", NULL, 0);

	ck_assert_int_eq(negotiate(NBD_OPT_LIST_META_CONTEXT, p, len), 0);
	assert_one_error(NBD_OPT_LIST_META_CONTEXT, NBD_REP_ERR_INVALID);
}
END_TEST

START_TEST(test_meta_list)
{
	static const char *const base[] = { "base:" }, *const exact[] = { "base:allocation" },
				 *const other[] = { "x-foo:bar", "qemu:dirty-bitmap:a" };
	uint8_t p[128];
	uint32_t len;

	ck_assert_int_eq(negotiate(NBD_OPT_STRUCTURED_REPLY, NULL, 0), 0);
	len = meta_payload(p, "", NULL, 0);
	ck_assert_int_eq(negotiate(NBD_OPT_LIST_META_CONTEXT, p, len), 0);
	assert_contexts(NBD_OPT_LIST_META_CONTEXT, 1, 0);
	len = meta_payload(p, "", base, 1);
	ck_assert_int_eq(negotiate(NBD_OPT_LIST_META_CONTEXT, p, len), 0);
	assert_contexts(NBD_OPT_LIST_META_CONTEXT, 1, 0);
	len = meta_payload(p, "disk", exact, 1);
	ck_assert_int_eq(negotiate(NBD_OPT_LIST_META_CONTEXT, p, len), 0);
	assert_contexts(NBD_OPT_LIST_META_CONTEXT, 1, 0);
	len = meta_payload(p, "", other, 2);
	ck_assert_int_eq(negotiate(NBD_OPT_LIST_META_CONTEXT, p, len), 0);
	assert_contexts(NBD_OPT_LIST_META_CONTEXT, 0, 0);
	len = meta_payload(p, "nope", NULL, 0);
	ck_assert_int_eq(negotiate(NBD_OPT_LIST_META_CONTEXT, p, len), 0);
	assert_one_error(NBD_OPT_LIST_META_CONTEXT, NBD_REP_ERR_UNKNOWN);
	ck_assert(!sess.meta_base_allocation);
}
END_TEST

START_TEST(test_meta_set_and_go)
{
	static const char *const base[] = { "base:" }, *const exact[] = { "base:allocation" };
	uint8_t p[128], g[16];
	uint32_t len, glen = info_payload(g, "", NULL, 0);

	ck_assert_int_eq(negotiate(NBD_OPT_STRUCTURED_REPLY, NULL, 0), 0);
	/* "base:" is not a context name for SET: nothing selected. */
	len = meta_payload(p, "", base, 1);
	ck_assert_int_eq(negotiate(NBD_OPT_SET_META_CONTEXT, p, len), 0);
	assert_contexts(NBD_OPT_SET_META_CONTEXT, 0, 0);
	ck_assert(!sess.meta_base_allocation);
	len = meta_payload(p, "", exact, 1);
	ck_assert_int_eq(negotiate(NBD_OPT_SET_META_CONTEXT, p, len), 0);
	assert_contexts(NBD_OPT_SET_META_CONTEXT, 1, PROTO_META_ID_BASE_ALLOCATION);
	ck_assert(sess.meta_base_allocation);
	ck_assert_int_eq(negotiate(NBD_OPT_GO, g, glen), 0);
	ck_assert(sess.meta_base_allocation);
}
END_TEST

START_TEST(test_meta_set_other_export_lapses)
{
	static const char *const exact[] = { "base:allocation" };
	uint8_t p[128], g[16];
	uint32_t len, glen = info_payload(g, "", NULL, 0);

	ck_assert_int_eq(negotiate(NBD_OPT_STRUCTURED_REPLY, NULL, 0), 0);
	len = meta_payload(p, "disk", exact, 1);
	ck_assert_int_eq(negotiate(NBD_OPT_SET_META_CONTEXT, p, len), 0);
	ck_assert(sess.meta_base_allocation);
	ck_assert_int_eq(negotiate(NBD_OPT_GO, g, glen), 0);
	ck_assert(!sess.meta_base_allocation);
}
END_TEST

/* One META_CONTEXT reply: id and name. */
static void assert_context(const struct reply *r, uint32_t id, const char *name)
{
	ck_assert_uint_eq(r->type, NBD_REP_META_CONTEXT);
	ck_assert_uint_eq(proto_get_u32(r->data), id);
	ck_assert(r->len == 4 + strlen(name) && memcmp(r->data + 4, name, strlen(name)) == 0);
}

/* An export's own contexts (dirty bitmaps): listed by namespace, chosen by name, with ids. */
START_TEST(test_meta_export_contexts)
{
	static const char *const ns[] = { "qemu:" }, *const dirty[] = { "qemu:dirty-bitmap:" },
				 *const pick[] = { "qemu:dirty-bitmap:b", "base:allocation" },
				 *const part[] = { "qemu:dirty", "qemu:dirty-bitmap:c" };
	uint8_t p[256], g[16], bs[128], payload[16];
	uint32_t len, glen = info_payload(g, "bm", NULL, 0);
	struct proto_request r = { .type = NBD_CMD_BLOCK_STATUS, .cookie = 9, .offset = 0,
				   .len_bytes = 4096 };
	struct proto_extent ext = { 4096, NBD_STATE_DIRTY };
	struct reply rp[5];
	uint64_t eff;

	ck_assert_int_eq(negotiate(NBD_OPT_STRUCTURED_REPLY, NULL, 0), 0);
	len = meta_payload(p, "bm", NULL, 0);
	ck_assert_int_eq(negotiate(NBD_OPT_LIST_META_CONTEXT, p, len), 0);
	ck_assert_uint_eq(parse_replies(rp, 5), 4);
	assert_context(&rp[0], 0, "base:allocation");
	assert_context(&rp[1], 0, "qemu:dirty-bitmap:a");
	assert_context(&rp[2], 0, "qemu:dirty-bitmap:b");
	len = meta_payload(p, "bm", ns, 1);
	ck_assert_int_eq(negotiate(NBD_OPT_LIST_META_CONTEXT, p, len), 0);
	ck_assert_uint_eq(parse_replies(rp, 5), 3);
	len = meta_payload(p, "bm", dirty, 1);
	ck_assert_int_eq(negotiate(NBD_OPT_LIST_META_CONTEXT, p, len), 0);
	ck_assert_uint_eq(parse_replies(rp, 5), 3);
	/* Not a namespace (no colon at its end), and a bitmap that is not there: nothing. */
	len = meta_payload(p, "bm", part, 2);
	ck_assert_int_eq(negotiate(NBD_OPT_LIST_META_CONTEXT, p, len), 0);
	ck_assert_uint_eq(parse_replies(rp, 5), 1);
	/* SET takes names only, and gives ids: base:allocation 1, the export's i-th 2 + i. */
	len = meta_payload(p, "bm", ns, 1);
	ck_assert_int_eq(negotiate(NBD_OPT_SET_META_CONTEXT, p, len), 0);
	ck_assert_uint_eq(parse_replies(rp, 5), 1);
	ck_assert(!sess.meta_base_allocation && sess.meta_extra == 0);
	len = meta_payload(p, "bm", pick, 2);
	ck_assert_int_eq(negotiate(NBD_OPT_SET_META_CONTEXT, p, len), 0);
	ck_assert_uint_eq(parse_replies(rp, 5), 3);
	assert_context(&rp[0], PROTO_META_ID_BASE_ALLOCATION, "base:allocation");
	assert_context(&rp[1], PROTO_META_ID_EXTRA + 1, "qemu:dirty-bitmap:b");
	ck_assert(sess.meta_base_allocation && sess.meta_extra == 2);
	ck_assert_int_eq(negotiate(NBD_OPT_GO, g, glen), 0);
	ck_assert(sess.phase == PROTO_PHASE_TRANSMISSION && sess.meta_extra == 2);
	ck_assert_uint_eq(proto_block_status_contexts(&sess, NULL, 0), 1u | 4u);
	ck_assert_uint_eq(proto_validate_request(&sess, &r, 1 << 25), NBD_SUCCESS);
	/* A payload naming contexts: only negotiated ones, each once. */
	proto_put_u64(payload, 4096);
	proto_put_u32(payload + 8, PROTO_META_ID_EXTRA + 1);
	ck_assert_uint_eq(proto_decode_block_status_payload(&sess, payload, 12, &eff), NBD_SUCCESS);
	ck_assert_uint_eq(proto_block_status_contexts(&sess, payload, 12), 4u);
	proto_put_u32(payload + 8, PROTO_META_ID_EXTRA); /* "a": not chosen */
	ck_assert_uint_eq(proto_decode_block_status_payload(&sess, payload, 12, &eff), NBD_EINVAL);
	proto_put_u32(payload + 8, PROTO_META_ID_EXTRA + 1);
	proto_put_u32(payload + 12, PROTO_META_ID_EXTRA + 1);
	ck_assert_uint_eq(proto_decode_block_status_payload(&sess, payload, 16, &eff), NBD_EINVAL);
	/* A chunk that is not the last has no DONE flag. */
	ck_assert_int_eq(proto_encode_block_status_ctx(&sess, bs, sizeof(bs), &r,
						       PROTO_META_ID_EXTRA + 1, false, &ext, 1),
			 20 + 4 + 8);
	ck_assert_uint_eq(proto_get_u16(bs + 4), 0);
	ck_assert_uint_eq(proto_get_u32(bs + 20), PROTO_META_ID_EXTRA + 1);
	ck_assert_uint_eq(proto_get_u32(bs + 28), NBD_STATE_DIRTY);
}
END_TEST

/* Only bitmaps chosen: BLOCK_STATUS is allowed without base:allocation. */
START_TEST(test_meta_bitmap_only)
{
	static const char *const a[] = { "qemu:dirty-bitmap:a" };
	uint8_t p[128], g[16];
	uint32_t len, glen = info_payload(g, "bm", NULL, 0);
	struct proto_request r = { .type = NBD_CMD_BLOCK_STATUS, .len_bytes = 512 };

	ck_assert_int_eq(negotiate(NBD_OPT_STRUCTURED_REPLY, NULL, 0), 0);
	len = meta_payload(p, "bm", a, 1);
	ck_assert_int_eq(negotiate(NBD_OPT_SET_META_CONTEXT, p, len), 0);
	ck_assert_int_eq(negotiate(NBD_OPT_GO, g, glen), 0);
	ck_assert(!sess.meta_base_allocation && sess.meta_extra == 1);
	ck_assert_uint_eq(proto_validate_request(&sess, &r, 1 << 25), NBD_SUCCESS);
	ck_assert_uint_eq(proto_block_status_contexts(&sess, NULL, 0), 2u);
}
END_TEST

/* The spec: a SET_META_CONTEXT that fails still replaces the selection. */
START_TEST(test_meta_failed_set_clears)
{
	static const char *const exact[] = { "base:allocation" };
	uint8_t p[128];
	uint32_t len;

	ck_assert_int_eq(negotiate(NBD_OPT_STRUCTURED_REPLY, NULL, 0), 0);
	len = meta_payload(p, "", exact, 1);
	ck_assert_int_eq(negotiate(NBD_OPT_SET_META_CONTEXT, p, len), 0);
	ck_assert(sess.meta_base_allocation);
	/* Malformed: an error reply, and nothing is selected any more. */
	ck_assert_int_eq(negotiate(NBD_OPT_SET_META_CONTEXT, p, len - 1), 0);
	assert_one_error(NBD_OPT_SET_META_CONTEXT, NBD_REP_ERR_INVALID);
	ck_assert(!sess.meta_base_allocation);
	/* An unknown export: the same. */
	ck_assert_int_eq(negotiate(NBD_OPT_SET_META_CONTEXT, p, len), 0);
	ck_assert(sess.meta_base_allocation);
	len = meta_payload(p, "nope", exact, 1);
	ck_assert_int_eq(negotiate(NBD_OPT_SET_META_CONTEXT, p, len), 0);
	assert_one_error(NBD_OPT_SET_META_CONTEXT, NBD_REP_ERR_UNKNOWN);
	ck_assert(!sess.meta_base_allocation);
}
END_TEST

START_TEST(test_meta_malformed)
{
	static const char *const exact[] = { "base:allocation" };
	uint8_t p[128];
	uint32_t len;

	ck_assert_int_eq(negotiate(NBD_OPT_STRUCTURED_REPLY, NULL, 0), 0);
	ck_assert_int_eq(negotiate(NBD_OPT_SET_META_CONTEXT, "\0\0\0\0\0\0\0", 7), 0);
	assert_one_error(NBD_OPT_SET_META_CONTEXT, NBD_REP_ERR_INVALID);
	len = meta_payload(p, "", exact, 1);
	/* Query longer than the option. */
	ck_assert_int_eq(negotiate(NBD_OPT_SET_META_CONTEXT, p, len - 1), 0);
	assert_one_error(NBD_OPT_SET_META_CONTEXT, NBD_REP_ERR_INVALID);
	/* Trailing garbage. */
	ck_assert_int_eq(negotiate(NBD_OPT_SET_META_CONTEXT, p, len + 1), 0);
	assert_one_error(NBD_OPT_SET_META_CONTEXT, NBD_REP_ERR_INVALID);
	/* More queries claimed than present. */
	proto_put_u32(p + 4, 3);
	ck_assert_int_eq(negotiate(NBD_OPT_LIST_META_CONTEXT, p, len), 0);
	assert_one_error(NBD_OPT_LIST_META_CONTEXT, NBD_REP_ERR_INVALID);
	/* A huge query length must not wrap around. */
	proto_put_u32(p + 4, 1);
	proto_put_u32(p + 8, 0xfffffff0u);
	ck_assert_int_eq(negotiate(NBD_OPT_LIST_META_CONTEXT, p, len), 0);
	assert_one_error(NBD_OPT_LIST_META_CONTEXT, NBD_REP_ERR_INVALID);
	/* Name length past the option. */
	proto_put_u32(p, 200);
	ck_assert_int_eq(negotiate(NBD_OPT_LIST_META_CONTEXT, p, len), 0);
	assert_one_error(NBD_OPT_LIST_META_CONTEXT, NBD_REP_ERR_INVALID);
	ck_assert(!sess.meta_base_allocation);
}
END_TEST

START_TEST(test_repeated_options)
{
	struct reply r[2];

	ck_assert_int_eq(negotiate(NBD_OPT_STRUCTURED_REPLY, NULL, 0), 0);
	ck_assert_int_eq(negotiate(NBD_OPT_STRUCTURED_REPLY, NULL, 0), 0);
	assert_one_error(NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_INVALID);
	ck_assert_int_eq(negotiate(NBD_OPT_EXTENDED_HEADERS, "x", 1), 0);
	assert_one_error(NBD_OPT_EXTENDED_HEADERS, NBD_REP_ERR_INVALID);
	ck_assert_int_eq(negotiate(NBD_OPT_EXTENDED_HEADERS, NULL, 0), 0);
	ck_assert_uint_eq(parse_replies(r, 2), 1);
	ck_assert_uint_eq(r[0].type, NBD_REP_ACK);
	ck_assert(sess.extended && sess.structured);
	ck_assert_int_eq(negotiate(NBD_OPT_EXTENDED_HEADERS, NULL, 0), 0);
	assert_one_error(NBD_OPT_EXTENDED_HEADERS, NBD_REP_ERR_INVALID);
	ck_assert_int_eq(negotiate(NBD_OPT_STRUCTURED_REPLY, NULL, 0), 0);
	assert_one_error(NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_EXT_HEADER_REQD);
}
END_TEST

START_TEST(test_extended_request_decode)
{
	uint8_t h[PROTO_EXT_REQUEST_LEN];
	struct proto_request r;

	ck_assert_int_eq(negotiate(NBD_OPT_EXTENDED_HEADERS, NULL, 0), 0);
	enter("", false);
	ck_assert_uint_eq(proto_request_hdr_len(&sess), 32);
	proto_put_u32(h, NBD_EXTENDED_REQUEST_MAGIC);
	proto_put_u16(h + 4, NBD_CMD_FLAG_PAYLOAD_LEN);
	proto_put_u16(h + 6, NBD_CMD_BLOCK_STATUS);
	proto_put_u64(h + 8, 99);
	proto_put_u64(h + 16, 4096);
	proto_put_u64(h + 24, UINT64_C(5) << 32);
	ck_assert_int_eq(proto_decode_request(&sess, h, &r), 0);
	ck_assert(r.len_bytes == UINT64_C(5) << 32);
	/* With PAYLOAD_LEN the length is a payload to read (and refuse). */
	ck_assert(proto_request_payload_len(&sess, &r) == UINT64_C(5) << 32);
	ck_assert_uint_eq(proto_validate_request(&sess, &r, 1 << 25), NBD_EINVAL);
	/* A compact request after extended headers is a bad magic. */
	proto_put_u32(h, NBD_REQUEST_MAGIC);
	ck_assert_int_eq(proto_decode_request(&sess, h, &r), -EPROTO);
}
END_TEST

START_TEST(test_validate_new_commands)
{
	enter("", true);
	ck_assert_uint_eq(check(NBD_CMD_TRIM, 0, 0, 1 << 20), NBD_SUCCESS);
	ck_assert_uint_eq(check(NBD_CMD_TRIM, NBD_CMD_FLAG_FUA, 1, 3), NBD_SUCCESS);
	ck_assert_uint_eq(check(NBD_CMD_TRIM, 0, 512, 1 << 20), NBD_EINVAL);
	ck_assert_uint_eq(check(NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO,
				7, 100), NBD_SUCCESS);
	ck_assert_uint_eq(check(NBD_CMD_WRITE_ZEROES, 0, 512, 1 << 20), NBD_ENOSPC);
	ck_assert_uint_eq(check(NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_DF, 0, 512), NBD_EINVAL);
	ck_assert_uint_eq(check(NBD_CMD_CACHE, 0, 0, 1 << 20), NBD_SUCCESS);
	ck_assert_uint_eq(check(NBD_CMD_CACHE, 0, 1, 1 << 20), NBD_EINVAL);
	ck_assert_uint_eq(check(NBD_CMD_CACHE, NBD_CMD_FLAG_NO_HOLE, 0, 512), NBD_EINVAL);
	/* No base:allocation negotiated. */
	ck_assert_uint_eq(check(NBD_CMD_BLOCK_STATUS, 0, 0, 512), NBD_EINVAL);
	sess.meta_base_allocation = true;
	ck_assert_uint_eq(check(NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_REQ_ONE, 0, 512), NBD_SUCCESS);
	ck_assert_uint_eq(check(NBD_CMD_BLOCK_STATUS, 0, 0, 0), NBD_EINVAL);
	ck_assert_uint_eq(check(NBD_CMD_BLOCK_STATUS, 0, 512, 1 << 20), NBD_EINVAL);
	ck_assert_uint_eq(check(NBD_CMD_RESIZE, 0, 0, 0), NBD_EINVAL);
}
END_TEST

START_TEST(test_validate_new_commands_readonly)
{
	enter("disk", true);
	ck_assert_uint_eq(check(NBD_CMD_TRIM, 0, 0, 512), NBD_EPERM);
	ck_assert_uint_eq(check(NBD_CMD_WRITE_ZEROES, 0, 0, 512), NBD_EPERM);
	/* CACHE is not advertised on this export. */
	ck_assert_uint_eq(check(NBD_CMD_CACHE, 0, 0, 512), NBD_EINVAL);
}
END_TEST

START_TEST(test_encode_replies)
{
	uint8_t b[PROTO_REPLY_MAX_LEN];
	struct proto_request rd = { .type = NBD_CMD_READ, .cookie = 5, .offset = 4096,
				    .len_bytes = 512 };
	struct proto_request wr = { .type = NBD_CMD_WRITE, .cookie = 6, .offset = 0,
				    .len_bytes = 512 };
	bool data;

	/* Simple. */
	ck_assert_uint_eq(proto_encode_reply(&sess, b, &rd, 0, &data), 16);
	ck_assert(data);
	ck_assert_uint_eq(proto_encode_reply(&sess, b, &rd, NBD_EIO, &data), 16);
	ck_assert(!data);
	ck_assert_uint_eq(proto_get_u32(b + 4), NBD_EIO);
	/* Structured: READ gets OFFSET_DATA or ERROR, never a simple reply. */
	ck_assert_int_eq(negotiate(NBD_OPT_STRUCTURED_REPLY, NULL, 0), 0);
	ck_assert_uint_eq(proto_encode_reply(&sess, b, &rd, 0, &data), 28);
	ck_assert(data);
	ck_assert_uint_eq(proto_get_u16(b + 6), NBD_REPLY_TYPE_OFFSET_DATA);
	ck_assert_uint_eq(proto_encode_reply(&sess, b, &rd, NBD_EINVAL, &data), 26);
	ck_assert_uint_eq(proto_get_u16(b + 6), NBD_REPLY_TYPE_ERROR);
	ck_assert_uint_eq(proto_encode_reply(&sess, b, &wr, 0, &data), 16);
	ck_assert_uint_eq(proto_get_u32(b), NBD_SIMPLE_REPLY_MAGIC);
	/* Extended: every reply is an extended header. */
	ck_assert_int_eq(negotiate(NBD_OPT_EXTENDED_HEADERS, NULL, 0), 0);
	ck_assert_uint_eq(proto_encode_reply(&sess, b, &wr, 0, &data), 32);
	ck_assert_uint_eq(proto_get_u32(b), NBD_EXTENDED_REPLY_MAGIC);
	ck_assert_uint_eq(proto_get_u16(b + 6), NBD_REPLY_TYPE_NONE);
	ck_assert(proto_get_u64(b + 24) == 0);
	ck_assert_uint_eq(proto_encode_reply(&sess, b, &rd, 0, &data), 40);
	ck_assert(proto_get_u64(b + 16) == 4096);
	ck_assert(proto_get_u64(b + 24) == 8 + 512);
	ck_assert(proto_get_u64(b + 32) == 4096);
}
END_TEST

START_TEST(test_encode_block_status)
{
	struct proto_request bs = { .type = NBD_CMD_BLOCK_STATUS, .cookie = 7, .offset = 0,
				    .len_bytes = 3 << 20 };
	struct proto_extent ext[2] = { { 1 << 20, NBD_STATE_HOLE | NBD_STATE_ZERO }, { 2 << 20, 0 } };
	uint8_t b[128];

	ck_assert_int_eq(negotiate(NBD_OPT_STRUCTURED_REPLY, NULL, 0), 0);
	ck_assert_int_eq(proto_encode_block_status(&sess, b, 10, &bs, ext, 2), -ENOBUFS);
	ck_assert_int_eq(proto_encode_block_status(&sess, b, sizeof(b), &bs, ext, 2), 20 + 4 + 16);
	ck_assert_uint_eq(proto_get_u16(b + 6), NBD_REPLY_TYPE_BLOCK_STATUS);
	ck_assert_uint_eq(proto_get_u32(b + 16), 4 + 16);
	ck_assert_uint_eq(proto_get_u32(b + 20), PROTO_META_ID_BASE_ALLOCATION);
	ck_assert_uint_eq(proto_get_u32(b + 24), 1 << 20);
	ck_assert_uint_eq(proto_get_u32(b + 28), 3);
	ck_assert_uint_eq(proto_get_u32(b + 32), 2 << 20);
	ck_assert_uint_eq(proto_get_u32(b + 36), 0);
	sess.extended = true;
	ck_assert_int_eq(proto_encode_block_status(&sess, b, sizeof(b), &bs, ext, 2), 32 + 8 + 32);
	ck_assert_uint_eq(proto_get_u16(b + 6), NBD_REPLY_TYPE_BLOCK_STATUS_EXT);
	ck_assert_uint_eq(proto_get_u32(b + 36), 2);
	ck_assert(proto_get_u64(b + 40) == 1 << 20);
	ck_assert(proto_get_u64(b + 48) == 3);
}
END_TEST

/* BLOCK_STATUS with PAYLOAD_LEN: which requests carry one, and its decoding. */
START_TEST(test_block_status_payload)
{
	struct proto_request r = { .type = NBD_CMD_BLOCK_STATUS, .flags = NBD_CMD_FLAG_PAYLOAD_LEN,
				   .len_bytes = 12 };
	uint8_t p[PROTO_BS_PAYLOAD_MAX + 8];
	uint64_t eff = 0;

	memset(p, 0, sizeof(p));
	proto_put_u64(p, 12345);
	proto_put_u32(p + 8, PROTO_META_ID_BASE_ALLOCATION);
	/* Only with extended headers and the flag advertised, and a small payload. */
	ck_assert(!proto_block_status_payload(&sess, &r));
	sess.extended = true;
	ck_assert(!proto_block_status_payload(&sess, &r));
	sess.tflags |= NBD_FLAG_BLOCK_STAT_PAYLOAD;
	ck_assert(proto_block_status_payload(&sess, &r));
	r.len_bytes = PROTO_BS_PAYLOAD_MAX + 4;
	ck_assert(!proto_block_status_payload(&sess, &r));
	r.type = NBD_CMD_READ;
	r.len_bytes = 12;
	ck_assert(!proto_block_status_payload(&sess, &r));
	/* The context must have been chosen, named once, and the length be 8 + 4n, n >= 1. */
	ck_assert_uint_eq(proto_decode_block_status_payload(&sess, p, 12, &eff), NBD_EINVAL);
	sess.meta_base_allocation = true;
	ck_assert_uint_eq(proto_decode_block_status_payload(&sess, p, 12, &eff), NBD_SUCCESS);
	ck_assert_uint_eq(eff, 12345);
	ck_assert_uint_eq(proto_decode_block_status_payload(&sess, p, 8, &eff), NBD_EINVAL);
	ck_assert_uint_eq(proto_decode_block_status_payload(&sess, p, 14, &eff), NBD_EINVAL);
	proto_put_u32(p + 12, PROTO_META_ID_BASE_ALLOCATION);
	ck_assert_uint_eq(proto_decode_block_status_payload(&sess, p, 16, &eff), NBD_EINVAL);
	proto_put_u32(p + 8, 99);
	ck_assert_uint_eq(proto_decode_block_status_payload(&sess, p, 12, &eff), NBD_EINVAL);
	ck_assert_uint_eq(proto_decode_block_status_payload(&sess, p, PROTO_BS_PAYLOAD_MAX + 4, &eff),
			  NBD_EINVAL);
}
END_TEST

static Suite *proto_suite(void)
{
	Suite *s = suite_create("proto");
	TCase *hs = tcase_create("handshake"), *tx = tcase_create("transmission");

	tcase_add_checked_fixture(hs, setup, NULL);
	tcase_add_test(hs, test_greeting);
	tcase_add_test(hs, test_client_flags);
	tcase_add_test(hs, test_option_magic);
	tcase_add_test(hs, test_export_name_no_zeroes);
	tcase_add_test(hs, test_export_name_zeroes);
	tcase_add_test(hs, test_export_name_unknown_closes);
	tcase_add_test(hs, test_export_name_prefix_is_not_a_match);
	tcase_add_test(hs, test_export_name_shutting_down_closes);
	tcase_add_test(hs, test_abort);
	tcase_add_test(hs, test_list);
	tcase_add_test(hs, test_list_with_data_is_invalid);
	tcase_add_test(hs, test_list_shutting_down);
	tcase_add_test(hs, test_info_all_items);
	tcase_add_test(hs, test_go_enters_transmission);
	tcase_add_test(hs, test_go_no_description_when_empty);
	tcase_add_test(hs, test_go_unknown_export);
	tcase_add_test(hs, test_go_short_payload);
	tcase_add_test(hs, test_go_name_past_option);
	tcase_add_test(hs, test_go_request_count_mismatch);
	tcase_add_test(hs, test_go_shutting_down);
	tcase_add_test(hs, test_structured_reply);
	tcase_add_test(hs, test_starttls_policy);
	tcase_add_test(hs, test_tls_forced);
	tcase_add_test(hs, test_tls_forced_export_name_closes);
	tcase_add_test(hs, test_tls_forgets_options);
	tcase_add_test(hs, test_tls_selective);
	tcase_add_test(hs, test_tls_selective_after_starttls);
	tcase_add_test(hs, test_access_refused);
	tcase_add_test(hs, test_list_refused);
	tcase_add_test(hs, test_unknown_option_unsup);
	tcase_add_test(hs, test_oversized_option_too_big);
	tcase_add_test(hs, test_enobufs_changes_nothing);
	tcase_add_test(hs, test_negotiate_after_transmission);
	tcase_add_test(hs, test_meta_needs_structured);
	tcase_add_test(hs, test_meta_list);
	tcase_add_test(hs, test_meta_set_and_go);
	tcase_add_test(hs, test_meta_set_other_export_lapses);
	tcase_add_test(hs, test_meta_export_contexts);
	tcase_add_test(hs, test_meta_bitmap_only);
	tcase_add_test(hs, test_meta_malformed);
	tcase_add_test(hs, test_meta_failed_set_clears);
	tcase_add_test(hs, test_repeated_options);
	suite_add_tcase(s, hs);

	tcase_add_checked_fixture(tx, setup, NULL);
	tcase_add_test(tx, test_request_decode);
	tcase_add_test(tx, test_validate_ranges);
	tcase_add_test(tx, test_validate_flags);
	tcase_add_test(tx, test_validate_df_structured);
	tcase_add_test(tx, test_validate_readonly);
	tcase_add_test(tx, test_reply_encoders);
	tcase_add_test(tx, test_errno_map);
	tcase_add_test(tx, test_extended_request_decode);
	tcase_add_test(tx, test_validate_new_commands);
	tcase_add_test(tx, test_validate_new_commands_readonly);
	tcase_add_test(tx, test_encode_replies);
	tcase_add_test(tx, test_encode_block_status);
	tcase_add_test(tx, test_block_status_payload);
	suite_add_tcase(s, tx);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(proto_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
