// SPDX-License-Identifier: BSD-3-Clause
/*
 * Restarts that keep connections: on SIGUSR2 the daemon parks every
 * plaintext connection (it stops reading requests; those in flight are
 * answered and flushed out; what the client sent meanwhile stays in the
 * socket, or unparsed in the connection's buffer), then execs its binary
 * again (the path it started from: after an upgrade, the new one) with the
 * listening sockets and the connections' sockets open, and their state in
 * a memfd. The new process reads the state, adopts the listeners, and hands
 * each connection to a worker in transmission, its unparsed bytes first:
 * the client sees a pause, never an error.
 *
 * What cannot be handed over is closed and said: a TLS session (GnuTLS
 * cannot export its record state) once its requests are answered, and a
 * connection still negotiating. If exec fails, the parked connections go
 * on in this process.
 *
 * The state, version 1, is JSON (json-c):
 *   {"format": "uringnbd-handover", "version": 1, "closed-tls": M,
 *    "closed-negotiating": K,
 *    "listeners": [{"fd": 3, "desc": "unix:/run/x.sock", "unix-path": "/run/x.sock"}],
 *    "connections": [{"fd": 12, "id": 5, "export": "vm", "size": N, "tflags": T,
 *       "structured": true, "extended": false, "base-allocation": true,
 *       "contexts": [{"id": 2, "name": "qemu:dirty-bitmap:b"}],
 *       "family": 1, "uid": 0, "addr": "hex", "port": 0, "cred": true, "gid": 0,
 *       "pid": 42, "pending": "hex"}],
 *    "ublk": ["disk"]}
 * The descriptors are also listed in the environment (URINGNBD_HANDOVER_LISTEN,
 * URINGNBD_HANDOVER_CONNS) beside URINGNBD_HANDOVER_FD, so that a process
 * that cannot read the state still adopts the listeners and closes the
 * connections cleanly (the clients reconnect) instead of leaking them.
 * A connection whose export is gone or changed (size, flags, contexts,
 * access) is closed the same way.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "service.h"

#define HANDOVER_FORMAT "uringnbd-handover"
#define HANDOVER_VERSION 1
#define ENV_STATE "URINGNBD_HANDOVER_FD"
#define ENV_LISTEN "URINGNBD_HANDOVER_LISTEN"
#define ENV_CONNS "URINGNBD_HANDOVER_CONNS"

struct handover_part {
	struct op op;              /* posted to the worker */
	struct op parked;          /* ...which posts this once its connections are parked */
	struct worker *w;
	struct conn_parked *conns; /* filled on the worker once parked */
	int n;
};

static struct {
	char exe[PATH_MAX];
	char **argv;
	struct server *srv;
	bool running;
	atomic_uint pending;       /* workers yet to park their connections */
	ev_async parked;
	bool parked_init;
	struct handover_part *parts;
	json_object *state;        /* the previous process's, until adopted */
	struct handover_stats stats;
	bool store;                /* this hand-over goes to systemd's fd store, not exec */
	/* Handed back by systemd's fd store (LISTEN_FDNAMES uringnbd-state, uringnbd-conn-ID). */
	int stored_state;          /* or -1 */
	struct stored_conn { int fd; uint64_t id; } *stored;
	size_t nstored;
} ho = { .stored_state = -1 };

#define STORE_STATE "uringnbd-state"
#define STORE_CONN "uringnbd-conn-"

void handover_init(int argc, char **argv)
{
	(void)argc;
	ho.argv = argv;
	if (!realpath("/proc/self/exe", ho.exe))
		ho.exe[0] = '\0';
}

void handover_stats(struct handover_stats *out)
{
	*out = ho.stats;
}

/* ---- the new process ---- */

static int hex_digit(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/*
 * Linear in the length: a connection's unparsed bytes can be a whole receive
 * buffer (256 KiB), and sscanf per byte rescans the rest of the string each
 * time (a 39 s stall in a slow guest, long enough for the client to time out).
 */
static int hex_decode(const char *s, uint8_t *out, size_t cap)
{
	size_t n = strlen(s), i;

	if (n % 2 || n / 2 > cap)
		return -1;
	for (i = 0; i < n / 2; i++) {
		int hi = hex_digit(s[2 * i]), lo = hex_digit(s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return (int)(n / 2);
}

static json_object *member(json_object *o, const char *k)
{
	json_object *v = NULL;

	return json_object_object_get_ex(o, k, &v) ? v : NULL;
}

static int64_t int_of(json_object *o, const char *k)
{
	return json_object_get_int64(member(o, k));
}

/* The fds listed in an environment variable ("3,5,9"), closed-on-exec from now on. */
static size_t env_fds(const char *name, int *fds, size_t max)
{
	const char *v = getenv(name);
	size_t n = 0;
	char *end;

	while (v && *v && n < max) {
		long fd = strtol(v, &end, 10);

		if (end == v || fd < 0 || fd > INT_MAX)
			break;
		fds[n++] = (int)fd;
		fcntl((int)fd, F_SETFD, FD_CLOEXEC);
		v = *end == ',' ? end + 1 : end;
	}
	return n;
}

/* The state in memfd fd (closed here), checked: ho.state, or NULL if unreadable (logged). */
static void read_state(int fd)
{
	size_t len = 0, cap = 0;
	char *text = NULL;
	ssize_t r;

	for (;;) {
		if (len + 65536 > cap) {
			char *t = realloc(text, cap = cap ? 2 * cap : 1 << 20);

			if (!t)
				break;
			text = t;
		}
		r = pread(fd, text + len, cap - len - 1, (off_t)len);
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	if (text) {
		text[len] = '\0';
		ho.state = json_tokener_parse(text);
	}
	free(text);
	if (ho.state && (!member(ho.state, "format") ||
			 strcmp(json_object_get_string(member(ho.state, "format")), HANDOVER_FORMAT) ||
			 int_of(ho.state, "version") != HANDOVER_VERSION)) {
		log_error("restart: the state handed over is version %" PRId64 " of \"%s\"; this "
			  "uringnbd reads version %d: its connections are closed (clients reconnect)",
			  int_of(ho.state, "version"),
			  member(ho.state, "format") ? json_object_get_string(member(ho.state, "format"))
						     : "?", HANDOVER_VERSION);
		json_object_put(ho.state);
		ho.state = NULL;
	} else if (!ho.state) {
		log_error("restart: the state handed over is unreadable: its connections are closed "
			  "(clients reconnect)");
	}
}

bool handover_stored(int fd, const char *name)
{
	struct stored_conn *n;

	if (!name)
		return false;
	if (!strcmp(name, STORE_STATE)) {
		fcntl(fd, F_SETFD, FD_CLOEXEC);
		if (ho.stored_state >= 0)
			close(ho.stored_state);
		ho.stored_state = fd;
		return true;
	}
	if (strncmp(name, STORE_CONN, strlen(STORE_CONN)))
		return false;
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	n = realloc(ho.stored, (ho.nstored + 1) * sizeof(*n));
	if (!n) {
		close(fd);
		return true;
	}
	ho.stored = n;
	ho.stored[ho.nstored].fd = fd;
	ho.stored[ho.nstored++].id = strtoull(name + strlen(STORE_CONN), NULL, 10);
	return true;
}

int handover_load(struct server *srv)
{
	int lfds[256], state_fd = getenv(ENV_STATE) ? atoi(getenv(ENV_STATE)) : -1;
	size_t nl = env_fds(ENV_LISTEN, lfds, 256), i;
	json_object *listeners = NULL;
	char desc[300];

	ho.srv = srv;
	if (state_fd < 0 && !nl)
		return 0;
	ho.stats.restarted = true;
	if (state_fd >= 0)
		read_state(state_fd);
	listeners = ho.state ? member(ho.state, "listeners") : NULL;
	for (i = 0; i < nl; i++) {
		const char *d = NULL, *path = NULL;
		size_t k;

		for (k = 0; listeners && k < json_object_array_length(listeners); k++) {
			json_object *l = json_object_array_get_idx(listeners, k);

			if (int_of(l, "fd") == lfds[i]) {
				d = json_object_get_string(member(l, "desc"));
				path = member(l, "unix-path") ? json_object_get_string(member(l, "unix-path"))
							       : NULL;
			}
		}
		snprintf(desc, sizeof(desc), "%s", d ? d : "a socket handed over");
		if (listen_adopt(srv, lfds[i], desc, path) < 0) {
			log_error("restart: adopting listener fd %d failed", lfds[i]);
			return -1;
		}
	}
	unsetenv(ENV_STATE);
	unsetenv(ENV_LISTEN);
	return (int)nl;
}

/* Why the connection described by o cannot go on with export e (NULL: it can). */
static const char *resume_check(json_object *o, const struct export *e, struct proto_session *s)
{
	json_object *ctx = member(o, "contexts");
	uint16_t tflags;
	size_t k;
	uint32_t j;

	if (!e)
		return "its export is gone";
	if ((uint64_t)int_of(o, "size") != e->size_bytes)
		return "its export changed size";
	if (e->access.tls_only)
		return "its export needs TLS now";
	memset(s, 0, sizeof(*s));
	s->phase = PROTO_PHASE_TRANSMISSION;
	s->structured = json_object_get_boolean(member(o, "structured"));
	s->extended = json_object_get_boolean(member(o, "extended"));
	s->no_zeroes = true;
	s->meta_base_allocation = json_object_get_boolean(member(o, "base-allocation"));
	for (k = 0; ctx && k < json_object_array_length(ctx); k++) {
		json_object *c = json_object_array_get_idx(ctx, k);
		int64_t id = int_of(c, "id");
		const char *name = json_object_get_string(member(c, "name"));

		/* The client knows it by its id: the same name must have the same one. */
		j = (uint32_t)(id - PROTO_META_ID_EXTRA);
		if (id < PROTO_META_ID_EXTRA || j >= e->nctx || !name || strcmp(e->ctx_names[j], name))
			return "a meta context it chose is gone or has another id";
		s->meta_extra |= 1u << j;
	}
	s->meta_export = e;
	export_describe(e, &s->export);
	tflags = e->tflags | NBD_FLAG_HAS_FLAGS;
	if (!s->structured)
		tflags &= (uint16_t)~NBD_FLAG_SEND_DF;
	if (s->extended && (s->meta_base_allocation || s->meta_extra))
		tflags |= NBD_FLAG_BLOCK_STAT_PAYLOAD;
	if (tflags != (uint16_t)int_of(o, "tflags"))
		return "its export's flags changed (read-only, or what it supports)";
	s->tflags = tflags;
	return NULL;
}

/* The stored descriptor of connection id (taken out of the list), or -1. */
static int stored_take(uint64_t id)
{
	size_t i;
	int fd;

	for (i = 0; i < ho.nstored; i++)
		if (ho.stored[i].fd >= 0 && ho.stored[i].id == id) {
			fd = ho.stored[i].fd;
			ho.stored[i].fd = -1;
			return fd;
		}
	return -1;
}

static void adopt_one(struct server *srv, json_object *o)
{
	struct client cl = { .fd = ho.nstored ? stored_take((uint64_t)int_of(o, "id"))
					      : (int)int_of(o, "fd") };
	struct client_who who = { .key = &cl.key, .peer = &cl.peer };
	const char *name = json_object_get_string(member(o, "export")), *why;
	struct conn_resume *r = calloc(1, sizeof(*r));
	const char *pending = json_object_get_string(member(o, "pending"));
	uint8_t addr[16] = { 0 };
	struct export *e;
	int n;

	if (cl.fd < 0) {
		free(r);
		return; /* stored without its descriptor: nothing to close */
	}
	cl.fd_out = cl.fd;
	cl.key.family = (int)int_of(o, "family");
	cl.key.uid = (uint32_t)int_of(o, "uid");
	if (member(o, "addr") && hex_decode(json_object_get_string(member(o, "addr")), addr, 16) == 16)
		memcpy(cl.key.addr, addr, 16);
	cl.peer.port = (uint16_t)int_of(o, "port");
	cl.peer.cred = json_object_get_boolean(member(o, "cred"));
	cl.peer.gid = (uint32_t)int_of(o, "gid");
	cl.peer.pid = (int32_t)int_of(o, "pid");
	e = name ? server_find_export(srv, name) : NULL;
	why = !r ? "out of memory" : resume_check(o, e, r ? &r->sess : NULL);
	if (!why && access_check(&e->access, &who) != ACCESS_OK)
		why = "its export's access rules refuse it now";
	if (!why) {
		r->npending = pending ? strlen(pending) / 2 : 0;
		r->pending = malloc(r->npending ? r->npending : 1);
		n = r->pending ? hex_decode(pending ? pending : "", r->pending, r->npending) : -1;
		if (n < 0)
			why = "its buffered bytes are unreadable";
	}
	if (why) {
		log_warn("restart: conn %" PRId64 " (export \"%s\") is closed: %s", int_of(o, "id"),
			 name ? name : "?", why);
		ho.stats.refused++;
		shutdown(cl.fd, SHUT_RDWR);
		close(cl.fd);
		export_put(e);
		if (r)
			free(r->pending);
		free(r);
		return;
	}
	r->exp = e;
	r->id = (uint64_t)int_of(o, "id");
	cl.resume = r;
	if (server_accept(srv, &cl) == 0)
		ho.stats.adopted++;
	else
		ho.stats.refused++; /* over its per-client limit now: closed there */
}

void handover_adopt(struct server *srv)
{
	json_object *conns;
	int cfds[4096];
	size_t n = env_fds(ENV_CONNS, cfds, 4096), i;
	char name[64];

	unsetenv(ENV_CONNS);
	if (ho.stored_state >= 0 || ho.nstored) {
		/* From systemd's fd store: a restart of the unit. */
		ho.stats.restarted = true;
		if (ho.stored_state >= 0)
			read_state(ho.stored_state);
		ho.stored_state = -1;
	}
	if (!ho.stats.restarted)
		return;
	conns = ho.state ? member(ho.state, "connections") : NULL;
	if (!conns) {
		/* A state this process cannot read: the clients reconnect. */
		for (i = 0; i < n; i++) {
			shutdown(cfds[i], SHUT_RDWR);
			close(cfds[i]);
		}
		ho.stats.refused = (unsigned)n;
	} else {
		ho.stats.closed_tls = (unsigned)int_of(ho.state, "closed-tls");
		ho.stats.closed_negotiating = (unsigned)int_of(ho.state, "closed-negotiating");
		for (i = 0; i < json_object_array_length(conns); i++)
			adopt_one(srv, json_object_array_get_idx(conns, i));
	}
	/* Stored descriptors the state does not describe: their state is unknown. */
	for (i = 0; i < ho.nstored; i++)
		if (ho.stored[i].fd >= 0) {
			shutdown(ho.stored[i].fd, SHUT_RDWR);
			close(ho.stored[i].fd);
			ho.stats.refused++;
		}
	/* The store forgets them: a crash from now on must not hand them out again. */
	if (ho.nstored || ho.stats.restarted) {
		notify_send("FDSTOREREMOVE=1\nFDNAME=" STORE_STATE);
		for (i = 0; i < ho.nstored; i++) {
			snprintf(name, sizeof(name), STORE_CONN "%" PRIu64, ho.stored[i].id);
			notify_send("FDSTOREREMOVE=1\nFDNAME=%s", name);
		}
	}
	free(ho.stored);
	ho.stored = NULL;
	ho.nstored = 0;
	/* ublk devices the previous process served (ublk-add included): taken over. */
	conns = ho.state ? member(ho.state, "ublk") : NULL;
	for (i = 0; conns && i < json_object_array_length(conns); i++) {
		const char *ename = json_object_get_string(json_object_array_get_idx(conns, i));
		char msg[512];

		if (ename && server_ublk_of(srv, ename) < 0 &&
		    server_ublk_add(srv, ename, msg, sizeof(msg)) < 0)
			log_error("export \"%s\": its ublk device: %s", ename, msg);
	}
	log_info("restarted with %u connection%s adopted, %u closed (TLS), %u closed "
		 "(negotiating), %u refused", ho.stats.adopted, ho.stats.adopted == 1 ? "" : "s",
		 ho.stats.closed_tls, ho.stats.closed_negotiating, ho.stats.refused);
	json_object_put(ho.state);
	ho.state = NULL;
}

/* ---- the old process ---- */

static char *hex_encode(const uint8_t *p, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	char *s = malloc(2 * n + 1);
	size_t i;

	if (!s)
		return NULL;
	for (i = 0; i < n; i++) {
		s[2 * i] = digits[p[i] >> 4];
		s[2 * i + 1] = digits[p[i] & 15];
	}
	s[2 * n] = '\0';
	return s;
}

static json_object *conn_json(const struct conn_parked *p)
{
	json_object *o = json_object_new_object(), *ctx = json_object_new_array();
	const struct export *e = p->exp;
	char *addr = hex_encode(p->key.addr, 16), *pending = hex_encode(p->pending, p->npending);
	uint32_t k;

	json_object_object_add(o, "fd", json_object_new_int(p->fd));
	json_object_object_add(o, "id", json_object_new_int64((int64_t)p->id));
	json_object_object_add(o, "export", json_object_new_string(e->name));
	json_object_object_add(o, "size", json_object_new_int64((int64_t)e->size_bytes));
	json_object_object_add(o, "tflags", json_object_new_int(p->sess.tflags));
	json_object_object_add(o, "structured", json_object_new_boolean(p->sess.structured));
	json_object_object_add(o, "extended", json_object_new_boolean(p->sess.extended));
	json_object_object_add(o, "base-allocation",
			       json_object_new_boolean(p->sess.meta_base_allocation));
	for (k = 0; k < e->nctx; k++) {
		json_object *c;

		if (!(p->sess.meta_extra & (1u << k)))
			continue;
		c = json_object_new_object();
		json_object_object_add(c, "id", json_object_new_int(PROTO_META_ID_EXTRA + (int)k));
		json_object_object_add(c, "name", json_object_new_string(e->ctx_names[k]));
		json_object_array_add(ctx, c);
	}
	json_object_object_add(o, "contexts", ctx);
	json_object_object_add(o, "family", json_object_new_int(p->key.family));
	json_object_object_add(o, "uid", json_object_new_int64(p->key.uid));
	json_object_object_add(o, "addr", json_object_new_string(addr ? addr : ""));
	json_object_object_add(o, "port", json_object_new_int(p->peer.port));
	json_object_object_add(o, "cred", json_object_new_boolean(p->peer.cred));
	json_object_object_add(o, "gid", json_object_new_int64(p->peer.gid));
	json_object_object_add(o, "pid", json_object_new_int(p->peer.pid));
	json_object_object_add(o, "pending", json_object_new_string(pending ? pending : ""));
	free(addr);
	free(pending);
	return o;
}

static void part_parked(struct op *op, int res);

/* On a worker: parks its connections (the part is its own until it is done). */
static void part_run(struct op *op, int res)
{
	struct handover_part *part = container_of(op, struct handover_part, op);

	(void)res;
	part->parked.done = part_parked;
	conns_handover(part->w, &part->parked);
}

/* On the worker: its connections are parked (or closed); the main thread counts them in. */
static void part_parked(struct op *op, int res)
{
	struct handover_part *part = container_of(op, struct handover_part, parked);

	(void)res;
	part->n = conns_parked(part->w, &part->conns);
	if (atomic_fetch_sub(&ho.pending, 1) == 1)
		ev_async_send(ho.srv->loop, &ho.parked);
}

static void part_unpark(struct op *op, int res)
{
	struct handover_part *part = container_of(op, struct handover_part, op);

	(void)res;
	conns_unpark(part->w);
}

static void parts_free(void)
{
	unsigned i;
	int k;

	for (i = 0; ho.parts && i < ho.srv->nworkers; i++) {
		for (k = 0; k < ho.parts[i].n; k++) {
			export_put(ho.parts[i].conns[k].exp);
			free(ho.parts[i].conns[k].pending);
		}
		free(ho.parts[i].conns);
		ho.parts[i].conns = NULL;
		ho.parts[i].n = 0;
	}
}

static void set_inherit(int fd, bool inherit)
{
	int f = fcntl(fd, F_GETFD);

	if (f >= 0)
		fcntl(fd, F_SETFD, inherit ? f & ~FD_CLOEXEC : f | FD_CLOEXEC);
}

/* Appends ",fd" to a heap list. */
static char *fd_list(char *list, int fd)
{
	char *n = NULL;

	if (asprintf(&n, "%s%s%d", list ? list : "", list && *list ? "," : "", fd) < 0)
		n = NULL;
	free(list);
	return n;
}

static void on_parked(struct ev_loop *loop, ev_async *a, int revents)
{
	struct server *srv = ho.srv;
	json_object *st, *ls, *cs;
	char *lfds = strdup(""), *cfds = strdup(""), num[16];
	const char *text;
	unsigned i, tls, neg, nconns = 0;
	int k, memfd, err;
	size_t j;

	(void)loop;
	(void)a;
	(void)revents;
	if (atomic_load(&ho.pending) || !ho.running)
		return;
	conns_handover_closed(&tls, &neg);
	st = json_object_new_object();
	json_object_object_add(st, "format", json_object_new_string(HANDOVER_FORMAT));
	json_object_object_add(st, "version", json_object_new_int(HANDOVER_VERSION));
	json_object_object_add(st, "closed-tls", json_object_new_int((int)tls));
	json_object_object_add(st, "closed-negotiating", json_object_new_int((int)neg));
	ls = json_object_new_array();
	for (j = 0; j < srv->nlisteners; j++) {
		json_object *l = json_object_new_object();

		json_object_object_add(l, "fd", json_object_new_int(srv->listeners[j].fd));
		json_object_object_add(l, "desc", json_object_new_string(srv->listeners[j].desc));
		if (srv->listeners[j].unix_path)
			json_object_object_add(l, "unix-path",
					       json_object_new_string(srv->listeners[j].unix_path));
		json_object_array_add(ls, l);
		lfds = fd_list(lfds, srv->listeners[j].fd);
		set_inherit(srv->listeners[j].fd, true);
	}
	json_object_object_add(st, "listeners", ls);
	cs = json_object_new_array();
	for (i = 0; i < srv->nworkers; i++)
		for (k = 0; k < ho.parts[i].n; k++) {
			struct conn_parked *p = &ho.parts[i].conns[k];

			json_object_array_add(cs, conn_json(p));
			cfds = fd_list(cfds, p->fd);
			set_inherit(p->fd, true);
			nconns++;
			/* What an overlay acknowledged must be in its map on disk first. */
			if (p->exp->be->persist)
				p->exp->be->persist(p->exp);
		}
	json_object_object_add(st, "connections", cs);
	/* Exports served as ublk devices: the next process takes the devices over. */
	cs = json_object_new_array();
	pthread_mutex_lock(&srv->ublk_lock);
	for (j = 0; j < srv->nublks; j++)
		json_object_array_add(cs, json_object_new_string(srv->ublks[j].name));
	pthread_mutex_unlock(&srv->ublk_lock);
	json_object_object_add(st, "ublk", cs);
	for (j = 0; j < srv->nexports; j++)
		if (srv->exports[j]->be->persist)
			srv->exports[j]->be->persist(srv->exports[j]);
	text = json_object_to_json_string_ext(st, JSON_C_TO_STRING_PLAIN);
	memfd = memfd_create("uringnbd-handover", 0);
	err = memfd < 0 || !lfds || !cfds ? -1 : 0;
	for (j = 0; !err && j < strlen(text);) {
		ssize_t n = write(memfd, text + j, strlen(text) - j);

		if (n <= 0)
			err = -1;
		else
			j += (size_t)n;
	}
	if (!err && ho.store) {
		/* systemd keeps them while a restart job is queued; a stop drops them. */
		if (notify_send_fds(&memfd, 1, "FDSTORE=1\nFDNAME=" STORE_STATE) < 0)
			log_error("restart: the state could not be stored: %s", strerror(errno));
		for (i = 0; i < srv->nworkers; i++)
			for (k = 0; k < ho.parts[i].n; k++) {
				struct conn_parked *p = &ho.parts[i].conns[k];

				if (notify_send_fds(&p->fd, 1, "FDSTORE=1\nFDNAME=" STORE_CONN "%" PRIu64,
						    p->id) < 0)
					log_warn("conn %" PRIu64 ": not stored", p->id);
			}
		log_info("%u connection%s handed to the service manager's fd store (%u closed: TLS; "
			 "%u: negotiating); a restart adopts them, a stop closes them", nconns,
			 nconns == 1 ? "" : "s", tls, neg);
		close(memfd);
		json_object_put(st);
		free(lfds);
		free(cfds);
		parts_free();
		ev_break(srv->loop, EVBREAK_ALL);
		return;
	}
	if (!err) {
		snprintf(num, sizeof(num), "%d", memfd);
		setenv(ENV_STATE, num, 1);
		setenv(ENV_LISTEN, lfds, 1);
		setenv(ENV_CONNS, cfds, 1);
		log_info("restarting: %u connection%s handed over, %u closed (TLS), %u closed "
			 "(negotiating); exec %s", nconns, nconns == 1 ? "" : "s", tls, neg, ho.exe);
		notify_send("RELOADING=1\nSTATUS=restarting, %u connections handed over", nconns);
		fflush(stderr);
		{
			sigset_t handled;

			/* Blocked across the exec: the new process unblocks them once it handles them. */
			sigemptyset(&handled);
			sigaddset(&handled, SIGINT);
			sigaddset(&handled, SIGTERM);
			sigaddset(&handled, SIGHUP);
			sigaddset(&handled, SIGUSR1);
			sigaddset(&handled, SIGUSR2);
			pthread_sigmask(SIG_SETMASK, &handled, NULL);
		}
		execv(ho.exe, ho.argv);
		log_error("restart: exec %s: %s: going on in this process", ho.exe, strerror(errno));
	} else {
		log_error("restart: the state could not be written: going on in this process");
	}
	/* Nothing happened: this process goes on. */
	unsetenv(ENV_STATE);
	unsetenv(ENV_LISTEN);
	unsetenv(ENV_CONNS);
	if (memfd >= 0)
		close(memfd);
	for (j = 0; j < srv->nlisteners; j++)
		set_inherit(srv->listeners[j].fd, false);
	for (i = 0; i < srv->nworkers; i++)
		for (k = 0; k < ho.parts[i].n; k++)
			set_inherit(ho.parts[i].conns[k].fd, false);
	json_object_put(st);
	free(lfds);
	free(cfds);
	parts_free();
	for (i = 0; i < srv->nworkers; i++) {
		ho.parts[i].op.done = part_unpark;
		worker_post(&srv->workers[i], &ho.parts[i].op, 0);
	}
	listen_pause(srv, false);
	notify_send("READY=1");
	ho.running = false;
}

/* Parks every connection; on_parked goes on once every worker has. */
static void park_all(struct server *srv)
{
	unsigned i;

	ho.srv = srv;
	if (!ho.parked_init) {
		ev_async_init(&ho.parked, on_parked);
		ev_async_start(srv->loop, &ho.parked);
		ho.parked_init = true;
	}
	ho.running = true;
	listen_pause(srv, true);
	atomic_store(&ho.pending, srv->nworkers);
	for (i = 0; i < srv->nworkers; i++) {
		ho.parts[i].w = &srv->workers[i];
		ho.parts[i].op.done = part_run;
		worker_post(&srv->workers[i], &ho.parts[i].op, 0);
	}
}

static bool parts_alloc(struct server *srv)
{
	/* A previous failed attempt's parts are reused: they were unparked. */
	free(ho.parts);
	ho.parts = calloc(srv->nworkers, sizeof(*ho.parts));
	if (!ho.parts)
		log_error("restart: out of memory");
	return ho.parts != NULL;
}

void handover_start(struct server *srv)
{
	if (srv->single) {
		log_warn("SIGUSR2: a single-connection daemon (--single) cannot restart");
		return;
	}
	if (ho.running || server_shutting_down(srv))
		return;
	if (!ho.exe[0]) {
		log_error("SIGUSR2: the daemon's own binary was not found at start: cannot restart");
		return;
	}
	if (!parts_alloc(srv))
		return;
	log_info("SIGUSR2: restarting %s; connections are kept", ho.exe);
	ho.store = false;
	park_all(srv);
}

void handover_store(struct server *srv)
{
	if (ho.running || !parts_alloc(srv)) {
		ev_break(srv->loop, EVBREAK_ALL);
		return;
	}
	ho.store = true;
	park_all(srv);
}
