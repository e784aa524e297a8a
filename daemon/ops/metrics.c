// SPDX-License-Identifier: BSD-3-Clause
/*
 * Metrics (metrics.h): a snapshot of every counter, and the
 * two ways it is shown (Prometheus text, JSON).
 *
 * Nothing here is on the request path (hist_observe() is base/hist.c).
 * Counters are per
 * worker (no atomics shared between workers, no locks); a snapshot adds
 * them up, so a scrape costs the workers nothing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

static void throttle_take(struct metrics_throttle *mt, struct throttle *t)
{
	mt->waiting = atomic_load_explicit(&t->waiting, memory_order_relaxed);
	mt->delayed = atomic_load_explicit(&t->delayed, memory_order_relaxed);
	mt->delayed_ns = atomic_load_explicit(&t->delayed_ns, memory_order_relaxed);
}

int metrics_collect(struct server *srv, struct metrics *m)
{
	struct throttle_group *g;
	struct export **t;
	uint64_t start;
	size_t n, i, n_groups = 0;
	unsigned w;

	memset(m, 0, sizeof(*m));
	m->nworkers = srv->nworkers;
	m->workers = calloc(m->nworkers ? m->nworkers : 1, sizeof(*m->workers));
	if (!m->workers)
		return -ENOMEM;
	for (w = 0; w < srv->nworkers; w++) {
		const struct worker_stats *ws = &srv->workers[w].stats;
		struct metrics_worker *mw = &m->workers[w];

		worker_stats_add(&srv->workers[w], &m->sum);
#define GET(f) atomic_load_explicit(&ws->f, memory_order_relaxed)
		mw->iterations = GET(iterations);
		mw->submits = GET(submits);
		mw->sqes = GET(sqes);
		mw->completions = GET(completions);
		mw->poll_hits = GET(poll_hits);
		mw->poll_ns = GET(poll_ns);
		mw->ring_waits = GET(ring_waits);
		mw->ring_wait_ns = GET(ring_wait_ns);
		mw->pool_used_bytes = GET(pool_used_bytes);
		mw->pool_waiters = GET(pool_waiters);
		mw->pool_bytes = srv->workers_cfg.pool_bytes;
		/* A worker with no connection has no request, whenever it last looked. */
		start = GET(oldest_req_start_ns);
		if (start && atomic_load_explicit(&srv->workers[w].nconns, memory_order_relaxed)) {
			uint64_t now = now_ns();

			mw->oldest_req_ns = now > start ? now - start : 0;
		}
#undef GET
	}
	if (srv->cache) {
		m->has_cache = true;
		cache_get_stats(srv->cache, &m->cache);
	}
	m->pool_bytes = srv->workers_cfg.pool_bytes;
	m->over_limit = atomic_load_explicit(&srv->over_limit, memory_order_relaxed);
	m->connections = server_connections(srv);
	m->start_time_s = srv->start_time_s;
	t = server_exports_get(srv, &n);
	if (!t)
		return -ENOMEM;
	m->exports = calloc(n ? n : 1, sizeof(*m->exports));
	if (!m->exports) {
		server_exports_put(t, n);
		return -ENOMEM;
	}
	for (i = 0; i < n; i++) {
		struct metrics_export *me = &m->exports[m->nexports];

		me->name = strdup(t[i]->name);
		if (!me->name)
			break;
		export_stats_sum(t[i]->ctr, &me->st);
		me->durability_err = backing_durability_err(export_store(t[i]));
		throttle_take(&me->thr, &t[i]->ctr->thr);
		m->nexports++;
	}
	server_exports_put(t, n);
	if (m->nexports != n)
		return -ENOMEM;
	for (g = throttle_groups_first(); g; g = g->next)
		n_groups++;
	m->groups = calloc(n_groups ? n_groups : 1, sizeof(*m->groups));
	if (!m->groups)
		return -ENOMEM;
	for (g = throttle_groups_first(); g && m->ngroups < n_groups; g = g->next) {
		struct metrics_throttle *mg = &m->groups[m->ngroups];

		mg->name = strdup(g->name);
		if (!mg->name)
			return -ENOMEM;
		throttle_take(mg, &g->thr);
		m->ngroups++;
	}
	return 0;
}

void metrics_release(struct metrics *m)
{
	size_t i;

	for (i = 0; i < m->nexports; i++)
		free(m->exports[i].name);
	free(m->exports);
	for (i = 0; i < m->ngroups; i++)
		free(m->groups[i].name);
	free(m->groups);
	free(m->workers);
	memset(m, 0, sizeof(*m));
}

/* ---- Prometheus text ---- */

static const char *const prom_ops[EXPORT_STAT_OPS] = {
	"read", "write", "disc", "flush", "trim", "cache", "write_zeroes", "block_status", "other",
};
static const char *const err_names[EXPORT_STAT_ERRS] = {
	"EPERM", "EIO", "ENOMEM", "EINVAL", "ENOSPC", "EOVERFLOW", "ENOTSUP", "ESHUTDOWN", "other",
};
static const char *const transport_names[TRANSPORTS] = { "unix", "tcp", "tls", "stdio",
							 "vsock", "ublk" };
static const char *const result_names[CONN_RESULTS] = {
	"served", "refused", "tls_failed", "handshake_timeout", "negotiation_ended",
};

/* A label value, escaped as the format wants (backslash, quote, newline). */
static void label(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			fprintf(f, "\\%c", *s);
		else if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
}

static void family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One histogram's series; labels is "" or `a="b",` (with its trailing comma). */
static void histogram(FILE *f, const char *name, const char *labels, const struct hist *h)
{
	uint64_t cum = 0;
	unsigned i;

	for (i = 0; i < HIST_BUCKETS; i++) {
		cum += atomic_load_explicit(&h->n[i], memory_order_relaxed);
		fprintf(f, "%s_bucket{%sle=\"%g\"} %" PRIu64 "\n", name, labels,
			(double)hist_bounds_ns[i] / 1e9, cum);
	}
	cum += atomic_load_explicit(&h->n[HIST_BUCKETS], memory_order_relaxed);
	fprintf(f, "%s_bucket{%sle=\"+Inf\"} %" PRIu64 "\n", name, labels, cum);
	/* The same labels without le (and without braces when there are none). */
	if (labels[0]) {
		int n = (int)strlen(labels) - 1;

		fprintf(f, "%s_sum{%.*s} %.9f\n%s_count{%.*s} %" PRIu64 "\n", name, n, labels,
			(double)atomic_load_explicit(&h->sum_ns, memory_order_relaxed) / 1e9, name, n,
			labels, cum);
	} else {
		fprintf(f, "%s_sum %.9f\n%s_count %" PRIu64 "\n", name,
			(double)atomic_load_explicit(&h->sum_ns, memory_order_relaxed) / 1e9, name, cum);
	}
}

#define LOAD(x) ((uint64_t)atomic_load_explicit(&(x), memory_order_relaxed))

/*
 * A family with a series per worker, from one field of struct metrics_worker;
 * a field counted in nanoseconds is named *_seconds* and shown in seconds.
 */
static void per_worker(FILE *f, const struct metrics *m, const char *name, const char *type,
		       const char *help, size_t field)
{
	bool seconds = strstr(name, "_seconds") != NULL;
	unsigned k;

	family(f, name, type, help);
	for (k = 0; k < m->nworkers; k++) {
		uint64_t v = *(const uint64_t *)(const void *)((const char *)&m->workers[k] + field);

		if (seconds)
			fprintf(f, "%s{worker=\"%u\"} %.6f\n", name, k, (double)v / 1e9);
		else
			fprintf(f, "%s{worker=\"%u\"} %" PRIu64 "\n", name, k, v);
	}
}

/* A per-export, per-op counter family (ops that never happened are left out). */
static void per_op(FILE *f, const struct metrics *m, const char *name, const char *help,
		   size_t field)
{
	size_t i;
	unsigned k;

	family(f, name, "counter", help);
	for (i = 0; i < m->nexports; i++) {
		const struct export_stats *st = &m->exports[i].st;
		const atomic_uint_fast64_t *v = (const void *)((const char *)st + field);

		for (k = 0; k < EXPORT_STAT_OPS; k++) {
			if (k == NBD_CMD_DISC || !LOAD(st->requests[k]))
				continue;
			fprintf(f, "%s{export=\"", name);
			label(f, m->exports[i].name);
			fprintf(f, "\",op=\"%s\"} %" PRIu64 "\n", prom_ops[k], LOAD(v[k]));
		}
	}
}

/* One rate-limit figure of every export and group: export="NAME" or group="NAME". */
static void throttle_series(FILE *f, const struct metrics *m, const char *name, int which)
{
	size_t i;

	for (i = 0; i < m->nexports + m->ngroups; i++) {
		const struct metrics_throttle *t = i < m->nexports ? &m->exports[i].thr :
						   &m->groups[i - m->nexports];

		fprintf(f, "%s{%s=\"", name, i < m->nexports ? "export" : "group");
		label(f, i < m->nexports ? m->exports[i].name : t->name);
		if (which == 0)
			fprintf(f, "\"} %" PRIu64 "\n", t->waiting);
		else if (which == 1)
			fprintf(f, "\"} %" PRIu64 "\n", t->delayed);
		else
			fprintf(f, "\"} %.9f\n", (double)t->delayed_ns / 1e9);
	}
}

static void throttle_families(FILE *f, const struct metrics *m)
{
	family(f, "uringnbd_throttle_waiting", "gauge",
	       "Requests waiting for their rate limits now, by export (any of its limits: its "
	       "own, its connections', its group's) and by throttle group.");
	throttle_series(f, m, "uringnbd_throttle_waiting", 0);
	family(f, "uringnbd_throttled_requests_total", "counter",
	       "Requests that waited for their rate limits, by export and by throttle group.");
	throttle_series(f, m, "uringnbd_throttled_requests_total", 1);
	family(f, "uringnbd_throttled_seconds_total", "counter",
	       "Time requests waited for their rate limits, by export and by throttle group.");
	throttle_series(f, m, "uringnbd_throttled_seconds_total", 2);
}

char *metrics_prometheus(const struct metrics *m, size_t *len)
{
	const struct worker_stats *s = &m->sum;
	char *buf = NULL, *labels = NULL;
	size_t i, llen;
	unsigned k, e;
	FILE *f, *lf;

	f = open_memstream(&buf, len);
	if (!f)
		return NULL;
	per_op(f, m, "uringnbd_requests_total", "Requests replied to, by export and command.",
	       offsetof(struct export_stats, requests));
	per_op(f, m, "uringnbd_request_bytes_total",
	       "Bytes moved by requests that succeeded, by export and command.",
	       offsetof(struct export_stats, bytes));
	family(f, "uringnbd_request_errors_total", "counter",
	       "Requests replied to with an error, by export, command and NBD error.");
	for (i = 0; i < m->nexports; i++)
		for (k = 0; k < EXPORT_STAT_OPS; k++)
			for (e = 0; e < EXPORT_STAT_ERRS; e++) {
				uint64_t n = LOAD(m->exports[i].st.errors_by[k][e]);

				if (!n)
					continue;
				fputs("uringnbd_request_errors_total{export=\"", f);
				label(f, m->exports[i].name);
				fprintf(f, "\",op=\"%s\",errno=\"%s\"} %" PRIu64 "\n", prom_ops[k],
					err_names[e], n);
			}
	family(f, "uringnbd_request_duration_seconds", "histogram",
	       "Time from a request's header received to its reply sent, by export and command.");
	for (i = 0; i < m->nexports; i++)
		for (k = 0; k < EXPORT_STAT_OPS; k++) {
			const struct hist *h = &m->exports[i].st.duration[k];

			if (k == NBD_CMD_DISC || !hist_count(h))
				continue;
			lf = open_memstream(&labels, &llen);
			if (!lf)
				break;
			fputs("export=\"", lf);
			label(lf, m->exports[i].name);
			fprintf(lf, "\",op=\"%s\",", prom_ops[k]);
			fclose(lf);
			histogram(f, "uringnbd_request_duration_seconds", labels, h);
			free(labels);
			labels = NULL;
		}
	family(f, "uringnbd_lock_wait_seconds", "histogram",
	       "Time requests waited for a conflicting request's range lock.");
	histogram(f, "uringnbd_lock_wait_seconds", "", &s->lock_wait);
	family(f, "uringnbd_pool_wait_seconds", "histogram",
	       "Time requests waited for buffer pool chunks.");
	histogram(f, "uringnbd_pool_wait_seconds", "", &s->pool_wait);
	family(f, "uringnbd_requests_in_flight", "gauge", "Requests received and not yet done with.");
	for (i = 0; i < m->nexports; i++) {
		fputs("uringnbd_requests_in_flight{export=\"", f);
		label(f, m->exports[i].name);
		fprintf(f, "\"} %" PRIu64 "\n", LOAD(m->exports[i].st.in_flight));
	}
	family(f, "uringnbd_connections", "gauge", "Open connections, by export and transport.");
	for (i = 0; i < m->nexports; i++)
		for (k = 0; k < TRANSPORTS; k++) {
			if ((k == TRANSPORT_STDIO || k == TRANSPORT_VSOCK || k == TRANSPORT_UBLK) &&
			    !LOAD(m->exports[i].st.conns[k]))
				continue;
			fputs("uringnbd_connections{export=\"", f);
			label(f, m->exports[i].name);
			fprintf(f, "\",transport=\"%s\"} %" PRIu64 "\n", transport_names[k],
				LOAD(m->exports[i].st.conns[k]));
		}
	family(f, "uringnbd_connections_total", "counter",
	       "Connections by how their negotiation ended, and clients refused at the limits.");
	for (k = 0; k < CONN_RESULTS; k++)
		fprintf(f, "uringnbd_connections_total{result=\"%s\"} %" PRIu64 "\n", result_names[k],
			LOAD(s->results[k]));
	fprintf(f, "uringnbd_connections_total{result=\"over_limit\"} %" PRIu64 "\n",
		m->over_limit);
	family(f, "uringnbd_io_timeouts_total", "counter",
	       "Connections closed because a reply or payload stalled (io-timeout).");
	fprintf(f, "uringnbd_io_timeouts_total %" PRIu64 "\n", LOAD(s->io_timeouts));
	family(f, "uringnbd_bitmap_waits_total", "counter",
	       "Writes that waited for their dirty-bitmap bits to be synced first.");
	fprintf(f, "uringnbd_bitmap_waits_total %" PRIu64 "\n", LOAD(s->bitmap_waits));
	family(f, "uringnbd_durability_failed", "gauge",
	       "1 if a flush of the export's file failed (writes may have been lost).");
	for (i = 0; i < m->nexports; i++) {
		fputs("uringnbd_durability_failed{export=\"", f);
		label(f, m->exports[i].name);
		fprintf(f, "\"} %d\n", m->exports[i].durability_err != 0);
	}
	throttle_families(f, m);
	family(f, "uringnbd_range_locks_total", "counter", "Range locks taken.");
	fprintf(f, "uringnbd_range_locks_total %" PRIu64 "\n", LOAD(s->lock_acquired));
	family(f, "uringnbd_range_lock_waits_total", "counter", "Range locks that had to wait.");
	fprintf(f, "uringnbd_range_lock_waits_total %" PRIu64 "\n", LOAD(s->lock_waited));
	family(f, "uringnbd_rmw_writes_total", "counter",
	       "Unaligned writes done by read-modify-write.");
	fprintf(f, "uringnbd_rmw_writes_total %" PRIu64 "\n", LOAD(s->rmw_writes));
	if (m->has_cache) {
		const struct cache_stats *c = &m->cache;

		family(f, "uringnbd_cache_hits_total", "counter", "Page cache lookups that hit.");
		fprintf(f, "uringnbd_cache_hits_total %" PRIu64 "\n", c->hits);
		family(f, "uringnbd_cache_misses_total", "counter", "Page cache lookups that missed.");
		fprintf(f, "uringnbd_cache_misses_total %" PRIu64 "\n", c->misses);
		family(f, "uringnbd_cache_fill_waits_total", "counter",
		       "Lookups that waited for another request's fill.");
		fprintf(f, "uringnbd_cache_fill_waits_total %" PRIu64 "\n", c->waits);
		family(f, "uringnbd_cache_fills_total", "counter", "Pages read into the cache.");
		fprintf(f, "uringnbd_cache_fills_total %" PRIu64 "\n", c->fills);
		family(f, "uringnbd_cache_stale_fills_total", "counter",
		       "Fills dropped because a write overtook them.");
		fprintf(f, "uringnbd_cache_stale_fills_total %" PRIu64 "\n", c->stale_fills_dropped);
		family(f, "uringnbd_cache_evictions_total", "counter", "Pages evicted.");
		fprintf(f, "uringnbd_cache_evictions_total %" PRIu64 "\n", c->evictions);
		family(f, "uringnbd_cache_used_bytes", "gauge", "Page cache memory in use.");
		fprintf(f, "uringnbd_cache_used_bytes %" PRIu64 "\n",
			c->pages_used * CACHE_PAGE_BYTES);
		family(f, "uringnbd_cache_budget_bytes", "gauge", "Page cache memory budget.");
		fprintf(f, "uringnbd_cache_budget_bytes %" PRIu64 "\n",
			c->budget_pages * CACHE_PAGE_BYTES);
	}
	per_worker(f, m, "uringnbd_pool_used_bytes", "gauge", "Buffer pool memory held, by worker.",
		   offsetof(struct metrics_worker, pool_used_bytes));
	per_worker(f, m, "uringnbd_pool_size_bytes", "gauge", "Buffer pool size, by worker.",
		   offsetof(struct metrics_worker, pool_bytes));
	per_worker(f, m, "uringnbd_pool_waiters", "gauge",
		   "Connections waiting for buffer pool chunks, by worker.",
		   offsetof(struct metrics_worker, pool_waiters));
	per_worker(f, m, "uringnbd_oldest_request_seconds", "gauge",
		   "Age of the oldest request in flight, by worker (looked at each second).",
		   offsetof(struct metrics_worker, oldest_req_ns));
	per_worker(f, m, "uringnbd_loop_iterations_total", "counter",
		   "Event loop iterations, by worker.", offsetof(struct metrics_worker, iterations));
	per_worker(f, m, "uringnbd_submits_total", "counter", "io_uring submit calls, by worker.",
		   offsetof(struct metrics_worker, submits));
	per_worker(f, m, "uringnbd_sqes_submitted_total", "counter",
		   "Submission queue entries submitted, by worker.",
		   offsetof(struct metrics_worker, sqes));
	per_worker(f, m, "uringnbd_completions_total", "counter",
		   "Completion queue entries handled, by worker.",
		   offsetof(struct metrics_worker, completions));
	per_worker(f, m, "uringnbd_poll_hits_total", "counter",
		   "Completions found by polling instead of sleeping, by worker.",
		   offsetof(struct metrics_worker, poll_hits));
	per_worker(f, m, "uringnbd_poll_seconds_total", "counter",
		   "Time spent polling for completions, by worker.",
		   offsetof(struct metrics_worker, poll_ns));
	per_worker(f, m, "uringnbd_ring_waits_total", "counter",
		   "Waits that slept in the ring (no poll found work), by worker.",
		   offsetof(struct metrics_worker, ring_waits));
	per_worker(f, m, "uringnbd_ring_wait_seconds_total", "counter",
		   "Time slept in the ring until work came or a deadline, by worker.",
		   offsetof(struct metrics_worker, ring_wait_ns));
	family(f, "process_start_time_seconds", "gauge",
	       "Start time of the process since the Unix epoch in seconds.");
	fprintf(f, "process_start_time_seconds %.3f\n", m->start_time_s);
	family(f, "uringnbd_build_info", "gauge", "The running version (always 1).");
	fprintf(f, "uringnbd_build_info{version=\"%s\"} 1\n", URINGNBD_VERSION);
	if (fclose(f)) {
		free(buf);
		return NULL;
	}
	return buf;
}

/* ---- JSON (the stats command) ---- */

const char *const metrics_json_ops[EXPORT_STAT_OPS] = {
	"read", "write", "disc", "flush", "trim", "cache", "write-zeroes", "block-status", "other",
};

static json_object *u64(uint64_t v)
{
	return json_object_new_uint64(v);
}

json_object *metrics_throttle_json(const struct metrics_throttle *t)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "waiting", json_object_new_uint64(t->waiting));
	json_object_object_add(o, "requests", json_object_new_uint64(t->delayed));
	json_object_object_add(o, "seconds", json_object_new_double((double)t->delayed_ns / 1e9));
	return o;
}

/* count, sum and two quantiles of a histogram. */
static json_object *hist_json(const struct hist *h)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "count", u64(hist_count(h)));
	json_object_object_add(o, "sum-seconds", json_object_new_double(
		(double)LOAD(h->sum_ns) / 1e9));
	json_object_object_add(o, "p50-seconds", json_object_new_double(hist_quantile(h, 0.5)));
	json_object_object_add(o, "p99-seconds", json_object_new_double(hist_quantile(h, 0.99)));
	return o;
}

json_object *metrics_json(const struct metrics *m)
{
	const struct worker_stats *s = &m->sum;
	json_object *o = json_object_new_object(), *x, *a;
	size_t i;
	unsigned k;

	json_object_object_add(o, "version", json_object_new_string(URINGNBD_VERSION));
	json_object_object_add(o, "start-time", json_object_new_double(m->start_time_s));
	json_object_object_add(o, "connections", u64(m->connections));
	json_object_object_add(o, "workers", u64(m->nworkers));
	x = json_object_new_object();
	for (k = 0; k < CONN_RESULTS; k++)
		json_object_object_add(x, result_names[k], u64(LOAD(s->results[k])));
	json_object_object_add(x, "over_limit", u64(m->over_limit));
	json_object_object_add(o, "connections-total", x);
	json_object_object_add(o, "io-timeouts", u64(LOAD(s->io_timeouts)));
	json_object_object_add(o, "bitmap-waits", u64(LOAD(s->bitmap_waits)));
	x = json_object_new_object();
	json_object_object_add(x, "acquired", u64(LOAD(s->lock_acquired)));
	json_object_object_add(x, "waited", u64(LOAD(s->lock_waited)));
	json_object_object_add(x, "wait-seconds", json_object_new_double(
		(double)LOAD(s->lock_wait_ns) / 1e9));
	json_object_object_add(x, "wait", hist_json(&s->lock_wait));
	json_object_object_add(o, "range-locks", x);
	json_object_object_add(o, "rmw-writes", u64(LOAD(s->rmw_writes)));
	json_object_object_add(o, "partial-block-requests", u64(LOAD(s->buffered_ios)));
	json_object_object_add(o, "pool-wait", hist_json(&s->pool_wait));
	if (m->has_cache) {
		const struct cache_stats *c = &m->cache;

		x = json_object_new_object();
		json_object_object_add(x, "hits", u64(c->hits));
		json_object_object_add(x, "misses", u64(c->misses));
		json_object_object_add(x, "waits", u64(c->waits));
		json_object_object_add(x, "fills", u64(c->fills));
		json_object_object_add(x, "stale-fills", u64(c->stale_fills_dropped));
		json_object_object_add(x, "evictions", u64(c->evictions));
		json_object_object_add(x, "invalidated", u64(c->invalidated));
		json_object_object_add(x, "full", u64(c->full));
		json_object_object_add(x, "bytes-used", u64(c->pages_used * CACHE_PAGE_BYTES));
		json_object_object_add(x, "bytes-budget", u64(c->budget_pages * CACHE_PAGE_BYTES));
		json_object_object_add(o, "cache", x);
	}
	a = json_object_new_array();
	for (k = 0; k < m->nworkers; k++) {
		const struct metrics_worker *w = &m->workers[k];

		x = json_object_new_object();
		json_object_object_add(x, "loop-iterations", u64(w->iterations));
		json_object_object_add(x, "submits", u64(w->submits));
		json_object_object_add(x, "sqes", u64(w->sqes));
		json_object_object_add(x, "completions", u64(w->completions));
		json_object_object_add(x, "poll-hits", u64(w->poll_hits));
		json_object_object_add(x, "poll-ns", u64(w->poll_ns));
		json_object_object_add(x, "ring-waits", u64(w->ring_waits));
		json_object_object_add(x, "ring-wait-ns", u64(w->ring_wait_ns));
		json_object_object_add(x, "pool-used-bytes", u64(w->pool_used_bytes));
		json_object_object_add(x, "pool-waiters", u64(w->pool_waiters));
		json_object_object_add(x, "oldest-request-ns", u64(w->oldest_req_ns));
		json_object_array_add(a, x);
	}
	json_object_object_add(o, "per-worker", a);
	a = json_object_new_array();
	for (i = 0; i < m->nexports; i++) {
		const struct metrics_export *me = &m->exports[i];
		json_object *e = json_object_new_object(), *d = json_object_new_object();

		json_object_object_add(e, "name", json_object_new_string(me->name));
		json_object_object_add(e, "in-flight", u64(LOAD(me->st.in_flight)));
		json_object_object_add(e, "connections", u64(export_stats_conns(&me->st)));
		json_object_object_add(e, "durability-failed",
				       json_object_new_boolean(me->durability_err != 0));
		for (k = 0; k < EXPORT_STAT_OPS; k++) {
			if (k == NBD_CMD_DISC || !LOAD(me->st.requests[k]))
				continue;
			x = hist_json(&me->st.duration[k]);
			json_object_object_add(x, "requests", u64(LOAD(me->st.requests[k])));
			json_object_object_add(x, "bytes", u64(LOAD(me->st.bytes[k])));
			json_object_object_add(x, "errors", u64(LOAD(me->st.errors[k])));
			json_object_object_add(d, metrics_json_ops[k], x);
		}
		json_object_object_add(e, "ops", d);
		json_object_object_add(e, "throttled", metrics_throttle_json(&me->thr));
		json_object_array_add(a, e);
	}
	json_object_object_add(o, "exports", a);
	a = json_object_new_array();
	for (i = 0; i < m->ngroups; i++) {
		json_object *g = metrics_throttle_json(&m->groups[i]);

		json_object_object_add(g, "name", json_object_new_string(m->groups[i].name));
		json_object_array_add(a, g);
	}
	json_object_object_add(o, "throttle-groups", a);
	return o;
}
