// SPDX-License-Identifier: BSD-3-Clause
/*
 * The handshake: the greeting, the client's flags, and option haggling
 * until an export is chosen (or the client goes).
 *
 * Handshake I/O is exact: each step sends or receives a known number of
 * bytes (short transfers are resubmitted), and option replies come from
 * proto_negotiate(), which holds the whole of the protocol's rules. Once an
 * export is chosen the connection moves to rx.c for good. A negotiation that
 * has not chosen an export within the handshake timeout is closed, so silent
 * clients cannot hold connection slots.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "conn_int.h"

enum hs_step {
	HS_GREETING,
	HS_CLIENT_FLAGS,
	HS_OPT_HDR,
	HS_OPT_DATA,
	HS_OPT_SKIP,
	HS_REPLY,
	HS_TLS,       /* the TLS handshake after an acknowledged STARTTLS */
};

#define HS_SKIP_CHUNK 65536
#define HS_MAX_OPTIONS 256 /* per negotiation; real clients send a handful */
#define HS_REFUSALS_LOGGED 4 /* access refusals logged per connection */

static uint8_t greeting[PROTO_GREETING_LEN];
static pthread_once_t greeting_once = PTHREAD_ONCE_INIT;

static void greeting_init(void)
{
	proto_encode_greeting(greeting);
}

static void hs_io(struct conn *c, enum hs_step step, bool send, void *p, size_t len)
{
	c->hs_step = step;
	c->io_ptr = p;
	c->io_left = len;
	if (send)
		conn_send(&c->hs_op, p, len);
	else
		conn_recv(&c->hs_op, p, len, true);
}

/* Who this connection is, for the exports' access rules. */
static struct client_who hs_who(const struct conn *c)
{
	return (struct client_who){
		.key = &c->key,
		.peer = &c->peer,
		.tls = tls_conn_up(c),
		.tls_name = tls_conn_name(c),
	};
}

/*
 * The exports as this client may see them (struct proto_exports, ctx = c):
 * one it is refused is ERR_POLICY and absent from LIST; one it may have
 * only over TLS is marked tls_only.
 */
static int hs_lookup(void *ctx, const char *name, size_t name_len, struct proto_export *out)
{
	struct conn *c = ctx;
	struct client_who who = hs_who(c);
	const struct export *e;
	enum access_verdict v;
	int ret = conn_host.export_lookup(conn_host.ctx, name, name_len, out);
	char who_s[96], name_s[4 * 64 + 4];

	if (ret < 0)
		return ret;
	e = out->opaque;
	v = access_check(&e->access, &who);
	out->tls_only = e->access.tls_only;
	if (v == ACCESS_DENIED) {
		/* Each connection's refusals, a few: it may ask 256 times. */
		if (c->hs_refusals_logged++ < HS_REFUSALS_LOGGED)
			log_info("conn %" PRIu64 " (%s%s%s): export \"%s\" refused by its access rules",
				 c->id, conn_peer_name(c, who_s, sizeof(who_s)),
				 who.tls_name ? ", TLS " : "", who.tls_name ? who.tls_name : "",
				 log_escape(name, name_len, name_s, sizeof(name_s)));
		return -EACCES;
	}
	return 0;
}

static int hs_nth(void *ctx, size_t i, struct proto_export *out)
{
	struct conn *c = ctx;
	struct client_who who = hs_who(c);
	size_t j, seen = 0;

	for (j = 0; conn_host.export_nth(conn_host.ctx, j, out) == 0; j++) {
		const struct export *e = out->opaque;

		if (access_check(&e->access, &who) == ACCESS_DENIED)
			continue;
		out->tls_only = e->access.tls_only;
		if (seen++ == i)
			return 0;
	}
	return -ENOENT;
}

/* STARTTLS was acknowledged and the ACK is out: the TLS handshake. */
static void hs_starttls(struct conn *c)
{
	struct tls_creds *creds = conn_host.tls_creds(conn_host.ctx);
	int ret;

	c->hs_step = HS_TLS;
	ret = creds ? tls_conn_start(c, creds, &c->hs_op) : -ENOPROTOOPT;
	tls_creds_put(creds);
	if (ret < 0)
		conn_close(c, "TLS session could not be set up");
}

static void hs_tls_done(struct conn *c, int res)
{
	char who[96], *desc;
	const char *id;

	if (res < 0) {
		conn_close(c, "TLS handshake failed");
		return;
	}
	/* Everything negotiated in plaintext is forgotten; the client starts over. */
	proto_session_tls_started(&c->sess);
	desc = tls_conn_desc(c);
	id = tls_conn_identity(c);
	log_info("conn %" PRIu64 " (%s): TLS %s%s%s", c->id, conn_peer_name(c, who, sizeof(who)),
		 desc ? desc : "up", id ? ", identity " : ", no client identity", id ? id : "");
	tls_desc_free(desc);
	hs_io(c, HS_OPT_HDR, false, c->hs_hdr, sizeof(c->hs_hdr));
}

static bool hs_step_sends(enum hs_step step)
{
	return step == HS_GREETING || step == HS_REPLY;
}

static void hs_timeout_fire(struct timer *t)
{
	struct conn *c = container_of(t, struct conn, hs_timer);

	if (c->state != CONN_HANDSHAKE)
		return;
	/* Where it stood: a client that stopped, or a step that never completed. */
	log_info("conn %" PRIu64 ": no export chosen within %u s: closing (after %u option%s, "
		 "waiting to %s %zu bytes, %u operation%s pending)", c->id,
		 conn_host.handshake_timeout_s, c->hs_options, c->hs_options == 1 ? "" : "s",
		 hs_step_sends(c->hs_step) ? "send" : "receive", c->io_left, c->pending,
		 c->pending == 1 ? "" : "s");
	if (c->result < 0)
		c->result = CONN_RESULT_HS_TIMEOUT;
	conn_close(c, NULL);
}

static void hs_option(struct conn *c)
{
	const uint8_t *data = c->opt.len_bytes <= PROTO_OPTION_DATA_MAX ? c->hs_buf : NULL;
	struct proto_exports ex = {
		.lookup = hs_lookup,
		.nth = hs_nth,
		.ctx = c,
		.shutting_down = conn_host.shutting_down(conn_host.ctx),
		.tls = conn_host.tls_mode,
		.list_refused = conn_host.list_refused(conn_host.ctx),
	};
	int ret;

	if (!data && c->opt.len_bytes == 0)
		data = (const uint8_t *)"";
	c->hs_out.len = 0;
	/* An export is about to be described or chosen: a grown, shrunk or replaced file shows. */
	if (c->opt.option == NBD_OPT_GO || c->opt.option == NBD_OPT_INFO ||
	    c->opt.option == NBD_OPT_EXPORT_NAME)
		conn_host.refresh_exports(conn_host.ctx);
	/* The table may be replaced by a reload; not while this looks in it. */
	conn_host.exports_lock(conn_host.ctx);
	while ((ret = proto_negotiate(&c->sess, &ex, &c->opt, data,
				      &c->hs_out)) == -ENOBUFS) {
		size_t cap = c->hs_out.cap ? c->hs_out.cap * 2 : 4096;
		uint8_t *p = realloc(c->hs_out.data, cap);

		if (!p)
			break;
		c->hs_out.data = p;
		c->hs_out.cap = cap;
	}
	if (ret == 0 && c->sess.phase == PROTO_PHASE_TRANSMISSION) {
		c->exp = c->sess.export.opaque;
		export_get((struct export *)c->exp); /* ours until the connection goes */
		c->transport = c->stream ? TRANSPORT_STDIO : c->tls ? TRANSPORT_TLS :
			       transport_of(c->key.family);
		stat_bump(&c->exp->ctr->slot[c->w->id].conns[c->transport], 1);
		c->result = CONN_RESULT_SERVED;
		stat_add(&c->w->stats.results[CONN_RESULT_SERVED], 1);
	}
	conn_host.exports_unlock(conn_host.ctx);
	if (ret < 0) {
		conn_close(c, "negotiation failed");
		return;
	}
	log_debug("conn %" PRIu64 ": %s (%u bytes of data)", c->id,
		  proto_opt_name(c->opt.option), c->opt.len_bytes);
	if (c->hs_out.len) {
		hs_io(c, HS_REPLY, true, c->hs_out.data, c->hs_out.len);
		return;
	}
	if (c->sess.phase == PROTO_PHASE_CLOSE) {
		char name[4 * 64 + 4];

		if (c->opt.option == NBD_OPT_EXPORT_NAME)
			log_info("conn %" PRIu64 ": refused NBD_OPT_EXPORT_NAME \"%s\"", c->id,
				 log_escape(data, data ? c->opt.len_bytes : 0, name, sizeof(name)));
		conn_close(c, "negotiation ended");
	} else {
		hs_io(c, HS_OPT_HDR, false, c->hs_hdr, sizeof(c->hs_hdr));
	}
}

static void hs_opt_hdr(struct conn *c)
{
	uint32_t len;

	if (proto_decode_option(c->hs_hdr, &c->opt) < 0) {
		conn_close(c, "bad option magic");
		return;
	}
	if (++c->hs_options > HS_MAX_OPTIONS) {
		log_warn("conn %" PRIu64 ": more than %u options in one negotiation: closing", c->id,
			 HS_MAX_OPTIONS);
		conn_close(c, NULL);
		return;
	}
	len = c->opt.len_bytes;
	if (len > PROTO_OPTION_DATA_MAX) {
		if (c->opt.option == NBD_OPT_EXPORT_NAME) {
			conn_close(c, "export name too long");
			return;
		}
		c->skip_left = len;
		if (c->hs_cap < HS_SKIP_CHUNK) {
			uint8_t *p = realloc(c->hs_buf, HS_SKIP_CHUNK);

			if (!p) {
				conn_close(c, "out of memory for option data");
				return;
			}
			c->hs_buf = p;
			c->hs_cap = HS_SKIP_CHUNK;
		}
		hs_io(c, HS_OPT_SKIP, false, c->hs_buf,
			   c->skip_left < HS_SKIP_CHUNK ? c->skip_left : HS_SKIP_CHUNK);
		return;
	}
	if (len == 0) {
		hs_option(c);
		return;
	}
	if (c->hs_cap < len + 1) {
		uint8_t *p = realloc(c->hs_buf, len + 1);

		if (!p) {
			conn_close(c, "out of memory for option data");
			return;
		}
		c->hs_buf = p;
		c->hs_cap = len + 1;
	}
	hs_io(c, HS_OPT_DATA, false, c->hs_buf, len);
}

static void hs_step_done(struct conn *c)
{
	switch (c->hs_step) {
	case HS_GREETING:
		hs_io(c, HS_CLIENT_FLAGS, false, c->hs_hdr, PROTO_CLIENT_FLAGS_LEN);
		break;
	case HS_CLIENT_FLAGS:
		if (proto_session_start(&c->sess, c->hs_hdr) < 0) {
			conn_close(c, "client sent unknown flags");
			return;
		}
		hs_io(c, HS_OPT_HDR, false, c->hs_hdr, sizeof(c->hs_hdr));
		break;
	case HS_OPT_HDR:
		hs_opt_hdr(c);
		break;
	case HS_OPT_DATA:
		c->hs_buf[c->opt.len_bytes] = 0;
		hs_option(c);
		break;
	case HS_OPT_SKIP:
		c->skip_left -= HS_SKIP_CHUNK < c->skip_left ? HS_SKIP_CHUNK : c->skip_left;
		if (c->skip_left)
			hs_io(c, HS_OPT_SKIP, false, c->hs_buf,
				   c->skip_left < HS_SKIP_CHUNK ? c->skip_left : HS_SKIP_CHUNK);
		else
			hs_option(c);
		break;
	case HS_REPLY:
		if (c->sess.starttls)
			hs_starttls(c);
		else if (c->sess.phase == PROTO_PHASE_TRANSMISSION)
			rx_start(c);
		else if (c->sess.phase == PROTO_PHASE_CLOSE)
			conn_close(c, "negotiation ended");
		else
			hs_io(c, HS_OPT_HDR, false, c->hs_hdr, sizeof(c->hs_hdr));
		break;
	default:
		assert(0);
	}
}

static void hs_done(struct conn_op *o, int res)
{
	struct conn *c = o->c;

	if (c->state == CONN_CLOSING)
		return;
	if (c->hs_step == HS_TLS) {
		hs_tls_done(c, res);
		return;
	}
	if (res <= 0) {
		conn_close(c, res == 0 ? "client closed during handshake" : strerror(-res));
		return;
	}
	assert((size_t)res <= c->io_left);
	c->io_ptr += res;
	c->io_left -= (size_t)res;
	if (c->io_left) {
		/* Short transfer: the rest of the same step. */
		hs_io(c, (enum hs_step)c->hs_step, hs_step_sends(c->hs_step), c->io_ptr,
			   c->io_left);
		return;
	}
	hs_step_done(c);
}

void handshake_start(struct conn *c)
{
	conn_op_init(&c->hs_op, c, hs_done);
	timer_init(&c->hs_timer, hs_timeout_fire);
	if (conn_host.handshake_timeout_s)
		worker_timer_in(c->w, &c->hs_timer,
				conn_host.handshake_timeout_s * 1000000000ull);
	pthread_once(&greeting_once, greeting_init);
	hs_io(c, HS_GREETING, true, greeting, sizeof(greeting));
}
