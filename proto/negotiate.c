// SPDX-License-Identifier: BSD-3-Clause
/*
 * Fixed-newstyle option negotiation: one option in, reply bytes and the next
 * session state out. The caller does the socket work; see proto.h.
 *
 * Every reply is built into the caller's buffer first and the session is
 * only updated once the whole reply fitted, so a caller that gets -ENOBUFS
 * can grow the buffer and call again with the same option.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "proto.h"

void proto_encode_greeting(uint8_t out[PROTO_GREETING_LEN])
{
	proto_put_u64(out, NBD_MAGIC);
	proto_put_u64(out + 8, NBD_IHAVEOPT);
	proto_put_u16(out + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
}

int proto_session_start(struct proto_session *s, const uint8_t in[PROTO_CLIENT_FLAGS_LEN])
{
	uint32_t flags = proto_get_u32(in);

	/* Unknown client flags mean the client and server disagree: drop it. */
	if (flags & ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))
		return -EPROTO;
	memset(s, 0, sizeof(*s));
	s->phase = PROTO_PHASE_OPTIONS;
	s->client_flags = flags;
	s->no_zeroes = flags & NBD_FLAG_C_NO_ZEROES;
	return 0;
}

void proto_session_tls_started(struct proto_session *s)
{
	s->structured = false;
	s->extended = false;
	s->meta_base_allocation = false;
	s->meta_extra = 0;
	s->meta_export = NULL;
	s->starttls = false;
	s->tls = true;
}

int proto_decode_option(const uint8_t in[PROTO_OPTION_HDR_LEN], struct proto_option *opt)
{
	if (proto_get_u64(in) != NBD_IHAVEOPT)
		return -EPROTO;
	opt->option = proto_get_u32(in + 8);
	opt->len_bytes = proto_get_u32(in + 12);
	return 0;
}

static int buf_append(struct proto_buf *out, const void *p, size_t len)
{
	if (out->cap - out->len < len)
		return -ENOBUFS;
	if (len)
		memcpy(out->data + out->len, p, len);
	out->len += len;
	return 0;
}

int proto_encode_option_reply(struct proto_buf *out, uint32_t option, uint32_t type,
			      const void *payload, size_t len)
{
	uint8_t hdr[PROTO_OPTREPLY_HDR_LEN];

	if (out->cap - out->len < sizeof(hdr) + len)
		return -ENOBUFS;
	proto_put_u64(hdr, NBD_REP_MAGIC);
	proto_put_u32(hdr + 8, option);
	proto_put_u32(hdr + 12, type);
	proto_put_u32(hdr + 16, (uint32_t)len);
	buf_append(out, hdr, sizeof(hdr));
	return buf_append(out, payload, len);
}

/* An error reply whose payload is a human-readable message. */
static int reply_error(struct proto_buf *out, uint32_t option, uint32_t type, const char *fmt,
		       ...) __attribute__((format(printf, 4, 5)));
static int reply_error(struct proto_buf *out, uint32_t option, uint32_t type, const char *fmt,
		       ...)
{
	char msg[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(msg))
		n = sizeof(msg) - 1;
	return proto_encode_option_reply(out, option, type, msg, (size_t)n);
}

static uint16_t session_tflags(const struct proto_session *s, const struct proto_export *e)
{
	uint16_t tflags = e->tflags | NBD_FLAG_HAS_FLAGS;

	/* DF only means something once structured replies are on. */
	if (!s->structured)
		tflags &= (uint16_t)~NBD_FLAG_SEND_DF;
	/* A BLOCK_STATUS payload choosing contexts: with extended headers and a context. */
	if (s->extended && s->meta_export == e->opaque && (s->meta_base_allocation || s->meta_extra))
		tflags |= NBD_FLAG_BLOCK_STAT_PAYLOAD;
	return tflags;
}

/* Transmission begins on export e; contexts chosen for another export lapse. */
static void session_enter(struct proto_session *s, const struct proto_export *e, uint16_t tflags)
{
	if (s->meta_export != e->opaque) {
		s->meta_base_allocation = false;
		s->meta_extra = 0;
	}
	s->export = *e;
	s->tflags = tflags;
	s->phase = PROTO_PHASE_TRANSMISSION;
}

/* Prints a possibly unterminated name for a message, shortened. */
static int name_width(size_t len)
{
	return len > 64 ? 64 : (int)len;
}

static int opt_export_name(struct proto_session *s, const struct proto_exports *ex,
			   const struct proto_option *opt, const uint8_t *data,
			   struct proto_buf *out)
{
	uint8_t reply[PROTO_EXPORT_NAME_REPLY_LEN + 124];
	struct proto_export e;
	size_t len = PROTO_EXPORT_NAME_REPLY_LEN;
	uint16_t tflags;

	/* This option has no error reply: every refusal is a close. */
	if (!data || opt->len_bytes > PROTO_NAME_MAX || ex->shutting_down ||
	    (ex->tls == PROTO_TLS_REQUIRE && !s->tls) ||
	    ex->lookup(ex->ctx, (const char *)data, opt->len_bytes, &e) < 0 ||
	    (e.tls_only && !s->tls)) {
		s->phase = PROTO_PHASE_CLOSE;
		return 0;
	}
	tflags = session_tflags(s, &e);
	memset(reply, 0, sizeof(reply));
	proto_put_u64(reply, e.size_bytes);
	proto_put_u16(reply + 8, tflags);
	if (!s->no_zeroes)
		len += 124;
	if (buf_append(out, reply, len) < 0)
		return -ENOBUFS;
	session_enter(s, &e, tflags);
	return 0;
}

static int opt_list(const struct proto_session *s, const struct proto_exports *ex,
		    const struct proto_option *opt, struct proto_buf *out)
{
	struct proto_export e;
	uint8_t item[4 + PROTO_NAME_MAX * 2 + 2];
	size_t i;
	int ret;

	if (opt->len_bytes != 0)
		return reply_error(out, opt->option, NBD_REP_ERR_INVALID,
				   "NBD_OPT_LIST takes no data");
	if (ex->shutting_down)
		return reply_error(out, opt->option, NBD_REP_ERR_SHUTDOWN,
				   "server is shutting down");
	if (ex->list_refused)
		return reply_error(out, opt->option, NBD_REP_ERR_POLICY,
				   "this server does not list its exports");
	for (i = 0; ex->nth(ex->ctx, i, &e) == 0; i++) {
		size_t nlen = strnlen(e.name, PROTO_NAME_MAX);
		size_t dlen = strnlen(e.description, PROTO_NAME_MAX);

		/* A TLS-only export is not shown to a client without TLS. */
		if (e.tls_only && !s->tls)
			continue;
		proto_put_u32(item, (uint32_t)nlen);
		memcpy(item + 4, e.name, nlen);
		memcpy(item + 4 + nlen, e.description, dlen);
		ret = proto_encode_option_reply(out, opt->option, NBD_REP_SERVER, item,
						4 + nlen + dlen);
		if (ret < 0)
			return ret;
	}
	return proto_encode_option_reply(out, opt->option, NBD_REP_ACK, NULL, 0);
}

static int info_reply(struct proto_buf *out, uint32_t option, uint16_t info, const void *p,
		      size_t len)
{
	uint8_t item[2 + PROTO_NAME_MAX];

	proto_put_u16(item, info);
	memcpy(item + 2, p, len);
	return proto_encode_option_reply(out, option, NBD_REP_INFO, item, 2 + len);
}

/*
 * The export an option names (INFO, GO, the META_CONTEXT options). Returns
 * 0 with *e filled; 1 when it appended the error reply instead (name too
 * long, shutting down, no such export, refused to this client, TLS-only
 * without TLS); -ENOBUFS.
 */
static int find_export(const struct proto_session *s, const struct proto_exports *ex,
		       const struct proto_option *opt, const char *name, uint32_t name_len,
		       struct proto_export *e, struct proto_buf *out)
{
	int ret;

	if (name_len > PROTO_NAME_MAX)
		ret = reply_error(out, opt->option, NBD_REP_ERR_TOO_BIG,
				  "export name longer than %d bytes", PROTO_NAME_MAX);
	else if (ex->shutting_down)
		ret = reply_error(out, opt->option, NBD_REP_ERR_SHUTDOWN, "server is shutting down");
	else if ((ret = ex->lookup(ex->ctx, name, name_len, e)) == -EACCES)
		ret = reply_error(out, opt->option, NBD_REP_ERR_POLICY,
				  "access to export \"%.*s\" is denied", name_width(name_len), name);
	else if (ret < 0)
		ret = reply_error(out, opt->option, NBD_REP_ERR_UNKNOWN, "no export named \"%.*s\"",
				  name_width(name_len), name);
	else if (e->tls_only && !s->tls)
		/* Only INFO and GO may say TLS_REQD; the rest are refused. */
		ret = reply_error(out, opt->option,
				  opt->option == NBD_OPT_INFO || opt->option == NBD_OPT_GO ?
				  NBD_REP_ERR_TLS_REQD : NBD_REP_ERR_POLICY,
				  "export \"%.*s\" needs TLS: send NBD_OPT_STARTTLS first",
				  name_width(name_len), name);
	else
		return 0;
	return ret < 0 ? ret : 1;
}

static int opt_info_go(struct proto_session *s, const struct proto_exports *ex,
		       const struct proto_option *opt, const uint8_t *data,
		       struct proto_buf *out)
{
	uint32_t len = opt->len_bytes, name_len, nreq, i;
	struct proto_export e;
	uint8_t p[14];
	bool sent_name = false, sent_desc = false;
	uint16_t tflags;
	int ret;

	if (len < 6)
		return reply_error(out, opt->option, NBD_REP_ERR_INVALID,
				   "%s: data shorter than 6 bytes", proto_opt_name(opt->option));
	name_len = proto_get_u32(data);
	if (name_len > len - 6)
		return reply_error(out, opt->option, NBD_REP_ERR_INVALID,
				   "%s: name length %u runs past the option",
				   proto_opt_name(opt->option), name_len);
	nreq = proto_get_u16(data + 4 + name_len);
	if ((uint64_t)len != 4 + (uint64_t)name_len + 2 + 2 * (uint64_t)nreq)
		return reply_error(out, opt->option, NBD_REP_ERR_INVALID,
				   "%s: %u information requests do not match the length",
				   proto_opt_name(opt->option), nreq);
	ret = find_export(s, ex, opt, (const char *)data + 4, name_len, &e, out);
	if (ret)
		return ret < 0 ? ret : 0;

	tflags = session_tflags(s, &e);
	proto_put_u16(p, NBD_INFO_EXPORT);
	proto_put_u64(p + 2, e.size_bytes);
	proto_put_u16(p + 10, tflags);
	ret = proto_encode_option_reply(out, opt->option, NBD_REP_INFO, p, 12);
	if (ret < 0)
		return ret;
	for (i = 0; i < nreq; i++) {
		uint16_t what = proto_get_u16(data + 4 + name_len + 2 + 2 * i);

		ret = 0;
		if (what == NBD_INFO_NAME && !sent_name) {
			sent_name = true;
			ret = info_reply(out, opt->option, NBD_INFO_NAME, e.name,
					 strnlen(e.name, PROTO_NAME_MAX));
		} else if (what == NBD_INFO_DESCRIPTION && !sent_desc && e.description[0]) {
			sent_desc = true;
			ret = info_reply(out, opt->option, NBD_INFO_DESCRIPTION, e.description,
					 strnlen(e.description, PROTO_NAME_MAX));
		}
		/* Unknown requests are ignored; block sizes are always sent below. */
		if (ret < 0)
			return ret;
	}
	/* Sent whether asked or not: the export has constraints worth knowing. */
	proto_put_u16(p, NBD_INFO_BLOCK_SIZE);
	proto_put_u32(p + 2, e.min_block);
	proto_put_u32(p + 6, e.pref_block);
	proto_put_u32(p + 10, e.max_block);
	ret = proto_encode_option_reply(out, opt->option, NBD_REP_INFO, p, 14);
	if (ret < 0)
		return ret;
	ret = proto_encode_option_reply(out, opt->option, NBD_REP_ACK, NULL, 0);
	if (ret < 0)
		return ret;
	if (opt->option == NBD_OPT_GO)
		session_enter(s, &e, tflags);
	return 0;
}

/*
 * Whether query q selects context name: the name itself; for LIST also a
 * namespace or part of a name up to a colon ("base:", "qemu:",
 * "qemu:dirty-bitmap:").
 */
static bool query_selects(const uint8_t *q, uint32_t len, const char *name, bool list)
{
	size_t n = strlen(name);

	if (len == n)
		return memcmp(q, name, n) == 0;
	return list && len && len < n && q[len - 1] == ':' && memcmp(q, name, len) == 0;
}

static int meta_context_reply(struct proto_buf *out, uint32_t option, uint32_t id, const char *name)
{
	uint8_t item[4 + PROTO_NAME_MAX];
	size_t n = strnlen(name, PROTO_NAME_MAX);

	proto_put_u32(item, id);
	memcpy(item + 4, name, n);
	return proto_encode_option_reply(out, option, NBD_REP_META_CONTEXT, item, 4 + n);
}

/*
 * LIST_META_CONTEXT and SET_META_CONTEXT. Data: u32 name length, name, u32
 * number of queries, then each query as u32 length and string. uringnbd
 * knows base:allocation and the export's own contexts (its dirty bitmaps);
 * LIST with no queries lists them all, and takes namespaces (query_selects).
 */
static int opt_meta_context(struct proto_session *s, const struct proto_exports *ex,
			    const struct proto_option *opt, const uint8_t *data,
			    struct proto_buf *out)
{
	bool set = opt->option == NBD_OPT_SET_META_CONTEXT, match = false;
	uint32_t len = opt->len_bytes, name_len, nq, i, p, ql, k, extra = 0;
	struct proto_export e;
	int ret;

	if (!s->structured)
		return reply_error(out, opt->option, NBD_REP_ERR_INVALID,
				   "%s needs structured replies first", proto_opt_name(opt->option));
	if (len < 8)
		return reply_error(out, opt->option, NBD_REP_ERR_INVALID,
				   "%s: data shorter than 8 bytes", proto_opt_name(opt->option));
	name_len = proto_get_u32(data);
	if (name_len > len - 8)
		return reply_error(out, opt->option, NBD_REP_ERR_INVALID,
				   "%s: name length %u runs past the option",
				   proto_opt_name(opt->option), name_len);
	nq = proto_get_u32(data + 4 + name_len);
	p = 8 + name_len;
	for (i = 0; i < nq; i++) {
		if (len - p < 4)
			return reply_error(out, opt->option, NBD_REP_ERR_INVALID,
					   "%s: %u queries do not fit the option",
					   proto_opt_name(opt->option), nq);
		ql = proto_get_u32(data + p);
		p += 4;
		if (ql > len - p)
			return reply_error(out, opt->option, NBD_REP_ERR_INVALID,
					   "%s: query length %u runs past the option",
					   proto_opt_name(opt->option), ql);
		if (ql > PROTO_NAME_MAX)
			return reply_error(out, opt->option, NBD_REP_ERR_TOO_BIG,
					   "query longer than %d bytes", PROTO_NAME_MAX);
		p += ql;
	}
	if (p != len)
		return reply_error(out, opt->option, NBD_REP_ERR_INVALID,
				   "%s: %u bytes after the last query", proto_opt_name(opt->option),
				   len - p);
	ret = find_export(s, ex, opt, (const char *)data + 4, name_len, &e, out);
	if (ret)
		return ret < 0 ? ret : 0;
	if (e.ncontexts > PROTO_META_MAX_EXTRA)
		e.ncontexts = PROTO_META_MAX_EXTRA;

	if (!set && nq == 0) {
		match = true;
		extra = e.ncontexts ? (uint32_t)((1ull << e.ncontexts) - 1) : 0;
	}
	for (i = 0, p = 8 + name_len; i < nq; i++) {
		ql = proto_get_u32(data + p);
		if (query_selects(data + p + 4, ql, PROTO_META_BASE_ALLOCATION, !set))
			match = true;
		for (k = 0; k < e.ncontexts; k++)
			if (query_selects(data + p + 4, ql, e.contexts[k], !set))
				extra |= 1u << k;
		p += 4 + ql;
	}
	/* LIST replies carry id 0; SET gives each context its id. */
	if (match) {
		ret = meta_context_reply(out, opt->option, set ? PROTO_META_ID_BASE_ALLOCATION : 0,
					 PROTO_META_BASE_ALLOCATION);
		if (ret < 0)
			return ret;
	}
	for (k = 0; k < e.ncontexts; k++) {
		if (!(extra & (1u << k)))
			continue;
		ret = meta_context_reply(out, opt->option, set ? PROTO_META_ID_EXTRA + k : 0,
					 e.contexts[k]);
		if (ret < 0)
			return ret;
	}
	ret = proto_encode_option_reply(out, opt->option, NBD_REP_ACK, NULL, 0);
	if (ret < 0)
		return ret;
	if (set) {
		s->meta_base_allocation = match;
		s->meta_extra = extra;
		s->meta_export = e.opaque;
	}
	return 0;
}

static int negotiate_one(struct proto_session *s, const struct proto_exports *ex,
			 const struct proto_option *opt, const uint8_t *data,
			 struct proto_buf *out)
{
	if (opt->option == NBD_OPT_EXPORT_NAME)
		return opt_export_name(s, ex, opt, data, out);
	if (opt->option == NBD_OPT_ABORT) {
		s->phase = PROTO_PHASE_CLOSE;
		return proto_encode_option_reply(out, opt->option, NBD_REP_ACK, NULL, 0);
	}
	/* FORCEDTLS: nothing but STARTTLS (and ABORT, above) before TLS. */
	if (ex->tls == PROTO_TLS_REQUIRE && !s->tls && opt->option != NBD_OPT_STARTTLS)
		return reply_error(out, opt->option, NBD_REP_ERR_TLS_REQD,
				   "this server requires TLS: send NBD_OPT_STARTTLS first");
	if (!data)
		return reply_error(out, opt->option, NBD_REP_ERR_TOO_BIG,
				   "option data longer than %d bytes", PROTO_OPTION_DATA_MAX);

	switch (opt->option) {
	case NBD_OPT_LIST:
		return opt_list(s, ex, opt, out);
	case NBD_OPT_INFO:
	case NBD_OPT_GO:
		return opt_info_go(s, ex, opt, data, out);
	case NBD_OPT_STARTTLS:
		if (opt->len_bytes != 0)
			return reply_error(out, opt->option, NBD_REP_ERR_INVALID,
					   "NBD_OPT_STARTTLS takes no data");
		if (ex->tls == PROTO_TLS_OFF)
			return reply_error(out, opt->option, NBD_REP_ERR_POLICY,
					   "TLS is not enabled on this server");
		if (s->tls)
			return reply_error(out, opt->option, NBD_REP_ERR_INVALID,
					   "TLS is already in use");
		if (proto_encode_option_reply(out, opt->option, NBD_REP_ACK, NULL, 0) < 0)
			return -ENOBUFS;
		/* Nothing more is read in plaintext: the TLS handshake comes next. */
		s->starttls = true;
		return 0;
	case NBD_OPT_STRUCTURED_REPLY:
		if (opt->len_bytes != 0)
			return reply_error(out, opt->option, NBD_REP_ERR_INVALID,
					   "NBD_OPT_STRUCTURED_REPLY takes no data");
		if (s->extended)
			return reply_error(out, opt->option, NBD_REP_ERR_EXT_HEADER_REQD,
					   "extended headers are already negotiated");
		if (s->structured)
			return reply_error(out, opt->option, NBD_REP_ERR_INVALID,
					   "structured replies are already negotiated");
		if (proto_encode_option_reply(out, opt->option, NBD_REP_ACK, NULL, 0) < 0)
			return -ENOBUFS;
		s->structured = true;
		return 0;
	case NBD_OPT_EXTENDED_HEADERS:
		if (opt->len_bytes != 0)
			return reply_error(out, opt->option, NBD_REP_ERR_INVALID,
					   "NBD_OPT_EXTENDED_HEADERS takes no data");
		if (s->extended)
			return reply_error(out, opt->option, NBD_REP_ERR_INVALID,
					   "extended headers are already negotiated");
		if (proto_encode_option_reply(out, opt->option, NBD_REP_ACK, NULL, 0) < 0)
			return -ENOBUFS;
		/* Extended headers carry structured replies with them. */
		s->extended = true;
		s->structured = true;
		return 0;
	case NBD_OPT_LIST_META_CONTEXT:
	case NBD_OPT_SET_META_CONTEXT:
		return opt_meta_context(s, ex, opt, data, out);
	default:
		return reply_error(out, opt->option, NBD_REP_ERR_UNSUP,
				   "option %u (%s) is not supported", opt->option,
				   proto_opt_name(opt->option));
	}
}

int proto_negotiate(struct proto_session *s, const struct proto_exports *ex,
		    const struct proto_option *opt, const uint8_t *data,
		    struct proto_buf *out)
{
	struct proto_session next = *s;
	size_t start = out->len;
	int ret;

	if (s->phase != PROTO_PHASE_OPTIONS)
		return -EINVAL;
	/* SET_META_CONTEXT replaces the selection, even when it fails. */
	if (opt->option == NBD_OPT_SET_META_CONTEXT) {
		next.meta_base_allocation = false;
		next.meta_extra = 0;
		next.meta_export = NULL;
	}
	ret = negotiate_one(&next, ex, opt, data, out);
	if (ret < 0) {
		out->len = start;
		return ret;
	}
	*s = next;
	return 0;
}

const char *proto_opt_name(uint32_t option)
{
	static const char *const names[] = {
		[NBD_OPT_EXPORT_NAME] = "NBD_OPT_EXPORT_NAME",
		[NBD_OPT_ABORT] = "NBD_OPT_ABORT",
		[NBD_OPT_LIST] = "NBD_OPT_LIST",
		[NBD_OPT_PEEK_EXPORT] = "NBD_OPT_PEEK_EXPORT",
		[NBD_OPT_STARTTLS] = "NBD_OPT_STARTTLS",
		[NBD_OPT_INFO] = "NBD_OPT_INFO",
		[NBD_OPT_GO] = "NBD_OPT_GO",
		[NBD_OPT_STRUCTURED_REPLY] = "NBD_OPT_STRUCTURED_REPLY",
		[NBD_OPT_LIST_META_CONTEXT] = "NBD_OPT_LIST_META_CONTEXT",
		[NBD_OPT_SET_META_CONTEXT] = "NBD_OPT_SET_META_CONTEXT",
		[NBD_OPT_EXTENDED_HEADERS] = "NBD_OPT_EXTENDED_HEADERS",
	};

	if (option < sizeof(names) / sizeof(names[0]) && names[option])
		return names[option];
	return "?";
}
