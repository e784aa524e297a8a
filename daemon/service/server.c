// SPDX-License-Identifier: BSD-3-Clause
/*
 * The server's export table: looked up by every worker during negotiation
 * (read lock) and replaced whole by a reload (write lock). A connection
 * takes its own reference to the export it chose while still holding the
 * read lock, so a reload never frees an export under a connection.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <sys/socket.h>

#include "service.h"

/* Called with exports_lock held (read). */
int server_export_lookup(void *ctx, const char *name, size_t name_len, struct proto_export *out)
{
	struct server *s = ctx;
	size_t i;

	for (i = 0; i < s->nexports; i++) {
		const struct export *e = s->exports[i];

		if (strlen(e->name) == name_len && memcmp(e->name, name, name_len) == 0) {
			export_describe(e, out);
			return 0;
		}
	}
	return -ENOENT;
}

int server_export_nth(void *ctx, size_t i, struct proto_export *out)
{
	struct server *s = ctx;

	if (i >= s->nexports)
		return -ENOENT;
	export_describe(s->exports[i], out);
	return 0;
}

bool server_shutting_down(const struct server *s)
{
	return atomic_load_explicit(&s->shutting_down, memory_order_relaxed);
}

/* Connections open per client key (linear: a few thousand keys at most). */
struct client_count {
	struct client_key key;
	unsigned n;
};

static bool key_equal(const struct client_key *a, const struct client_key *b)
{
	return a->family == b->family && a->uid == b->uid && a->cid == b->cid &&
	       !memcmp(a->addr, b->addr, 16);
}

/* Counts one more connection for key; false (nothing counted) at the limit. */
static bool client_take(struct server *s, const struct client_key *key)
{
	bool ok = true;
	size_t i;

	if (!s->max_conns_per_client || !key->family)
		return true;
	pthread_mutex_lock(&s->clients_lock);
	for (i = 0; i < s->nclients && !key_equal(&s->clients[i].key, key); i++)
		;
	if (i < s->nclients) {
		ok = s->clients[i].n < s->max_conns_per_client;
		if (ok)
			s->clients[i].n++;
	} else {
		if (s->nclients == s->clients_cap) {
			size_t cap = s->clients_cap ? 2 * s->clients_cap : 64;
			struct client_count *c = realloc(s->clients, cap * sizeof(*c));

			if (c) {
				s->clients = c;
				s->clients_cap = cap;
			}
		}
		/* Out of memory: the client is served uncounted rather than refused. */
		if (s->nclients < s->clients_cap)
			s->clients[s->nclients++] = (struct client_count){ .key = *key, .n = 1 };
	}
	pthread_mutex_unlock(&s->clients_lock);
	return ok;
}

static void client_put(struct server *s, const struct client_key *key)
{
	size_t i;

	if (!s->max_conns_per_client || !key->family)
		return;
	pthread_mutex_lock(&s->clients_lock);
	for (i = 0; i < s->nclients; i++) {
		if (!key_equal(&s->clients[i].key, key))
			continue;
		if (--s->clients[i].n == 0)
			s->clients[i] = s->clients[--s->nclients];
		break;
	}
	pthread_mutex_unlock(&s->clients_lock);
}

int server_accept(struct server *s, const struct client *cl)
{
	if (server_shutting_down(s) || !client_take(s, &cl->key)) {
		close(cl->fd);
		if (cl->fd_out != cl->fd)
			close(cl->fd_out);
		return server_shutting_down(s) ? -ESHUTDOWN : -EUSERS;
	}
	atomic_fetch_add_explicit(&s->live_conns, 1, memory_order_relaxed);
	/* Round-robin: a connection stays on its worker for its whole life. */
	worker_adopt(&s->workers[s->next_worker++ % s->nworkers], cl);
	return 0;
}

bool server_at_capacity(struct server *s)
{
	return s->max_conns &&
	       atomic_load_explicit(&s->live_conns, memory_order_relaxed) >= s->max_conns;
}

void server_conn_gone(struct server *s, const struct client_key *key)
{
	client_put(s, key);
	atomic_fetch_sub_explicit(&s->live_conns, 1, memory_order_relaxed);
	if (s->single)
		ev_async_send(s->loop, &s->single_done);
}

int server_add_checkpoint_exports(struct server *s, const struct export *base, struct export ***t,
				  size_t *n)
{
	struct bitmap_info *info;
	struct export **grown, *e;
	size_t k, m, j, added = 0;
	char name[PROTO_NAME_MAX + 1];

	int got;

	if (!export_has_bitmaps(base) || base->checkpoint)
		return 0;
	info = calloc(BITMAP_SLOTS, sizeof(*info));
	if (!info)
		return -1;
	if (base->bm) {
		m = bitmaps_list(base->bm, info);
	} else {
		got = base->be->checkpoints(base, info, BITMAP_SLOTS);
		if (got < 0)
			log_error("export \"%s\": its checkpoints: %s", base->name, strerror(-got));
		m = got < 0 ? 0 : (size_t)got;
	}
	grown = realloc(*t, (*n + m + 1) * sizeof(**t));
	if (!grown) {
		free(info);
		return -1;
	}
	*t = grown;
	for (k = 0; k < m; k++) {
		if (info[k].kind != BITMAP_FROZEN)
			continue;
		snprintf(name, sizeof(name), "%s@%s", base->name, info[k].name);
		e = NULL;
		/* The same checkpoint's export in the table now: kept, with its counters. */
		pthread_rwlock_rdlock(&s->exports_lock);
		for (j = 0; j < s->nexports && !e; j++)
			if (s->exports[j]->checkpoint && s->exports[j]->bm == base->bm &&
			    s->exports[j]->be == base->be && !strcmp(s->exports[j]->name, name)) {
				e = s->exports[j];
				export_get(e);
			}
		pthread_rwlock_unlock(&s->exports_lock);
		if (!e)
			e = export_open_checkpoint(base, &info[k]);
		if (!e) {
			log_error("export \"%s\": checkpoint \"%s\" is not served", base->name,
				  info[k].name);
			continue;
		}
		(*t)[*n + added++] = e;
	}
	*n += added;
	free(info);
	return 0;
}

struct export **server_build_exports(struct server *s, const struct export_spec *specs,
				     size_t n, size_t *nout)
{
	struct export **t = calloc(n ? n : 1, sizeof(*t));
	size_t i, j, total;

	if (!t)
		return NULL;
	for (i = 0; i < n; i++) {
		/* Workers may swap a changed export in meanwhile (server_refresh_exports). */
		pthread_rwlock_rdlock(&s->exports_lock);
		for (j = 0; j < s->nexports && !t[i]; j++)
			if (export_matches(s->exports[j], &specs[i])) {
				t[i] = s->exports[j];
				export_get(t[i]);
			}
		pthread_rwlock_unlock(&s->exports_lock);
		/* A new export of a file already open, in any table, shares its record. */
		if (t[i])
			continue;
		if (!(t[i] = export_open(&specs[i])))
			goto out_err;
		/* Settings changed under the same name: its counters go on. */
		pthread_rwlock_rdlock(&s->exports_lock);
		for (j = 0; j < s->nexports; j++)
			if (!strcmp(s->exports[j]->name, specs[i].name))
				export_share_counters(t[i], s->exports[j]);
		pthread_rwlock_unlock(&s->exports_lock);
	}
	/* Then each checkpoint of their bitmaps, as EXPORT@CHECKPOINT. */
	total = n;
	for (i = 0; i < n; i++)
		if (server_add_checkpoint_exports(s, t[i], &t, &total) < 0) {
			for (j = n; j < total; j++)
				export_put(t[j]);
			n = total = n;
			goto out_err;
		}
	*nout = total;
	return t;

out_err:
	for (i = 0; i < n; i++)
		export_put(t[i]);
	free(t);
	return NULL;
}

int server_apply_limits(const struct config *file, const struct config *cli,
			const struct export_spec *specs, size_t n, struct export **t)
{
	static const struct throttle_limits none;
	struct config_group *gs;
	struct throttle_group *g;
	size_t ng, i;

	gs = config_groups_in_force(file, cli, &ng);
	if (!gs)
		return -1;
	/* A group no longer configured keeps its name and loses its limits. */
	for (g = throttle_groups_first(); g; g = g->next) {
		for (i = 0; i < ng && strcmp(gs[i].name, g->name); i++)
			;
		if (i == ng && g->configured) {
			throttle_set(&g->thr, &none);
			g->configured = false;
		}
	}
	for (i = 0; i < ng; i++) {
		g = throttle_group_get(gs[i].name);
		if (!g) {
			free(gs);
			return -1;
		}
		throttle_set(&g->thr, &gs[i].limits);
		g->configured = true;
	}
	free(gs);
	for (i = 0; i < n; i++)
		if (export_limits_apply(t[i], &specs[i]) < 0)
			return -1;
	return 0;
}

void server_swap_exports(struct server *s, struct export **t, size_t n)
{
	struct export **old;
	size_t nold, i;

	pthread_rwlock_wrlock(&s->exports_lock);
	old = s->exports;
	nold = s->nexports;
	s->exports = t;
	s->nexports = n;
	pthread_rwlock_unlock(&s->exports_lock);
	for (i = 0; i < nold; i++)
		export_put(old[i]);
	free(old);
}

/* Under exports_lock: the index of the export named name, or -1. */
static ssize_t export_index(const struct server *s, const char *name)
{
	size_t i;

	for (i = 0; i < s->nexports; i++)
		if (!strcmp(s->exports[i]->name, name))
			return (ssize_t)i;
	return -1;
}

/* Connections that chose e (its worker counters: closing ones included). */
static uint64_t export_conns(const struct export *e)
{
	struct export_stats sum = { 0 };

	export_stats_sum(e->ctr, &sum);
	return export_stats_conns(&sum);
}

int server_add_export(struct server *s, struct export *e)
{
	struct export **t;

	pthread_rwlock_wrlock(&s->exports_lock);
	if (export_index(s, e->name) >= 0) {
		pthread_rwlock_unlock(&s->exports_lock);
		return -EEXIST;
	}
	t = realloc(s->exports, (s->nexports + 1) * sizeof(*t));
	if (!t) {
		pthread_rwlock_unlock(&s->exports_lock);
		return -ENOMEM;
	}
	t[s->nexports] = e;
	s->exports = t;
	s->nexports++;
	pthread_rwlock_unlock(&s->exports_lock);
	return 0;
}

struct export *server_remove_export(struct server *s, const char *name, bool force,
				    uint64_t *conns, int *err)
{
	struct export *e;
	ssize_t i;

	*conns = 0;
	pthread_rwlock_wrlock(&s->exports_lock);
	i = export_index(s, name);
	if (i < 0) {
		pthread_rwlock_unlock(&s->exports_lock);
		*err = -ENOENT;
		return NULL;
	}
	e = s->exports[i];
	/* Held as writer: no connection can choose it meanwhile, so the count is whole. */
	*conns = export_conns(e);
	if (*conns && !force) {
		pthread_rwlock_unlock(&s->exports_lock);
		*err = -EBUSY;
		return NULL;
	}
	memmove(&s->exports[i], &s->exports[i + 1], (s->nexports - (size_t)i - 1) * sizeof(e));
	s->nexports--;
	pthread_rwlock_unlock(&s->exports_lock);
	*err = 0;
	return e;
}

struct export *server_replace_export(struct server *s, struct export *fresh)
{
	struct export *old = NULL;
	ssize_t i;

	pthread_rwlock_wrlock(&s->exports_lock);
	i = export_index(s, fresh->name);
	if (i >= 0) {
		old = s->exports[i];
		s->exports[i] = fresh;
	}
	pthread_rwlock_unlock(&s->exports_lock);
	return old;
}

struct export *server_find_export(struct server *s, const char *name)
{
	struct export *e = NULL;
	ssize_t i;

	pthread_rwlock_rdlock(&s->exports_lock);
	i = export_index(s, name);
	if (i >= 0) {
		e = s->exports[i];
		export_get(e);
	}
	pthread_rwlock_unlock(&s->exports_lock);
	return e;
}

struct export **server_exports_get(struct server *s, size_t *n)
{
	struct export **t;
	size_t i;

	pthread_rwlock_rdlock(&s->exports_lock);
	t = calloc(s->nexports ? s->nexports : 1, sizeof(*t));
	*n = t ? s->nexports : 0;
	for (i = 0; i < *n; i++) {
		t[i] = s->exports[i];
		export_get(t[i]);
	}
	pthread_rwlock_unlock(&s->exports_lock);
	return t;
}

void server_exports_put(struct export **t, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		export_put(t[i]);
	free(t);
}

void server_log_table_changes(struct server *s, struct export **t, size_t n)
{
	size_t i, j;

	pthread_rwlock_rdlock(&s->exports_lock);
	for (i = 0; i < s->nexports; i++) {
		const struct export *e = s->exports[i];

		for (j = 0; j < n && strcmp(t[j]->name, e->name); j++)
			;
		if (j == n)
			log_info("export \"%s\" removed by the reload (not in the configuration)",
				 e->name);
		else if (t[j] != e)
			log_info("export \"%s\" opened again by the reload, with the configuration's "
				 "settings", e->name);
	}
	for (j = 0; j < n; j++) {
		for (i = 0; i < s->nexports && strcmp(t[j]->name, s->exports[i]->name); i++)
			;
		if (i == s->nexports)
			log_info("export \"%s\" added by the reload", t[j]->name);
	}
	pthread_rwlock_unlock(&s->exports_lock);
}

void server_refresh_exports(struct server *s)
{
	size_t i, n;

	pthread_rwlock_rdlock(&s->exports_lock);
	n = s->nexports;
	pthread_rwlock_unlock(&s->exports_lock);
	for (i = 0; i < n; i++) {
		struct export *old, *fresh;
		char why[128];

		pthread_rwlock_rdlock(&s->exports_lock);
		old = i < s->nexports ? s->exports[i] : NULL;
		if (old && export_changed(old, why, sizeof(why)))
			export_get(old);
		else
			old = NULL;
		pthread_rwlock_unlock(&s->exports_lock);
		if (!old)
			continue;
		fresh = export_reopen(old);
		if (fresh) {
			pthread_rwlock_wrlock(&s->exports_lock);
			/* Another thread may have done it first: then this one is dropped. */
			if (i < s->nexports && s->exports[i] == old) {
				s->exports[i] = fresh;
				fresh = old; /* the table's reference to drop */
				log_info("export \"%s\": \"%s\" %s: new connections get it, open ones "
					 "keep theirs", old->name, old->path, why);
			}
			pthread_rwlock_unlock(&s->exports_lock);
			export_put(fresh);
		}
		export_put(old);
	}
}

void server_log_exports(struct server *s)
{
	size_t i;

	pthread_rwlock_rdlock(&s->exports_lock);
	for (i = 0; i < s->nexports; i++) {
		const struct export *e = s->exports[i];

		log_info("export \"%s\": \"%s\" (%s), %" PRIu64 " bytes, alignment %u, %s, "
			 "cache=%s", e->name, e->path, e->be->kind, e->size_bytes, e->align_bytes,
			 e->readonly ? "read-only" : "read-write", cache_mode_name(e->cache_mode));
	}
	pthread_rwlock_unlock(&s->exports_lock);
}

unsigned server_connections(struct server *s)
{
	unsigned i, n = 0;

	for (i = 0; i < s->nworkers; i++)
		n += atomic_load_explicit(&s->workers[i].nconns, memory_order_relaxed);
	return n;
}

/* ---- the connection layer's host (conn.h's struct conn_host) ---- */

static void host_exports_lock(void *ctx)
{
	pthread_rwlock_rdlock(&((struct server *)ctx)->exports_lock);
}

static void host_exports_unlock(void *ctx)
{
	pthread_rwlock_unlock(&((struct server *)ctx)->exports_lock);
}

static void host_refresh_exports(void *ctx)
{
	server_refresh_exports(ctx);
}

static bool host_shutting_down(void *ctx)
{
	return server_shutting_down(ctx);
}

static bool host_list_refused(void *ctx)
{
	return ((const struct server *)ctx)->list_refused;
}

static struct tls_creds *host_tls_creds(void *ctx)
{
	struct server *s = ctx;
	struct tls_creds *creds;

	/* A reload replaces them under the table's lock. */
	pthread_rwlock_rdlock(&s->exports_lock);
	creds = tls_creds_get(s->tls_creds);
	pthread_rwlock_unlock(&s->exports_lock);
	return creds;
}

static void host_conn_gone(void *ctx, const struct client_key *key)
{
	server_conn_gone(ctx, key);
}

void server_conn_host(struct server *s, struct conn_host *h)
{
	*h = (struct conn_host){
		.ctx = s,
		.exports_lock = host_exports_lock,
		.exports_unlock = host_exports_unlock,
		.export_lookup = server_export_lookup,
		.export_nth = server_export_nth,
		.refresh_exports = host_refresh_exports,
		.shutting_down = host_shutting_down,
		.list_refused = host_list_refused,
		.tls_creds = host_tls_creds,
		.conn_gone = host_conn_gone,
		.tls_mode = s->tls_mode,
		.handshake_timeout_s = s->handshake_timeout_s,
		.io_timeout_s = s->io_timeout_s,
		.idle_timeout_s = s->idle_timeout_s,
		.cache = s->cache,
		.test_fill_delay_ms = s->test_fill_delay_ms,
	};
}
