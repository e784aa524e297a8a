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

#include "daemon.h"

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

void server_accept(struct server *s, int fd)
{
	if (server_shutting_down(s)) {
		close(fd);
		return;
	}
	atomic_fetch_add_explicit(&s->live_conns, 1, memory_order_relaxed);
	/* Round-robin: a connection stays on its worker for its whole life. */
	worker_adopt(&s->workers[s->next_worker++ % s->nworkers], fd);
}

bool server_at_capacity(struct server *s)
{
	return s->max_conns &&
	       atomic_load_explicit(&s->live_conns, memory_order_relaxed) >= s->max_conns;
}

void server_conn_gone(struct server *s)
{
	atomic_fetch_sub_explicit(&s->live_conns, 1, memory_order_relaxed);
}

struct export **server_build_exports(struct server *s, const struct export_spec *specs,
				     size_t n)
{
	struct export **t = calloc(n ? n : 1, sizeof(*t)), **all;
	size_t i, j;

	all = calloc(n + s->nexports + 1, sizeof(*all));
	if (!t || !all)
		goto out_err;
	if (s->nexports)
		memcpy(all, s->exports, s->nexports * sizeof(*all));
	for (i = 0; i < n; i++) {
		for (j = 0; j < s->nexports && !t[i]; j++)
			if (export_matches(s->exports[j], &specs[i])) {
				t[i] = s->exports[j];
				export_get(t[i]);
			}
		if (!t[i]) {
			/* Files already open (old or new) share their lock manager. */
			if (i)
				memcpy(all + s->nexports, t, i * sizeof(*t));
			t[i] = export_open(&specs[i], all, s->nexports + i);
			if (!t[i])
				goto out_err;
		}
	}
	free(all);
	return t;

out_err:
	for (i = 0; t && i < n; i++)
		export_put(t[i]);
	free(t);
	free(all);
	return NULL;
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

void server_log_exports(struct server *s)
{
	size_t i;

	for (i = 0; i < s->nexports; i++) {
		const struct export *e = s->exports[i];

		log_info("export \"%s\": \"%s\", %" PRIu64 " bytes, direct-I/O alignment %u, %s, "
			 "cache=%s", e->name, e->path, e->size_bytes, e->align_bytes,
			 e->readonly ? "read-only" : "read-write", cache_mode_name(e->cache_mode));
	}
}

unsigned server_connections(struct server *s)
{
	unsigned i, n = 0;

	for (i = 0; i < s->nworkers; i++)
		n += atomic_load_explicit(&s->workers[i].nconns, memory_order_relaxed);
	return n;
}
