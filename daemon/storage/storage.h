/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * storage: what an export is backed by. The registry of backing files
 * (one lock manager, cache key and durability error per file), exports
 * and their counters, overlays, and dirty bitmaps.
 */
#ifndef URINGNBD_STORAGE_H
#define URINGNBD_STORAGE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "../../lock/rangelock.h"
#include "../../proto/proto.h"
#include "../base/base.h"
#include "../engine/engine.h"

/* ---- config.c's view of an export: what export_open() opens ---- */
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
	const char *ceph_conf; /* rbd: paths: the cluster's ceph.conf (NULL: librados's search) */
	const char *ceph_id;   /* ...and the client's id (NULL: librados's, "admin") */
	struct throttle_limits limits;      /* all its clients together (limits.c) */
	struct throttle_limits conn_limits; /* each connection (conn-iops-total, ...) */
	const char *group;     /* the throttle group it shares limits with, or NULL */
	bool ublk;             /* also served as a local block device, /dev/ublkbN */
	char *storage;         /* heap copy the strings point into, or NULL */
	char *extra[16];       /* more heap strings (config file), freed with it */
	unsigned nextra;
	int config_line;       /* where a config file defined it */
};
/* Its access settings, as access_parse() takes them. */
static inline struct access_spec export_spec_access(const struct export_spec *s)
{
	return (struct access_spec){ s->allow, s->deny, s->tls_allow, s->tls_required };
}

#define EXPORT_MAX_REQUEST_BYTES (32u * 1024 * 1024) /* largest READ/WRITE served */
#define EXPORT_MAX_ALIGN_BYTES (32u * 1024)          /* two edge blocks fit one pool chunk */
/* The largest request's aligned span (request + two edge blocks), plus a bounce chunk. */
#define EXPORT_MAX_CHUNKS_PER_REQ \
	((EXPORT_MAX_REQUEST_BYTES + 2 * EXPORT_MAX_ALIGN_BYTES) / POOL_CHUNK_BYTES + 1)

/* ---- backing.c: one record per backing file, outliving export tables ---- */
struct backing {
	bool named;               /* no local file: known by path alone (backing_get_named) */
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
/* The same for storage that is no local file: the record of name (a backend's key). */
struct backing *backing_get_named(const char *name);
/* Another reference to a record already held. */
void backing_ref(struct backing *b);
void backing_put(struct backing *b);
/* A flush or FUA write of the file failed with err: remembered (and logged) once. */
void backing_fail(struct backing *b, int err);
/* The remembered durability error, or 0. */
int backing_durability_err(const struct backing *b);

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

/* ---- limits.c: rate limits of exports and of named groups ---- */
struct export;
/*
 * A throttle group: limits shared by every export naming it (qemu's
 * throttle groups). Groups are made when first named and live until exit,
 * so a pointer to one never dangles; one no longer configured has no limits.
 */
struct throttle_group {
	char *name;
	struct throttle thr;
	bool configured;          /* defined by the configuration in force (or group-set) */
	struct throttle_group *next;
};
/* The group named name, made (with no limits) if there is none; NULL if out of memory. */
struct throttle_group *throttle_group_get(const char *name);
/* The group named name, or NULL. */
struct throttle_group *throttle_group_find(const char *name);
/* The first group, then each next (a list that only grows: no lock needed to walk it). */
struct throttle_group *throttle_groups_first(void);
void throttle_groups_free(void);
/*
 * Makes spec's limits, connection limits and group those of e's name, at
 * once for its open connections too. 0, or -ENOMEM (nothing changed).
 */
int export_limits_apply(struct export *e, const struct export_spec *spec);
/* e's limits as export_limits_apply set them (group: its name, or NULL). */
void export_limits_get(const struct export *e, struct throttle_limits *lim,
		       struct throttle_limits *conn, const char **group);

/* ---- export.c ---- */
/*
 * An export's counters, one set per worker: only that worker writes its set
 * (stat_bump: a plain load and store, no locked instruction), any thread
 * reads them (relaxed) and sums the sets. Every export object of one name
 * shares them across reloads and export-set, so they only grow.
 */
#define EXPORT_STAT_OPS 9 /* indexed by NBD_CMD_*; the last counts any other type */
#define EXPORT_STAT_ERRS 9 /* NBD error codes by export_stat_err(); the last: any other */
enum transport { TRANSPORT_UNIX, TRANSPORT_TCP, TRANSPORT_TLS, TRANSPORT_STDIO, TRANSPORT_VSOCK,
		 TRANSPORT_UBLK, TRANSPORTS };
/* The transport a plain (not TLS, not stdio) connection from family comes by. */
static inline enum transport transport_of(int family)
{
	return family == AF_UNIX ? TRANSPORT_UNIX : family == AF_VSOCK ? TRANSPORT_VSOCK :
	       TRANSPORT_TCP;
}
struct export_stats {
	atomic_uint_fast64_t requests[EXPORT_STAT_OPS]; /* replied to */
	atomic_uint_fast64_t bytes[EXPORT_STAT_OPS];    /* moved by those that succeeded */
	atomic_uint_fast64_t errors[EXPORT_STAT_OPS];   /* replied to with an error */
	atomic_uint_fast64_t errors_by[EXPORT_STAT_OPS][EXPORT_STAT_ERRS]; /* ...by NBD error */
	atomic_uint_fast64_t in_flight;  /* requests received, not yet done with */
	atomic_uint_fast64_t conns[TRANSPORTS]; /* connections that chose it, still open */
	struct hist duration[EXPORT_STAT_OPS]; /* header received to reply sent */
} __attribute__((aligned(64)));
struct throttle_group;
struct export_counters {
	atomic_int refs;
	int64_t since_s;          /* wall-clock seconds when the first of the name opened */
	/* Its rate limits, live for every connection of the name (limits.c). */
	struct throttle thr;      /* all its clients together; its lock guards conn_lim */
	struct throttle_limits conn_lim; /* each connection's own */
	atomic_uint conn_gen;     /* bumped when conn_lim changes */
	struct throttle_group *_Atomic group; /* the group it is in, or NULL */
	unsigned nslots;          /* one per worker */
	struct export_stats slot[];
};
/* Workers there will be: how many sets each export's counters get. */
void export_set_stat_slots(unsigned n);
/* Adds every worker's set into *sum. */
void export_stats_sum(const struct export_counters *ec, struct export_stats *sum);
static inline unsigned export_stat_op(uint16_t type)
{
	return type < EXPORT_STAT_OPS - 1 ? type : EXPORT_STAT_OPS - 1;
}
/* The NBD error codes, in export_stats.errors_by's order. */
extern const uint32_t export_stat_errs[EXPORT_STAT_ERRS - 1];
unsigned export_stat_err(uint32_t nbd_error);
/* All of a set's connections, whatever their transport. */
uint64_t export_stats_conns(const struct export_stats *st);

/* ---- backends: how an export's bytes are stored, one table per kind ---- */
/*
 * The request path (conn/fileio.c, conn/cached.c) reaches an export's
 * storage only through its table, e->be. Each queued operation completes
 * io->op exactly once on io->w's thread, with bytes done (read, write:
 * fewer than asked is a short transfer, asked again for the rest), 0, or
 * -errno; the caller counts it pending first. How it completes is the
 * backend's: an SQE in the worker's ring, or a blocking call on an
 * offload thread (io->job) posted back. A queued call is done with io's
 * fields when it returns, and with a single iovec (a caller may pass one
 * of its stack: an SQE takes it by value); an array of iovecs is read at
 * submit, so it lives until op completes, as io->job does for an
 * offloaded call. Adding a backend: storage.h
 * (the declaration), a file of its own, a line in backends[] (backend.c).
 */
#define BACKEND_FUA 1u            /* write: durable once done */
#define BACKEND_BUFFERED 2u       /* read, write: the partial last block, through the page cache */
struct export;
struct backend_io {
	struct worker *w;
	struct op *op;            /* completed once, on w */
	struct offload_job job;   /* an offloaded call runs here */
	const struct export *e;
	uint64_t off, len;        /* bytes of the export */
	struct iovec *iov;        /* read, write: the bytes (the backend may trim it) */
	unsigned niov;
	unsigned flags;           /* BACKEND_* */
	int mode;                 /* zero: FALLOC_FL_PUNCH_HOLE or _ZERO_RANGE (| KEEP_SIZE) */
};
struct backend_ops {
	const char *kind;         /* "file", "block device", "overlay", "rbd": for log lines */
	/* Whether it serves spec, whose path stat()s as st (NULL: it names no local file). */
	bool (*claims)(const struct export_spec *spec, const struct stat *st);
	/*
	 * Blocking (the main thread, or a control job): opens spec's storage
	 * into e: its descriptors or handles, size_bytes, align_bytes,
	 * direct_end, backing and locks, may_have_holes, zeroes_fast,
	 * rotational. st is spec's stat() (fstat() of what it opened, after).
	 * 0, or -1 (logged) with nothing left open.
	 */
	int (*open)(struct export *e, const struct export_spec *spec, struct stat *st);
	void (*close)(struct export *e);
	/* Blocking: whether its storage was replaced or resized since open (why says how). */
	bool (*changed)(const struct export *e, char *why, size_t len);
	/* Blocking (at exit): every acknowledged write durable. 0, or -errno; *what: what failed. */
	int (*sync)(const struct export *e, const char **what);
	/* Blocking (a hand-over): what the next process reads is on disk; NULL: nothing to do. */
	int (*persist)(const struct export *e);
	/* Queued (see above). */
	void (*read)(struct backend_io *io);
	void (*write)(struct backend_io *io);
	void (*flush)(struct backend_io *io);           /* all written so far durable */
	void (*trim)(struct backend_io *io);            /* advisory: -EOPNOTSUPP is no failure */
	void (*zero)(struct backend_io *io);            /* -EOPNOTSUPP: the caller writes zeroes */
	/* A write's bytes are all in (before FUA's flush, if fua_by_flush); NULL: nothing to do. */
	void (*written)(const struct export *e, uint64_t off, uint64_t len);
	bool fua_by_flush;        /* FUA is a flush after the write, not BACKEND_FUA */
	bool writes_cached;       /* writes change the file the page cache holds pages of */
	bool no_poll;             /* its calls end on other threads (an eventfd tells the ring):
				     polling for them would take the CPU they need */
	uint32_t zero_granule;    /* WRITE_ZEROES locks whole ones of these; 0: its bytes */
	/* Blocking (offload threads): base:allocation of [off, off + len), at most max extents. */
	size_t (*extents)(const struct export *e, uint64_t off, uint64_t len, bool one,
			  struct proto_extent *ext, size_t max);
	/* The alignment a write of [off, off + len) is planned with; NULL: the export's. */
	uint32_t (*write_align)(const struct export *e, uint64_t off, uint64_t len, uint32_t align);
	/* Whether the page at off is the base file's, which the page cache may hold; NULL: always. */
	bool (*cacheable)(const struct export *e, uint64_t off);
	/*
	 * Checkpoints the backend keeps itself (rbd: snapshots of the image,
	 * the bitmap's name in its metadata); NULL: bitmap.c's sidecar and
	 * reflink copies. Blocking (a control job, the main thread).
	 * checkpoint: name freezes what was written so far, for bitmap. 0, or
	 * -errno with err saying why.
	 */
	int (*checkpoint)(const struct export *e, const char *bitmap, const char *name, char *err,
			  size_t errlen);
	int (*checkpoint_remove)(const struct export *e, const char *name, char *err,
				 size_t errlen);
	/* Its checkpoints (BITMAP_FROZEN), oldest first, at most max: the count, or -errno. */
	int (*checkpoints)(const struct export *e, struct bitmap_info *out, size_t max);
	/*
	 * The read-only export base->name@ck->name: the checkpoint's data,
	 * offering as qemu:dirty-bitmap:BITMAP what changed since the
	 * bitmap's checkpoint before it (all data, for its first). NULL: logged.
	 */
	struct export *(*checkpoint_open)(const struct export *base, const struct bitmap_info *ck);
	/* A checkpoint export's dirty-bitmap context k, from memory (as bitmaps_extents). */
	size_t (*dirty_extents)(const struct export *e, uint32_t k, uint64_t off, uint64_t len,
				bool one, struct proto_extent *ext, size_t max);
};
extern const struct backend_ops backend_file, backend_blockdev, backend_overlay, backend_rbd;
/* backend_rbd.c: waits for images closed off the workers (at exit, after the last export). */
void backend_rbd_quiesce(void);
/*
 * backend.c: a local file's probes (direct-I/O alignment, its disk's queue
 * attributes from sysfs, a direct read).
 */
uint32_t export_probe_align(int fd, bool is_blockdev);
uint64_t export_queue_attr(const struct stat *st, const char *attr, uint64_t dflt);
int export_probe_direct(int fd, uint32_t align, uint64_t size);
/*
 * backend_overlay.c: the overlay of an export over base st (e->fd,
 * read-only). -1 (logged) on error.
 */
int export_overlay_open(struct export *e, const struct export_spec *spec, const struct stat *st);
/* The registry, asked in order: the first that claims a spec serves it (backend.c). */
const struct backend_ops *backend_for(const struct export_spec *spec, const struct stat *st);

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
	const struct backend_ops *be; /* how its bytes are stored: the request path's only way there */
	int fd;                /* opened O_DIRECT */
	int fd_buffered;       /* same file without O_DIRECT: the partial last block only */
	bool readonly;
	bool is_blockdev;
	bool zeroes_fast;      /* zeroing is cheap: a file, or a device with a zeroing command */
	bool rotational;       /* the disk under it spins (NBD_FLAG_ROTATIONAL) */
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
	void *priv;               /* the backend's own (rbd: the image it shares) */
	char *ceph_conf;          /* rbd: as configured (NULL: not set) */
	char *ceph_id;
};
/* Whether e keeps dirty bitmaps (in a sidecar, or as its backend's checkpoints). */
static inline bool export_has_bitmaps(const struct export *e)
{
	return e->bm || (e->be->checkpoint && e->bitmaps_src && !e->checkpoint);
}
/* Whether bitmap is one of the comma list e->bitmaps_src names. */
bool export_names_bitmap(const struct export *e, const char *bitmap);
/* Offers qemu:dirty-bitmap:BITMAP, reading slot (bitmap.c) or context k (the backend's). */
int export_add_context(struct export *e, const char *bitmap, int slot);
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

#endif
