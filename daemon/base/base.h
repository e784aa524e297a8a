/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * base: what every layer of daemon/ uses, and nothing above it: log lines,
 * clocks, counters and histograms, who a client is, access rules, and the
 * little helpers of the on-disk formats. Pure but for log.c's output.
 */
#ifndef URINGNBD_BASE_H
#define URINGNBD_BASE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#ifndef URINGNBD_VERSION /* the Makefile passes debian/changelog's */
#define URINGNBD_VERSION "unknown"
#endif

/* Little-endian integers of the on-disk formats (overlay.c, bitmap.c). */
static inline void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint32_t get_le32(const uint8_t *p)
{
	uint32_t v = 0;

	for (int i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}
static inline uint64_t get_le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* ---- log.c ---- */
enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };
extern enum log_level log_max_level;
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) do { if (log_max_level >= LOG_DEBUG) log_msg(LOG_DEBUG, __VA_ARGS__); } while (0)
/*
 * A warning that may repeat (accept failures, submit errors): at most one
 * line per LOG_LIMIT_INTERVAL_S for each limit, with the count of those
 * left out. Safe from any thread; a limit is zero-initialised and static.
 */
#define LOG_LIMIT_INTERVAL_S 5
struct log_limit {
	atomic_uint_fast64_t next_ns;  /* monotonic time the next line may be written */
	atomic_uint suppressed;        /* lines left out since the last one */
};
void log_msg_limited(struct log_limit *l, enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/*
 * While buf is set, the first error line this thread logs is also copied
 * there (without the prefix): how a control command says why a call it
 * made failed. log_capture(NULL, 0) ends it.
 */
void log_capture(char *buf, size_t len);
/*
 * Client-chosen bytes made safe for a log line: printable ASCII stays,
 * anything else (and \\ and ") becomes \\xNN; cut with "..." to fit bufsz
 * (at least 8). Returns buf.
 */
const char *log_escape(const void *s, size_t len, char *buf, size_t bufsz);

/* ---- clocks ---- */
/* CLOCK_MONOTONIC in nanoseconds. */
static inline uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static inline uint64_t max_u64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
/*
 * The same in seconds, for durations measured off a worker (the main thread's): libev's ev_now() is
 * wall-clock time, which steps (a VM's clock is set forward after a pause),
 * so a difference of two ev_now()s is no duration.
 */
static inline double now_s(void)
{
	return (double)now_ns() / 1e9;
}

/* ---- counters: written by one thread or several, read by any (relaxed) ---- */
/* A worker's own counter: it is the only writer. */
static inline void stat_bump(atomic_uint_fast64_t *counter, uint64_t n)
{
	atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + n,
			      memory_order_relaxed);
}
/* A counter any thread may bump. */
static inline void stat_add(atomic_uint_fast64_t *counter, uint64_t n)
{
	atomic_fetch_add_explicit(counter, n, memory_order_relaxed);
}

/* ---- hist.c: histograms (base/) ---- */
/*
 * Latency histograms with fixed buckets: upper bounds 10 us * 10^(k/10)
 * for k = 0..60 (10 us to 10 s, ten per decade, so a quantile read from
 * them is within 26% and usually far closer), then +Inf. One writer each
 * (a worker's own), read by any thread (relaxed), summed when scraped.
 */
#define HIST_BUCKETS 61
struct hist {
	atomic_uint_fast64_t n[HIST_BUCKETS + 1]; /* per bucket (not cumulative); last: +Inf */
	atomic_uint_fast64_t sum_ns;
};
extern const uint64_t hist_bounds_ns[HIST_BUCKETS];
void hist_observe(struct hist *h, uint64_t ns);
/* Adds src into dst (dst's thread is the only writer, or dst is private). */
void hist_add(struct hist *dst, const struct hist *src);
/* How many observations a histogram holds. */
uint64_t hist_count(const struct hist *h);
/* The q-quantile (0..1) of a histogram in seconds, interpolated as Prometheus does; 0 if empty. */
double hist_quantile(const struct hist *h, double q);

/* ---- clients: who connects (the listeners fill it in; access rules and limits read it) ---- */
/* Who a client is, for the per-client connection limit. */
struct client_key {
	int family;               /* AF_INET, AF_INET6, AF_UNIX (by uid), AF_VSOCK (by CID); 0: not counted */
	uint32_t uid;             /* AF_UNIX: the peer's uid (SO_PEERCRED) */
	uint32_t cid;             /* AF_VSOCK: the peer's context id (a guest's, or 1: this host) */
	uint8_t addr[16];         /* AF_INET (first 4 bytes), AF_INET6 */
};

/* The rest of what is known of a client: for access control and log lines. */
struct client_peer {
	uint16_t port;            /* TCP: its port */
	bool cred;                /* unix socket: SO_PEERCRED answered */
	uint32_t gid;             /* ...its primary gid */
	int32_t pid;              /* ...and pid */
};
/* "127.0.0.1", "[::1]", "uid 1000", "vsock cid 3": the key for log lines. */
const char *client_name(const struct client_key *key, char *buf, size_t len);

/* ---- access.c ---- */
struct acl_rule;
struct access {
	bool tls_only;            /* tls = require, or tls-allow is set */
	struct acl_rule *allow, *deny;
	size_t nallow, ndeny;
	char **tls_names;         /* tls-allow: PSK usernames, certificate CNs */
	size_t ntls_names;
};
/* Who asks for an export. */
struct client_who {
	const struct client_key *key;
	const struct client_peer *peer;
	bool tls;                 /* TLS is up */
	const char *tls_name;     /* its PSK username or certificate CN; NULL if none */
};
enum access_verdict { ACCESS_OK, ACCESS_DENIED, ACCESS_NEEDS_TLS };
/* An export's access settings as configured (NULL: not set). */
struct access_spec {
	const char *allow, *deny, *tls_allow;
	bool tls_required;        /* tls = require */
};
/* Parses allow, deny, tls-allow and tls into *a. Returns 0, or -1 with err set. */
int access_parse(struct access *a, const struct access_spec *spec, char *err, size_t errlen);
void access_free(struct access *a);
enum access_verdict access_check(const struct access *a, const struct client_who *who);

#endif
