// SPDX-License-Identifier: BSD-3-Clause
/*
 * Access control per export, in nbdkit's ip-filter spelling:
 *
 *   allow = 127.0.0.1, ::1, 10.0.0.0/8, uid:0, gid:disk
 *   deny = all
 *   tls-allow = alice, backup.example.com
 *   tls = require
 *
 * Items are separated by commas, spaces or '+' (the last for --export,
 * whose own separator is the comma). An item is all, anyipv4, anyipv6,
 * anyunix, anyvsock, an IPv4 or IPv6 address with an optional /PREFIX,
 * uid:N|NAME or gid:N|NAME (the peer's credentials on a unix socket, from
 * SO_PEERCRED: its uid and primary gid), or vsock:CID (a vsock peer's
 * context id: a guest's, or 1 for this host's loopback). A client that matches an allow item is let in;
 * else one that matches a deny item is refused; else it is let in.
 * tls-allow names PSK usernames or client certificate common names (the
 * certificate verified against the CA, tls-verify-peer): an export with it
 * is TLS-only, and only those names get it. Names are resolved when the
 * configuration is read.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base.h"

enum acl_kind { ACL_ALL, ACL_ANYIPV4, ACL_ANYIPV6, ACL_ANYUNIX, ACL_ANYVSOCK, ACL_NET4, ACL_NET6,
		ACL_UID, ACL_GID, ACL_VSOCK };

struct acl_rule {
	enum acl_kind kind;
	uint8_t addr[16];
	unsigned prefix;
	uint32_t id;
};

static bool is_sep(char ch)
{
	return ch == ',' || ch == '+' || isspace((unsigned char)ch);
}

static int parse_id(const char *s, bool group, uint32_t *id)
{
	char *end;
	unsigned long v;

	if (!*s)
		return -1;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (!errno && !*end && v <= UINT32_MAX && isdigit((unsigned char)*s)) {
		*id = (uint32_t)v;
		return 0;
	}
	if (group) {
		struct group *g = getgrnam(s);

		if (!g)
			return -1;
		*id = g->gr_gid;
	} else {
		struct passwd *p = getpwnam(s);

		if (!p)
			return -1;
		*id = p->pw_uid;
	}
	return 0;
}

static int parse_rule(const char *item, struct acl_rule *r, char *err, size_t errlen)
{
	char buf[128], *slash;
	unsigned max;

	memset(r, 0, sizeof(*r));
	if (!strcmp(item, "all")) {
		r->kind = ACL_ALL;
		return 0;
	}
	if (!strcmp(item, "anyipv4")) {
		r->kind = ACL_ANYIPV4;
		return 0;
	}
	if (!strcmp(item, "anyipv6")) {
		r->kind = ACL_ANYIPV6;
		return 0;
	}
	if (!strcmp(item, "anyunix")) {
		r->kind = ACL_ANYUNIX;
		return 0;
	}
	if (!strcmp(item, "anyvsock")) {
		r->kind = ACL_ANYVSOCK;
		return 0;
	}
	if (!strncmp(item, "vsock:", 6)) {
		char *end;
		unsigned long v;

		errno = 0;
		v = strtoul(item + 6, &end, 10);
		if (errno || *end || !isdigit((unsigned char)item[6]) || v > UINT32_MAX) {
			snprintf(err, errlen, "\"%s\": expected vsock:CID (a context id: 1 is "
				 "this host's loopback, 2 the host, 3 and up guests)", item);
			return -1;
		}
		r->kind = ACL_VSOCK;
		r->id = (uint32_t)v;
		return 0;
	}
	if (!strncmp(item, "uid:", 4) || !strncmp(item, "gid:", 4)) {
		bool group = item[0] == 'g';

		r->kind = group ? ACL_GID : ACL_UID;
		if (parse_id(item + 4, group, &r->id) < 0) {
			snprintf(err, errlen, "\"%s\": no such %s", item, group ? "group" : "user");
			return -1;
		}
		return 0;
	}
	if (strlen(item) >= sizeof(buf))
		goto bad;
	strcpy(buf, item);
	slash = strchr(buf, '/');
	if (slash)
		*slash++ = '\0';
	if (inet_pton(AF_INET, buf, r->addr) == 1) {
		r->kind = ACL_NET4;
		max = 32;
	} else if (inet_pton(AF_INET6, buf, r->addr) == 1) {
		r->kind = ACL_NET6;
		max = 128;
	} else {
		goto bad;
	}
	r->prefix = max;
	if (slash) {
		char *end;
		unsigned long p;

		errno = 0;
		p = strtoul(slash, &end, 10);
		if (errno || *end || !*slash || p > max || !isdigit((unsigned char)*slash))
			goto bad;
		r->prefix = (unsigned)p;
	}
	return 0;
bad:
	snprintf(err, errlen, "\"%s\": expected all, anyipv4, anyipv6, anyunix, anyvsock, an "
		 "address[/prefix], uid:USER, gid:GROUP or vsock:CID", item);
	return -1;
}

/*
 * Splits s into items; each is passed to fn. Returns the count, or -1.
 * -fanalyzer loses the arrays fn stores through ctx (add_rule, add_name)
 * and calls them leaks; access_free() releases them.
 */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpragmas"
#pragma GCC diagnostic ignored "-Wanalyzer-malloc-leak"
static int split(const char *s, int (*fn)(void *ctx, const char *item, char *err, size_t errlen),
		 void *ctx, char *err, size_t errlen)
{
	char item[256];
	int n = 0;

	while (*s) {
		size_t len = 0;

		while (*s && is_sep(*s))
			s++;
		if (!*s)
			break;
		while (s[len] && !is_sep(s[len]))
			len++;
		if (len >= sizeof(item)) {
			snprintf(err, errlen, "an item longer than %zu bytes", sizeof(item) - 1);
			return -1;
		}
		memcpy(item, s, len);
		item[len] = '\0';
		s += len;
		if (fn(ctx, item, err, errlen) < 0)
			return -1;
		n++;
	}
	return n;
}
#pragma GCC diagnostic pop

struct rules_ctx {
	struct acl_rule **rules;
	size_t *n;
};

static int add_rule(void *ctx, const char *item, char *err, size_t errlen)
{
	struct rules_ctx *rc = ctx;
	struct acl_rule r, *a;

	if (parse_rule(item, &r, err, errlen) < 0)
		return -1;
	a = realloc(*rc->rules, (*rc->n + 1) * sizeof(*a));
	if (!a) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	a[(*rc->n)++] = r;
	*rc->rules = a;
	return 0;
}

static int add_name(void *ctx, const char *item, char *err, size_t errlen)
{
	struct access *a = ctx;
	char **names = realloc(a->tls_names, (a->ntls_names + 1) * sizeof(*names));

	if (names)
		a->tls_names = names;
	if (!names || !(names[a->ntls_names] = strdup(item))) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	a->ntls_names++;
	return 0;
}

int access_parse(struct access *a, const struct access_spec *spec, char *err, size_t errlen)
{
	struct rules_ctx allow = { &a->allow, &a->nallow }, deny = { &a->deny, &a->ndeny };

	memset(a, 0, sizeof(*a));
	if (spec->allow && split(spec->allow, add_rule, &allow, err, errlen) < 0)
		goto fail;
	if (spec->deny && split(spec->deny, add_rule, &deny, err, errlen) < 0)
		goto fail;
	if (spec->tls_allow) {
		int n = split(spec->tls_allow, add_name, a, err, errlen);

		if (n < 0)
			goto fail;
		if (n == 0) {
			snprintf(err, errlen, "tls-allow: no names");
			goto fail;
		}
	}
	a->tls_only = spec->tls_required || a->ntls_names;
	return 0;
fail:
	access_free(a);
	return -1;
}

void access_free(struct access *a)
{
	size_t i;

	for (i = 0; i < a->ntls_names; i++)
		free(a->tls_names[i]);
	free(a->tls_names);
	free(a->allow);
	free(a->deny);
	memset(a, 0, sizeof(*a));
}

static bool prefix_match(const uint8_t *a, const uint8_t *b, unsigned bits)
{
	unsigned bytes = bits / 8, rest = bits % 8;

	if (memcmp(a, b, bytes))
		return false;
	if (!rest)
		return true;
	return ((a[bytes] ^ b[bytes]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

static bool rule_match(const struct acl_rule *r, const struct client_who *who)
{
	const struct client_key *k = who->key;
	static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	bool mapped = k->family == AF_INET6 && !memcmp(k->addr, v4mapped, 12);

	switch (r->kind) {
	case ACL_ALL:
		return true;
	case ACL_ANYIPV4:
		return k->family == AF_INET || mapped;
	case ACL_ANYIPV6:
		return k->family == AF_INET6 && !mapped;
	case ACL_ANYUNIX:
		return k->family == AF_UNIX;
	case ACL_ANYVSOCK:
		return k->family == AF_VSOCK;
	case ACL_VSOCK:
		return k->family == AF_VSOCK && k->cid == r->id;
	case ACL_NET4:
		if (k->family == AF_INET)
			return prefix_match(k->addr, r->addr, r->prefix);
		/* An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d. */
		return mapped && prefix_match(k->addr + 12, r->addr, r->prefix);
	case ACL_NET6:
		return k->family == AF_INET6 && prefix_match(k->addr, r->addr, r->prefix);
	case ACL_UID:
		return k->family == AF_UNIX && who->peer->cred && k->uid == r->id;
	case ACL_GID:
		return k->family == AF_UNIX && who->peer->cred && who->peer->gid == r->id;
	}
	return false;
}

static bool any_match(const struct acl_rule *rules, size_t n, const struct client_who *who)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (rule_match(&rules[i], who))
			return true;
	return false;
}

enum access_verdict access_check(const struct access *a, const struct client_who *who)
{
	size_t i;

	if (!any_match(a->allow, a->nallow, who) && any_match(a->deny, a->ndeny, who))
		return ACCESS_DENIED;
	if (!a->tls_only)
		return ACCESS_OK;
	if (!who->tls)
		return ACCESS_NEEDS_TLS;
	if (!a->ntls_names)
		return ACCESS_OK;
	for (i = 0; who->tls_name && i < a->ntls_names; i++)
		if (!strcmp(a->tls_names[i], who->tls_name))
			return ACCESS_OK;
	return ACCESS_DENIED;
}

const char *client_name(const struct client_key *key, char *buf, size_t len)
{
	char a[INET6_ADDRSTRLEN];

	if (key->family == AF_UNIX)
		snprintf(buf, len, "uid %u", key->uid);
	else if (key->family == AF_VSOCK)
		snprintf(buf, len, "vsock cid %u", key->cid);
	else if (key->family == AF_INET || key->family == AF_INET6)
		snprintf(buf, len, key->family == AF_INET6 ? "[%s]" : "%s",
			 inet_ntop(key->family, key->addr, a, sizeof(a)) ? a : "?");
	else
		snprintf(buf, len, "a client");
	return buf;
}
