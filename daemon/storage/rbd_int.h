/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * backend_rbd.c's and backend_rbd_checkpoint.c's own: the librbd and
 * librados calls (loaded with dlopen), and an image as both see it.
 */
#ifndef URINGNBD_RBD_INT_H
#define URINGNBD_RBD_INT_H

#include <pthread.h>
#include <rbd/librbd.h>

#include "storage.h"

#define RBD_LIB_FNS(X)                                                                   \
	X(rados, rados_create) X(rados, rados_conf_read_file) X(rados, rados_conf_parse_env) \
	X(rados, rados_conf_set) X(rados, rados_conf_get) X(rados, rados_connect)             \
	X(rados, rados_shutdown) X(rados, rados_ioctx_create) X(rados, rados_ioctx_destroy)   \
	X(rbd, rbd_open) X(rbd, rbd_open_read_only) X(rbd, rbd_close) X(rbd, rbd_get_size)   \
	X(rbd, rbd_get_features) X(rbd, rbd_lock_acquire) X(rbd, rbd_lock_release)            \
	X(rbd, rbd_set_image_notification)                                                    \
	X(rbd, rbd_poll_io_events) X(rbd, rbd_aio_create_completion)                          \
	X(rbd, rbd_aio_get_return_value) X(rbd, rbd_aio_get_arg) X(rbd, rbd_aio_release)      \
	X(rbd, rbd_aio_readv) X(rbd, rbd_aio_writev) X(rbd, rbd_aio_flush)                    \
	X(rbd, rbd_aio_discard) X(rbd, rbd_aio_write_zeroes) X(rbd, rbd_flush)                \
	X(rbd, rbd_diff_iterate2) X(rbd, rbd_update_watch) X(rbd, rbd_update_unwatch)         \
	X(rbd, rbd_snap_create) X(rbd, rbd_snap_remove) X(rbd, rbd_snap_list)                 \
	X(rbd, rbd_snap_list_end) X(rbd, rbd_snap_get_timestamp) X(rbd, rbd_metadata_get)     \
	X(rbd, rbd_metadata_set) X(rbd, rbd_metadata_remove)

/* The libraries' calls, once rbd_lib_load() has found them all. */
struct rbd_lib {
#define RBD_LIB_PTR(lib, f) __typeof__(f) *f;
	RBD_LIB_FNS(RBD_LIB_PTR)
#undef RBD_LIB_PTR
};
extern struct rbd_lib rbd_lib;

/*
 * An image: one per pool/image@snap and cluster, shared by its exports.
 * state: calls in flight << 1 | a read of efd is in some worker's ring.
 * The worker that issues a call when no read is armed arms one; the
 * read's end re-arms it while calls remain, else clears the bit (a CAS
 * that fails if a call came meanwhile, which then finds it still set).
 */
#define RBD_ARMED 1u
#define RBD_CALL 2u
struct rbd_image {
	struct rbd_image *next;   /* the registry's list */
	unsigned refs;            /* exports holding it (under registry_lock) */
	char *key;                /* rbd:POOL/IMAGE[@SNAP][ conf=PATH][ id=ID] */
	char *name;               /* rbd:POOL/IMAGE[@SNAP], for log lines */
	rados_t cluster;
	rados_ioctx_t ioctx;
	rbd_image_t image;
	bool snap;
	bool locked;              /* we hold its exclusive lock */
	bool watching;
	uint64_t watch_handle;
	_Atomic uint64_t size;    /* as librbd last told (the header watch) */
	int efd;                  /* librbd writes it as calls finish */
	_Atomic uint64_t state;   /* see above */
	struct op read_op;        /* the armed read's completion */
	struct worker *reader;    /* ...on this worker's ring */
	uint64_t efd_count;       /* ...and where it reads to */
	struct backing *backing;  /* locks, cache key, durability errors */
	/* A checkpoint's snapshot: what changed since the checkpoint before (sorted, apart). */
	bool dirty_known;
	size_t ndirty, dirty_cap;
	struct rbd_range { uint64_t off, end; } *dirty;
};

/* Held while an image opens, and while a checkpoint's dirty map is found. */
extern pthread_mutex_t rbd_open_lock;

/* backend_rbd_checkpoint.c: checkpoints as snapshots (storage.h's table entries). */
int rbd_be_checkpoints(const struct export *e, struct bitmap_info *out, size_t max);
int rbd_be_checkpoint(const struct export *e, const char *bitmap, const char *name, char *err,
		      size_t errlen);
int rbd_be_checkpoint_remove(const struct export *e, const char *name, char *err,
			     size_t errlen);
struct export *rbd_be_checkpoint_open(const struct export *base, const struct bitmap_info *ck);
size_t rbd_be_dirty_extents(const struct export *e, uint32_t k, uint64_t off, uint64_t len,
			    bool one, struct proto_extent *ext, size_t max);

#endif
