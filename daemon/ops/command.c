// SPDX-License-Identifier: BSD-3-Clause
/*
 * The control socket's commands (uringnbdctl(8) documents each). They run
 * on the main thread with a parsed, validated request (ctlproto.c); those
 * that need the connections ask the workers (ctl_call_query) and answer
 * from the query's done().
 *
 * Changes made here (export-add, export-remove, export-set) last until
 * the next reload: the configuration file stays the truth, and a reload
 * logs each difference it undoes. Like a reload, export-set and a forced
 * export-remove never change an open connection's settings: connections
 * keep the export they chose (export-remove with force closes them). Rate
 * limits are the exception: they hold for the open connections at once.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "control.h"
#include "metrics.h"

static json_object *str_or_null(const char *s)
{
	return s ? json_object_new_string(s) : NULL;
}

/* {"read": n, ...} of one counter array, leaving out DISC (never replied to). */
static json_object *per_op(const atomic_uint_fast64_t *v)
{
	json_object *o = json_object_new_object();
	unsigned k;

	for (k = 0; k < EXPORT_STAT_OPS; k++)
		if (k != NBD_CMD_DISC)
			json_object_object_add(o, metrics_json_ops[k], json_object_new_uint64(
				atomic_load_explicit(&v[k], memory_order_relaxed)));
	return o;
}

static json_object *export_json(const struct export *e)
{
	json_object *o = json_object_new_object();
	struct export_stats sum = { 0 };
	int derr = backing_durability_err(export_store(e));

	export_stats_sum(e->ctr, &sum);
	json_object_object_add(o, "name", json_object_new_string(e->name));
	json_object_object_add(o, "description", json_object_new_string(e->description));
	json_object_object_add(o, "path", json_object_new_string(e->path));
	json_object_object_add(o, "size", json_object_new_uint64(e->size_bytes));
	json_object_object_add(o, "readonly", json_object_new_boolean(e->readonly));
	json_object_object_add(o, "block-device", json_object_new_boolean(e->is_blockdev));
	json_object_object_add(o, "cache", json_object_new_string(cache_mode_name(e->cache_mode)));
	json_object_object_add(o, "overlay", str_or_null(e->overlay_src));
	json_object_object_add(o, "backend", json_object_new_string(e->be->kind));
	if (e->ceph_conf)
		json_object_object_add(o, "ceph-conf", json_object_new_string(e->ceph_conf));
	if (e->ceph_id)
		json_object_object_add(o, "ceph-id", json_object_new_string(e->ceph_id));
	json_object_object_add(o, "tls-required", json_object_new_boolean(e->access.tls_only));
	json_object_object_add(o, "allow", str_or_null(e->access_src[0]));
	json_object_object_add(o, "deny", str_or_null(e->access_src[1]));
	json_object_object_add(o, "tls-allow", str_or_null(e->access_src[2]));
	json_object_object_add(o, "connections", json_object_new_uint64(export_stats_conns(&sum)));
	json_object_object_add(o, "in-flight", json_object_new_uint64(sum.in_flight));
	json_object_object_add(o, "requests", per_op(sum.requests));
	json_object_object_add(o, "bytes", per_op(sum.bytes));
	json_object_object_add(o, "errors", per_op(sum.errors));
	json_object_object_add(o, "durability-error", derr ? json_object_new_string(strerror(derr))
							    : NULL);
	json_object_object_add(o, "since", json_object_new_int64(e->ctr->since_s));
	command_limits_json(o, e);
	return o;
}

/* What this process's start adopted from the one before it (a restart keeping connections). */
static json_object *start_json(void)
{
	json_object *o = json_object_new_object();
	struct handover_stats h;

	handover_stats(&h);
	json_object_object_add(o, "restarted", json_object_new_boolean(h.restarted));
	json_object_object_add(o, "adopted", json_object_new_uint64(h.adopted));
	json_object_object_add(o, "closed-tls", json_object_new_uint64(h.closed_tls));
	json_object_object_add(o, "closed-negotiating", json_object_new_uint64(h.closed_negotiating));
	json_object_object_add(o, "refused", json_object_new_uint64(h.refused));
	return o;
}

static void cmd_version(struct ctl_call *call)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "package", json_object_new_string("uringnbd"));
	json_object_object_add(o, "version", json_object_new_string(URINGNBD_VERSION));
	json_object_object_add(o, "pid", json_object_new_int64((int64_t)getpid()));
	json_object_object_add(o, "start", start_json());
	ctl_call_return(call, o);
}

static void cmd_exports(struct ctl_call *call)
{
	const char *name = ctl_arg_string(ctl_call_request(call), "name");
	struct export **t;
	json_object *a;
	size_t n, i;

	t = server_exports_get(ctl_call_server(call), &n);
	if (!t) {
		ctl_call_error(call, CTL_ERR_GENERIC, "out of memory");
		return;
	}
	a = json_object_new_array();
	for (i = 0; i < n; i++) {
		json_object *o;
		int id;

		if (name && strcmp(name, t[i]->name))
			continue;
		o = export_json(t[i]);
		id = server_ublk_of(ctl_call_server(call), t[i]->name);
		if (id >= 0) {
			char dev[32];

			snprintf(dev, sizeof(dev), "/dev/ublkb%d", id);
			json_object_object_add(o, "ublk", json_object_new_string(dev));
		}
		json_object_array_add(a, o);
	}
	server_exports_put(t, n);
	if (name && json_object_array_length(a) == 0) {
		json_object_put(a);
		ctl_call_error(call, CTL_ERR_NOTFOUND, "no export \"%s\"", name);
		return;
	}
	ctl_call_return(call, a);
}

static int info_by_id(const void *a, const void *b)
{
	const struct conn_info *x = *(const struct conn_info *const *)a;
	const struct conn_info *y = *(const struct conn_info *const *)b;

	return x->id < y->id ? -1 : x->id > y->id;
}

static void connections_done(struct ctl_call *call, const struct ctl_worker_result *r,
			     unsigned nw)
{
	const char *export = ctl_arg_string(ctl_call_request(call), "export");
	const struct conn_info **all;
	size_t n = 0, i;
	json_object *a;
	unsigned w;
	int k;

	for (w = 0; w < nw; w++) {
		if (r[w].n < 0) {
			ctl_call_error(call, CTL_ERR_GENERIC, "worker %u: %s", w, strerror(-r[w].n));
			return;
		}
		n += (size_t)r[w].n;
	}
	all = calloc(n ? n : 1, sizeof(*all));
	if (!all) {
		ctl_call_error(call, CTL_ERR_GENERIC, "out of memory");
		return;
	}
	n = 0;
	for (w = 0; w < nw; w++)
		for (k = 0; k < r[w].n; k++)
			if (!export || (r[w].info[k].exp && !strcmp(r[w].info[k].exp->name, export)))
				all[n++] = &r[w].info[k];
	qsort(all, n, sizeof(*all), info_by_id);
	a = json_object_new_array();
	for (i = 0; i < n; i++) {
		const struct conn_info *ci = all[i];
		json_object *o = json_object_new_object();

		json_object_object_add(o, "id", json_object_new_uint64(ci->id));
		json_object_object_add(o, "export", ci->exp ? json_object_new_string(ci->exp->name)
							     : NULL);
		json_object_object_add(o, "peer", json_object_new_string(ci->peer));
		json_object_object_add(o, "tls", json_object_new_boolean(ci->tls));
		json_object_object_add(o, "tls-identity", str_or_null(ci->tls_identity));
		json_object_object_add(o, "state", json_object_new_string(ci->state));
		json_object_object_add(o, "worker", json_object_new_int(ci->worker));
		json_object_object_add(o, "age", json_object_new_double(ci->age_s));
		json_object_object_add(o, "in-flight", json_object_new_uint64(ci->in_flight));
		json_object_object_add(o, "requests", json_object_new_uint64(ci->requests));
		json_object_object_add(o, "errors", json_object_new_uint64(ci->errors));
		json_object_object_add(o, "bytes-read", json_object_new_uint64(ci->bytes_read));
		json_object_object_add(o, "bytes-written",
				       json_object_new_uint64(ci->bytes_written));
		json_object_array_add(a, o);
	}
	free(all);
	ctl_call_return(call, a);
}

static void cmd_connections(struct ctl_call *call)
{
	ctl_call_query(call, CTL_QUERY_LIST, 0, NULL, connections_done);
}

/* An export argument as the config file would spell it. */
static const char *arg_text(const struct ctl_request *req, const struct ctl_arg_spec *a)
{
	if (a->type == CTL_ARG_BOOL)
		return ctl_arg_bool(req, a->name, false) ? "true" : "false";
	return ctl_arg_string(req, a->name);
}

/*
 * Applies the request's export keys (all but name) to *spec, as a config
 * file's [export] section would; a key already in spec is replaced.
 * Returns 0, or -1 with the call answered.
 */
static int apply_keys(struct ctl_call *call, struct export_spec *spec)
{
	const struct ctl_request *req = ctl_call_request(call);
	const struct ctl_arg_spec *a;
	char err[300];

	for (a = req->cmd->args; a->name; a++) {
		if (!strcmp(a->name, "name") || !ctl_arg_given(req, a->name))
			continue;
		/* Replaced, not "given twice". */
		if (!strcmp(a->name, "description"))
			spec->description = "";
		else if (!strcmp(a->name, "allow"))
			spec->allow = NULL;
		else if (!strcmp(a->name, "deny"))
			spec->deny = NULL;
		else if (!strcmp(a->name, "tls-allow"))
			spec->tls_allow = NULL;
		if (config_set_export(spec, a->name, arg_text(req, a), err, sizeof(err)) < 0) {
			ctl_call_error(call, CTL_ERR_INVALID, "%s", err);
			return -1;
		}
	}
	if (command_limits_keys(call, spec) < 0)
		return -1;
	/* An empty list means none, as an absent key would. */
	if (spec->allow && !*spec->allow)
		spec->allow = NULL;
	if (spec->deny && !*spec->deny)
		spec->deny = NULL;
	if (spec->tls_allow && !*spec->tls_allow)
		spec->tls_allow = NULL;
	if ((spec->tls_required || spec->tls_allow) &&
	    ctl_call_server(call)->tls_mode == PROTO_TLS_OFF) {
		ctl_call_error(call, CTL_ERR_INVALID, "export \"%s\" would be TLS-only (tls = require "
			       "or tls-allow), but tls is off", spec->name);
		return -1;
	}
	return 0;
}

/* export_open with its error as the call's answer. */
static struct export *open_for(struct ctl_call *call, const struct export_spec *spec)
{
	char why[512];
	struct export *e;

	log_capture(why, sizeof(why));
	e = export_open(spec);
	log_capture(NULL, 0);
	if (!e)
		ctl_call_error(call, CTL_ERR_GENERIC, "%s", why[0] ? why : "cannot open the export");
	return e;
}

static void cmd_export_add(struct ctl_call *call)
{
	const struct ctl_request *req = ctl_call_request(call);
	struct export_spec spec = { .description = "" };
	struct server *srv = ctl_call_server(call);
	struct export *e;
	int ret;

	spec.name = ctl_arg_string(req, "name");
	if (strlen(spec.name) > PROTO_NAME_MAX) {
		ctl_call_error(call, CTL_ERR_INVALID, "export name longer than %d bytes",
			       PROTO_NAME_MAX);
		return;
	}
	e = server_find_export(srv, spec.name);
	if (e) {
		export_put(e);
		ctl_call_error(call, CTL_ERR_INVALID, "export \"%s\" exists already", spec.name);
		return;
	}
	if (apply_keys(call, &spec) < 0 || !(e = open_for(call, &spec)))
		return;
	ret = server_add_export(srv, e);
	if (ret < 0) {
		export_put(e);
		ctl_call_error(call, CTL_ERR_GENERIC, "export \"%s\": %s", spec.name, strerror(-ret));
		return;
	}
	if (export_limits_apply(e, &spec) < 0)
		log_warn("export \"%s\": out of memory for its rate limits", e->name);
	log_info("export \"%s\": \"%s\" added by the control socket (until the next reload)",
		 e->name, e->path);
	ctl_call_return(call, export_json(e));
}

static void remove_done(struct ctl_call *call, const struct ctl_worker_result *r, unsigned nw)
{
	json_object *o = json_object_new_object();
	unsigned w, n = 0;

	for (w = 0; w < nw; w++)
		n += r[w].matched;
	json_object_object_add(o, "removed", json_object_new_string(
		ctl_arg_string(ctl_call_request(call), "name")));
	json_object_object_add(o, "disconnected", json_object_new_uint64(n));
	ctl_call_return(call, o);
}

static void cmd_export_remove(struct ctl_call *call)
{
	const struct ctl_request *req = ctl_call_request(call);
	const char *name = ctl_arg_string(req, "name");
	bool force = ctl_arg_bool(req, "force", false);
	struct export *e;
	uint64_t conns;
	int err;

	if (server_ublk_of(ctl_call_server(call), name) >= 0) {
		ctl_call_error(call, CTL_ERR_BUSY, "export \"%s\" is /dev/ublkb%d: ublk-remove it "
			       "first", name, server_ublk_of(ctl_call_server(call), name));
		return;
	}
	e = server_remove_export(ctl_call_server(call), name, force, &conns, &err);
	if (err == -ENOENT) {
		ctl_call_error(call, CTL_ERR_NOTFOUND, "no export \"%s\"", name);
		return;
	}
	if (err == -EBUSY) {
		ctl_call_error(call, CTL_ERR_BUSY, "export \"%s\" has %" PRIu64 " connection%s: "
			       "disconnect %s or use force", name, conns, conns == 1 ? "" : "s",
			       conns == 1 ? "it" : "them");
		return;
	}
	log_info("export \"%s\" removed by the control socket%s", name,
		 conns ? ": its connections close once their requests are done" : "");
	export_put(e);
	/* Its clients: new requests get ESHUTDOWN, those in flight are answered. */
	ctl_call_query(call, CTL_QUERY_DISCONNECT, 0, name, remove_done);
}

static void cmd_export_set(struct ctl_call *call)
{
	const struct ctl_request *req = ctl_call_request(call);
	const char *name = ctl_arg_string(req, "name");
	struct server *srv = ctl_call_server(call);
	struct export *old, *fresh, *was;
	struct export_spec spec;

	old = server_find_export(srv, name);
	if (!old) {
		ctl_call_error(call, CTL_ERR_NOTFOUND, "no export \"%s\"", name);
		return;
	}
	export_spec_of(old, &spec);
	if (apply_keys(call, &spec) < 0 || !(fresh = open_for(call, &spec))) {
		export_put(old);
		return;
	}
	export_share_counters(fresh, old);
	/* The counters are shared: the open connections get the limits too. */
	if (export_limits_apply(fresh, &spec) < 0) {
		export_put(fresh);
		export_put(old);
		ctl_call_error(call, CTL_ERR_GENERIC, "out of memory");
		return;
	}
	was = server_replace_export(srv, fresh);
	if (!was) {
		/* Removed meanwhile (a reload): nothing to change. */
		export_put(fresh);
		export_put(old);
		ctl_call_error(call, CTL_ERR_NOTFOUND, "no export \"%s\"", name);
		return;
	}
	log_info("export \"%s\": settings changed by the control socket (new connections get "
		 "them; until the next reload)", name);
	ctl_call_return(call, export_json(fresh));
	export_put(was);
	export_put(old);
}

static void disconnect_done(struct ctl_call *call, const struct ctl_worker_result *r,
			    unsigned nw)
{
	int64_t id = ctl_arg_int(ctl_call_request(call), "id", 0);
	json_object *o;
	unsigned w, n = 0;

	for (w = 0; w < nw; w++)
		n += r[w].matched;
	if (!n) {
		ctl_call_error(call, CTL_ERR_NOTFOUND, "no connection %" PRId64, id);
		return;
	}
	o = json_object_new_object();
	json_object_object_add(o, "disconnected", json_object_new_int64(id));
	ctl_call_return(call, o);
}

static void cmd_disconnect(struct ctl_call *call)
{
	int64_t id = ctl_arg_int(ctl_call_request(call), "id", 0);

	if (id <= 0) {
		ctl_call_error(call, CTL_ERR_INVALID, "disconnect: \"id\" must be a connection id "
			       "(1 or more)");
		return;
	}
	ctl_call_query(call, CTL_QUERY_DISCONNECT, (uint64_t)id, NULL, disconnect_done);
}

static void cmd_log_level(struct ctl_call *call)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };
	const char *level = ctl_arg_string(ctl_call_request(call), "level");
	json_object *o;

	if (level) {
		int l = config_parse_log_level(level);

		if (l < 0) {
			ctl_call_error(call, CTL_ERR_INVALID, "log-level: expected error, warning, "
				       "info or debug");
			return;
		}
		log_max_level = (enum log_level)l;
		log_info("log level %s (control socket)", level);
	}
	o = json_object_new_object();
	json_object_object_add(o, "level", json_object_new_string(names[log_max_level]));
	ctl_call_return(call, o);
}

static void cmd_stats(struct ctl_call *call)
{
	struct metrics m;

	if (metrics_collect(ctl_call_server(call), &m) < 0) {
		metrics_release(&m);
		ctl_call_error(call, CTL_ERR_GENERIC, "out of memory");
		return;
	}
	{
		json_object *o = metrics_json(&m);

		json_object_object_add(o, "start", start_json());
		ctl_call_return(call, o);
	}
	metrics_release(&m);
}

/* ---- dirty bitmaps and checkpoints (bitmap.c does the work, on a job thread) ---- */

/* The export name names, with bitmaps: a new reference, or NULL with the call answered. */
static struct export *bitmap_export(struct ctl_call *call, const char *name)
{
	struct export *e = server_find_export(ctl_call_server(call), name);

	if (!e) {
		ctl_call_error(call, CTL_ERR_NOTFOUND, "no export \"%s\"", name);
		return NULL;
	}
	if (!export_has_bitmaps(e) || e->checkpoint) {
		ctl_call_error(call, CTL_ERR_INVALID, "export \"%s\" has no dirty bitmaps%s", name,
			       e->checkpoint ? " of its own (it is a checkpoint)" :
			       " (bitmaps = NAME in its configuration)");
		export_put(e);
		return NULL;
	}
	return e;
}

/* A backend's own checkpoints (rbd: snapshots): its bitmaps are names, its checkpoints listed. */
static json_object *backend_bitmaps_json(const struct export *e)
{
	struct bitmap_info *info = calloc(BITMAP_SLOTS, sizeof(*info));
	json_object *o = json_object_new_object(), *live = json_object_new_array(),
		    *ckpts = json_object_new_array();
	char name[PROTO_NAME_MAX + 1], *copy = strdup(e->bitmaps_src), *save = NULL, *b;
	int n = info ? e->be->checkpoints(e, info, BITMAP_SLOTS) : -ENOMEM, k;

	json_object_object_add(o, "export", json_object_new_string(e->name));
	json_object_object_add(o, "kept-by", json_object_new_string(e->be->kind));
	for (b = copy ? strtok_r(copy, ",", &save) : NULL; b; b = strtok_r(NULL, ",", &save)) {
		json_object *j = json_object_new_object();

		json_object_object_add(j, "name", json_object_new_string(b));
		json_object_array_add(live, j);
	}
	free(copy);
	if (n < 0)
		json_object_object_add(o, "error", json_object_new_string(strerror(-n)));
	for (k = 0; k < n; k++) {
		json_object *j = json_object_new_object();

		snprintf(name, sizeof(name), "%s@%s", e->name, info[k].name);
		json_object_object_add(j, "name", json_object_new_string(info[k].name));
		json_object_object_add(j, "created", json_object_new_int64(info[k].created_s));
		json_object_object_add(j, "bitmap", json_object_new_string(info[k].bitmap));
		json_object_object_add(j, "export", json_object_new_string(name));
		json_object_object_add(j, "snapshot", json_object_new_string(info[k].name));
		json_object_array_add(ckpts, j);
	}
	json_object_object_add(o, "bitmaps", live);
	json_object_object_add(o, "checkpoints", ckpts);
	free(info);
	return o;
}

static json_object *bitmaps_json(const struct export *e)
{
	struct bitmap_info *info;

	if (!e->bm)
		return backend_bitmaps_json(e);
	info = calloc(BITMAP_SLOTS, sizeof(*info));
	json_object *o = json_object_new_object(), *live = json_object_new_array(),
		    *ckpts = json_object_new_array();
	uint32_t gran = bitmaps_granularity(e->bm);
	char snap[PATH_MAX], name[PROTO_NAME_MAX + 1];
	size_t n = info ? bitmaps_list(e->bm, info) : 0, k;
	uint64_t commits, pages;

	json_object_object_add(o, "export", json_object_new_string(e->name));
	json_object_object_add(o, "granularity", json_object_new_uint64(gran));
	bitmaps_commits(e->bm, &commits, &pages);
	json_object_object_add(o, "commits", json_object_new_uint64(commits));
	json_object_object_add(o, "commit-pages", json_object_new_uint64(pages));
	for (k = 0; k < n; k++) {
		json_object *b = json_object_new_object();

		json_object_object_add(b, "name", json_object_new_string(info[k].name));
		json_object_object_add(b, "dirty-granules",
				       json_object_new_uint64(info[k].dirty_granules));
		json_object_object_add(b, "dirty-bytes",
				       json_object_new_uint64(info[k].dirty_granules * gran));
		json_object_object_add(b, "created", json_object_new_int64(info[k].created_s));
		if (info[k].kind == BITMAP_LIVE) {
			json_object_array_add(live, b);
			continue;
		}
		bitmaps_snapshot_path(e->bm, info[k].name, snap, sizeof(snap));
		snprintf(name, sizeof(name), "%s@%s", e->name, info[k].name);
		json_object_object_add(b, "bitmap", json_object_new_string(info[k].bitmap));
		json_object_object_add(b, "export", json_object_new_string(name));
		json_object_object_add(b, "snapshot", info[k].snapshot ?
				       json_object_new_string(snap) : NULL);
		json_object_array_add(ckpts, b);
	}
	json_object_object_add(o, "bitmaps", live);
	json_object_object_add(o, "checkpoints", ckpts);
	free(info);
	return o;
}

/* A backend's list asks its storage (the cluster): off the main thread. */
struct bitmaps_job {
	struct export *e;
	json_object *reply;
};

static void bitmaps_job_run(void *arg)
{
	struct bitmaps_job *j = arg;

	j->reply = bitmaps_json(j->e);
}

static void bitmaps_job_done(struct ctl_call *call, void *arg, int err)
{
	struct bitmaps_job *j = arg;

	if (err)
		ctl_call_error(call, CTL_ERR_GENERIC, "%s", strerror(-err));
	else
		ctl_call_return(call, j->reply);
	export_put(j->e);
	free(j);
}

static void cmd_bitmaps(struct ctl_call *call)
{
	struct export *e = bitmap_export(call, ctl_arg_string(ctl_call_request(call), "export"));
	struct bitmaps_job *j;

	if (!e)
		return;
	if (e->bm) {
		ctl_call_return(call, bitmaps_json(e));
		export_put(e);
		return;
	}
	j = calloc(1, sizeof(*j));
	if (!j) {
		export_put(e);
		ctl_call_error(call, CTL_ERR_GENERIC, "out of memory");
		return;
	}
	j->e = e;
	ctl_call_job(call, bitmaps_job_run, bitmaps_job_done, j);
}

enum bitmap_job_kind { JOB_CHECKPOINT, JOB_CLEAR, JOB_REMOVE_BITMAP, JOB_REMOVE_CHECKPOINT };
struct bitmap_job {
	enum bitmap_job_kind kind;
	struct export *e;           /* a reference */
	char *bitmap, *name;
	bool bitmap_only;
	int ret;
	char err[768];
	struct export *ck;          /* a backend's checkpoint: its export, opened by the job */
	json_object *reply;         /* ...and, a backend's, the bitmaps reply, made there too */
};

/* The checkpoint just taken, as export_open_checkpoint() takes it. */
static void checkpoint_info(const struct bitmap_job *j, int slot, struct bitmap_info *info)
{
	memset(info, 0, sizeof(*info));
	info->slot = slot;
	info->kind = BITMAP_FROZEN;
	info->snapshot = !j->bitmap_only;
	snprintf(info->name, sizeof(info->name), "%s", j->name);
	snprintf(info->bitmap, sizeof(info->bitmap), "%s", j->bitmap);
}

static void bitmap_job_run(void *arg)
{
	struct bitmap_job *j = arg;
	struct export *e = j->e;

	switch (j->kind) {
	case JOB_CHECKPOINT:
		if (!e->bm) {
			struct bitmap_info info;

			/* Its export too: opening a snapshot asks the cluster. */
			j->ret = e->be->checkpoint(e, j->bitmap, j->name, j->err, sizeof(j->err));
			if (j->ret)
				break;
			checkpoint_info(j, 0, &info);
			log_capture(j->err, sizeof(j->err));
			j->ck = export_open_checkpoint(e, &info);
			log_capture(NULL, 0);
		} else
			j->ret = bitmaps_checkpoint(e->bm, e->locks, e->fd, j->bitmap, j->name,
						    j->bitmap_only, j->err, sizeof(j->err));
		break;
	case JOB_CLEAR:
		j->ret = bitmaps_clear(e->bm, e->locks, j->bitmap, j->err, sizeof(j->err));
		break;
	case JOB_REMOVE_BITMAP:
		j->ret = bitmaps_remove(e->bm, e->locks, BITMAP_LIVE, j->bitmap, j->err,
					sizeof(j->err));
		break;
	case JOB_REMOVE_CHECKPOINT:
		if (!e->bm)
			j->ret = e->be->checkpoint_remove(e, j->name, j->err, sizeof(j->err));
		else
			j->ret = bitmaps_remove(e->bm, e->locks, BITMAP_FROZEN, j->name, j->err,
						sizeof(j->err));
		break;
	}
	/* A backend's list asks its storage: here, not on the main thread. */
	if (!e->bm && !j->ret)
		j->reply = bitmaps_json(e);
}

/* The bitmaps reply: the one the job made, or the sidecar's (in memory). */
static json_object *bitmap_job_reply(struct bitmap_job *j)
{
	json_object *o = j->reply ? j->reply : bitmaps_json(j->e);

	j->reply = NULL;
	return o;
}

static void bitmap_job_free(struct bitmap_job *j)
{
	export_put(j->ck);
	export_put(j->e);
	json_object_put(j->reply);
	free(j->bitmap);
	free(j->name);
	free(j);
}

/* The export's bitmaps list without name (NULL if none is left). */
static char *bitmaps_without(const char *list, const char *name)
{
	char *copy = strdup(list), *out = calloc(1, strlen(list) + 1), *save = NULL, *n;

	if (!copy || !out) {
		free(copy);
		free(out);
		return NULL;
	}
	for (n = strtok_r(copy, ",", &save); n; n = strtok_r(NULL, ",", &save))
		if (strcmp(n, name)) {
			if (*out)
				strcat(out, ",");
			strcat(out, n);
		}
	free(copy);
	if (!*out) {
		free(out);
		return NULL;
	}
	return out;
}

static void bitmap_job_done(struct ctl_call *call, void *arg, int err)
{
	struct bitmap_job *j = arg;
	struct server *srv = ctl_call_server(call);
	struct export *ck, *fresh, *was;
	struct export_spec spec;
	struct bitmap_info info;
	json_object *o;
	char *list;
	int slot;

	if (err || j->ret) {
		ctl_call_error(call, j->ret == -ENOENT ? CTL_ERR_NOTFOUND : CTL_ERR_GENERIC, "%s",
			       err ? strerror(-err) : j->err);
		bitmap_job_free(j);
		return;
	}
	switch (j->kind) {
	case JOB_CHECKPOINT:
		/* Served from now on as EXPORT@NAME, read-only. */
		if (j->e->bm) {
			slot = bitmaps_find(j->e->bm, BITMAP_FROZEN, j->name);
			checkpoint_info(j, slot, &info);
			log_capture(j->err, sizeof(j->err));
			ck = slot >= 0 ? export_open_checkpoint(j->e, &info) : NULL;
			log_capture(NULL, 0);
		} else {
			ck = j->ck;
			j->ck = NULL;
		}
		if (!ck || server_add_export(srv, ck) < 0) {
			export_put(ck);
			ctl_call_error(call, CTL_ERR_GENERIC, "checkpoint \"%s\" was taken, but its "
				       "export could not be opened: %s", j->name, j->err);
			break;
		}
		log_info("export \"%s\" added: checkpoint \"%s\" of \"%s\"", ck->name, j->name,
			 j->e->name);
		ctl_call_return(call, bitmap_job_reply(j));
		break;
	case JOB_REMOVE_BITMAP:
		/* The export goes on without it (new connections; until the next reload). */
		export_spec_of(j->e, &spec);
		list = bitmaps_without(j->e->bitmaps_src, j->bitmap);
		spec.bitmaps = list;
		if (!list) {
			spec.bitmap_file = NULL;
			spec.bitmap_granularity = 0;
		}
		fresh = export_open(&spec);
		free(list);
		if (fresh) {
			export_share_counters(fresh, j->e);
			was = server_replace_export(srv, fresh);
			if (was)
				export_put(was);
			else
				export_put(fresh);
		}
		o = json_object_new_object();
		json_object_object_add(o, "removed", json_object_new_string(j->bitmap));
		ctl_call_return(call, o);
		break;
	default:
		ctl_call_return(call, bitmap_job_reply(j));
		break;
	}
	bitmap_job_free(j);
}

/* Starts a job on export's bitmaps; the export and strings are the job's. */
static void bitmap_job_start(struct ctl_call *call, enum bitmap_job_kind kind, struct export *e,
			     const char *bitmap, const char *name, bool bitmap_only)
{
	struct bitmap_job *j = calloc(1, sizeof(*j));

	if (!j || (bitmap && !(j->bitmap = strdup(bitmap))) || (name && !(j->name = strdup(name)))) {
		if (j) {
			free(j->bitmap);
			free(j);
		}
		export_put(e);
		ctl_call_error(call, CTL_ERR_GENERIC, "out of memory");
		return;
	}
	j->kind = kind;
	j->e = e;
	j->bitmap_only = bitmap_only;
	ctl_call_job(call, bitmap_job_run, bitmap_job_done, j);
}

/* Whether e has a checkpoint of that name (its sidecar's, or its backend's). */
static bool export_has_checkpoint(const struct export *e, const char *name)
{
	struct bitmap_info *info;
	bool found = false;
	int n, k;

	if (e->bm)
		return bitmaps_find(e->bm, BITMAP_FROZEN, name) >= 0;
	info = calloc(BITMAP_SLOTS, sizeof(*info));
	n = info ? e->be->checkpoints(e, info, BITMAP_SLOTS) : 0;
	for (k = 0; k < n && !found; k++)
		found = !strcmp(info[k].name, name);
	free(info);
	return found;
}

static bool name_valid(struct ctl_call *call, const char *what, const char *name)
{
	char why[300];

	if (bitmap_name_ok(name, why, sizeof(why)))
		return true;
	ctl_call_error(call, CTL_ERR_INVALID, "%s %s", what, why);
	return false;
}

static void cmd_checkpoint(struct ctl_call *call)
{
	const struct ctl_request *req = ctl_call_request(call);
	const char *bitmap = ctl_arg_string(req, "bitmap"), *name = ctl_arg_string(req, "name");
	struct export *e;

	if (!name_valid(call, "checkpoint", name))
		return;
	e = bitmap_export(call, ctl_arg_string(req, "export"));
	if (!e)
		return;
	if (e->readonly) {
		ctl_call_error(call, CTL_ERR_INVALID, "export \"%s\" is read-only: a checkpoint "
			       "is taken on the export its writes come through", e->name);
		export_put(e);
		return;
	}
	if (e->bm ? bitmaps_find(e->bm, BITMAP_LIVE, bitmap) < 0 : !export_names_bitmap(e, bitmap)) {
		ctl_call_error(call, CTL_ERR_NOTFOUND, "export \"%s\" has no bitmap \"%s\"",
			       e->name, bitmap);
		export_put(e);
		return;
	}
	if (!e->bm && ctl_arg_bool(req, "bitmap-only", false)) {
		ctl_call_error(call, CTL_ERR_INVALID, "export \"%s\": a checkpoint of an %s "
			       "image is a snapshot (there is no bitmap-only one)", e->name,
			       e->be->kind);
		export_put(e);
		return;
	}
	bitmap_job_start(call, JOB_CHECKPOINT, e, bitmap, name,
			 ctl_arg_bool(req, "bitmap-only", false));
}

static void cmd_checkpoint_remove(struct ctl_call *call)
{
	const struct ctl_request *req = ctl_call_request(call);
	const char *name = ctl_arg_string(req, "name");
	char full[PROTO_NAME_MAX + 1];
	struct export *e, *ck;
	uint64_t conns;
	int err;

	if (!name_valid(call, "checkpoint", name))
		return;
	e = bitmap_export(call, ctl_arg_string(req, "export"));
	if (!e)
		return;
	/* A backend's checkpoints are the cluster's to tell: its removal job finds out. */
	if (e->bm && !export_has_checkpoint(e, name)) {
		ctl_call_error(call, CTL_ERR_NOTFOUND, "export \"%s\" has no checkpoint \"%s\"",
			       e->name, name);
		export_put(e);
		return;
	}
	snprintf(full, sizeof(full), "%s@%s", e->name, name);
	ck = server_remove_export(ctl_call_server(call), full, false, &conns, &err);
	if (err == -EBUSY) {
		ctl_call_error(call, CTL_ERR_BUSY, "export \"%s\" has %" PRIu64 " connection%s: "
			       "disconnect %s first", full, conns, conns == 1 ? "" : "s",
			       conns == 1 ? "it" : "them");
		export_put(e);
		return;
	}
	export_put(ck);
	bitmap_job_start(call, JOB_REMOVE_CHECKPOINT, e, NULL, name, false);
}

/* Clearing or removing a bitmap is the sidecar's: a backend's bitmaps are names. */
static bool sidecar_bitmaps(struct ctl_call *call, struct export *e)
{
	if (e->bm)
		return true;
	ctl_call_error(call, CTL_ERR_INVALID, "export \"%s\": its bitmaps are the %s image's "
		       "snapshots: remove checkpoints instead (or drop the name from its bitmaps)",
		       e->name, e->be->kind);
	export_put(e);
	return false;
}

static void cmd_bitmap_clear(struct ctl_call *call)
{
	const struct ctl_request *req = ctl_call_request(call);
	struct export *e = bitmap_export(call, ctl_arg_string(req, "export"));

	if (e && sidecar_bitmaps(call, e))
		bitmap_job_start(call, JOB_CLEAR, e, ctl_arg_string(req, "bitmap"), NULL, false);
}

static void cmd_bitmap_remove(struct ctl_call *call)
{
	const struct ctl_request *req = ctl_call_request(call);
	struct export *e = bitmap_export(call, ctl_arg_string(req, "export"));
	struct export_stats sum = { 0 };
	uint64_t conns;

	if (!e || !sidecar_bitmaps(call, e))
		return;
	export_stats_sum(e->ctr, &sum);
	conns = export_stats_conns(&sum);
	if (conns) {
		ctl_call_error(call, CTL_ERR_BUSY, "export \"%s\" has %" PRIu64 " connection%s, "
			       "which may be reading the bitmap: disconnect %s first", e->name,
			       conns, conns == 1 ? "" : "s", conns == 1 ? "it" : "them");
		export_put(e);
		return;
	}
	bitmap_job_start(call, JOB_REMOVE_BITMAP, e, ctl_arg_string(req, "bitmap"), NULL, false);
}

/* ---- ublk devices: the kernel starts and stops them, on a job thread ---- */
struct ublk_job {
	struct server *srv;
	char *export;
	bool add, force;
	int ret;
	char msg[512];
};

static void ublk_job_run(void *arg)
{
	struct ublk_job *j = arg;

	j->ret = j->add ? server_ublk_add(j->srv, j->export, j->msg, sizeof(j->msg)) :
			  server_ublk_remove(j->srv, j->export, j->force, j->msg, sizeof(j->msg));
}

static void ublk_job_done(struct ctl_call *call, void *arg, int err)
{
	struct ublk_job *j = arg;

	if (err) {
		ctl_call_error(call, CTL_ERR_GENERIC, "%s", strerror(-err));
	} else if (j->ret < 0) {
		ctl_call_error(call, j->ret == -ENOENT ? CTL_ERR_NOTFOUND :
			       j->ret == -EBUSY || j->ret == -EEXIST ? CTL_ERR_BUSY : CTL_ERR_GENERIC,
			       "%s", j->msg);
	} else {
		json_object *o = json_object_new_object();
		char dev[32] = "";

		json_object_object_add(o, "export", json_object_new_string(j->export));
		if (j->add) {
			snprintf(dev, sizeof(dev), "/dev/ublkb%d", j->ret);
			json_object_object_add(o, "ublk", json_object_new_string(dev));
		}
		log_info("export \"%s\": %s by the control socket", j->export,
			 j->add ? dev : "ublk device removed");
		ctl_call_return(call, o);
	}
	free(j->export);
	free(j);
}

static void ublk_job_start(struct ctl_call *call, bool add)
{
	const struct ctl_request *req = ctl_call_request(call);
	struct ublk_job *j = calloc(1, sizeof(*j));

	if (!j || !(j->export = strdup(ctl_arg_string(req, "export")))) {
		free(j);
		ctl_call_error(call, CTL_ERR_GENERIC, "out of memory");
		return;
	}
	j->srv = ctl_call_server(call);
	j->add = add;
	j->force = ctl_arg_bool(req, "force", false);
	ctl_call_job(call, ublk_job_run, ublk_job_done, j);
}

static void cmd_ublk_add(struct ctl_call *call)
{
	ublk_job_start(call, true);
}

static void cmd_ublk_remove(struct ctl_call *call)
{
	ublk_job_start(call, false);
}

static const struct {
	const char *name;
	void (*run)(struct ctl_call *call);
} commands[] = {
	{ "version", cmd_version },
	{ "exports", cmd_exports },
	{ "connections", cmd_connections },
	{ "export-add", cmd_export_add },
	{ "export-remove", cmd_export_remove },
	{ "export-set", cmd_export_set },
	{ "disconnect", cmd_disconnect },
	{ "log-level", cmd_log_level },
	{ "stats", cmd_stats },
	{ "bitmaps", cmd_bitmaps },
	{ "checkpoint", cmd_checkpoint },
	{ "checkpoint-remove", cmd_checkpoint_remove },
	{ "bitmap-clear", cmd_bitmap_clear },
	{ "bitmap-remove", cmd_bitmap_remove },
	{ "group-set", cmd_group_set },
	{ "groups", cmd_groups },
	{ "ublk-add", cmd_ublk_add },
	{ "ublk-remove", cmd_ublk_remove },
};

void command_run(struct ctl_call *call)
{
	const char *name = ctl_call_request(call)->cmd->name;
	size_t i;

	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(commands[i].name, name)) {
			commands[i].run(call);
			return;
		}
	/* A command in ctlproto's table without an implementation here: a bug. */
	ctl_call_error(call, CTL_ERR_NOCMD, "command \"%s\" is not implemented", name);
}
