// SPDX-License-Identifier: BSD-3-Clause
/*
 * The control socket's requests and replies (ctlproto.h): the command
 * table, parsing and validation of a request line, and reply lines.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctlproto.h"
#include "../engine/throttle.h"

bool ctl_limit_key(const char *key)
{
	return !strcmp(key, "throttle-group") ||
	       throttle_key_find(!strncmp(key, "conn-", 5) ? key + 5 : key) >= 0;
}

bool ctl_group_limit_key(const char *key)
{
	return throttle_key_find(key) >= 0;
}

#define S CTL_ARG_STRING
#define B CTL_ARG_BOOL
#define I CTL_ARG_INT

/* The [export NAME] keys export-add takes (uringnbd.conf(5)), and export-set's subset. */
const struct ctl_command_spec ctl_commands[] = {
	{ "version", "the daemon's version", { { NULL } } },
	{ "exports", "exports with their settings and counters",
	  { { "name", S, false, true, NULL }, { NULL } } },
	{ "connections", "open connections",
	  { { "export", S, false, true, NULL }, { NULL } } },
	{ "export-add", "add an export (the config file's keys)",
	  { { "name", S, true, true, NULL }, { "path", S, true, true, NULL },
	    { "readonly", B, false, false, NULL },
	    { "cache", S, false, false, NULL }, { "description", S, false, false, NULL },
	    { "overlay", S, false, false, NULL }, { "allow", S, false, false, NULL },
	    { "deny", S, false, false, NULL }, { "tls-allow", S, false, false, NULL },
	    { "tls", S, false, false, NULL }, { "bitmaps", S, false, false, NULL },
	    { "bitmap-file", S, false, false, NULL },
	    { "bitmap-granularity", S, false, false, NULL },
	    { "ceph-conf", S, false, false, NULL }, { "ceph-id", S, false, false, NULL },
	    { "LIMIT", S, false, false, ctl_limit_key }, { NULL } } },
	{ "export-remove", "remove an export (force: disconnect its clients)",
	  { { "name", S, true, true, NULL }, { "force", B, false, false, NULL }, { NULL } } },
	{ "export-set", "change an export's description, read-only, access lists or rate limits "
	  "(LIMIT: iops-total, bps-read-max, conn-iops-total, throttle-group...)",
	  { { "name", S, true, true, NULL }, { "description", S, false, false, NULL },
	    { "readonly", B, false, false, NULL }, { "allow", S, false, false, NULL },
	    { "deny", S, false, false, NULL }, { "tls-allow", S, false, false, NULL },
	    { "LIMIT", S, false, false, ctl_limit_key }, { NULL } } },
	{ "group-set", "change a throttle group's limits (made if new; until the next reload)",
	  { { "name", S, true, true, NULL }, { "LIMIT", S, false, false, ctl_group_limit_key },
	    { NULL } } },
	{ "groups", "throttle groups with their limits and waits", { { NULL } } },
	{ "disconnect", "close a connection once its requests are done",
	  { { "id", I, true, true, NULL }, { NULL } } },
	{ "log-level", "show or set the log level",
	  { { "level", S, false, true, NULL }, { NULL } } },
	{ "stats", "the daemon's counters, live", { { NULL } } },
	{ "bitmaps", "an export's dirty bitmaps and checkpoints",
	  { { "export", S, true, true, NULL }, { NULL } } },
	{ "checkpoint", "freeze a bitmap with a reflink copy, served as EXPORT@NAME",
	  { { "export", S, true, true, NULL }, { "bitmap", S, true, true, NULL },
	    { "name", S, true, true, NULL },
	    { "bitmap-only", B, false, false, NULL }, { NULL } } },
	{ "checkpoint-remove", "delete a checkpoint and its copy",
	  { { "export", S, true, true, NULL }, { "name", S, true, true, NULL }, { NULL } } },
	{ "bitmap-clear", "empty a dirty bitmap",
	  { { "export", S, true, true, NULL }, { "bitmap", S, true, true, NULL }, { NULL } } },
	{ "bitmap-remove", "delete a dirty bitmap",
	  { { "export", S, true, true, NULL }, { "bitmap", S, true, true, NULL }, { NULL } } },
	{ "ublk-add", "serve an export as a local block device, /dev/ublkbN (needs ublk_drv)",
	  { { "export", S, true, true, NULL }, { NULL } } },
	{ "ublk-remove", "delete an export's ublk device (force: even while it is mounted)",
	  { { "export", S, true, true, NULL }, { "force", B, false, false, NULL }, { NULL } } },
};
const size_t ctl_ncommands = sizeof(ctl_commands) / sizeof(ctl_commands[0]);

#undef S
#undef B
#undef I

const struct ctl_command_spec *ctl_command_find(const char *name)
{
	size_t i;

	for (i = 0; i < ctl_ncommands; i++)
		if (!strcmp(ctl_commands[i].name, name))
			return &ctl_commands[i];
	return NULL;
}

const struct ctl_arg_spec *ctl_arg_find(const struct ctl_command_spec *cmd, const char *name)
{
	const struct ctl_arg_spec *a;

	for (a = cmd->args; a->name; a++)
		if (!a->match && !strcmp(a->name, name))
			return a;
	for (a = cmd->args; a->name; a++)
		if (a->match && a->match(name))
			return a;
	return NULL;
}

static const char *type_name(enum ctl_arg_type t)
{
	return t == CTL_ARG_STRING ? "a string" : t == CTL_ARG_BOOL ? "a boolean" : "an integer";
}

/* A string with no NUL inside (names and paths become C strings). */
static bool plain_string(json_object *v)
{
	return strlen(json_object_get_string(v)) == (size_t)json_object_get_string_len(v);
}

static bool type_ok(json_object *v, enum ctl_arg_type t)
{
	switch (t) {
	case CTL_ARG_STRING:
		return json_object_is_type(v, json_type_string) && plain_string(v);
	case CTL_ARG_BOOL:
		return json_object_is_type(v, json_type_boolean);
	case CTL_ARG_INT:
		return json_object_is_type(v, json_type_int);
	}
	return false;
}

/* A client's string for an error message: at most 64 bytes, cut between UTF-8 characters. */
static const char *shown(const char *s, char *buf, size_t len)
{
	size_t n = strlen(s);

	if (n <= 64) {
		snprintf(buf, len, "%s", s);
		return buf;
	}
	n = 64;
	while (n && ((unsigned char)s[n] & 0xc0) == 0x80)
		n--;
	snprintf(buf, len, "%.*s...", (int)n, s);
	return buf;
}

#define FAIL(cls, ...) do { *err_class = (cls); snprintf(err, errlen, __VA_ARGS__); \
	return -1; } while (0)

int ctl_request_parse(const char *line, size_t len, struct ctl_request *req,
		      const char **err_class, char *err, size_t errlen)
{
	json_tokener *tok;
	json_object *root, *v;
	const struct ctl_arg_spec *a;
	const char *name;
	size_t end;

	memset(req, 0, sizeof(*req));
	if (len > CTL_LINE_MAX)
		FAIL(CTL_ERR_INVALID, "request longer than %u bytes", CTL_LINE_MAX);
	if (memchr(line, '\0', len))
		FAIL(CTL_ERR_INVALID, "request contains a NUL byte");
	tok = json_tokener_new_ex(CTL_JSON_DEPTH);
	if (!tok)
		FAIL(CTL_ERR_GENERIC, "out of memory");
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	root = json_tokener_parse_ex(tok, line, (int)len);
	end = json_tokener_get_parse_end(tok);
	if (!root) {
		enum json_tokener_error e = json_tokener_get_error(tok);

		json_tokener_free(tok);
		FAIL(CTL_ERR_INVALID, "malformed JSON: %s",
		     e == json_tokener_continue ? "unexpected end of line" :
		     json_tokener_error_desc(e));
	}
	json_tokener_free(tok);
	while (end < len && strchr(" \t\r", line[end]))
		end++;
	if (end != len) {
		json_object_put(root);
		FAIL(CTL_ERR_INVALID, "malformed JSON: more after the request object");
	}
	if (!json_object_is_type(root, json_type_object)) {
		json_object_put(root);
		FAIL(CTL_ERR_INVALID, "a request is a JSON object");
	}
	if (json_object_object_get_ex(root, "id", &v))
		req->id = json_object_get(v);
	json_object_object_foreach(root, key, val) {
		(void)val;
		if (strcmp(key, "id") && strcmp(key, "command") && strcmp(key, "arguments")) {
			*err_class = CTL_ERR_INVALID;
			char b[80];

			snprintf(err, errlen, "unknown member \"%s\" (expected id, command, "
				 "arguments)", shown(key, b, sizeof(b)));
			json_object_put(root);
			return -1;
		}
	}
	if (!json_object_object_get_ex(root, "command", &v) ||
	    !json_object_is_type(v, json_type_string) || !plain_string(v)) {
		json_object_put(root);
		FAIL(CTL_ERR_INVALID, "\"command\" is missing or not a string");
	}
	name = json_object_get_string(v);
	req->cmd = ctl_command_find(name);
	if (!req->cmd) {
		char b[80];

		*err_class = CTL_ERR_NOCMD;
		snprintf(err, errlen, "unknown command \"%s\"", shown(name, b, sizeof(b)));
		json_object_put(root);
		return -1;
	}
	if (json_object_object_get_ex(root, "arguments", &v)) {
		if (!json_object_is_type(v, json_type_object)) {
			json_object_put(root);
			FAIL(CTL_ERR_INVALID, "\"arguments\" is not an object");
		}
		req->args = json_object_get(v);
	} else {
		req->args = json_object_new_object();
	}
	json_object_put(root);
	if (!req->args)
		FAIL(CTL_ERR_GENERIC, "out of memory");
	json_object_object_foreach(req->args, akey, aval) {
		char b[80];

		a = ctl_arg_find(req->cmd, akey);
		if (!a)
			FAIL(CTL_ERR_INVALID, "%s: unknown argument \"%s\"", req->cmd->name,
			     shown(akey, b, sizeof(b)));
		if (!type_ok(aval, a->type))
			FAIL(CTL_ERR_INVALID, "%s: \"%s\" must be %s", req->cmd->name,
			     shown(akey, b, sizeof(b)), type_name(a->type));
	}
	for (a = req->cmd->args; a->name; a++)
		if (a->required && !json_object_object_get_ex(req->args, a->name, NULL))
			FAIL(CTL_ERR_INVALID, "%s: \"%s\" is required", req->cmd->name, a->name);
	return 0;
}

void ctl_request_release(struct ctl_request *req)
{
	json_object_put(req->id);
	json_object_put(req->args);
	memset(req, 0, sizeof(*req));
}

bool ctl_arg_given(const struct ctl_request *req, const char *name)
{
	return json_object_object_get_ex(req->args, name, NULL);
}

const char *ctl_arg_string(const struct ctl_request *req, const char *name)
{
	json_object *v;

	return json_object_object_get_ex(req->args, name, &v) ? json_object_get_string(v) : NULL;
}

bool ctl_arg_bool(const struct ctl_request *req, const char *name, bool dflt)
{
	json_object *v;

	return json_object_object_get_ex(req->args, name, &v) ? json_object_get_boolean(v) : dflt;
}

int64_t ctl_arg_int(const struct ctl_request *req, const char *name, int64_t dflt)
{
	json_object *v;

	return json_object_object_get_ex(req->args, name, &v) ? json_object_get_int64(v) : dflt;
}

static char *reply_line(json_object *reply)
{
	const char *s;
	char *line = NULL;

	if (!reply)
		return NULL;
	s = json_object_to_json_string_ext(reply, JSON_C_TO_STRING_PLAIN |
					   JSON_C_TO_STRING_NOSLASHESCAPE);
	if (s && asprintf(&line, "%s\n", s) < 0)
		line = NULL;
	json_object_put(reply);
	return line;
}

char *ctl_reply_return(json_object *id, json_object *ret)
{
	json_object *reply = json_object_new_object();

	if (!reply) {
		json_object_put(ret);
		return NULL;
	}
	if (id)
		json_object_object_add(reply, "id", json_object_get(id));
	json_object_object_add(reply, "return", ret ? ret : json_object_new_object());
	return reply_line(reply);
}

char *ctl_reply_error(json_object *id, const char *err_class, const char *desc)
{
	json_object *reply = json_object_new_object(), *e = json_object_new_object();

	if (!reply || !e) {
		json_object_put(reply);
		json_object_put(e);
		return NULL;
	}
	json_object_object_add(e, "class", json_object_new_string(err_class));
	json_object_object_add(e, "desc", json_object_new_string(desc));
	if (id)
		json_object_object_add(reply, "id", json_object_get(id));
	json_object_object_add(reply, "error", e);
	return reply_line(reply);
}
