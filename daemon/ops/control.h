/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * control: the control socket (control.c) and its commands (command.c).
 * Both run on the main thread's loop. They reach connections only by
 * posting a query op to each worker's inbox (worker_post): the op runs on
 * the worker, which fills a struct conn_info per connection or acts on a
 * disconnect, then tells the main loop; and they read the per-worker
 * counters (struct export_stats, struct worker_stats) that any thread may
 * read. Nothing here touches a worker's or a connection's structures.
 */
#ifndef URINGNBD_CONTROL_H
#define URINGNBD_CONTROL_H

#include <json-c/json.h>

#include "ctlproto.h"
#include "ops.h"

/* A request being answered: owned by control.c until it is answered. */
struct ctl_call;

/* ---- control.c ---- */
const struct ctl_request *ctl_call_request(const struct ctl_call *call);
struct server *ctl_call_server(const struct ctl_call *call);
/* The answer (ret is consumed); the call is over. */
void ctl_call_return(struct ctl_call *call, json_object *ret);
void ctl_call_error(struct ctl_call *call, const char *err_class, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* What one worker answered a query with. */
struct ctl_worker_result {
	struct conn_info *info;   /* CTL_QUERY_LIST: its connections (control.c frees them) */
	int n;                    /* how many, or -errno */
	unsigned matched;         /* CTL_QUERY_DISCONNECT: connections told to close */
};
enum ctl_query_kind { CTL_QUERY_LIST, CTL_QUERY_DISCONNECT };
/*
 * Asks every worker (for a disconnect: connection id, 0 for any, of the
 * export named export, NULL for any); done(call, results, nworkers) runs on
 * the main loop once all have answered, and must answer the call.
 */
typedef void ctl_query_done(struct ctl_call *call, const struct ctl_worker_result *r,
			    unsigned n);
void ctl_call_query(struct ctl_call *call, enum ctl_query_kind kind, uint64_t id,
		    const char *export, ctl_query_done *done);

/*
 * A command's blocking part (a checkpoint: waiting for a lock, a reflink,
 * syncs): fn(arg) runs on a thread of its own, then done(call, arg, 0)
 * on the main loop, which answers the call (done gets -errno instead, at
 * once, if no thread could be started).
 */
typedef void ctl_job_fn(void *arg);
typedef void ctl_job_done(struct ctl_call *call, void *arg, int err);
void ctl_call_job(struct ctl_call *call, ctl_job_fn *fn, ctl_job_done *done, void *arg);

/* ---- command.c ---- */
/* Runs call's (parsed, validated) request; answers it now or after a query. */
void command_run(struct ctl_call *call);

/* ---- command_limits.c: rate limits ---- */
/* Adds e's limits, connection limits, group and waits to an export's JSON object o. */
void command_limits_json(json_object *o, const struct export *e);
/*
 * The request's LIMIT keys (iops-total, conn-bps-read, throttle-group...)
 * applied to *spec, then checked whole. 0, or -1 with the call answered.
 */
int command_limits_keys(struct ctl_call *call, struct export_spec *spec);
void cmd_group_set(struct ctl_call *call);
void cmd_groups(struct ctl_call *call);

#endif
