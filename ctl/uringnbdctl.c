// SPDX-License-Identifier: BSD-3-Clause
/*
 * uringnbdctl: the command-line client of uringnbd's control socket.
 *
 *   uringnbdctl [-c PATH] [--json] COMMAND [ARG...] [KEY=VALUE...] [--FLAG...]
 *
 * Bare words fill the command's positional arguments in order, KEY=VALUE
 * and --KEY (a boolean set to true) the others, typed by the command table
 * the daemon validates against (daemon/ops/ctlproto.c). One request, one
 * reply: printed as a table (or, with --json, as the daemon sent it).
 * Exit status: 0 done, 1 the daemon refused, 2 no answer (not running,
 * not allowed, usage).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "../daemon/ops/ctlproto.h"

#define EXIT_REFUSED 1
#define EXIT_NO_ANSWER 2

static const char *path = CTL_DEFAULT_PATH;

static void usage(FILE *f)
{
	size_t i;

	fprintf(f, "usage: uringnbdctl [-c|--control PATH] [--json] COMMAND [ARG...] "
		   "[KEY=VALUE...] [--FLAG...]\n\n"
		   "  -c, --control PATH  the daemon's control socket (default %s)\n"
		   "      --json          print the reply as JSON\n"
		   "  -h, --help          this help\n\ncommands:\n", CTL_DEFAULT_PATH);
	for (i = 0; i < ctl_ncommands; i++) {
		const struct ctl_command_spec *c = &ctl_commands[i];
		const struct ctl_arg_spec *a;
		char line[400];
		int n = snprintf(line, sizeof(line), "  %s", c->name);

		for (a = c->args; a->name && n < (int)sizeof(line) - 40; a++) {
			if (a->positional)
				n += snprintf(line + n, sizeof(line) - (size_t)n, a->required ? " %s" : " [%s]",
					      a->name);
			else if (a->match)
				n += snprintf(line + n, sizeof(line) - (size_t)n, " [%s=...]...", a->name);
			else if (a->type == CTL_ARG_BOOL)
				n += snprintf(line + n, sizeof(line) - (size_t)n, " [--%s]", a->name);
			else
				n += snprintf(line + n, sizeof(line) - (size_t)n, " [%s=...]", a->name);
		}
		fprintf(f, "%s\n      %s\n", line, c->summary);
	}
	fprintf(f, "\nexit status: 0 done, 1 the daemon refused, 2 no answer\n");
}

static int fail(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(int status, const char *fmt, ...)
{
	va_list ap;

	fputs("uringnbdctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return status;
}

/* VALUE as the argument's type; NULL if it is not one. */
static json_object *typed(const struct ctl_arg_spec *a, const char *v)
{
	char *end;
	long long n;

	switch (a->type) {
	case CTL_ARG_STRING:
		return json_object_new_string(v);
	case CTL_ARG_BOOL:
		if (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "on") || !strcmp(v, "1"))
			return json_object_new_boolean(1);
		if (!strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "off") || !strcmp(v, "0"))
			return json_object_new_boolean(0);
		return NULL;
	case CTL_ARG_INT:
		errno = 0;
		n = strtoll(v, &end, 10);
		return errno || end == v || *end ? NULL : json_object_new_int64(n);
	}
	return NULL;
}

/* The request object for argv (command first). Returns NULL after saying why. */
static json_object *build_request(const struct ctl_command_spec *cmd, int argc, char **argv)
{
	json_object *req = json_object_new_object(), *args = json_object_new_object();
	const struct ctl_arg_spec *next_pos = cmd->args, *a;
	int i;

	for (i = 0; i < argc; i++) {
		const char *w = argv[i], *eq = strchr(w, '=');
		json_object *v;
		char key[64];

		if (!strncmp(w, "--", 2) && !eq) {
			a = ctl_arg_find(cmd, w + 2);
			if (!a || a->type != CTL_ARG_BOOL)
				goto bad_word;
			v = json_object_new_boolean(1);
		} else if (eq && (size_t)(eq - w) < sizeof(key) && eq != w &&
			   (snprintf(key, sizeof(key), "%.*s", (int)(eq - w), w),
			    (a = ctl_arg_find(cmd, key)) != NULL)) {
			v = typed(a, eq + 1);
			if (!v) {
				fail(0, "%s: %s: not a %s", cmd->name, w, a->type == CTL_ARG_BOOL ?
				     "boolean (true or false)" : "number");
				goto out_put;
			}
		} else {
			while (next_pos->name && !next_pos->positional)
				next_pos++;
			a = next_pos->name ? next_pos++ : NULL;
			if (!a)
				goto bad_word;
			v = typed(a, w);
			if (!v) {
				fail(0, "%s: %s: \"%s\" is not a %s", cmd->name, a->name, w,
				     a->type == CTL_ARG_BOOL ? "boolean" : "number");
				goto out_put;
			}
		}
		json_object_object_add(args, a->match ? key : a->name, v);
		continue;
bad_word:
		fail(0, "%s: unexpected \"%s\" (see uringnbdctl --help)", cmd->name, w);
		goto out_put;
	}
	json_object_object_add(req, "id", json_object_new_int(1));
	json_object_object_add(req, "command", json_object_new_string(cmd->name));
	json_object_object_add(req, "arguments", args);
	return req;

out_put:
	json_object_put(args);
	json_object_put(req);
	return NULL;
}

static int connect_control(void)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		fail(0, "%s: path too long", path);
		return -1;
	}
	strcpy(sun.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		fail(0, "socket: %s", strerror(errno));
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		if (errno == ENOENT || errno == ECONNREFUSED)
			fail(0, "uringnbd is not running (no control socket at %s)", path);
		else if (errno == EACCES || errno == EPERM)
			fail(0, "%s: %s (the control socket is for root and the daemon's user)", path,
			     strerror(errno));
		else
			fail(0, "%s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* Sends line, reads one reply line into a heap string. NULL after saying why. */
static char *exchange(int fd, const char *line)
{
	size_t len = strlen(line), off = 0, cap = 65536, have = 0;
	char *buf, *nl;

	while (off < len) {
		ssize_t n = send(fd, line + off, len - off, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n < 0 && errno != EPIPE && errno != ECONNRESET)
				fail(0, "%s: %s", path, strerror(errno));
			else
				fail(0, "%s closed the connection without an answer (only root and "
				     "the daemon's user may use it)", path);
			return NULL;
		}
		off += (size_t)n;
	}
	buf = malloc(cap);
	if (!buf)
		return NULL;
	for (;;) {
		ssize_t n;

		if (have + 1 == cap) {
			char *p = realloc(buf, cap * 2);

			if (!p) {
				free(buf);
				return NULL;
			}
			buf = p;
			cap *= 2;
		}
		n = recv(fd, buf + have, cap - have - 1, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != ECONNRESET) {
			fail(0, "%s: %s", path, strerror(errno));
			free(buf);
			return NULL;
		}
		if (n <= 0) {
			fail(0, "%s closed the connection without an answer (only root and the "
			     "daemon's user may use it)", path);
			free(buf);
			return NULL;
		}
		have += (size_t)n;
		buf[have] = '\0';
		nl = memchr(buf, '\n', have);
		if (nl) {
			*nl = '\0';
			return buf;
		}
	}
}

static const char *get_str(json_object *o, const char *key)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !v)
		return "-";
	return json_object_get_string(v);
}

static uint64_t get_u64(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) && v ? json_object_get_uint64(v) : 0;
}

static uint64_t get_sub(json_object *o, const char *key, const char *sub)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) && v ? get_u64(v, sub) : 0;
}

/* 1.5G, 512K, 42: sizes for a table. */
static const char *human(uint64_t n, char *buf, size_t len)
{
	static const char units[] = "KMGTPE";
	double v = (double)n;
	int u = -1;

	while (v >= 1024 && u < 5) {
		v /= 1024;
		u++;
	}
	if (u < 0)
		snprintf(buf, len, "%" PRIu64, n);
	else
		snprintf(buf, len, v < 10 ? "%.1f%c" : "%.0f%c", v, units[u]);
	return buf;
}

/* {"iops-total": 500, ...} as "iops-total=500 ..." ("none" if empty). */
static const char *limits_text(json_object *o, const char *key, char *buf, size_t len)
{
	json_object *lim = json_object_object_get(o, key);
	size_t n = 0;

	buf[0] = '\0';
	if (lim && json_object_is_type(lim, json_type_object)) {
		json_object_object_foreach(lim, k, v) {
			n += (size_t)snprintf(buf + n, n < len ? len - n : 0, "%s%s=%s", n ? " " : "",
					      k, json_object_get_string(v));
			if (n >= len)
				break;
		}
	}
	if (!buf[0])
		snprintf(buf, len, lim ? "none" : "(see groups)");
	return buf;
}

/* An export's rate limits, on a line of their own when it has any. */
static void print_limits(json_object *e)
{
	char lim[512], conn[512];
	json_object *g = json_object_object_get(e, "throttle-group");

	limits_text(e, "limits", lim, sizeof(lim));
	limits_text(e, "conn-limits", conn, sizeof(conn));
	if (!strcmp(lim, "none") && !strcmp(conn, "none") && !g)
		return;
	printf("%-16s limits: %s; each connection: %s; throttle group: %s\n", "", lim, conn,
	       g ? json_object_get_string(g) : "none");
}

static void print_exports(json_object *a)
{
	size_t i;

	printf("%-16s %8s %-3s %-6s %5s %10s %10s %6s  %s\n", "NAME", "SIZE", "RW", "CACHE",
	       "CONNS", "READ", "WRITTEN", "ERRORS", "PATH");
	for (i = 0; i < json_object_array_length(a); i++) {
		json_object *e = json_object_array_get_idx(a, i), *errs;
		uint64_t nerr = 0;
		char s1[16], s2[16], s3[16];
		const char *name = get_str(e, "name");

		if (json_object_object_get_ex(e, "errors", &errs) && errs) {
			json_object_object_foreach(errs, k, v) {
				(void)k;
				nerr += json_object_get_uint64(v);
			}
		}
		printf("%-16s %8s %-3s %-6s %5" PRIu64 " %10s %10s %6" PRIu64 "  %s%s%s\n",
		       *name ? name : "\"\"", human(get_u64(e, "size"), s1, sizeof(s1)),
		       json_object_get_boolean(json_object_object_get(e, "readonly")) ? "ro" : "rw",
		       get_str(e, "cache"), get_u64(e, "connections"),
		       human(get_sub(e, "bytes", "read"), s2, sizeof(s2)),
		       human(get_sub(e, "bytes", "write"), s3, sizeof(s3)), nerr, get_str(e, "path"),
		       json_object_object_get(e, "overlay") ? " overlay " : "",
		       json_object_object_get(e, "overlay") ? get_str(e, "overlay") : "");
		print_limits(e);
	}
}

static void print_connections(json_object *a)
{
	size_t i;

	printf("%-6s %-16s %-28s %-6s %-24s %3s %8s %6s %10s %10s\n", "ID", "EXPORT", "PEER",
	       "STATE", "TLS", "WRK", "AGE", "FLIGHT", "READ", "WRITTEN");
	for (i = 0; i < json_object_array_length(a); i++) {
		json_object *c = json_object_array_get_idx(a, i), *ex, *tls;
		char s1[16], s2[16], age[32];
		const char *export = "-", *ident;

		if (json_object_object_get_ex(c, "export", &ex) && ex)
			export = *json_object_get_string(ex) ? json_object_get_string(ex) : "\"\"";
		tls = json_object_object_get(c, "tls");
		ident = json_object_object_get(c, "tls-identity") ? get_str(c, "tls-identity") :
			tls && json_object_get_boolean(tls) ? "yes" : "no";
		snprintf(age, sizeof(age), "%.0fs",
			 json_object_get_double(json_object_object_get(c, "age")));
		printf("%-6" PRIu64 " %-16s %-28s %-6s %-24.24s %3" PRIu64 " %8s %6" PRIu64
		       " %10s %10s\n", get_u64(c, "id"), export, get_str(c, "peer"),
		       !strcmp(get_str(c, "state"), "negotiating") ? "nego" :
		       !strcmp(get_str(c, "state"), "serving") ? "serve" : "close",
		       ident, get_u64(c, "worker"), age, get_u64(c, "in-flight"),
		       human(get_u64(c, "bytes-read"), s1, sizeof(s1)),
		       human(get_u64(c, "bytes-written"), s2, sizeof(s2)));
	}
}

/* Throttle groups: their limits and the waits they caused. */
static void print_groups(json_object *a)
{
	size_t i;

	printf("%-16s %8s %10s %10s  %s\n", "GROUP", "WAITING", "THROTTLED", "SECONDS", "LIMITS");
	for (i = 0; i < json_object_array_length(a); i++) {
		json_object *g = json_object_array_get_idx(a, i);
		char lim[512];

		printf("%-16s %8" PRIu64 " %10" PRIu64 " %10.3f  %s\n", get_str(g, "name"),
		       get_u64(g, "waiting"), get_u64(g, "requests"),
		       json_object_get_double(json_object_object_get(g, "seconds")),
		       limits_text(g, "limits", lim, sizeof(lim)));
	}
}

/* Nested objects as "a.b: value" lines. */
static void print_flat(const char *prefix, json_object *o)
{
	json_object_object_foreach(o, k, v) {
		char name[256];

		snprintf(name, sizeof(name), "%s%s%s", prefix, *prefix ? "." : "", k);
		if (v && json_object_is_type(v, json_type_object))
			print_flat(name, v);
		else
			printf("%s: %s\n", name, v ? json_object_get_string(v) : "-");
	}
}

/* stats: the scalars, then a line per worker and a table per export and command. */
static void print_stats(json_object *o)
{
	json_object *a = NULL, *v;
	size_t i;

	json_object_object_foreach(o, k, val) {
		if (val && json_object_is_type(val, json_type_array))
			continue;
		if (val && json_object_is_type(val, json_type_object)) {
			print_flat(k, val);
			continue;
		}
		printf("%s: %s\n", k, val ? json_object_get_string(val) : "-");
	}
	if (json_object_object_get_ex(o, "per-worker", &a) && a)
		for (i = 0; i < json_object_array_length(a); i++) {
			v = json_object_array_get_idx(a, i);
			printf("worker %zu: %" PRIu64 " loop iterations, %" PRIu64 " completions in %" PRIu64
			       " submits (%" PRIu64 " found polling, %.3f s polled; %" PRIu64
			       " slept, %.3f s), pool %" PRIu64
			       " bytes used, %" PRIu64 " waiting; oldest request %.3f s\n", i,
			       get_u64(v, "loop-iterations"), get_u64(v, "completions"),
			       get_u64(v, "submits"), get_u64(v, "poll-hits"),
			       (double)get_u64(v, "poll-ns") / 1e9, get_u64(v, "ring-waits"),
			       (double)get_u64(v, "ring-wait-ns") / 1e9, get_u64(v, "pool-used-bytes"),
			       get_u64(v, "pool-waiters"),
			       (double)get_u64(v, "oldest-request-ns") / 1e9);
		}
	if (json_object_object_get_ex(o, "throttle-groups", &a) && a &&
	    json_object_array_length(a)) {
		putchar('\n');
		print_groups(a);
	}
	if (!json_object_object_get_ex(o, "exports", &a) || !a)
		return;
	for (i = 0; i < json_object_array_length(a); i++) {
		json_object *e = json_object_array_get_idx(a, i), *t;
		const char *name = get_str(e, "name");

		if (json_object_object_get_ex(e, "throttled", &t) && t && get_u64(t, "requests"))
			printf("export %s: %" PRIu64 " requests throttled, %.3f s in all, %" PRIu64
			       " waiting\n", *name ? name : "\"\"", get_u64(t, "requests"),
			       json_object_get_double(json_object_object_get(t, "seconds")),
			       get_u64(t, "waiting"));
	}
	printf("\n%-16s %-13s %10s %10s %8s %10s %10s\n", "EXPORT", "COMMAND", "REQUESTS", "BYTES",
	       "ERRORS", "P50", "P99");
	for (i = 0; i < json_object_array_length(a); i++) {
		json_object *e = json_object_array_get_idx(a, i), *ops;
		const char *name = get_str(e, "name");

		if (!json_object_object_get_ex(e, "ops", &ops) || !ops)
			continue;
		json_object_object_foreach(ops, op, x) {
			char s1[16];

			printf("%-16s %-13s %10" PRIu64 " %10s %8" PRIu64 " %8.3fms %8.3fms\n",
			       *name ? name : "\"\"", op, get_u64(x, "requests"),
			       human(get_u64(x, "bytes"), s1, sizeof(s1)), get_u64(x, "errors"),
			       json_object_get_double(json_object_object_get(x, "p50-seconds")) * 1e3,
			       json_object_get_double(json_object_object_get(x, "p99-seconds")) * 1e3);
		}
	}
}

static void print_human(const char *cmd, json_object *ret)
{
	if (!strcmp(cmd, "exports")) {
		print_exports(ret);
	} else if (!strcmp(cmd, "connections")) {
		print_connections(ret);
	} else if (!strcmp(cmd, "stats")) {
		print_stats(ret);
	} else if (!strcmp(cmd, "version")) {
		printf("%s %s\n", get_str(ret, "package"), get_str(ret, "version"));
	} else if (!strcmp(cmd, "export-add") || !strcmp(cmd, "export-set")) {
		char lim[512], conn[512];

		printf("export \"%s\": %s, %s%s\n", get_str(ret, "name"), get_str(ret, "path"),
		       json_object_get_boolean(json_object_object_get(ret, "readonly")) ?
		       "read-only" : "read-write", !strcmp(cmd, "export-add") ? " (added)" :
		       " (changed for new connections; rate limits at once)");
		printf("  limits: %s; each connection: %s; throttle group: %s\n",
		       limits_text(ret, "limits", lim, sizeof(lim)),
		       limits_text(ret, "conn-limits", conn, sizeof(conn)),
		       json_object_object_get(ret, "throttle-group") ?
		       get_str(ret, "throttle-group") : "none");
	} else if (!strcmp(cmd, "groups")) {
		print_groups(ret);
	} else if (!strcmp(cmd, "group-set")) {
		json_object *a = json_object_new_array();

		json_object_array_add(a, json_object_get(ret));
		print_groups(a);
		json_object_put(a);
	} else if (!strcmp(cmd, "export-remove")) {
		printf("export \"%s\" removed; %" PRIu64 " connection(s) closing\n",
		       get_str(ret, "removed"), get_u64(ret, "disconnected"));
	} else if (!strcmp(cmd, "disconnect")) {
		printf("connection %" PRIu64 " closes once its requests are done\n",
		       get_u64(ret, "disconnected"));
	} else if (json_object_is_type(ret, json_type_object)) {
		print_flat("", ret);
	} else {
		puts(json_object_to_json_string_ext(ret, JSON_C_TO_STRING_PRETTY));
	}
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "control", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const struct ctl_command_spec *cmd;
	json_object *req, *reply, *v;
	bool json = false;
	char *line;
	int opt, fd, status;

	/* Options only before the command: its own --FLAGs follow it. */
	while ((opt = getopt_long(argc, argv, "+c:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c': path = optarg; break;
		case 'j': json = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return EXIT_NO_ANSWER;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_NO_ANSWER;
	}
	cmd = ctl_command_find(argv[optind]);
	if (!cmd)
		return fail(EXIT_NO_ANSWER, "unknown command \"%s\" (see uringnbdctl --help)",
			    argv[optind]);
	req = build_request(cmd, argc - optind - 1, argv + optind + 1);
	if (!req)
		return EXIT_NO_ANSWER;
	fd = connect_control();
	if (fd < 0) {
		json_object_put(req);
		return EXIT_NO_ANSWER;
	}
	line = NULL;
	if (asprintf(&line, "%s\n", json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN)) < 0)
		line = NULL;
	json_object_put(req);
	{
		char *answer = line ? exchange(fd, line) : NULL;

		free(line);
		close(fd);
		if (!answer)
			return EXIT_NO_ANSWER;
		reply = json_tokener_parse(answer);
		if (!reply) {
			fail(0, "malformed reply: %.200s", answer);
			free(answer);
			return EXIT_NO_ANSWER;
		}
		if (json) {
			json_object *out = json_object_object_get_ex(reply, "return", &v) ? v :
					   json_object_object_get(reply, "error");

			puts(json_object_to_json_string_ext(out, JSON_C_TO_STRING_PRETTY |
							    JSON_C_TO_STRING_NOSLASHESCAPE));
		}
		free(answer);
	}
	if (json_object_object_get_ex(reply, "error", &v)) {
		fprintf(stderr, "uringnbdctl: %s: %s\n", cmd->name, get_str(v, "desc"));
		status = EXIT_REFUSED;
	} else if (json_object_object_get_ex(reply, "return", &v)) {
		if (!json)
			print_human(cmd->name, v);
		status = 0;
	} else {
		status = fail(EXIT_NO_ANSWER, "reply has neither return nor error");
	}
	json_object_put(reply);
	return status;
}
