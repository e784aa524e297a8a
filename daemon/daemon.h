/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * daemon: the map of daemon/, and the header every file of it includes.
 * Nothing outside daemon/ includes it. Each section below lists exactly
 * what one file exports; the connection side (conn.h), the control side
 * (control.h), the metrics (metrics.h) and the three pure helpers (pool.h,
 * plan.h, ctlproto.h) have headers of their own.
 *
 * The files are grouped by layer, one folder each:
 *
 * service/   the process: settings, listeners, exports' table, restarts
 *   main.c       start-up, signals, reload, shutdown
 *   cli.c        the command line
 *   config.c     the configuration file and every setting's parser
 *   log.c        log lines, rate-limited warnings
 *   notify.c     systemd's notification protocol
 *   listen.c     TCP, unix and socket-activated listeners (main thread)
 *   server.c     the export table, connection placement and limits
 *   access.c     who may use an export: allow/deny lists, TLS-only, tls-allow
 *   handover.c   restarts that keep connections: parked sockets and their state
 *                to the next process (SIGUSR2 exec, or systemd's fd store)
 * storage/   what an export is backed by
 *   backing.c    the registry of backing files: one lock manager, cache key and
 *                durability error per file, across reloads
 *   export.c     opening and probing backing files
 *   overlay.c    copy-on-write overlays: the overlay file's format, map and flush
 *   bitmap.c     dirty bitmaps and checkpoints of a file: its sidecar, the commit
 *                thread that syncs new bits before their writes, reflink copies
 * engine/    threads, rings and buffers; no NBD here
 *   worker.c     a thread with one io_uring, one buffer pool, one clock;
 *                it sleeps only in the ring, until its earliest deadline;
 *                completions are struct op callbacks; optional polling
 *   timer.c      a worker's deadlines: a heap on its clock (timer.h, pure)
 *   offload.c    threads for blocking calls (extent queries), posted back
 *   pool.c       page-aligned buffers and iovec helpers (pool.h, pure)
 *   plan.c       request arithmetic: spans, edges, locks (plan.h, pure)
 * conn/      a connection and its requests, on its worker (conn.h)
 *   conn.c       a connection's life cycle on its worker
 *   handshake.c  option negotiation
 *   rx.c         requests in from the wire: headers, payloads, refusals
 *   request.c    a request's state machine: plan, buffers, lock, finish
 *   fileio.c     the file I/O steps: read/write, edges, zeroing, flush, extents
 *   cached.c     reads through the page cache
 *   reply.c      replies out, batched per connection
 *   tls.c        GnuTLS credentials, and each connection's TLS on the io_uring path
 *   watch.c      each second, a worker's oldest request in flight: a gauge, and a
 *                warning past 10 s
 * ops/       what operators use: the control socket and metrics
 *   control.c    the control socket: clients, JSON lines, queries to workers (control.h)
 *   command.c    the control socket's commands (control.h)
 *   ctlproto.c   its wire format: the command table, parsing, replies (ctlproto.h,
 *                pure; shared with ctl/uringnbdctl.c)
 *   metrics.c    histograms; a snapshot of every counter as Prometheus text or JSON
 *                (metrics.h)
 *   http.c       the /metrics endpoint (libmicrohttpd, a thread of its own)
 *
 * Threads and ownership:
 *  - The main thread parses options, opens exports, owns the listeners and
 *    the signal watchers (one libev loop), and hands each accepted socket to
 *    a worker. A reload opens a new export table and swaps it in.
 *  - A worker owns one io_uring, one buffer pool, one heap of deadlines on
 *    its one clock (engine/timer.h), and every connection it was handed,
 *    for the connection's whole life. libev is the main thread's only. Another
 *    thread touches only its inbox and remote ready list (under its mutex)
 *    and its wake-up eventfd (worker_wake).
 *  - Exports are reference counted and never change once open; a reload
 *    (or the control socket) replaces the table, or one entry of it, and
 *    connections keep the export they chose.
 *  - The control socket runs on the main thread, the metrics endpoint on
 *    libmicrohttpd's. They reach connections only through a query op
 *    posted to each worker's inbox (conns_report, conns_disconnect run
 *    there), and read the per-worker counters (export_stats, worker_stats,
 *    one writer each); never a worker's own structures.
 *  - A file's dirty bitmaps (bitmap.c) have a committer thread of their
 *    own; a write waiting for its bits is an op it posts back. Checkpoints
 *    run on a control job thread, under a whole-file range lock.
 *  - Fields read by other threads are <stdatomic.h> atomics with explicit
 *    orders (relaxed: they are counters and flags that order nothing else).
 */
#ifndef URINGNBD_DAEMON_H
#define URINGNBD_DAEMON_H

#include <ev.h>
#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "../cache/cache.h"
#include "../lock/rangelock.h"
#include "../proto/proto.h"
#include "engine/plan.h"
#include "engine/pool.h"
#include "engine/timer.h"

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

/* ---- config.c ---- */
/* One export as configured (command line or [export NAME] section). */
struct export_spec {
	const char *name;
	const char *description;
	const char *path;
	bool readonly;
	int cache_mode;        /* enum cache_mode */
	const char *allow;     /* access lists (access.c), or NULL */
	const char *deny;
	const char *tls_allow;
	bool tls_required;     /* tls = require */
	const char *overlay;   /* overlay file, "temporary", or NULL (overlay.c) */
	const char *bitmaps;   /* dirty bitmaps it tracks, "a,b" (bitmap.c), or NULL */
	const char *bitmap_file; /* their sidecar file; NULL: PATH.bitmaps */
	uint32_t bitmap_granularity; /* bytes per bit; 0: the sidecar's, or the default */
	char *storage;         /* heap copy the strings point into, or NULL */
	char *extra[6];        /* more heap strings (config file), freed with it */
	unsigned nextra;
	int config_line;       /* where a config file defined it */
};

struct config {
	char *unix_path, *bind, *port, *pid_file;
	char *control_path;        /* the control socket (control.c), or NULL */
	char *metrics;             /* the metrics endpoint (http.c), or NULL */
	long long threads;         /* 0: not set */
	long long pool_bytes;      /* 0: not set */
	long long cache_bytes;     /* 0: not set */
	long long max_conns;       /* -1: not set; 0: no limit */
	long long handshake_timeout_s; /* -1: not set; 0: none */
	long long keepalive_s;     /* -1: not set; 0: off */
	long long io_timeout_s;    /* -1: not set; 0: none */
	long long idle_timeout_s;  /* -1: not set; 0: none */
	long long busy_poll_us;    /* -1: not set; 0: as poll-max says */
	long long poll_max_us;     /* -1: not set; 0: no adaptive polling */
	long long max_conns_per_client; /* -1: not set; 0: no limit */
	int keep_conns;            /* keep-connections: -1 not set, 0, 1 */
	int defer_taskrun;         /* defer-taskrun: -1 not set, 0, 1 */
	int tls;                   /* enum proto_tls; -1: not set */
	char *tls_certificates;    /* directory (nbdkit's layout) */
	char *tls_psk;             /* psktool file */
	int tls_verify_peer;       /* -1: not set */
	int list;                  /* exports are listed: -1 not set, 0, 1 */
	bool single;               /* -s: one client on stdin/stdout (command line only) */
	int log_level;             /* -1: not set */
	bool log_level_set;
	struct export_spec *exports;
	size_t nexports;
};

/* Every setting "not set". */
void config_init(struct config *cfg);
/*
 * One [global] key (also what the command line's global options go
 * through, so both accept and refuse the same values). Returns 0, or -1
 * with *why naming the key and what it expects.
 */
int config_set_global(struct config *cfg, const char *key, const char *value, const char **why);
/*
 * One [export NAME] key (the file's and the control socket's, so both
 * accept and refuse the same values): spec keeps a pointer to v. Returns 0,
 * or -1 with err saying why (spec unchanged).
 */
int config_set_export(struct export_spec *spec, const char *key, const char *v, char *err,
		      size_t errlen);
/* Parses the file into *cfg; logs "file:line: why" and returns -1 on error. */
int config_load(const char *path, struct config *cfg);
/* Appends a copy of *spec (its heap strings move to cfg). Returns 0 or -1. */
int config_add_export(struct config *cfg, const struct export_spec *spec);
/*
 * The exports in force: file's, then cli's; a command-line export replaces
 * a file export of the same name. Returns a new array of borrowed specs
 * (free only the array), or NULL with *n = 0 on error.
 */
struct export_spec *config_merge_exports(const struct config *file, const struct config *cli,
					 size_t *n);
/* Refuses no exports, duplicate names, over-long names; logs why. Returns 0 or -1. */
int config_check_exports(const struct export_spec *specs, size_t n);
void config_free(struct config *cfg);
long long config_parse_size(const char *s);
long long config_parse_count(const char *s);
int config_parse_bool(const char *v);
int config_parse_log_level(const char *v);
int config_parse_tls(const char *v); /* enum proto_tls, or -1 */
int cache_mode_parse(const char *s); /* enum cache_mode, or -1 if unknown */
const char *cache_mode_name(int mode);

/* ---- cli.c ---- */
/*
 * Parses the command line into *cli (config_init'd here) and *config_path.
 * Returns 0 to go on, 1 to exit 0 (--help, --version), -1 to exit 1.
 */
int cli_parse(int argc, char **argv, struct config *cli, const char **config_path);

/* ---- notify.c: systemd's notification protocol ---- */
/* Sends "READY=1", "STATUS=..." etc. to $NOTIFY_SOCKET, if set. */
void notify_send(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/*
 * The same with descriptors attached (FDSTORE=1): 0, or -errno (-ENOENT
 * without $NOTIFY_SOCKET).
 */
#define NOTIFY_MAX_FDS 16
int notify_send_fds(const int *fds, size_t n, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define EXPORT_MAX_REQUEST_BYTES (32u * 1024 * 1024) /* largest READ/WRITE served */
#define EXPORT_MAX_ALIGN_BYTES (32u * 1024)          /* two edge blocks fit one pool chunk */
/* The largest request's aligned span (request + two edge blocks), plus a bounce chunk. */
#define EXPORT_MAX_CHUNKS_PER_REQ \
	((EXPORT_MAX_REQUEST_BYTES + 2 * EXPORT_MAX_ALIGN_BYTES) / POOL_CHUNK_BYTES + 1)

/* ---- backing.c: one record per backing file, outliving export tables ---- */
struct backing {
	bool is_blockdev;
	dev_t dev;                /* a file's identity: st_dev and st_ino */
	ino_t ino;
	dev_t rdev;               /* a block device's: st_rdev */
	char *path;               /* as first opened, for log lines */
	struct rl_manager *locks; /* every request of every export of the file */
	uint64_t cache_id;        /* its key in the page cache (never reused) */
	atomic_int durability_err; /* errno of the first failed flush; 0 if none */
	struct overlay *ov;       /* an overlay file's shared state (overlay.c), or NULL */
	struct bitmaps *_Atomic bm; /* its dirty bitmaps (bitmap.c), or NULL; set once */
	unsigned refs;            /* exports holding it (under the registry's lock) */
	struct backing *next;     /* registry list */
};

/*
 * The record of the file st describes (opened as path), made if none is
 * held: a new reference, or NULL if out of memory.
 */
struct backing *backing_get(const struct stat *st, const char *path);
/* Another reference to a record already held. */
void backing_ref(struct backing *b);
void backing_put(struct backing *b);
/* A flush or FUA write of the file failed with err: remembered (and logged) once. */
void backing_fail(struct backing *b, int err);
/* The remembered durability error, or 0. */
int backing_durability_err(const struct backing *b);

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
/* Parses spec's allow, deny, tls-allow and tls into *a. Returns 0, or -1 with err set. */
int access_parse(struct access *a, const struct export_spec *spec, char *err, size_t errlen);
void access_free(struct access *a);
enum access_verdict access_check(const struct access *a, const struct client_who *who);

/* ---- tls.c: credentials (main thread) ---- */
struct tls_creds; /* reference counted; a connection holds one from STARTTLS on */
int tls_init(void);
/*
 * Loads X.509 files from certs_dir (ca-cert.pem, server-cert.pem,
 * server-key.pem, ca-crl.pem if present) and/or a psktool file. Logs what
 * is wrong and returns NULL on any error.
 */
struct tls_creds *tls_creds_load(const char *certs_dir, const char *psk_file, bool verify_peer);
struct tls_creds *tls_creds_get(struct tls_creds *cr);
void tls_creds_put(struct tls_creds *cr);

/* ---- overlay.c ---- */
#define OVERLAY_GRANULE_BYTES (32u * 1024) /* fits the edge-block bounce chunk (EXPORT_MAX_ALIGN_BYTES) */
struct overlay {
	int fd;                   /* O_DIRECT, read-write: the granules */
	int fd_meta;              /* the same file, buffered: header and map */
	char *path;               /* as configured ("temporary" for an unlinked one) */
	uint64_t size_bytes;      /* = the base's */
	ino_t base_ino;
	uint64_t ngranules;
	uint64_t map_off, map_bytes, data_off;
	_Atomic uint64_t *live;   /* bit per granule: its data is in the overlay (reads use it) */
	pthread_mutex_t flush_lock; /* one flush at a time; guards durable and snapshot */
	uint8_t *durable;         /* the map as it is on disk */
	uint8_t *snapshot;        /* a flush's copy of live */
	bool map_dirty;           /* map pages written, not yet synced */
};
/* Opens PATH (created if missing) or an unlinked "temporary" file, O_DIRECT. */
int overlay_open_file(const char *path, bool *created, int *fd_out);
/*
 * Gives backing record b (the overlay file's) its overlay state: formats a
 * created file, or loads one and checks it was made over this base,
 * unchanged. A second export of the same file shares the first's state
 * (fd is then closed). Returns 0, or -errno with err saying why.
 */
int overlay_attach(struct backing *b, int fd, bool created, const char *path,
		   const struct stat *base_st, const char *base_path, uint64_t size,
		   char *err, size_t errlen);
/* Flushes the map and frees (the backing record's last reference). */
void overlay_close(struct overlay *ov);
bool overlay_allocated(const struct overlay *ov, uint64_t off);
/* Bytes from off (at most len) that all live in one layer; *in_overlay says which. */
uint64_t overlay_run(const struct overlay *ov, uint64_t off, uint64_t len, bool *in_overlay);
/* The granules [off, off + len) touches now live in the overlay (their data is written). */
void overlay_mark(struct overlay *ov, uint64_t off, uint64_t len);
/* The alignment to plan a write with: the granule where it would leave part of one unset. */
uint32_t overlay_write_align(const struct overlay *ov, uint64_t off, uint64_t len, uint32_t align);
/* Blocking: data, then the map, durable (see overlay.c). Returns 0 or -errno (logged). */
int overlay_flush(struct overlay *ov);
/* Blocking: WRITE_ZEROES of [off, off + len), under an exclusive lock over its granules. */
int overlay_zero(struct overlay *ov, int base_fd, uint64_t off, uint64_t len);
/* Blocking: base:allocation through both layers. */
size_t overlay_extents(const struct overlay *ov, int base_fd, uint64_t off, uint64_t len,
		       bool one, struct proto_extent *ext, size_t max);
uint64_t overlay_allocated_bytes(const struct overlay *ov);

/* ---- bitmap.c: dirty bitmaps and checkpoints of one file, in a sidecar ---- */
/*
 * Every WRITE, WRITE_ZEROES and TRIM of a file with bitmaps marks the
 * granules it touches in each live bitmap, and a newly set bit is on disk
 * (written and synced) before the write that set it is issued: after a
 * crash a bitmap may have extra bits, never a missing one. A checkpoint
 * freezes a bitmap's contents beside a reflink copy of the image. The
 * sidecar's format is in uringnbd(8) and at the top of bitmap.c.
 */
#define BITMAP_SLOTS 64              /* live bitmaps and checkpoints of a file, together */
#define BITMAP_NAME_MAX 100          /* a bitmap's or checkpoint's name: [A-Za-z0-9_.+-] */
#define BITMAP_DEFAULT_GRANULARITY (64u * 1024)
#define BITMAP_CONTEXT_PREFIX "qemu:dirty-bitmap:"
enum bitmap_kind { BITMAP_FREE, BITMAP_LIVE, BITMAP_FROZEN };
struct bitmaps;
/* A write waiting for its bits to be on disk: op is posted to w with 0 or -errno. */
struct bitmap_wait {
	struct bitmap_wait *next;
	struct worker *w;
	struct op *op;
};
/* What bitmaps_list() tells of one slot. */
struct bitmap_info {
	int slot;
	enum bitmap_kind kind;
	char name[BITMAP_NAME_MAX + 1];   /* the bitmap's, or the checkpoint's */
	char bitmap[BITMAP_NAME_MAX + 1]; /* a checkpoint: the bitmap it froze */
	int64_t created_s;
	bool snapshot;                    /* a checkpoint with a reflink copy */
	uint64_t dirty_granules;
};
/* Whether name may name a bitmap or checkpoint; if not, why says why. */
bool bitmap_name_ok(const char *name, char *why, size_t len);
/*
 * Gives record b (file st, opened as path, fd O_DIRECT) its bitmaps from
 * sidecar (made if missing; refused if it is another file's, truncated or
 * unknown), and a live bitmap for each name of the comma list names (made
 * on first use). A second export of the file shares the first's (the same
 * sidecar only). Returns 0, or -1 with err saying why.
 */
int bitmaps_attach(struct backing *b, const char *sidecar, uint32_t granularity,
		   const struct stat *st, const char *path, uint64_t size, const char *names,
		   char *err, size_t errlen);
/* Stops the committer and frees (the record's last reference). */
void bitmaps_close(struct bitmaps *bm);
uint32_t bitmaps_granularity(const struct bitmaps *bm);
/* Commits (syncs of the sidecar before writes) so far, and the pages they wrote. */
void bitmaps_commits(const struct bitmaps *bm, uint64_t *commits, uint64_t *pages);
/* The slot of the live bitmap or checkpoint named name, or -1. */
int bitmaps_find(struct bitmaps *bm, enum bitmap_kind kind, const char *name);
/*
 * A write of [off, off + len) is about to be issued: 0 if every bit it
 * needs is on disk already (nothing to wait for); 1 if wt is queued for
 * the next commit (its op is posted once the bits are synced, or with
 * -errno if they could not be: the write must then fail).
 */
int bitmaps_mark(struct bitmaps *bm, uint64_t off, uint64_t len, struct bitmap_wait *wt);
/* qemu:dirty-bitmap extents of slot over [off, off + len): at most max. Returns the count. */
size_t bitmaps_extents(struct bitmaps *bm, int slot, uint64_t off, uint64_t len, bool one,
		       struct proto_extent *ext, size_t max);
/* Every used slot into out (at most BITMAP_SLOTS). Returns the count. */
size_t bitmaps_list(struct bitmaps *bm, struct bitmap_info *out);
/* Where checkpoint name's reflink copy of the image lives. */
void bitmaps_snapshot_path(const struct bitmaps *bm, const char *name, char *buf, size_t len);
/*
 * Blocking, under an exclusive lock over the whole file (taken here, once
 * the writes in flight are done): checkpoint name of bitmap freezes its
 * bits with a reflink copy of the image (unless bitmap_only), and the live
 * bitmap starts afresh. clear empties a live bitmap; remove deletes a live
 * bitmap or (kind BITMAP_FROZEN) a checkpoint and its copy. 0, or -errno
 * with err saying why; a failure changes nothing that was on disk.
 */
int bitmaps_checkpoint(struct bitmaps *bm, struct rl_manager *locks, int image_fd,
		       const char *bitmap, const char *name, bool bitmap_only, char *err,
		       size_t errlen);
int bitmaps_clear(struct bitmaps *bm, struct rl_manager *locks, const char *bitmap, char *err,
		  size_t errlen);
int bitmaps_remove(struct bitmaps *bm, struct rl_manager *locks, enum bitmap_kind kind,
		   const char *name, char *err, size_t errlen);

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

/* ---- export.c ---- */
/*
 * An export's counters, one set per worker: only that worker writes its set
 * (stat_bump: a plain load and store, no locked instruction), any thread
 * reads them (relaxed) and sums the sets. Every export object of one name
 * shares them across reloads and export-set, so they only grow.
 */
#define EXPORT_STAT_OPS 9 /* indexed by NBD_CMD_*; the last counts any other type */
#define EXPORT_STAT_ERRS 9 /* NBD error codes by export_stat_err(); the last: any other */
enum transport { TRANSPORT_UNIX, TRANSPORT_TCP, TRANSPORT_TLS, TRANSPORT_STDIO, TRANSPORTS };
struct export_stats {
	atomic_uint_fast64_t requests[EXPORT_STAT_OPS]; /* replied to */
	atomic_uint_fast64_t bytes[EXPORT_STAT_OPS];    /* moved by those that succeeded */
	atomic_uint_fast64_t errors[EXPORT_STAT_OPS];   /* replied to with an error */
	atomic_uint_fast64_t errors_by[EXPORT_STAT_OPS][EXPORT_STAT_ERRS]; /* ...by NBD error */
	atomic_uint_fast64_t in_flight;  /* requests received, not yet done with */
	atomic_uint_fast64_t conns[TRANSPORTS]; /* connections that chose it, still open */
	struct hist duration[EXPORT_STAT_OPS]; /* header received to reply sent */
} __attribute__((aligned(64)));
struct export_counters {
	atomic_int refs;
	int64_t since_s;          /* wall-clock seconds when the first of the name opened */
	unsigned nslots;          /* one per worker */
	struct export_stats slot[];
};
/* Workers there will be: how many sets each export's counters get. */
void export_set_stat_slots(unsigned n);
/* Adds every worker's set into *sum. */
void export_stats_sum(const struct export_counters *ec, struct export_stats *sum);
/* A worker's own counter: it is the only writer. */
static inline void stat_bump(atomic_uint_fast64_t *counter, uint64_t n)
{
	atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + n,
			      memory_order_relaxed);
}
static inline unsigned export_stat_op(uint16_t type)
{
	return type < EXPORT_STAT_OPS - 1 ? type : EXPORT_STAT_OPS - 1;
}
/* The NBD error codes, in export_stats.errors_by's order. */
extern const uint32_t export_stat_errs[EXPORT_STAT_ERRS - 1];
unsigned export_stat_err(uint32_t nbd_error);
/* All of a set's connections, whatever their transport. */
uint64_t export_stats_conns(const struct export_stats *st);

/*
 * An export. Heap object, reference counted: the server's table holds one
 * reference and every connection that chose it holds one, so an export
 * removed by a reload lives on until its last connection closes. Nothing
 * in it changes after export_open().
 */
struct export {
	atomic_int refs;
	char *name;            /* export name ("" is the default export) */
	char *description;
	char *path;            /* backing file or block device */
	int fd;                /* opened O_DIRECT */
	int fd_buffered;       /* same file without O_DIRECT: the partial last block only */
	bool readonly;
	bool is_blockdev;
	bool zeroes_fast;      /* zeroing is cheap: a file, or a device with a zeroing command */
	atomic_bool may_have_holes; /* a file with unallocated blocks at open, or punched since
				       (reads may then answer holes as OFFSET_HOLE) */
	uint64_t size_bytes;
	uint64_t direct_end;   /* size rounded down to align_bytes: O_DIRECT below it */
	uint32_t align_bytes;  /* direct-I/O offset/length alignment */
	uint16_t tflags;       /* transmission flags it supports */
	int cache_mode;        /* enum cache_mode */
	struct access access;  /* who may use it (access.c) */
	char *access_src[3];   /* allow, deny, tls-allow as configured (NULL: not set) */
	bool tls_required;
	struct rl_manager *locks; /* every request locks the byte range it touches */
	struct backing *backing;  /* whose manager that is (one per file, see backing.c) */
	/* Overlay exports: fd is the base (read-only); writes go to the overlay. */
	struct overlay *ov;       /* or NULL */
	struct backing *ov_backing; /* the overlay file's record: its locks, map, errors */
	char *overlay_src;        /* as configured, to compare at reload */
	struct export_counters *ctr; /* shared with the exports of the same name */
	/* Dirty bitmaps (bitmap.c): its file's live ones, or a checkpoint's frozen one. */
	struct bitmaps *bm;       /* whose slots ctx_slot names; NULL: none */
	struct backing *bm_backing; /* a reference to the record that holds bm */
	uint32_t nctx;            /* meta contexts beyond base:allocation */
	char *ctx_names[PROTO_META_MAX_EXTRA]; /* "qemu:dirty-bitmap:NAME" */
	int ctx_slot[PROTO_META_MAX_EXTRA];    /* ...and the slot each reads */
	char *bitmaps_src;        /* as configured, to compare at reload */
	char *bitmap_file_src;
	uint32_t bitmap_granularity_src;
	char *checkpoint;         /* a checkpoint's export (EXPORT@NAME): NAME; else NULL */
};
/* The record whose durability errors this export's flushes report. */
static inline struct backing *export_store(const struct export *e)
{
	return e->ov ? e->ov_backing : e->backing;
}

/*
 * Opens and probes the backing file; logs one clear message on failure.
 * Returns a new export holding one reference, or NULL. Every export of the
 * same file shares its backing record (lock manager, cache key, errors).
 */
struct export *export_open(const struct export_spec *spec);
void export_get(struct export *e);
/* Drops a reference; the last one closes and frees the export. */
void export_put(struct export *e);
/* Whether e is what spec describes, and its file unchanged (a reload may keep it). */
bool export_matches(const struct export *e, const struct export_spec *spec);
/*
 * Whether e's path now names another file, or its file has another size;
 * if so, why says which (when why is not NULL).
 */
bool export_changed(const struct export *e, char *why, size_t len);
/* A new export of what e describes, opened afresh (NULL, logged, on failure). */
struct export *export_reopen(const struct export *e);
/* What e was opened from (its strings are e's: valid while e is). */
void export_spec_of(const struct export *e, struct export_spec *spec);
/* e (not yet published) counts into from's counters from now on. */
void export_share_counters(struct export *e, const struct export *from);
/*
 * base:allocation of [off, off + len) from SEEK_DATA/SEEK_HOLE: at most max
 * extents (one if `one`), covering at least the first byte. Returns the count.
 */
size_t export_extents(const struct export *e, uint64_t off, uint64_t len, bool one,
		      struct proto_extent *ext, size_t max);
/*
 * The same from SEEK_DATA/SEEK_HOLE of fd, whose byte off + shift holds
 * export byte off: extents appended to ext[n..max), the first merged into
 * ext[n - 1] when their flags agree. Returns the new count.
 */
size_t export_file_extents(int fd, uint64_t shift, uint64_t off, uint64_t len,
			   struct proto_extent *ext, size_t n, size_t max);
/* Fills the negotiation view of e. */
void export_describe(const struct export *e, struct proto_export *out);
/*
 * The read-only export base->name@ck->name of a checkpoint of base's
 * bitmaps: its reflink copy (or, bitmap only, base's file), offering the
 * frozen bits as qemu:dirty-bitmap:BITMAP. NULL (logged) on failure.
 */
struct export *export_open_checkpoint(const struct export *base, const struct bitmap_info *ck);

/* ---- worker.c: the loop-and-ring layer ---- */
struct server;

/* Who a client is, for the per-client connection limit. */
struct client_key {
	int family;               /* AF_INET, AF_INET6, AF_UNIX (by uid); 0: not counted */
	uint32_t uid;             /* AF_UNIX: the peer's uid (SO_PEERCRED) */
	uint8_t addr[16];         /* AF_INET (first 4 bytes), AF_INET6 */
};

/* The rest of what is known of a client: for access control and log lines. */
struct client_peer {
	uint16_t port;            /* TCP: its port */
	bool cred;                /* unix socket: SO_PEERCRED answered */
	uint32_t gid;             /* ...its primary gid */
	int32_t pid;              /* ...and pid */
};

/*
 * A connection handed over by the process before this one (handover.c):
 * in transmission already, with what it negotiated and the bytes it sent
 * that were not yet parsed.
 */
struct conn_resume {
	struct export *exp;       /* a reference, the conn's from adoption on */
	struct proto_session sess; /* phase TRANSMISSION, export described */
	uint64_t id;              /* the id it had */
	uint8_t *pending;         /* heap: received, not parsed yet */
	size_t npending;
};

/* An accepted client, handed from the main thread to a worker. */
struct client {
	int fd;                   /* its socket; or stdin of a single-connection daemon */
	int fd_out;               /* fd, or stdout */
	bool stream;              /* fd and fd_out are pipes: read/write, not recv/send */
	struct client_key key;
	struct client_peer peer;
	struct conn_resume *resume; /* handed over in transmission (heap, the conn's), or NULL */
};
struct conn; /* conn.h's; opaque here */

/*
 * An operation the loop completes: an SQE (user_data points at it) or a
 * post to the ready list. Embedded in whatever waits for it; done() runs on
 * the owning worker's thread, from the loop, never from inside another
 * handler, and may queue SQEs and post more ops but never waits.
 */
struct op {
	void (*done)(struct op *op, int res); /* res: cqe->res, or what was posted */
	struct op *next;       /* ready list */
	int res;               /* the posted result */
};

/* A completion taken off a full ring, to run from the loop. */
struct deferred_cqe {
	struct op *op;
	int res;
};

/* How a connection's negotiation ended (counted once per connection). */
enum conn_result {
	CONN_RESULT_SERVED,        /* chose an export: transmission */
	CONN_RESULT_REFUSED,       /* refused by access rules, never served */
	CONN_RESULT_TLS_FAILED,    /* the TLS handshake failed */
	CONN_RESULT_HS_TIMEOUT,    /* no export chosen within the handshake timeout */
	CONN_RESULT_ENDED,         /* closed during negotiation otherwise (ABORT, LIST only, errors) */
	CONN_RESULTS
};

/*
 * Counters a worker updates and other threads read (relaxed); the gauges
 * are stored once per loop iteration.
 */
struct worker_stats {
	atomic_uint_fast64_t lock_acquired;  /* range locks taken */
	atomic_uint_fast64_t lock_waited;    /* of which had to wait */
	atomic_uint_fast64_t lock_wait_ns;   /* total time waited */
	atomic_uint_fast64_t rmw_writes;     /* unaligned writes done by read-modify-write */
	atomic_uint_fast64_t buffered_ios;   /* requests on the partial last block */
	atomic_uint_fast64_t iterations;     /* passes of the worker's loop (worker_turn) */
	atomic_uint_fast64_t poll_hits;      /* completions found by polling instead of waking */
	atomic_uint_fast64_t poll_ns;        /* time spent polling */
	atomic_uint_fast64_t ring_waits;     /* waits that slept in the ring */
	atomic_uint_fast64_t ring_wait_ns;   /* ...and their time, until work or a deadline */
	atomic_uint_fast64_t submits;        /* io_uring_submit calls that submitted */
	atomic_uint_fast64_t sqes;           /* SQEs they submitted */
	atomic_uint_fast64_t completions;    /* CQEs handled */
	atomic_uint_fast64_t io_timeouts;    /* connections closed by io-timeout */
	atomic_uint_fast64_t bitmap_waits;   /* writes that waited for a dirty-bitmap commit */
	atomic_uint_fast64_t results[CONN_RESULTS]; /* conn_result */
	atomic_uint_fast64_t pool_used_bytes; /* gauge: pool chunks held */
	atomic_uint_fast64_t pool_waiters;   /* gauge: connections waiting for chunks */
	atomic_uint_fast64_t oldest_req_start_ns; /* gauge: now_ns() its oldest request in flight
						     began, as of the last look; 0: none */
	struct hist lock_wait;               /* waits for a range lock */
	struct hist pool_wait;               /* waits for pool chunks */
};

static inline void stat_add(atomic_uint_fast64_t *counter, uint64_t n)
{
	atomic_fetch_add_explicit(counter, n, memory_order_relaxed);
}

struct worker {
	int id;
	struct server *srv;
	pthread_t thread;
	struct io_uring ring;
	uint64_t now_ns;          /* its clock: CLOCK_MONOTONIC, read once per pass (worker_now) */
	struct timers timers;     /* its deadlines, on that clock (timer.h) */
	bool defer;               /* the ring defers task work (worker.c) */
	int64_t poll_credit_ns;   /* polling it may still do: earned by work, spent by polls */
	uint64_t busy_since_ns;   /* now_ns() its last wait ended */
	unsigned depth_peak;      /* the most requests it held lately (worker_depth) */
	uint64_t depth_peak_ns;   /* ...since this now_ns() */
	unsigned reqs_live;       /* requests its connections hold: received, not yet done with */
	int wake_fd;              /* eventfd: other threads wake the worker through it */
	atomic_bool woken;        /* ...written, and the worker has not looked yet */
	uint64_t wake_count;      /* ...the ring's read of it lands here */
	struct op wake_op;        /* ...and completes here */
	struct timer grace;       /* bounds a graceful stop */
	struct timer watch;       /* finds its oldest request in flight (watch.c) */
	pthread_mutex_t inbox_lock;
	struct client *inbox;     /* accepted clients waiting to be adopted */
	size_t inbox_len, inbox_cap;
	struct op *ready_remote;  /* posted by other threads (under inbox_lock) */
	bool stop;                /* set under inbox_lock by the main thread */
	bool stopping;            /* worker-local copy once it acted on stop */
	struct op *ready_head, *ready_tail; /* posted on this thread, FIFO */
	struct deferred_cqe *deferred; /* taken off a full ring, run before newer ones */
	size_t ndeferred, deferred_cap;
	struct io_uring_sqe void_sqe; /* handed out when the ring refuses work */
	struct pool pool;         /* with its fair shares and waiters (pool.h) */
	struct conn *conns;       /* its connections: conn.c's list, opaque here */
	atomic_uint nconns;       /* live connections (read by the main thread) */
	struct worker_stats stats;
	void *zeroes;             /* WORKER_ZEROES_BYTES of zeroes, never written */
	struct handover_part *handover; /* a hand-over under way (handover.c), or NULL */
	struct timer handover_check; /* ...polls for its connections to be parked */
	uint64_t handover_since_ns; /* ...since this worker_now() */
};
#define WORKER_ZEROES_BYTES (1u << 20)
#define WORKER_STOP_GRACE_S 5     /* a stop closes whatever is left after this */
#define WORKER_STOP_GRACE_NS (WORKER_STOP_GRACE_S * 1000000000ull)

int worker_start(struct worker *w, struct server *srv, int id);
/* Hands an accepted client to w (from the main thread); w owns its descriptors. */
void worker_adopt(struct worker *w, const struct client *cl);
void worker_stop(struct worker *w);
void worker_join(struct worker *w);
/* A fresh SQE whose completion is op. Never NULL (submits to make room). */
struct io_uring_sqe *worker_sqe(struct worker *w, struct op *op);
/* Queues op->done(op, res) on w's loop; from any thread. */
void worker_post(struct worker *w, struct op *op, int res);
/* Whether a client may take need chunks now (its fair share, pool.h). */
bool worker_pool_may_take(struct worker *w, const struct pool_account *a, uint32_t need);
/*
 * Parks a wait for chunks; pw->ctx is a struct op, posted with res 0 once
 * the chunks are promised to it (it must pool_claim() them), or with
 * -ECANCELED by worker_pool_cancel().
 */
void worker_pool_wait(struct worker *w, struct pool_waiter *pw);
/* Ends a parked wait early. No-op if it is not parked. */
void worker_pool_cancel(struct worker *w, struct pool_waiter *pw);
/* Adds a worker's counters into *sum. */
void worker_stats_add(const struct worker *w, struct worker_stats *sum);
/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t now_ns(void);
/*
 * The same in seconds, for durations measured off a worker (the main thread's): libev's ev_now() is
 * wall-clock time, which steps (a VM's clock is set forward after a pause),
 * so a difference of two ev_now()s is no duration.
 */
static inline double now_s(void)
{
	return (double)now_ns() / 1e9;
}
/*
 * The worker's clock, on its own thread: CLOCK_MONOTONIC as read at the
 * start of this pass of its loop (after any wait), so every deadline and
 * every "last moved" stamp of one pass agree. Its timers are armed on it.
 */
static inline uint64_t worker_now(const struct worker *w)
{
	return w->now_ns;
}
/* Room in w's heap for n more timers (when their owner comes to be); 0 or -ENOMEM. */
int worker_timers_reserve(struct worker *w, unsigned n);
/* Gives that room back (the owner's timers are stopped). */
void worker_timers_unreserve(struct worker *w, unsigned n);
/* Arms t on w's thread to fire after_ns from worker_now(w) (moves it if armed). */
static inline void worker_timer_in(struct worker *w, struct timer *t, uint64_t after_ns)
{
	timers_arm(&w->timers, t, w->now_ns + after_ns);
}
/* Arms t at due_ns on w's clock. */
static inline void worker_timer_at(struct worker *w, struct timer *t, uint64_t due_ns)
{
	timers_arm(&w->timers, t, due_ns);
}
static inline void worker_timer_stop(struct worker *w, struct timer *t)
{
	timers_stop(&w->timers, t);
}
/* The rings' way with task work, for the start-up log (after worker_start). */
const char *worker_ring_features(void);

/* ---- offload.c: blocking calls on threads of their own ---- */
/*
 * fn runs on an offload thread (it may block: lseek, ioctl); then op is
 * posted to w with the res fn set (0 unless it sets one). The job and what fn touches belong to the
 * offload thread until op runs.
 */
struct offload_job {
	void (*fn)(struct offload_job *j);
	int res;                  /* what fn sets: op is posted with it */
	struct worker *w;
	struct op *op;
	struct offload_job *next;
};
void offload_queue(struct offload_job *j);

/* ---- conn.c: what the worker asks of its connections (no NBD types) ---- */
/* A new connection on w for an accepted client. */
void conns_adopt(struct worker *w, const struct client *cl);
/*
 * watch.c: once a second while w has connections, its oldest request in
 * flight is published (stats.oldest_req_start_ns) and, past 10 s, logged.
 * conns_watch_init prepares w->watch; conns_adopt arms it (conns_watch_arm).
 */
void conns_watch_init(struct worker *w);
void conns_watch_arm(struct worker *w);
/* Graceful stop: idle connections close, busy ones close when idle. */
void conns_stop(struct worker *w);
/* The grace period is over: close every connection. */
void conns_close_all(struct worker *w);
/* One connection as the control socket reports it (filled on its worker). */
struct conn_info {
	uint64_t id;
	struct export *exp;       /* a reference (export_put it), or NULL while negotiating */
	char peer[96];            /* conn_peer_name() */
	char *tls_identity;       /* heap: PSK user or certificate DN, or NULL */
	bool tls;                 /* TLS is up */
	const char *state;        /* "negotiating", "serving", "closing" (static) */
	int worker;
	double age_s;
	unsigned in_flight;       /* requests received, not yet done with */
	uint64_t requests, errors, bytes_read, bytes_written;
};
/* On w's thread: every connection of w into *out (heap). Returns the count, or -ENOMEM. */
int conns_report(struct worker *w, struct conn_info **out);
/*
 * On w's thread: connection id (0: any) of the export named export (NULL:
 * any) stops reading requests and closes once those in flight are replied
 * to; one still busy after WORKER_STOP_GRACE_S is closed anyway. Returns
 * how many matched.
 */
unsigned conns_disconnect(struct worker *w, uint64_t id, const char *export);

/* What a connection parked for a hand-over is (filled on its worker). */
struct conn_parked {
	int fd;
	uint64_t id;
	struct export *exp;       /* a reference */
	struct proto_session sess;
	struct client_key key;
	struct client_peer peer;
	uint8_t *pending;         /* heap copy of what was received, not parsed */
	size_t npending;
};
/*
 * On w's thread, for a hand-over: negotiating connections close, TLS ones
 * close once their requests are answered, the others stop reading new
 * requests (what arrived stays unparsed) and are parked once every request
 * is answered. w->handover_check polls; when no connection is left that is
 * not parked (WORKER_STOP_GRACE_S at most: the rest are closed), it calls
 * handover_worker_done(w).
 */
void conns_handover(struct worker *w);
/* On w's thread: its parked connections into *out (heap). Returns the count, or -ENOMEM. */
int conns_parked(struct worker *w, struct conn_parked **out);
/* On w's thread: the hand-over failed; parked connections read requests again. */
void conns_unpark(struct worker *w);
/* This process's hand-over so far: connections closed because TLS, and negotiating. */
void conns_handover_closed(unsigned *tls, unsigned *negotiating);

/* ---- handover.c: restarts that keep connections (SIGUSR2: re-exec) ---- */
/* At start: where the binary is (to exec it again) and its arguments. */
void handover_init(int argc, char **argv);
/*
 * At start, before listening: a state handed over by the previous process
 * (its environment), read; its listeners adopted. Returns how many
 * listeners were, 0 if this is no hand-over, -1 on error (logged).
 */
int handover_load(struct server *srv);
/* After the workers started: the handed-over connections go to them. */
void handover_adopt(struct server *srv);
/* SIGUSR2 (main thread): parks every connection, then execs the binary. */
void handover_start(struct server *srv);
/*
 * SIGTERM with keep-connections under systemd (main thread): parks every
 * connection, hands the sockets and the state to the service manager's fd
 * store (kept if this is a restart, dropped if a stop), then stops the loop.
 */
void handover_store(struct server *srv);
/* A descriptor passed with a name of the fd store's (listen.c): true if it is ours. */
bool handover_stored(int fd, const char *name);
/* On a worker: its connections are parked (conns_handover). */
void handover_worker_done(struct worker *w);
/* What this process's start adopted (for the control socket's stats). */
struct handover_stats {
	bool restarted;           /* this process was started by a hand-over */
	unsigned adopted, closed_tls, closed_negotiating, refused;
};
void handover_stats(struct handover_stats *out);

/* ---- control.c: the control socket (control.h has its commands' side) ---- */
/* Listens on path (0600; root and this uid) on srv's loop. Returns 0 or -errno (logged). */
int control_start(struct server *srv, const char *path);
/* Stops listening and closes the clients (main thread, the loop still there). */
void control_close(void);
/* After the workers are joined: frees the queries they never answered. */
void control_free(void);

/* ---- http.c: the metrics endpoint (metrics.h has the figures) ---- */
/* Serves /metrics on "ADDR:PORT" or "unix:PATH" from a thread of its own. 0 or -errno (logged). */
int http_start(struct server *srv, const char *spec);
/* Stops it (before the workers go: it reads their counters). */
void http_stop(void);

/* ---- listen.c ---- */
#define LISTEN_DEFAULT_PORT "10809"
struct listener {
	int fd;
	ev_io watcher;
	struct server *srv;
	char *desc;                /* "127.0.0.1:10809", "unix:/run/x.sock" */
	char *unix_path;           /* to unlink at exit; NULL if not ours */
};

int listen_tcp(struct server *srv, const char *addr, const char *port);
int listen_unix(struct server *srv, const char *path);
/*
 * A listening unix socket at path, no wider than mode (a stale socket there
 * is replaced, a live one refused): its fd, or -errno (logged).
 */
int listen_unix_socket(const char *path, mode_t mode);
/* Whether sa is a loopback address (127/8, ::1, v4-mapped 127/8). */
struct sockaddr;
bool listen_is_loopback(const struct sockaddr *sa);
int listen_inherited(struct server *srv);
/* Fills cl's key and peer from its socket fd (address and port, or SO_PEERCRED). */
void listen_identify(int fd, struct client *cl);
/* Starts accepting on the main loop. */
void listen_start(struct server *srv);
/* Stops or resumes accepting (a hand-over pauses it). */
void listen_pause(struct server *srv, bool paused);
/* Adopts a listening socket handed over (unix_path: ours to unlink at exit, or NULL). */
int listen_adopt(struct server *srv, int fd, const char *desc, const char *unix_path);
/* Closes the listeners (and unlinks unix sockets). */
void listen_close(struct server *srv);

/* ---- server.c ---- */
struct server {
	pthread_rwlock_t exports_lock; /* the table; negotiation reads, reload writes */
	struct export **exports;
	size_t nexports;
	struct worker *workers;
	unsigned nworkers;
	unsigned next_worker;      /* round-robin placement (main thread) */
	struct listener *listeners;
	size_t nlisteners;
	size_t pool_bytes;         /* per worker */
	struct cache *cache;       /* shared by every cached export */
	unsigned max_conns;        /* 0: no limit */
	unsigned handshake_timeout_s; /* 0: none */
	atomic_uint live_conns;    /* accepted, not yet closed */
	unsigned max_conns_per_client; /* 0: no limit */
	pthread_mutex_t clients_lock; /* the per-client counts (accept: main; close: workers) */
	struct client_count *clients; /* keys with connections open, unordered */
	size_t nclients, clients_cap;
	bool single;               /* serving one client on stdin/stdout, then exiting */
	ev_async single_done;      /* main loop: that client is gone */
	unsigned keepalive_s;      /* TCP keepalive idle time; 0: no keepalive */
	unsigned io_timeout_s;     /* a stalled reply or payload ends its connection; 0: never */
	unsigned idle_timeout_s;   /* an idle connection is closed; 0: never */
	unsigned busy_poll_us;     /* workers poll this long before waiting; 0: as poll_max_us says */
	unsigned poll_max_us;      /* the adaptive poll's longest wait; 0: no adaptive polling */
	unsigned poll_depth;       /* adaptive polling only while a worker held this many requests lately */
/*
 * By default a worker polls (up to POLL_MAX_US_DEFAULT per wait, from the
 * credit its work earned: worker.c) only while it held POLL_DEPTH_DEFAULT
 * requests or more lately: at depth a poll spares a sleep and the wake-up
 * of an idle CPU per batch; at depth 1 the ring's own wait serves as well
 * at less CPU (tests/bench/README.md). --poll-max given: adaptive polling
 * at any depth; --busy-poll: a fixed window at any depth.
 */
#define POLL_MAX_US_DEFAULT 300
#define POLL_DEPTH_DEFAULT 4
	bool keep_conns;           /* SIGTERM under systemd stores connections in its fd store */
	bool defer_taskrun;        /* workers' rings defer task work where the kernel can (worker.c) */
	ev_timer accept_backoff;   /* listeners stopped after EMFILE and the like */
	double backoff_s;          /* its current length; 0 after a good accept */
	unsigned test_fill_delay_ms; /* test builds only: hold cache fills open */
	enum proto_tls tls_mode;   /* off, on (SELECTIVETLS), require (FORCEDTLS) */
	struct tls_creds *tls_creds; /* under exports_lock: a reload replaces them */
	bool list_refused;         /* list = no */
	struct ev_loop *loop;      /* main thread's */
	atomic_bool shutting_down; /* set once by the main thread (relaxed readers) */
	atomic_uint_fast64_t over_limit; /* clients refused at accept by the limits (main thread) */
	double start_time_s;       /* wall clock at start, for the metrics */
};

/* Export lookup for negotiation, as struct proto_exports wants it (ctx = srv). */
int server_export_lookup(void *srv, const char *name, size_t name_len, struct proto_export *out);
int server_export_nth(void *srv, size_t i, struct proto_export *out);
/*
 * Hands an accepted client to a worker: it counts against max_conns and
 * its key's max_conns_per_client. Returns 0, or -EUSERS with the client
 * closed when its key is at the per-client limit.
 */
int server_accept(struct server *srv, const struct client *cl);
/* An accepted client is closed (any thread). */
void server_conn_gone(struct server *srv, const struct client_key *key);
/* "127.0.0.1", "[::1]", "uid 1000": the key for log lines. */
const char *server_client_name(const struct client_key *key, char *buf, size_t len);
/* At max_conns: a client accepted now is refused. */
bool server_at_capacity(struct server *srv);
bool server_shutting_down(const struct server *srv);
/*
 * Opens the exports specs describe, keeping (sharing) those of the current
 * table that match. Returns the new table, or NULL with nothing changed.
 */
struct export **server_build_exports(struct server *s, const struct export_spec *specs, size_t n,
					 size_t *nout);
/*
 * The exports of base's checkpoints (export_open_checkpoint), those of the
 * current table with the same name and file kept, appended to *t (a heap
 * array of *n). Returns 0, or -1 (logged) with *t unchanged.
 */
int server_add_checkpoint_exports(struct server *s, const struct export *base, struct export ***t,
				  size_t *n);
/* Installs a new table; the old one's references are dropped. */
void server_swap_exports(struct server *s, struct export **t, size_t n);
/*
 * Re-opens the exports whose file changed size or was replaced, for the
 * connections that come next; those already open keep theirs. Any thread.
 */
void server_refresh_exports(struct server *s);
void server_log_exports(struct server *s);
/*
 * The control socket's changes to the table (main thread). add takes e's
 * reference; -EEXIST if the name is taken. remove refuses (-EBUSY) an export
 * with connections unless force, and returns the table's reference, with
 * *conns the connections it had; -ENOENT if there is none. replace puts
 * fresh in the place of the export of its name and returns that one's
 * reference (NULL if none: fresh is then not taken).
 */
int server_add_export(struct server *s, struct export *e);
struct export *server_remove_export(struct server *s, const char *name, bool force,
				    uint64_t *conns, int *err);
struct export *server_replace_export(struct server *s, struct export *fresh);
/* The export of that name, a new reference; NULL if none. */
struct export *server_find_export(struct server *s, const char *name);
/* The table now, each export a new reference; server_exports_put() drops them. */
struct export **server_exports_get(struct server *s, size_t *n);
void server_exports_put(struct export **t, size_t n);
/* Logs what installing table t would add, remove and reopen (a reload). */
void server_log_table_changes(struct server *s, struct export **t, size_t n);
unsigned server_connections(struct server *s);

#endif
