// SPDX-License-Identifier: BSD-3-Clause
/*
 * The configuration file: INI-style, a [global] section and one
 * [export NAME] section per export, '#' or ';' comments, "key = value".
 * Parsed whole into a struct config; any error names the file and line
 * and the file is refused (at start: exit; on SIGHUP: the old
 * configuration stays).
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <stddef.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service.h"

static char *trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

int config_parse_bool(const char *v)
{
	if (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "on") || !strcmp(v, "1"))
		return 1;
	if (!strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "off") || !strcmp(v, "0"))
		return 0;
	return -1;
}

long long config_parse_size(const char *s)
{
	char *end;
	long long v;
	int shift = 0;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || end == s)
		return -1;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	case '\0': break;
	default: return -1;
	}
	/* Sizes above 2^62 mean nothing here, and would overflow. */
	if (*end || v > (INT64_C(1) << 62) >> shift)
		return -1;
	return v << shift;
}

int config_parse_log_level(const char *v)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };
	int i;

	for (i = 0; i < 4; i++)
		if (!strcmp(v, names[i]))
			return i;
	return -1;
}

void config_free(struct config *cfg)
{
	size_t i;

	for (i = 0; i < cfg->nexports; i++) {
		unsigned j;

		for (j = 0; j < cfg->exports[i].nextra; j++)
			free(cfg->exports[i].extra[j]);
		free(cfg->exports[i].storage);
	}
	free(cfg->exports);
	for (i = 0; i < cfg->ngroups; i++)
		free(cfg->groups[i].name);
	free(cfg->groups);
	for (i = 0; i < cfg->nublk; i++)
		free(cfg->ublk[i]);
	free(cfg->ublk);
	free(cfg->unix_path);
	free(cfg->bind);
	free(cfg->vsock_listen);
	free(cfg->port);
	free(cfg->pid_file);
	free(cfg->control_path);
	free(cfg->metrics);
	free(cfg->tls_certificates);
	free(cfg->tls_psk);
	memset(cfg, 0, sizeof(*cfg));
}

/* A plain decimal count, 0 to 2^31 - 1; -1 otherwise. */
long long config_parse_count(const char *s)
{
	char *end;
	long long n;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	n = strtoll(s, &end, 10);
	if (errno || *end || n > INT32_MAX)
		return -1;
	return n;
}

#define CFG_ERR(...) do { log_error(__VA_ARGS__); goto out_err; } while (0)

static int set_str(char **dst, const char *v)
{
	free(*dst);
	*dst = strdup(v);
	return *dst ? 0 : -1;
}

void config_init(struct config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->log_level = -1;
	cfg->max_conns = -1;
	cfg->handshake_timeout_s = -1;
	cfg->keepalive_s = -1;
	cfg->io_timeout_s = -1;
	cfg->idle_timeout_s = -1;
	cfg->busy_poll_us = -1;
	cfg->poll_max_us = -1;
	cfg->max_conns_per_client = -1;
	cfg->keep_conns = -1;
	cfg->defer_taskrun = -1;
	cfg->tls = -1;
	cfg->tls_verify_peer = -1;
	cfg->list = -1;
}

int config_parse_tls(const char *v)
{
	if (!strcmp(v, "off"))
		return PROTO_TLS_OFF;
	if (!strcmp(v, "on"))
		return PROTO_TLS_ON;
	if (!strcmp(v, "require"))
		return PROTO_TLS_REQUIRE;
	return -1;
}

/* The [global] keys that take a number: where it goes and what is allowed. */
static const struct {
	const char *key;
	size_t field;          /* offset of a long long in struct config */
	bool size;             /* a size with an optional K, M, G or T */
	long long min, max;
	const char *why;       /* the message when out of range */
} numeric_keys[] = {
	{ "threads", offsetof(struct config, threads), false, 1, 256,
	  "threads: expected 1 to 256" },
	{ "pool-size", offsetof(struct config, pool_bytes), true, EXPORT_MAX_REQUEST_BYTES,
	  INT64_C(1) << 62, "pool-size: expected a size of at least 32M" },
	{ "cache-size", offsetof(struct config, cache_bytes), true, CACHE_PAGE_BYTES,
	  INT64_C(1) << 62, "cache-size: expected a size of at least 4K" },
	{ "max-connections", offsetof(struct config, max_conns), false, 0, 1000000,
	  "max-connections: expected 0 (no limit) to 1000000" },
	{ "max-connections-per-client", offsetof(struct config, max_conns_per_client), false, 0,
	  1000000, "max-connections-per-client: expected 0 (no limit) to 1000000" },
	{ "handshake-timeout", offsetof(struct config, handshake_timeout_s), false, 0, 86400,
	  "handshake-timeout: expected 0 (none) to 86400 seconds" },
	{ "keepalive", offsetof(struct config, keepalive_s), false, 0, 86400,
	  "keepalive: expected 0 (off) to 86400 seconds" },
	{ "io-timeout", offsetof(struct config, io_timeout_s), false, 0, 86400,
	  "io-timeout: expected 0 (none) to 86400 seconds" },
	{ "idle-timeout", offsetof(struct config, idle_timeout_s), false, 0, 31536000,
	  "idle-timeout: expected 0 (none) to 31536000 seconds" },
	{ "busy-poll", offsetof(struct config, busy_poll_us), false, 0, 10000,
	  "busy-poll: expected 0 (adaptive) to 10000 microseconds" },
	{ "poll-max", offsetof(struct config, poll_max_us), false, 0, 10000,
	  "poll-max: expected 0 (no polling) to 10000 microseconds" },
};

int config_set_global(struct config *cfg, const char *k, const char *v, const char **why)
{
	size_t i;

	for (i = 0; i < sizeof(numeric_keys) / sizeof(numeric_keys[0]); i++) {
		long long n;

		if (strcmp(k, numeric_keys[i].key))
			continue;
		n = numeric_keys[i].size ? config_parse_size(v) : config_parse_count(v);
		if (n < numeric_keys[i].min || n > numeric_keys[i].max) {
			*why = numeric_keys[i].why;
			return -1;
		}
		*(long long *)(void *)((char *)cfg + numeric_keys[i].field) = n;
		return 0;
	}
	if (!strcmp(k, "unix")) {
		return set_str(&cfg->unix_path, v);
	} else if (!strcmp(k, "bind")) {
		return set_str(&cfg->bind, v);
	} else if (!strcmp(k, "listen")) {
		if (strncmp(v, "vsock:", 6) || !v[6] || strspn(v + 6, "0123456789") != strlen(v + 6)) {
			*why = "listen: expected vsock:PORT (for TCP: bind and port)";
			return -1;
		}
		return set_str(&cfg->vsock_listen, v + 6);
	} else if (!strcmp(k, "port")) {
		return set_str(&cfg->port, v);
	} else if (!strcmp(k, "pid-file")) {
		return set_str(&cfg->pid_file, v);
	} else if (!strcmp(k, "control")) {
		if (!*v) {
			*why = "control: expected the path of a unix socket";
			return -1;
		}
		return set_str(&cfg->control_path, v);
	} else if (!strcmp(k, "metrics")) {
		if (!*v) {
			*why = "metrics: expected ADDRESS:PORT or unix:PATH";
			return -1;
		}
		return set_str(&cfg->metrics, v);
	} else if (!strcmp(k, "tls")) {
		cfg->tls = config_parse_tls(v);
		if (cfg->tls < 0) {
			*why = "tls: expected off, on or require";
			return -1;
		}
	} else if (!strcmp(k, "tls-certificates")) {
		return set_str(&cfg->tls_certificates, v);
	} else if (!strcmp(k, "tls-psk")) {
		return set_str(&cfg->tls_psk, v);
	} else if (!strcmp(k, "keep-connections")) {
		cfg->keep_conns = config_parse_bool(v);
		if (cfg->keep_conns < 0) {
			*why = "keep-connections: expected yes or no";
			return -1;
		}
	} else if (!strcmp(k, "defer-taskrun")) {
		cfg->defer_taskrun = config_parse_bool(v);
		if (cfg->defer_taskrun < 0) {
			*why = "defer-taskrun: expected yes or no";
			return -1;
		}
	} else if (!strcmp(k, "tls-verify-peer") || !strcmp(k, "list")) {
		int b = config_parse_bool(v);

		if (b < 0) {
			*why = k[0] == 'l' ? "list: expected yes or no" : "tls-verify-peer: expected yes or no";
			return -1;
		}
		if (k[0] == 'l')
			cfg->list = b;
		else
			cfg->tls_verify_peer = b;
	} else if (!strcmp(k, "log-level")) {
		cfg->log_level = config_parse_log_level(v);
		if (cfg->log_level < 0) {
			*why = "log-level: expected error, warning, info or debug";
			return -1;
		}
		cfg->log_level_set = true;
	} else {
		*why = "unknown key in [global]";
		return -1;
	}
	return 0;
}

int config_set_export(struct export_spec *spec, const char *k, const char *v, char *err,
		      size_t errlen)
{
	if (!strcmp(k, "path") || !strcmp(k, "description") || !strcmp(k, "allow") ||
	    !strcmp(k, "deny") || !strcmp(k, "tls-allow") || !strcmp(k, "overlay")) {
		const char **dst = !strcmp(k, "path") ? &spec->path :
				   !strcmp(k, "overlay") ? &spec->overlay :
				   !strcmp(k, "description") ? &spec->description :
				   !strcmp(k, "allow") ? &spec->allow :
				   !strcmp(k, "deny") ? &spec->deny : &spec->tls_allow;
		const char *old = *dst;

		if (*dst && (dst != &spec->description || spec->description[0])) {
			snprintf(err, errlen, "\"%s\" given twice in [export %s]", k, spec->name);
			return -1;
		}
		if (strlen(v) > PROTO_NAME_MAX && dst == &spec->description) {
			snprintf(err, errlen, "description longer than %d bytes", PROTO_NAME_MAX);
			return -1;
		}
		if (!*v && dst == &spec->path) {
			snprintf(err, errlen, "path: expected a file or block device");
			return -1;
		}
		*dst = v;
		if (dst == &spec->allow || dst == &spec->deny || dst == &spec->tls_allow) {
			struct access_spec as = export_spec_access(spec);
			struct access a;
			char why[256];

			if (access_parse(&a, &as, why, sizeof(why)) < 0) {
				snprintf(err, errlen, "%s: %s", k, why);
				*dst = old;
				return -1;
			}
			access_free(&a);
		}
	} else if (!strcmp(k, "cache")) {
		if (cache_mode_parse(v) < 0) {
			snprintf(err, errlen, "cache: expected none, always or auto");
			return -1;
		}
		spec->cache_mode = cache_mode_parse(v);
	} else if (!strcmp(k, "tls")) {
		if (strcmp(v, "require") && strcmp(v, "off") && strcmp(v, "on")) {
			snprintf(err, errlen, "tls: expected require (TLS-only) or on (either)");
			return -1;
		}
		spec->tls_required = !strcmp(v, "require");
	} else if (!strcmp(k, "ublk")) {
		int b = config_parse_bool(v);

		if (b < 0) {
			snprintf(err, errlen, "ublk: expected yes or no");
			return -1;
		}
		spec->ublk = b;
	} else if (!strcmp(k, "readonly")) {
		int b = config_parse_bool(v);

		if (b < 0) {
			snprintf(err, errlen, "readonly: expected true or false");
			return -1;
		}
		spec->readonly = b;
	} else if (!strcmp(k, "bitmaps") || !strcmp(k, "bitmap-file")) {
		const char **dst = k[6] == 's' ? &spec->bitmaps : &spec->bitmap_file;

		if (*dst) {
			snprintf(err, errlen, "\"%s\" given twice in [export %s]", k, spec->name);
			return -1;
		}
		if (!*v) {
			snprintf(err, errlen, "%s: expected %s", k,
				 dst == &spec->bitmaps ? "bitmap names, comma-separated" : "a file");
			return -1;
		}
		if (dst == &spec->bitmaps) {
			char why[256], name[BITMAP_NAME_MAX + 2];
			const char *p = v, *comma;
			unsigned n = 0;

			do {
				size_t len;

				comma = strchr(p, ',');
				len = comma ? (size_t)(comma - p) : strlen(p);
				snprintf(name, sizeof(name), "%.*s", (int)(len < sizeof(name) - 1 ? len :
									 sizeof(name) - 1), p);
				if (len > BITMAP_NAME_MAX)
					name[BITMAP_NAME_MAX] = 'x'; /* too long: refused below */
				if (!bitmap_name_ok(name, why, sizeof(why))) {
					snprintf(err, errlen, "bitmaps: %s", why);
					return -1;
				}
				if (++n > PROTO_META_MAX_EXTRA) {
					snprintf(err, errlen, "bitmaps: at most %d", PROTO_META_MAX_EXTRA);
					return -1;
				}
				p = comma + 1;
			} while (comma);
		}
		*dst = v;
	} else if (!strcmp(k, "ceph-conf") || !strcmp(k, "ceph-id")) {
		const char **dst = k[5] == 'c' ? &spec->ceph_conf : &spec->ceph_id;

		if (*dst) {
			snprintf(err, errlen, "\"%s\" given twice in [export %s]", k, spec->name);
			return -1;
		}
		if (!*v) {
			snprintf(err, errlen, "%s: expected %s", k,
				 dst == &spec->ceph_conf ? "a ceph.conf file" : "a client id");
			return -1;
		}
		*dst = v;
	} else if (!strcmp(k, "bitmap-granularity")) {
		long long g = config_parse_size(v);

		if (g < 4096 || g > (1ll << 30) || (g & (g - 1))) {
			snprintf(err, errlen, "bitmap-granularity: expected a power of two from 4K "
				 "to 1G");
			return -1;
		}
		spec->bitmap_granularity = (uint32_t)g;
	} else if (!strcmp(k, "throttle-group")) {
		if (*v && !config_group_name_ok(v)) {
			snprintf(err, errlen, "throttle-group: expected a name of letters, digits, "
				 "'-', '_' or '.' (at most 64)");
			return -1;
		}
		spec->group = *v ? v : NULL; /* empty: in no group */
	} else if (throttle_key_find(!strncmp(k, "conn-", 5) ? k + 5 : k) >= 0) {
		return config_set_limit(!strncmp(k, "conn-", 5) ? &spec->conn_limits : &spec->limits,
					!strncmp(k, "conn-", 5) ? k + 5 : k, v, err, errlen);
	} else {
		snprintf(err, errlen, "unknown key \"%s\" in [export %s]", k, spec->name);
		return -1;
	}
	return 0;
}

bool config_group_name_ok(const char *name)
{
	size_t n = strlen(name), i;

	if (!n || n > 64)
		return false;
	for (i = 0; i < n; i++)
		if (!isalnum((unsigned char)name[i]) && !strchr("-_.", name[i]))
			return false;
	return true;
}

int config_set_limit(struct throttle_limits *lim, const char *k, const char *v, char *err,
		     size_t errlen)
{
	int key = throttle_key_find(k);
	long long n;

	if (key < 0) {
		snprintf(err, errlen, "unknown limit \"%s\"", k);
		return -1;
	}
	/* Rates of bytes and sizes take K, M, G; counts and seconds too ("2k" IOPS). */
	n = config_parse_size(v);
	if (n < 0) {
		snprintf(err, errlen, "%s: expected %s (0: none)", k,
			 strstr(k, "-length") ? "seconds" : strncmp(k, "bps", 3) &&
			 strcmp(k, "iops-size") ? "operations per second" :
			 !strcmp(k, "iops-size") ? "a size in bytes (K, M, G)" :
			 "bytes per second (K, M, G)");
		return -1;
	}
	if (strstr(k, "-length") && n > 86400) {
		snprintf(err, errlen, "%s: at most 86400 seconds", k);
		return -1;
	}
	throttle_key_set(lim, (unsigned)key, (uint64_t)n);
	return 0;
}

/* The limits of one export or group, whole: a burst needs its rate, and so on. */
static int check_limits(const char *what, const char *name, const char *prefix,
			const struct throttle_limits *lim)
{
	char err[200];

	if (throttle_limits_check(lim, err, sizeof(err)) < 0) {
		log_error("%s \"%s\": %s%s", what, name, prefix, err);
		return -1;
	}
	return 0;
}

/* The throttle groups in force: the file's, then the command line's (which replace). */
static const struct config_group *group_in_force(const struct config *file,
						 const struct config *cli, const char *name)
{
	size_t i;

	for (i = 0; i < cli->ngroups; i++)
		if (!strcmp(cli->groups[i].name, name))
			return &cli->groups[i];
	for (i = 0; i < file->ngroups; i++)
		if (!strcmp(file->groups[i].name, name))
			return &file->groups[i];
	return NULL;
}

int config_check_limits(const struct config *file, const struct config *cli,
			const struct export_spec *specs, size_t n)
{
	const struct config *both[2] = { file, cli };
	size_t i, j;

	for (j = 0; j < 2; j++)
		for (i = 0; i < both[j]->ngroups; i++)
			if (check_limits("throttle-group", both[j]->groups[i].name, "",
					 &both[j]->groups[i].limits) < 0)
				return -1;
	for (i = 0; i < n; i++) {
		if (check_limits("export", specs[i].name, "", &specs[i].limits) < 0 ||
		    check_limits("export", specs[i].name, "conn-", &specs[i].conn_limits) < 0)
			return -1;
		if (specs[i].group && !group_in_force(file, cli, specs[i].group)) {
			log_error("export \"%s\": throttle-group \"%s\" is not defined (a "
				  "[throttle-group %s] section, or --throttle-group)", specs[i].name,
				  specs[i].group, specs[i].group);
			return -1;
		}
	}
	return 0;
}

struct config_group *config_groups_in_force(const struct config *file, const struct config *cli,
					    size_t *n)
{
	struct config_group *m = calloc(file->ngroups + cli->ngroups + 1, sizeof(*m));
	size_t i, k = 0;

	*n = 0;
	if (!m)
		return NULL;
	for (i = 0; i < file->ngroups; i++)
		if (group_in_force(file, cli, file->groups[i].name) == &file->groups[i])
			m[k++] = file->groups[i];
	for (i = 0; i < cli->ngroups; i++)
		m[k++] = cli->groups[i];
	*n = k;
	return m;
}

int config_add_group(struct config *cfg, const char *name, struct config_group **out)
{
	struct config_group *a;
	size_t i;

	for (i = 0; i < cfg->ngroups; i++)
		if (!strcmp(cfg->groups[i].name, name))
			return -EEXIST;
	a = realloc(cfg->groups, (cfg->ngroups + 1) * sizeof(*a));
	if (!a)
		return -ENOMEM;
	cfg->groups = a;
	memset(&a[cfg->ngroups], 0, sizeof(*a));
	a[cfg->ngroups].name = strdup(name);
	if (!a[cfg->ngroups].name)
		return -ENOMEM;
	*out = &a[cfg->ngroups++];
	return 0;
}

/*
 * -fanalyzer loses track of the export specs' strings once they sit in
 * cfg->exports; config_free() releases them on every error path.
 */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpragmas"
#pragma GCC diagnostic ignored "-Wanalyzer-malloc-leak"
int config_load(const char *path, struct config *cfg)
{
	struct export_spec *spec = NULL;
	char *line = NULL, *p, *k, *v, *eq;
	size_t cap = 0, i;
	int lineno = 0, section = 0; /* 0 none, 1 global, 2 export, 3 throttle-group */
	struct config_group *group = NULL;
	const char *why = NULL;
	FILE *f;

	config_init(cfg);
	f = fopen(path, "r");
	if (!f) {
		log_error("config \"%s\": %s", path, strerror(errno));
		return -1;
	}
	while (getline(&line, &cap, f) > 0) {
		lineno++;
		p = trim(line);
		if (!*p || *p == '#' || *p == ';')
			continue;
		if (*p == '[') {
			char *end = strchr(p, ']');

			if (!end || trim(end + 1)[0])
				CFG_ERR("%s:%d: malformed section header", path, lineno);
			*end = '\0';
			p = trim(p + 1);
			if (!strcmp(p, "global")) {
				section = 1;
			} else if (!strncmp(p, "export", 6) && (p[6] == '\0' || isspace((unsigned char)p[6]))) {
				struct export_spec *a = realloc(cfg->exports,
								(cfg->nexports + 1) * sizeof(*a));
				char *name = trim(p + 6);

				if (!a)
					CFG_ERR("%s:%d: out of memory", path, lineno);
				cfg->exports = a;
				spec = &a[cfg->nexports++];
				memset(spec, 0, sizeof(*spec));
				/* storage holds the name; path and description follow as set. */
				if (*name == '"' && name[strlen(name) - 1] == '"' && strlen(name) >= 2) {
					name[strlen(name) - 1] = '\0';
					name++;
				}
				spec->storage = strdup(name);
				spec->name = spec->storage;
				spec->description = "";
				spec->config_line = lineno;
				if (!spec->storage)
					CFG_ERR("%s:%d: out of memory", path, lineno);
				if (strlen(name) > PROTO_NAME_MAX)
					CFG_ERR("%s:%d: export name longer than %d bytes", path, lineno,
						PROTO_NAME_MAX);
				for (i = 0; i + 1 < cfg->nexports; i++)
					if (!strcmp(cfg->exports[i].name, spec->name))
						CFG_ERR("%s:%d: export \"%s\" defined twice", path, lineno,
							spec->name);
				section = 2;
			} else if (!strncmp(p, "throttle-group", 14) && isspace((unsigned char)p[14])) {
				char *name = trim(p + 14);
				int r;

				if (!config_group_name_ok(name))
					CFG_ERR("%s:%d: [throttle-group NAME]: a name of letters, digits, "
						"'-', '_' or '.' (at most 64)", path, lineno);
				r = config_add_group(cfg, name, &group);
				if (r == -EEXIST)
					CFG_ERR("%s:%d: throttle-group \"%s\" defined twice", path, lineno,
						name);
				if (r < 0)
					CFG_ERR("%s:%d: out of memory", path, lineno);
				section = 3;
			} else {
				CFG_ERR("%s:%d: unknown section [%s]", path, lineno, p);
			}
			continue;
		}
		eq = strchr(p, '=');
		if (!eq)
			CFG_ERR("%s:%d: expected key = value", path, lineno);
		*eq = '\0';
		k = trim(p);
		v = trim(eq + 1);
		if (section == 0)
			CFG_ERR("%s:%d: \"%s\" outside a section", path, lineno, k);
		if (section == 1) {
			if (config_set_global(cfg, k, v, &why) < 0)
				CFG_ERR("%s:%d: %s: \"%s\"", path, lineno, why ? why : "out of memory", k);
			continue;
		}
		if (section == 3) {
			char err[300];

			if (config_set_limit(&group->limits, k, v, err, sizeof(err)) < 0)
				CFG_ERR("%s:%d: %s", path, lineno, err);
			continue;
		}
		/* [export NAME]: numbers are parsed now, strings live in extra. */
		if (throttle_key_find(!strncmp(k, "conn-", 5) ? k + 5 : k) >= 0) {
			char err[300];

			if (config_set_export(spec, k, v, err, sizeof(err)) < 0)
				CFG_ERR("%s:%d: %s", path, lineno, err);
			continue;
		}
		{
			char err[300];
			char *copy = strdup(v);

			if (!copy || spec->nextra == sizeof(spec->extra) / sizeof(spec->extra[0])) {
				free(copy);
				CFG_ERR("%s:%d: out of memory", path, lineno);
			}
			spec->extra[spec->nextra++] = copy;
			if (config_set_export(spec, k, copy, err, sizeof(err)) < 0)
				CFG_ERR("%s:%d: %s", path, lineno, err);
		}
	}
	for (i = 0; i < cfg->nexports; i++)
		if (!cfg->exports[i].path)
			CFG_ERR("%s:%d: [export %s] has no path", path, cfg->exports[i].config_line,
				cfg->exports[i].name);
	free(line);
	fclose(f);
	return 0;

out_err:
	free(line);
	fclose(f);
	config_free(cfg);
	return -1;
}
#pragma GCC diagnostic pop

int cache_mode_parse(const char *s)
{
	if (!strcmp(s, "none"))
		return CACHE_MODE_NONE;
	if (!strcmp(s, "always"))
		return CACHE_MODE_ALWAYS;
	if (!strcmp(s, "auto"))
		return CACHE_MODE_AUTO;
	return -1;
}

const char *cache_mode_name(int mode)
{
	return mode == CACHE_MODE_ALWAYS ? "always" : mode == CACHE_MODE_AUTO ? "auto" : "none";
}

int config_add_export(struct config *cfg, const struct export_spec *spec)
{
	struct export_spec *a = realloc(cfg->exports, (cfg->nexports + 1) * sizeof(*a));

	if (!a)
		return -1;
	cfg->exports = a;
	a[cfg->nexports++] = *spec;
	return 0;
}

/*
 * The exports in force: the file's, then the command line's; a command-line
 * export replaces a file export of the same name. Returns a new array of
 * borrowed specs (free only the array), or NULL with *n = 0 on error.
 */
struct export_spec *config_merge_exports(const struct config *file, const struct config *cli,
					 size_t *n)
{
	struct export_spec *m = calloc(file->nexports + cli->nexports + 1, sizeof(*m));
	size_t i, j, k = 0;

	*n = 0;
	if (!m)
		return NULL;
	for (i = 0; i < file->nexports; i++) {
		for (j = 0; j < cli->nexports; j++)
			if (!strcmp(cli->exports[j].name, file->exports[i].name))
				break;
		if (j == cli->nexports)
			m[k++] = file->exports[i];
	}
	for (j = 0; j < cli->nexports; j++)
		m[k++] = cli->exports[j];
	*n = k;
	return m;
}

int config_apply_ublk(const struct config *cli, struct export_spec *specs, size_t n)
{
	for (size_t i = 0; i < cli->nublk; i++) {
		size_t j;

		for (j = 0; j < n && strcmp(specs[j].name, cli->ublk[i]); j++)
			;
		if (j == n) {
			log_error("--ublk \"%s\": no such export", cli->ublk[i]);
			return -1;
		}
		specs[j].ublk = true;
	}
	return 0;
}

/* Refuses duplicate or over-long names among the merged exports. */
int config_check_exports(const struct export_spec *specs, size_t n)
{
	size_t i, j;

	if (n == 0) {
		log_error("no exports configured");
		return -1;
	}
	for (i = 0; i < n; i++) {
		if (strlen(specs[i].name) > PROTO_NAME_MAX ||
		    strlen(specs[i].description) > PROTO_NAME_MAX) {
			log_error("export \"%.64s\": name and description are limited to %d bytes",
				  specs[i].name, PROTO_NAME_MAX);
			return -1;
		}
		for (j = 0; j < i; j++)
			if (strcmp(specs[i].name, specs[j].name) == 0) {
				log_error("export name \"%s\" given twice", specs[i].name);
				return -1;
			}
	}
	return 0;
}

