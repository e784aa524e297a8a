// SPDX-License-Identifier: BSD-3-Clause
/*
 * Rate limits where they live: an export's in the counters every export
 * object of its name shares (so a reload or export-set changes them for
 * the connections already open), and named groups in a list that only
 * grows. The request path reads them through conn/rx.c; the buckets are
 * engine/throttle.c's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "storage.h"

static pthread_mutex_t groups_lock = PTHREAD_MUTEX_INITIALIZER;
static struct throttle_group *_Atomic groups;

struct throttle_group *throttle_group_find(const char *name)
{
	struct throttle_group *g;

	for (g = atomic_load(&groups); g; g = g->next)
		if (!strcmp(g->name, name))
			return g;
	return NULL;
}

struct throttle_group *throttle_group_get(const char *name)
{
	struct throttle_group *g;

	pthread_mutex_lock(&groups_lock);
	g = throttle_group_find(name);
	if (!g) {
		g = calloc(1, sizeof(*g));
		if (g && !(g->name = strdup(name))) {
			free(g);
			g = NULL;
		}
		if (g) {
			throttle_init(&g->thr);
			g->next = atomic_load(&groups);
			atomic_store(&groups, g);
		}
	}
	pthread_mutex_unlock(&groups_lock);
	return g;
}

struct throttle_group *throttle_groups_first(void)
{
	return atomic_load(&groups);
}

void throttle_groups_free(void)
{
	struct throttle_group *g = atomic_exchange(&groups, NULL), *next;

	for (; g; g = next) {
		next = g->next;
		throttle_release(&g->thr);
		free(g->name);
		free(g);
	}
}

int export_limits_apply(struct export *e, const struct export_spec *spec)
{
	struct export_counters *ec = e->ctr;
	struct throttle_group *g = NULL;

	if (spec->group && !(g = throttle_group_get(spec->group)))
		return -ENOMEM;
	throttle_set(&ec->thr, &spec->limits);
	pthread_mutex_lock(&ec->thr.lock);
	if (memcmp(&ec->conn_lim, &spec->conn_limits, sizeof(ec->conn_lim))) {
		ec->conn_lim = spec->conn_limits;
		atomic_fetch_add(&ec->conn_gen, 1);
	}
	pthread_mutex_unlock(&ec->thr.lock);
	if (atomic_exchange(&ec->group, g) != g)
		atomic_fetch_add(&ec->conn_gen, 1); /* waiting requests look again */
	return 0;
}

void export_limits_get(const struct export *e, struct throttle_limits *lim,
		       struct throttle_limits *conn, const char **group)
{
	struct export_counters *ec = e->ctr;
	struct throttle_group *g = atomic_load(&ec->group);

	throttle_get(&ec->thr, lim);
	pthread_mutex_lock(&ec->thr.lock);
	*conn = ec->conn_lim;
	pthread_mutex_unlock(&ec->thr.lock);
	*group = g ? g->name : NULL;
}
