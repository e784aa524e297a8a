// SPDX-License-Identifier: BSD-3-Clause
/*
 * The control socket's rate limits: the LIMIT keys of export-add and
 * export-set, the limits in an export's JSON, and the throttle groups'
 * commands (group-set, groups). Limits change at once for the connections
 * already open (storage/limits.c keeps them where every export object of a
 * name, and every connection, reads them); like every control change,
 * they last until the next reload.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "metrics.h"

/* {"iops-total": 2000, ...}: the keys set (a limit of 0 is none, and not shown). */
static json_object *limits_json(const struct throttle_limits *lim)
{
	json_object *o = json_object_new_object();
	unsigned k;

	for (k = 0; k < THROTTLE_KEYS; k++)
		if (throttle_key_get(lim, k))
			json_object_object_add(o, throttle_key_name(k),
					       json_object_new_uint64(throttle_key_get(lim, k)));
	return o;
}

void command_limits_json(json_object *o, const struct export *e)
{
	struct throttle_limits lim, conn;
	struct metrics_throttle mt = { 0 };
	const char *group;

	export_limits_get(e, &lim, &conn, &group);
	json_object_object_add(o, "limits", limits_json(&lim));
	json_object_object_add(o, "conn-limits", limits_json(&conn));
	json_object_object_add(o, "throttle-group", group ? json_object_new_string(group) : NULL);
	mt.waiting = atomic_load(&e->ctr->thr.waiting);
	mt.delayed = atomic_load(&e->ctr->thr.delayed);
	mt.delayed_ns = atomic_load(&e->ctr->thr.delayed_ns);
	json_object_object_add(o, "throttled", metrics_throttle_json(&mt));
}

int command_limits_keys(struct ctl_call *call, struct export_spec *spec)
{
	const struct ctl_request *req = ctl_call_request(call);
	struct throttle_group *g;
	char err[300];

	json_object_object_foreach(req->args, key, val) {
		const struct ctl_arg_spec *a = ctl_arg_find(req->cmd, key);

		if (!a || !a->match)
			continue;
		if (config_set_export(spec, key, json_object_get_string(val), err, sizeof(err)) < 0) {
			ctl_call_error(call, CTL_ERR_INVALID, "%s", err);
			return -1;
		}
	}
	if (throttle_limits_check(&spec->limits, err, sizeof(err)) < 0 ||
	    throttle_limits_check(&spec->conn_limits, err, sizeof(err)) < 0) {
		ctl_call_error(call, CTL_ERR_INVALID, "export \"%s\": %s", spec->name, err);
		return -1;
	}
	if (spec->group && (!(g = throttle_group_find(spec->group)) || !g->configured)) {
		ctl_call_error(call, CTL_ERR_INVALID, "throttle-group \"%s\" is not defined (make it "
			       "with group-set, or in the configuration file)", spec->group);
		return -1;
	}
	return 0;
}

static json_object *group_json(struct throttle_group *g)
{
	struct metrics_throttle mt = { 0 };
	struct throttle_limits lim;
	json_object *o;

	mt.waiting = atomic_load(&g->thr.waiting);
	mt.delayed = atomic_load(&g->thr.delayed);
	mt.delayed_ns = atomic_load(&g->thr.delayed_ns);
	o = metrics_throttle_json(&mt);
	throttle_get(&g->thr, &lim);
	json_object_object_add(o, "name", json_object_new_string(g->name));
	json_object_object_add(o, "limits", limits_json(&lim));
	return o;
}

void cmd_group_set(struct ctl_call *call)
{
	const struct ctl_request *req = ctl_call_request(call);
	const char *name = ctl_arg_string(req, "name");
	struct throttle_limits lim = { 0 };
	struct throttle_group *g;
	char err[300];

	if (!config_group_name_ok(name)) {
		ctl_call_error(call, CTL_ERR_INVALID, "group-set: a name of letters, digits, '-', "
			       "'_' or '.' (at most 64)");
		return;
	}
	g = throttle_group_find(name);
	if (g && g->configured)
		throttle_get(&g->thr, &lim);
	json_object_object_foreach(req->args, key, val) {
		if (!strcmp(key, "name"))
			continue;
		if (config_set_limit(&lim, key, json_object_get_string(val), err, sizeof(err)) < 0) {
			ctl_call_error(call, CTL_ERR_INVALID, "%s", err);
			return;
		}
	}
	if (throttle_limits_check(&lim, err, sizeof(err)) < 0) {
		ctl_call_error(call, CTL_ERR_INVALID, "throttle-group \"%s\": %s", name, err);
		return;
	}
	g = throttle_group_get(name);
	if (!g) {
		ctl_call_error(call, CTL_ERR_GENERIC, "out of memory");
		return;
	}
	throttle_set(&g->thr, &lim);
	g->configured = true;
	log_info("throttle-group \"%s\": limits set by the control socket (until the next "
		 "reload)", name);
	ctl_call_return(call, group_json(g));
}

void cmd_groups(struct ctl_call *call)
{
	json_object *a = json_object_new_array();
	struct throttle_group *g;

	for (g = throttle_groups_first(); g; g = g->next)
		if (g->configured)
			json_object_array_add(a, group_json(g));
	ctl_call_return(call, a);
}
