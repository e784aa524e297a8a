/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * metrics: one snapshot of every figure the daemon keeps, taken from any
 * thread without stopping anyone (per-worker counters are read relaxed and
 * summed; the export table under its read lock, each export's counters
 * through its reference), and two ways to show it: the Prometheus text
 * format (http.c serves it on /metrics) and JSON (the control socket's
 * stats command). One source for both.
 */
#ifndef URINGNBD_METRICS_H
#define URINGNBD_METRICS_H

#include <json-c/json.h>

#include "../service/service.h"

/* Waits for rate limits, of an export or a throttle group. */
struct metrics_throttle {
	char *name;                /* heap (a group's; an export's is the export's) */
	uint64_t waiting;          /* requests waiting now */
	uint64_t delayed;          /* requests that waited */
	uint64_t delayed_ns;       /* the time they waited, in total */
};

struct metrics_export {
	char *name;                /* heap */
	struct export_stats st;    /* every worker's set, added */
	int durability_err;        /* errno of its file's first failed flush, or 0 */
	struct metrics_throttle thr; /* its rate limits' waits */
};

struct metrics_worker {
	uint64_t iterations, submits, sqes, completions, poll_hits, poll_ns, ring_waits, ring_wait_ns;
	uint64_t pool_used_bytes, pool_waiters, pool_bytes;
	uint64_t oldest_req_ns;    /* age of its oldest request in flight (sampled each second) */
};

struct metrics {
	struct worker_stats sum;   /* every worker's, added */
	struct metrics_worker *workers;
	unsigned nworkers;
	bool has_cache;
	struct cache_stats cache;
	uint64_t pool_bytes;       /* each worker's pool */
	uint64_t over_limit;       /* clients refused at accept (connection limits) */
	unsigned connections;
	double start_time_s;       /* wall clock */
	struct metrics_export *exports;
	size_t nexports;
	struct metrics_throttle *groups; /* throttle groups */
	size_t ngroups;
};

/* Fills *m (metrics_release() it). Returns 0 or -ENOMEM. */
int metrics_collect(struct server *srv, struct metrics *m);
void metrics_release(struct metrics *m);
/* The Prometheus text exposition format 0.0.4: a heap string (its length in *len), or NULL. */
char *metrics_prometheus(const struct metrics *m, size_t *len);
/* The same figures as a JSON object (a new reference). */
json_object *metrics_json(const struct metrics *m);
/* {"waiting": n, "requests": n, "seconds": x} of one export's or group's waits. */
json_object *metrics_throttle_json(const struct metrics_throttle *t);
/* Commands as JSON names them (indexed as export_stats' counters). */
extern const char *const metrics_json_ops[EXPORT_STAT_OPS];

#endif
