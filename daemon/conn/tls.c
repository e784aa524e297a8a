// SPDX-License-Identifier: BSD-3-Clause
/*
 * TLS (GnuTLS) on the io_uring path.
 *
 * Credentials (tls_creds.c): X.509 from a directory in nbdkit's layout (ca-cert.pem,
 * server-cert.pem, server-key.pem, optional ca-crl.pem), and/or PSK from a
 * psktool file. They are loaded on the main thread at start and on SIGHUP,
 * reference counted, and taken by each connection at STARTTLS, so a reload
 * changes what new connections get and never what a running one has.
 *
 * A connection's TLS: GnuTLS never touches the socket. Its pull function
 * reads ciphertext from a buffer that one io_uring receive at a time fills;
 * its push function appends ciphertext to a buffer that one io_uring send at
 * a time empties (two buffers: one in flight, one filling, so GnuTLS may
 * push at any time without moving memory the kernel is reading). The
 * connection's own receives and sends (handshake.c, rx.c, reply.c) go
 * through tls_recv()/tls_send() instead of SQEs of their own: plaintext is
 * decrypted straight into the caller's buffers (rxbuf, a WRITE's pool
 * chunks) and encrypted straight from them, and the caller's conn_op is
 * posted when its receive or send is done, exactly as an SQE's would
 * complete. Sends are corked: a reply batch (headers and data pages) goes
 * out as full 16 KiB records, up to TLS_OUT_ROUND bytes of plaintext a
 * round, so a slow reader holds at most two rounds of ciphertext.
 *
 * kTLS would slot in here: after the handshake, hand the keys to the
 * socket (setsockopt TCP_ULP "tls") and let tls_recv/tls_send fall back to
 * plain SQEs. This kernel has no kTLS, so that path is not shipped.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "tls_int.h"

#define TLS_IN_BYTES (64u * 1024)      /* ciphertext received at a time (records are <= 16 KiB + 256) */
#define TLS_OUT_ROUND (256u * 1024)    /* plaintext encrypted before the ciphertext must go */

struct tls_buf {
	uint8_t *p;
	size_t len, cap, off;  /* off: sent so far (the buffer in flight) */
};

struct tls_conn {
	gnutls_session_t s;
	struct tls_creds *creds;
	struct conn *c;
	bool up;                   /* handshake done */
	char *identity;            /* DN of a verified client certificate, or PSK username */
	char *name;                /* its CN, or the PSK username: what tls-allow matches */
	/* ciphertext in */
	uint8_t *in;
	size_t in_start, in_end;
	bool in_busy, in_eof;
	int in_err;
	struct conn_op in_op;
	/* ciphertext out */
	struct tls_buf out[2];
	int fill;                  /* out[fill] is filling; out[!fill] may be in flight */
	bool out_busy;
	int out_err;
	struct conn_op out_op;
	/* the handshake's waiter, and its result once the alert (if any) is out */
	struct conn_op *hs;
	int hs_res;
	bool hs_over;
	/* the connection's receive in progress */
	struct conn_op *rd;
	const struct iovec *rd_iov;
	unsigned rd_niov, rd_i;
	size_t rd_off, rd_done;
	bool rd_waitall;
	struct iovec rd_one;
	/* the connection's send in progress */
	struct conn_op *wr;
	const struct iovec *wr_iov;
	unsigned wr_niov, wr_i;
	size_t wr_off, wr_done;
	struct iovec wr_one;
};


/* ---- the transport GnuTLS sees ---- */

static ssize_t tls_pull(gnutls_transport_ptr_t p, void *buf, size_t len)
{
	struct tls_conn *t = p;
	size_t n = t->in_end - t->in_start;

	if (n == 0) {
		if (t->in_eof)
			return 0;
		gnutls_transport_set_errno(t->s, t->in_err ? t->in_err : EAGAIN);
		return -1;
	}
	if (n > len)
		n = len;
	memcpy(buf, t->in + t->in_start, n);
	t->in_start += n;
	return (ssize_t)n;
}

/* Never called for waiting (the session is non-blocking): there is data, or pull says EAGAIN. */
static int tls_pull_timeout(gnutls_transport_ptr_t p, unsigned int ms)
{
	(void)p;
	(void)ms;
	return 1;
}

static ssize_t tls_push(gnutls_transport_ptr_t p, const void *data, size_t len)
{
	struct tls_conn *t = p;
	struct tls_buf *b = &t->out[t->fill];

	/* out[fill] is never in flight: growing it moves nothing the kernel reads. */
	if (b->cap - b->len < len) {
		size_t cap = b->cap ? b->cap : 32768;
		uint8_t *q;

		while (cap - b->len < len)
			cap *= 2;
		q = realloc(b->p, cap);
		if (!q) {
			gnutls_transport_set_errno(t->s, ENOMEM);
			return -1;
		}
		b->p = q;
		b->cap = cap;
	}
	memcpy(b->p + b->len, data, len);
	b->len += len;
	return (ssize_t)len;
}

static void tls_post(struct tls_conn *t, struct conn_op **slot, int res)
{
	struct conn_op *o = *slot;

	*slot = NULL;
	/* Counted by conn_expect() when it was handed over. */
	worker_post(t->c->w, &o->op, res);
}

static void tls_out_done(struct conn_op *o, int res);
static void tls_pump_write(struct tls_conn *t);
static void tls_pump_read(struct tls_conn *t);
static void tls_pump_handshake(struct tls_conn *t);

/* Sends out[fill] if nothing is in flight. */
static void tls_flush(struct tls_conn *t)
{
	struct tls_buf *b = &t->out[t->fill];
	struct io_uring_sqe *sqe;

	if (t->out_busy || !b->len || t->out_err || t->c->state == CONN_CLOSING)
		return;
	t->fill ^= 1;
	t->out_busy = true;
	b->off = 0;
	sqe = conn_sqe(&t->out_op);
	conn_prep_send(sqe, t->c, b->p, b->len);
}

/* The handshake is over with res; a failure waits until its alert is sent. */
static void tls_hs_end(struct tls_conn *t, int res)
{
	t->hs_res = res;
	t->hs_over = true;
	if (res == 0 || !t->out_busy)
		tls_post(t, &t->hs, res);
}

static void tls_out_done(struct conn_op *o, int res)
{
	struct tls_conn *t = container_of(o, struct tls_conn, out_op);
	struct tls_buf *b = &t->out[t->fill ^ 1];

	t->out_busy = false;
	if (res <= 0 || t->c->state == CONN_CLOSING) {
		t->out_err = res < 0 ? -res : EPIPE;
		if (t->wr)
			tls_post(t, &t->wr, -t->out_err);
		if (t->hs && t->hs_over)
			tls_post(t, &t->hs, t->hs_res);
		return;
	}
	conn_progress(t->c);
	b->off += (size_t)res;
	if (b->off < b->len) {
		struct io_uring_sqe *sqe = conn_sqe(&t->out_op);

		t->out_busy = true;
		conn_prep_send(sqe, t->c, b->p + b->off, b->len - b->off);
		return;
	}
	b->len = 0;
	if (t->hs && t->hs_over) {
		tls_post(t, &t->hs, t->hs_res);
		return;
	}
	tls_pump_write(t);
	tls_flush(t);
}

static void tls_in_done(struct conn_op *o, int res)
{
	struct tls_conn *t = container_of(o, struct tls_conn, in_op);

	t->in_busy = false;
	if (t->c->state == CONN_CLOSING && res > 0)
		res = -ECONNRESET;
	if (res == 0)
		t->in_eof = true;
	else if (res < 0)
		t->in_err = -res;
	else
		t->in_end += (size_t)res;
	if (t->hs && !t->hs_over)
		tls_pump_handshake(t);
	else
		tls_pump_read(t);
}

/* More ciphertext is needed: one receive behind what is buffered. */
static void tls_arm_recv(struct tls_conn *t)
{
	struct io_uring_sqe *sqe;

	if (t->in_busy || t->in_eof || t->in_err || t->c->state == CONN_CLOSING)
		return;
	if (t->in_start == t->in_end) {
		t->in_start = t->in_end = 0;
	} else if (t->in_start) {
		memmove(t->in, t->in + t->in_start, t->in_end - t->in_start);
		t->in_end -= t->in_start;
		t->in_start = 0;
	}
	assert(t->in_end < TLS_IN_BYTES);
	t->in_busy = true;
	sqe = conn_sqe(&t->in_op);
	conn_prep_recv(sqe, t->c, t->in + t->in_end, TLS_IN_BYTES - t->in_end, false);
}

static int tls_fail_errno(struct tls_conn *t)
{
	return t->in_err ? -t->in_err : -ECONNRESET;
}

static void tls_log_failure(struct tls_conn *t, const char *what, int r)
{
	char who[96];

	if (r == GNUTLS_E_FATAL_ALERT_RECEIVED || r == GNUTLS_E_WARNING_ALERT_RECEIVED) {
		log_info("conn %" PRIu64 " (%s): TLS %s failed: the client sent alert \"%s\"", t->c->id,
			 conn_peer_name(t->c, who, sizeof(who)), what,
			 gnutls_alert_get_name(gnutls_alert_get(t->s)));
	} else if (r == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
		gnutls_datum_t why = { NULL, 0 };
		unsigned status = gnutls_session_get_verify_cert_status(t->s);

		gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &why, 0);
		log_info("conn %" PRIu64 " (%s): TLS %s failed: client certificate refused: %s",
			 t->c->id, conn_peer_name(t->c, who, sizeof(who)), what,
			 why.data ? (const char *)why.data : gnutls_strerror(r));
		gnutls_free(why.data);
	} else if (r == GNUTLS_E_PULL_ERROR || r == GNUTLS_E_PREMATURE_TERMINATION) {
		log_info("conn %" PRIu64 " (%s): TLS %s failed: the client closed the connection (%s)",
			 t->c->id, conn_peer_name(t->c, who, sizeof(who)), what,
			 !t->up ? "did it refuse this server's certificate or key?" :
			 gnutls_strerror(r));
	} else {
		log_info("conn %" PRIu64 " (%s): TLS %s failed: %s", t->c->id,
			 conn_peer_name(t->c, who, sizeof(who)), what, gnutls_strerror(r));
	}
}

/* The identity the handshake proved: a PSK username, or a verified certificate's DN. */
static void tls_take_identity(struct tls_conn *t)
{
	if (gnutls_auth_get_type(t->s) == GNUTLS_CRD_PSK) {
		const char *u = gnutls_psk_server_get_username(t->s);

		if (u) {
			t->identity = strdup(u);
			t->name = strdup(u);
		}
	} else if (t->creds->verify_peer) {
		unsigned n = 0;
		const gnutls_datum_t *peers = gnutls_certificate_get_peers(t->s, &n);
		gnutls_x509_crt_t crt;
		gnutls_datum_t dn = { NULL, 0 };

		if (!peers || !n || gnutls_x509_crt_init(&crt) < 0)
			return;
		if (gnutls_x509_crt_import(crt, &peers[0], GNUTLS_X509_FMT_DER) == 0) {
			char cn[256];
			size_t len = sizeof(cn);

			if (gnutls_x509_crt_get_dn3(crt, &dn, 0) == 0) {
				t->identity = strndup((const char *)dn.data, dn.size);
				gnutls_free(dn.data);
			}
			if (gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, cn,
							  &len) == 0)
				t->name = strndup(cn, len);
		}
		gnutls_x509_crt_deinit(crt);
	}
}

static void tls_pump_handshake(struct tls_conn *t)
{
	int r;

	if (t->c->state == CONN_CLOSING) {
		tls_hs_end(t, -ECONNRESET);
		return;
	}
	do {
		r = gnutls_handshake(t->s);
	} while (r < 0 && r != GNUTLS_E_AGAIN && !gnutls_error_is_fatal(r));
	if (r == 0) {
		t->up = true;
		tls_take_identity(t);
		tls_flush(t);
		tls_hs_end(t, 0);
		return;
	}
	if (r == GNUTLS_E_AGAIN && !t->in_eof && !t->in_err) {
		tls_flush(t);
		tls_arm_recv(t);
		return;
	}
	if (r == GNUTLS_E_AGAIN)
		r = GNUTLS_E_PREMATURE_TERMINATION;
	tls_log_failure(t, "handshake", r);
	if (t->c->result < 0)
		t->c->result = CONN_RESULT_TLS_FAILED;
	/* Tell the client why (bad certificate, unknown PSK user...), then close. */
	if (!t->in_eof && !t->in_err)
		gnutls_alert_send_appropriate(t->s, r);
	tls_flush(t);
	tls_hs_end(t, -ECONNABORTED);
}

/* Decrypts into the waiting receive's buffers until it is satisfied or ciphertext runs out. */
static void tls_pump_read(struct tls_conn *t)
{
	unsigned warnings = 0;

	while (t->rd) {
		const struct iovec *v;
		ssize_t r;

		if (t->rd_i == t->rd_niov) {
			tls_post(t, &t->rd, (int)t->rd_done);
			break;
		}
		v = &t->rd_iov[t->rd_i];
		if (t->rd_off == v->iov_len) {
			t->rd_i++;
			t->rd_off = 0;
			continue;
		}
		if (t->c->state == CONN_CLOSING) {
			tls_post(t, &t->rd, -ECONNRESET);
			break;
		}
		r = gnutls_record_recv(t->s, (uint8_t *)v->iov_base + t->rd_off, v->iov_len - t->rd_off);
		if (r > 0) {
			t->rd_off += (size_t)r;
			t->rd_done += (size_t)r;
			continue;
		}
		if (r == 0) {
			/* close_notify, or the socket's end: what arrived, then 0. */
			tls_post(t, &t->rd, (int)t->rd_done);
			break;
		}
		if (r == GNUTLS_E_AGAIN) {
			if (t->in_eof || t->in_err) {
				tls_post(t, &t->rd, t->rd_done ? (int)t->rd_done :
						    t->in_eof ? 0 : tls_fail_errno(t));
				break;
			}
			if (t->rd_done && !t->rd_waitall) {
				tls_post(t, &t->rd, (int)t->rd_done);
				break;
			}
			tls_arm_recv(t);
			break;
		}
		/* A warning alert and the like, a few times; renegotiation is not offered. */
		if ((r == GNUTLS_E_INTERRUPTED || !gnutls_error_is_fatal((int)r)) &&
		    r != GNUTLS_E_REHANDSHAKE && ++warnings < 16)
			continue;
		if (r == GNUTLS_E_PREMATURE_TERMINATION || r == GNUTLS_E_PULL_ERROR) {
			/* The socket ended without close_notify: an end of stream like any other. */
			tls_post(t, &t->rd, t->rd_done ? (int)t->rd_done :
					    t->in_err ? -t->in_err : 0);
			break;
		}
		tls_log_failure(t, "receive", (int)r);
		t->in_err = EPROTO;
		tls_post(t, &t->rd, -EPROTO);
	}
	/* A key update may have queued a record to send. */
	tls_flush(t);
}

/* Encrypts the waiting send's buffers, a round at a time, behind the ciphertext in flight. */
static void tls_pump_write(struct tls_conn *t)
{
	size_t round = 0;
	ssize_t r;

	if (!t->wr)
		return;
	if (t->out_err) {
		tls_post(t, &t->wr, -t->out_err);
		return;
	}
	if (t->out[t->fill].len >= TLS_OUT_ROUND)
		return; /* resumed when the send in flight is done */
	gnutls_record_cork(t->s);
	while (t->wr_i < t->wr_niov && round < TLS_OUT_ROUND) {
		const struct iovec *v = &t->wr_iov[t->wr_i];
		size_t n = v->iov_len - t->wr_off;

		if (n == 0) {
			t->wr_i++;
			t->wr_off = 0;
			continue;
		}
		if (n > TLS_OUT_ROUND - round)
			n = TLS_OUT_ROUND - round;
		r = gnutls_record_send(t->s, (const uint8_t *)v->iov_base + t->wr_off, n);
		if (r < 0) {
			tls_log_failure(t, "send", (int)r);
			t->out_err = EIO;
			break;
		}
		t->wr_off += (size_t)r;
		t->wr_done += (size_t)r;
		round += (size_t)r;
	}
	do {
		r = gnutls_record_uncork(t->s, 0);
	} while (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED);
	if (r < 0 && !t->out_err) {
		tls_log_failure(t, "send", (int)r);
		t->out_err = EIO;
	}
	if (t->out_err)
		tls_post(t, &t->wr, -t->out_err);
	else if (t->wr_i == t->wr_niov)
		/* All encrypted: the caller may reuse its buffers; the ciphertext goes on. */
		tls_post(t, &t->wr, (int)t->wr_done);
}

/* ---- what the connection calls ---- */

int tls_conn_start(struct conn *c, struct tls_creds *creds, struct conn_op *done)
{
	struct tls_conn *t = calloc(1, sizeof(*t));
	int r;

	if (!t)
		return -ENOMEM;
	t->c = c;
	t->creds = tls_creds_get(creds);
	c->tls = t;  /* freed with the connection from here on */
	t->in = malloc(TLS_IN_BYTES);
	if (!t->in)
		return -ENOMEM;
	r = gnutls_init(&t->s, GNUTLS_SERVER | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL);
	if (r < 0) {
		t->s = NULL;
		goto err;
	}
	r = gnutls_priority_set(t->s, creds->prio);
	if (r == 0 && creds->x509)
		r = gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, creds->x509);
	if (r == 0 && creds->psk)
		r = gnutls_credentials_set(t->s, GNUTLS_CRD_PSK, creds->psk);
	if (r < 0)
		goto err;
	if (creds->x509) {
		gnutls_certificate_server_set_request(t->s, creds->verify_peer ? GNUTLS_CERT_REQUIRE :
							     GNUTLS_CERT_IGNORE);
		/* Checked by the handshake itself: a bad certificate fails it. */
		if (creds->verify_peer)
			gnutls_session_set_verify_cert(t->s, NULL, 0);
	}
	gnutls_handshake_set_timeout(t->s, 0); /* handshake-timeout bounds it */
	gnutls_transport_set_ptr(t->s, t);
	gnutls_transport_set_push_function(t->s, tls_push);
	gnutls_transport_set_pull_function(t->s, tls_pull);
	gnutls_transport_set_pull_timeout_function(t->s, tls_pull_timeout);
	conn_op_init(&t->in_op, c, tls_in_done);
	conn_op_init(&t->out_op, c, tls_out_done);
	conn_expect(done);
	t->hs = done;
	tls_pump_handshake(t);
	return 0;

err:
	log_error("conn %" PRIu64 ": TLS session: %s", c->id, gnutls_strerror(r));
	return -EIO;
}

void tls_recv(struct conn_op *o, const struct iovec *iov, unsigned niov, bool waitall)
{
	struct tls_conn *t = o->c->tls;

	assert(t && t->up && !t->rd);
	conn_expect(o);
	t->rd = o;
	if (niov == 1) {
		t->rd_one = iov[0];
		iov = &t->rd_one;
	}
	t->rd_iov = iov;
	t->rd_niov = niov;
	t->rd_i = 0;
	t->rd_off = t->rd_done = 0;
	t->rd_waitall = waitall;
	tls_pump_read(t);
}

void tls_send(struct conn_op *o, const struct iovec *iov, unsigned niov)
{
	struct tls_conn *t = o->c->tls;

	assert(t && t->up && !t->wr);
	conn_expect(o);
	t->wr = o;
	if (niov == 1) {
		t->wr_one = iov[0];
		iov = &t->wr_one;
	}
	t->wr_iov = iov;
	t->wr_niov = niov;
	t->wr_i = 0;
	t->wr_off = t->wr_done = 0;
	tls_pump_write(t);
	tls_flush(t);
}

bool tls_cancel_recv(struct conn *c, struct conn_op *o)
{
	struct tls_conn *t = c->tls;

	/* Nothing has been written into its buffer yet: it can simply end. */
	if (!t || t->rd != o || t->rd_done)
		return false;
	tls_post(t, &t->rd, -ECANCELED);
	return true;
}

void tls_conn_closing(struct conn *c)
{
	struct tls_conn *t = c->tls;

	if (!t)
		return;
	/*
	 * The protocol: a party that drops the connection SHOULD shut TLS
	 * down first. A close_notify when nothing else is waiting to go out
	 * (else the connection is cut as it stands), sent before the socket's
	 * shutdown; best effort, a few bytes.
	 */
	if (t->up && !t->out_busy && !t->out_err && !t->out[t->fill].len && !c->stream &&
	    gnutls_bye(t->s, GNUTLS_SHUT_WR) == GNUTLS_E_SUCCESS && t->out[t->fill].len) {
		if (send(c->fd, t->out[t->fill].p, t->out[t->fill].len, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
			log_debug("conn %" PRIu64 ": close_notify: %s", c->id, strerror(errno));
		t->out[t->fill].len = 0;
	}
	/* Ops waiting on data that will not come end now; SQEs end with the socket's shutdown. */
	if (t->rd)
		tls_post(t, &t->rd, -ECONNRESET);
	if (t->wr && !t->out_busy)
		tls_post(t, &t->wr, -ECONNRESET);
	if (t->hs && !t->in_busy && !t->out_busy)
		tls_post(t, &t->hs, -ECONNRESET);
}

void tls_conn_free(struct conn *c)
{
	struct tls_conn *t = c->tls;

	if (!t)
		return;
	assert(!t->rd && !t->wr && !t->hs && !t->in_busy && !t->out_busy);
	if (t->s)
		gnutls_deinit(t->s);
	tls_creds_put(t->creds);
	free(t->in);
	free(t->out[0].p);
	free(t->out[1].p);
	free(t->identity);
	free(t->name);
	free(t);
	c->tls = NULL;
}

bool tls_conn_up(const struct conn *c)
{
	return c->tls && c->tls->up;
}

const char *tls_conn_identity(const struct conn *c)
{
	return c->tls && c->tls->up ? c->tls->identity : NULL;
}

const char *tls_conn_name(const struct conn *c)
{
	return c->tls && c->tls->up ? c->tls->name : NULL;
}

char *tls_conn_desc(const struct conn *c)
{
	return c->tls && c->tls->up ? gnutls_session_get_desc(c->tls->s) : NULL;
}

void tls_desc_free(char *desc)
{
	gnutls_free(desc);
}
