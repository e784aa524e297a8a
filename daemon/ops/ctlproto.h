/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * ctlproto: the control socket's wire format, pure (json-c; no I/O, no
 * daemon state), shared by the daemon (control.c) and uringnbdctl, and
 * fuzzed alone (tests/fuzz/fuzz_ctl.c).
 *
 * One JSON object per line each way, in QMP's shape:
 *   {"id": ANY, "command": "NAME", "arguments": {...}}
 *   {"id": ANY, "return": ...}  or  {"id": ANY, "error": {"class": C, "desc": D}}
 * "id" is optional and echoed as given; "arguments" is optional. Every
 * command's arguments are declared in ctl_commands[]: a request naming an
 * unknown argument, giving one of the wrong type, or leaving out a required
 * one is refused here, before any command runs.
 */
#ifndef URINGNBD_CTLPROTO_H
#define URINGNBD_CTLPROTO_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CTL_LINE_MAX (64u * 1024)  /* longest request line, newline excluded */
#define CTL_JSON_DEPTH 16          /* nesting a request may use */
#define CTL_DEFAULT_PATH "/run/uringnbd/control"

/* Error classes (QMP's where they exist). */
#define CTL_ERR_GENERIC   "GenericError"     /* the command ran and failed */
#define CTL_ERR_NOCMD     "CommandNotFound"
#define CTL_ERR_INVALID   "InvalidArgument"  /* malformed request or arguments */
#define CTL_ERR_NOTFOUND  "NotFound"         /* no such export or connection */
#define CTL_ERR_BUSY      "Busy"             /* an export with connections, without force */

enum ctl_arg_type { CTL_ARG_STRING, CTL_ARG_BOOL, CTL_ARG_INT };

struct ctl_arg_spec {
	const char *name;
	enum ctl_arg_type type;
	bool required;
	bool positional;           /* uringnbdctl takes it as a bare word, in order */
	bool (*match)(const char *key); /* a family of keys (name is its summary), or NULL */
};
/* The rate-limit family: LIMIT, conn-LIMIT (throttle.h's keys) and throttle-group. */
bool ctl_limit_key(const char *key);
/* The group-set family: LIMIT alone. */
bool ctl_group_limit_key(const char *key);

#define CTL_MAX_ARGS 20
struct ctl_command_spec {
	const char *name;
	const char *summary;       /* one line, for uringnbdctl --help */
	struct ctl_arg_spec args[CTL_MAX_ARGS]; /* ended by a NULL name */
};

extern const struct ctl_command_spec ctl_commands[];
extern const size_t ctl_ncommands;

const struct ctl_command_spec *ctl_command_find(const char *name);
const struct ctl_arg_spec *ctl_arg_find(const struct ctl_command_spec *cmd, const char *name);

/* A parsed, validated request. */
struct ctl_request {
	json_object *id;           /* a reference of ours, or NULL */
	const struct ctl_command_spec *cmd;
	json_object *args;         /* an object of ours, never NULL once parsed */
};

/*
 * Parses one line (len bytes, no newline; need not be NUL-terminated).
 * Returns 0 with *req filled, or -1 with *err_class and err set and
 * req->id set if the request had one (the error reply echoes it); either
 * way ctl_request_release(req) afterwards.
 */
int ctl_request_parse(const char *line, size_t len, struct ctl_request *req,
		      const char **err_class, char *err, size_t errlen);
void ctl_request_release(struct ctl_request *req);

/* Arguments of a parsed request: the value, or dflt when not given. */
const char *ctl_arg_string(const struct ctl_request *req, const char *name);
bool ctl_arg_bool(const struct ctl_request *req, const char *name, bool dflt);
int64_t ctl_arg_int(const struct ctl_request *req, const char *name, int64_t dflt);
bool ctl_arg_given(const struct ctl_request *req, const char *name);

/*
 * Reply lines, newline included; heap strings (free()), NULL if out of
 * memory. ret is consumed (json_object_put) whatever happens.
 */
char *ctl_reply_return(json_object *id, json_object *ret);
char *ctl_reply_error(json_object *id, const char *err_class, const char *desc);

#endif
