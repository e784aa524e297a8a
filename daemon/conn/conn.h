/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * conn: client connections on their workers, as the layers above see
 * them (conn_int.h has the connection side's own types): what a worker
 * and the service ask of its connections, and TLS credentials.
 */
#ifndef URINGNBD_CONN_H
#define URINGNBD_CONN_H

#include <stdbool.h>
#include <stdint.h>

#include "../../proto/proto.h"
#include "../base/base.h"
#include "../engine/engine.h"
#include "../storage/storage.h"

/*
 * A connection handed over by the process before this one (handover.c):
 * in transmission already, with what it negotiated and the bytes it sent
 * that were not yet parsed.
 */
struct conn_resume {
	struct export *exp;       /* a reference, the conn's from adoption on */
	struct proto_session sess; /* phase TRANSMISSION, export described */
	uint64_t id;              /* the id it had */
	uint8_t *pending;         /* heap: received, not parsed yet */
	size_t npending;
};

/*
 * What the connection layer asks of the service that hosts it: one table,
 * registered once at start-up (conns_init), before the first worker
 * starts. The functions are called on any worker; the settings do not
 * change after start.
 */
struct tls_creds;
struct conn_host {
	void *ctx;                /* each function's first argument */
	/* Negotiation holds the export table steady between these (a reload waits). */
	void (*exports_lock)(void *ctx);
	void (*exports_unlock)(void *ctx);
	/* Under that lock: the export named name, or the i-th (0, or -ENOENT), as proto.h wants. */
	int (*export_lookup)(void *ctx, const char *name, size_t name_len, struct proto_export *out);
	int (*export_nth)(void *ctx, size_t i, struct proto_export *out);
	/* Before a client sees an export: files that changed are reopened for those to come. */
	void (*refresh_exports)(void *ctx);
	bool (*shutting_down)(void *ctx);
	bool (*list_refused)(void *ctx); /* a reload may change it */
	/* The TLS credentials in force, a new reference (NULL: none). */
	struct tls_creds *(*tls_creds)(void *ctx);
	/* A client is gone: closed, or never adopted (any thread). */
	void (*conn_gone)(void *ctx, const struct client_key *key);
	enum proto_tls tls_mode;  /* off, on, require */
	unsigned handshake_timeout_s; /* 0: none */
	unsigned io_timeout_s;    /* a stalled reply or payload ends its connection; 0: never */
	unsigned idle_timeout_s;  /* an idle connection is closed; 0: never */
	struct cache *cache;      /* shared by every cached export, or NULL */
	unsigned test_fill_delay_ms; /* test builds only: hold cache fills open */
};
void conns_init(const struct conn_host *host);
/* The connections are a worker's clients: main.c hands this to worker_set_clients(). */
extern const struct worker_clients_ops conns_worker_ops;
/* One connection as the control socket reports it (filled on its worker). */
struct conn_info {
	uint64_t id;
	struct export *exp;       /* a reference (export_put it), or NULL while negotiating */
	char peer[96];            /* conn_peer_name() */
	char *tls_identity;       /* heap: PSK user or certificate DN, or NULL */
	bool tls;                 /* TLS is up */
	const char *state;        /* "negotiating", "serving", "closing" (static) */
	int worker;
	double age_s;
	unsigned in_flight;       /* requests received, not yet done with */
	uint64_t requests, errors, bytes_read, bytes_written;
};
/* On w's thread: every connection of w into *out (heap). Returns the count, or -ENOMEM. */
int conns_report(struct worker *w, struct conn_info **out);
/*
 * On w's thread: connection id (0: any) of the export named export (NULL:
 * any) stops reading requests and closes once those in flight are replied
 * to; one still busy after WORKER_STOP_GRACE_S is closed anyway. Returns
 * how many matched.
 */
unsigned conns_disconnect(struct worker *w, uint64_t id, const char *export);

/* What a connection parked for a hand-over is (filled on its worker). */
struct conn_parked {
	int fd;
	uint64_t id;
	struct export *exp;       /* a reference */
	struct proto_session sess;
	struct client_key key;
	struct client_peer peer;
	uint8_t *pending;         /* heap copy of what was received, not parsed */
	size_t npending;
};
/*
 * On w's thread, for a hand-over: negotiating connections close, TLS ones
 * close once their requests are answered, the others stop reading new
 * requests (what arrived stays unparsed) and are parked once every request
 * is answered. A check polls; when no connection is left that is not
 * parked (WORKER_STOP_GRACE_S at most: the rest are closed), done is
 * posted to w (its caller then takes them with conns_parked).
 */
void conns_handover(struct worker *w, struct op *done);
/* On w's thread: its parked connections into *out (heap). Returns the count, or -ENOMEM. */
int conns_parked(struct worker *w, struct conn_parked **out);
/* On w's thread: the hand-over failed; parked connections read requests again. */
void conns_unpark(struct worker *w);
/* This process's hand-over so far: connections closed because TLS, and negotiating. */
void conns_handover_closed(unsigned *tls, unsigned *negotiating);

/* ---- tls.c: credentials (main thread) ---- */
struct tls_creds; /* reference counted; a connection holds one from STARTTLS on */
int tls_init(void);
/*
 * Loads X.509 files from certs_dir (ca-cert.pem, server-cert.pem,
 * server-key.pem, ca-crl.pem if present) and/or a psktool file. Logs what
 * is wrong and returns NULL on any error.
 */
struct tls_creds *tls_creds_load(const char *certs_dir, const char *psk_file, bool verify_peer);
struct tls_creds *tls_creds_get(struct tls_creds *cr);
void tls_creds_put(struct tls_creds *cr);

/* ---- ublk.c: an export as a local block device, /dev/ublkbN ---- */
struct ublk_dev;
/*
 * Whether this kernel can serve ublk devices: its UBLK_F_* features, or
 * -errno with why filled in ("--ublk needs a kernel with ublk_drv").
 */
int ublk_probe(char *why, size_t len);
/*
 * Makes /dev/ublkbN for e (a reference it takes), its queues served by the
 * nw workers ws[] (queue i by ws[i % nw]); a device a previous process left
 * for e's name is taken over instead (UBLK_F_USER_RECOVERY). Blocks until
 * the device is started: not on a worker. NULL, with msg, on failure.
 */
struct ublk_dev *ublk_attach(struct export *e, struct worker *ws, unsigned nw, char *msg,
			     size_t len);
/*
 * Stops and deletes d, and frees it: 0; or -EBUSY (msg) while the device is
 * mounted or open exclusively, unless force. Blocks: not on a worker.
 */
int ublk_detach(struct ublk_dev *d, bool force, char *msg, size_t len);
/*
 * A restart, or a stop while d is in use: d is left to the next process,
 * which takes it over. The requests in hand finish first (it blocks until
 * they have); after the workers are joined, ublk_released_free() frees
 * what the process kept of it.
 */
void ublk_release(struct ublk_dev *d);
void ublk_released_free(void);
int ublk_dev_id(const struct ublk_dev *d);
bool ublk_dev_recovered(const struct ublk_dev *d);
/* Whether a next process can take d over (UBLK_F_USER_RECOVERY). */
bool ublk_dev_recoverable(const struct ublk_dev *d);
unsigned ublk_dev_queues(const struct ublk_dev *d);

#endif
