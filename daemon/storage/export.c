// SPDX-License-Identifier: BSD-3-Clause
/*
 * Exports: what every export has whatever stores it (a name, access rules,
 * counters, dirty bitmaps, its transmission flags); its storage is its
 * backend's (e->be: backend.c, backend_overlay.c), opened and closed
 * through the table. An export never changes once open, so workers share
 * it without locking; storage that changes (size, identity) gets a new
 * export for new connections (export_changed, server_refresh_exports),
 * and the per-file state that must outlive exports is its backing record
 * (backing.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../../cache/cache.h"
#include "storage.h"

/* Who may use it: parsed from spec, and the spec's words kept to compare at reload. */
static int export_access_init(struct export *e, const struct export_spec *spec)
{
	struct access_spec as;
	const char *src[3] = { spec->allow, spec->deny, spec->tls_allow };
	char err[256];
	int i;

	for (i = 0; i < 3; i++)
		if (src[i] && !(e->access_src[i] = strdup(src[i]))) {
			log_error("export \"%s\": out of memory", spec->path);
			return -1;
		}
	e->tls_required = spec->tls_required;
	as = export_spec_access(spec);
	if (access_parse(&e->access, &as, err, sizeof(err)) < 0) {
		log_error("export \"%s\": %s", spec->name ? spec->name : "", err);
		return -1;
	}
	return 0;
}

static void export_access_free(struct export *e)
{
	int i;

	access_free(&e->access);
	for (i = 0; i < 3; i++) {
		free(e->access_src[i]);
		e->access_src[i] = NULL;
	}
}

static unsigned stat_slots = 1;

void export_set_stat_slots(unsigned n)
{
	stat_slots = n ? n : 1;
}

static struct export_counters *counters_new(void)
{
	size_t size = sizeof(struct export_counters) + stat_slots * sizeof(struct export_stats);
	struct export_counters *ec;

	size = (size + 63) / 64 * 64;
	ec = aligned_alloc(64, size);
	if (!ec)
		return NULL;
	memset(ec, 0, size);
	atomic_init(&ec->refs, 1);
	ec->since_s = (int64_t)time(NULL);
	throttle_init(&ec->thr);
	ec->nslots = stat_slots;
	return ec;
}

static void counters_put(struct export_counters *ec)
{
	if (ec && atomic_fetch_sub(&ec->refs, 1) == 1) {
		throttle_release(&ec->thr);
		free(ec);
	}
}

void export_share_counters(struct export *e, const struct export *from)
{
	if (!from || e->ctr == from->ctr || from->ctr->nslots != e->ctr->nslots)
		return;
	counters_put(e->ctr);
	atomic_fetch_add(&from->ctr->refs, 1);
	e->ctr = from->ctr;
}

const uint32_t export_stat_errs[EXPORT_STAT_ERRS - 1] = {
	NBD_EPERM, NBD_EIO, NBD_ENOMEM, NBD_EINVAL, NBD_ENOSPC, NBD_EOVERFLOW, NBD_ENOTSUP,
	NBD_ESHUTDOWN,
};

unsigned export_stat_err(uint32_t nbd_error)
{
	unsigned i;

	for (i = 0; i < EXPORT_STAT_ERRS - 1; i++)
		if (export_stat_errs[i] == nbd_error)
			return i;
	return EXPORT_STAT_ERRS - 1;
}

uint64_t export_stats_conns(const struct export_stats *st)
{
	uint64_t n = 0;
	unsigned t;

	for (t = 0; t < TRANSPORTS; t++)
		n += atomic_load_explicit(&st->conns[t], memory_order_relaxed);
	return n;
}

void export_stats_sum(const struct export_counters *ec, struct export_stats *sum)
{
	unsigned i, k, e;

#define LOAD(f) atomic_load_explicit(&ec->slot[i].f, memory_order_relaxed)
	for (i = 0; i < ec->nslots; i++) {
		for (k = 0; k < EXPORT_STAT_OPS; k++) {
			stat_bump(&sum->requests[k], LOAD(requests[k]));
			stat_bump(&sum->bytes[k], LOAD(bytes[k]));
			stat_bump(&sum->errors[k], LOAD(errors[k]));
			for (e = 0; e < EXPORT_STAT_ERRS; e++)
				stat_bump(&sum->errors_by[k][e], LOAD(errors_by[k][e]));
			hist_add(&sum->duration[k], &ec->slot[i].duration[k]);
		}
		stat_bump(&sum->in_flight, LOAD(in_flight));
		for (k = 0; k < TRANSPORTS; k++)
			stat_bump(&sum->conns[k], LOAD(conns[k]));
	}
#undef LOAD
}

/* A meta context of e: qemu:dirty-bitmap:bitmap, reading slot. */
int export_add_context(struct export *e, const char *bitmap, int slot)
{
	char *n;

	if (e->nctx == PROTO_META_MAX_EXTRA) {
		log_error("export \"%s\": more than %d bitmaps", e->path, PROTO_META_MAX_EXTRA);
		return -1;
	}
	if (asprintf(&n, "%s%s", BITMAP_CONTEXT_PREFIX, bitmap) < 0)
		return -1;
	e->ctx_names[e->nctx] = n;
	e->ctx_slot[e->nctx++] = slot;
	return 0;
}

/*
 * The dirty bitmaps spec names, in the sidecar of e's file (bitmap.c): made
 * on first use, then offered as meta contexts. Logs and returns -1 on error.
 */
static int export_bitmaps_open(struct export *e, const struct export_spec *spec,
			       const struct stat *st)
{
	char err[512] = "", sidecar[PATH_MAX], *copy, *save = NULL, *n;
	int ret = 0;

	if (spec->overlay) {
		log_error("export \"%s\": bitmaps and overlay together are not supported: a "
			  "bitmap tracks a raw file or device", spec->name);
		return -1;
	}
	if (spec->bitmap_file)
		snprintf(sidecar, sizeof(sidecar), "%s", spec->bitmap_file);
	else if (S_ISBLK(st->st_mode)) {
		log_error("export \"%s\": bitmaps of a block device need bitmap-file (where to keep "
			  "them)", spec->name);
		return -1;
	} else
		snprintf(sidecar, sizeof(sidecar), "%s.bitmaps", spec->path);
	/* The names were checked where the spec was made (config_set_export). */
	if (bitmaps_attach(e->backing, sidecar, spec->bitmap_granularity, st, spec->path,
			   e->size_bytes, spec->bitmaps, err, sizeof(err)) < 0) {
		log_error("export \"%s\": %s", spec->name, err);
		return -1;
	}
	e->bm = atomic_load(&e->backing->bm);
	backing_ref(e->backing);
	e->bm_backing = e->backing;
	copy = strdup(spec->bitmaps);
	for (n = copy ? strtok_r(copy, ",", &save) : NULL; n && !ret; n = strtok_r(NULL, ",", &save))
		ret = export_add_context(e, n, bitmaps_find(e->bm, BITMAP_LIVE, n));
	free(copy);
	e->bitmaps_src = strdup(spec->bitmaps);
	e->bitmap_file_src = spec->bitmap_file ? strdup(spec->bitmap_file) : NULL;
	e->bitmap_granularity_src = spec->bitmap_granularity;
	if (!copy || ret || !e->bitmaps_src || (spec->bitmap_file && !e->bitmap_file_src)) {
		log_error("export \"%s\": out of memory", spec->name);
		return -1;
	}
	return 0;
}

static void export_bitmaps_free(struct export *e)
{
	uint32_t i;

	for (i = 0; i < e->nctx; i++)
		free(e->ctx_names[i]);
	e->nctx = 0;
	free(e->bitmaps_src);
	free(e->bitmap_file_src);
	free(e->checkpoint);
	e->bitmaps_src = e->bitmap_file_src = e->checkpoint = NULL;
	backing_put(e->bm_backing);
	e->bm_backing = NULL;
	e->bm = NULL;
}

struct export *export_open(const struct export_spec *spec)
{
	struct export *e = calloc(1, sizeof(*e));

	if (!e) {
		log_error("export \"%s\": out of memory", spec->path);
		return NULL;
	}
	struct stat st;
	int err;

	e->fd = e->fd_buffered = -1;
	/* Judge the kind first: opening a device may have side effects. */
	err = stat(spec->path, &st) < 0 ? errno : 0;
	e->be = backend_for(spec, err ? NULL : &st);
	if (!e->be) {
		log_error("export \"%s\": %s", spec->path,
			  err ? strerror(err) : "not a regular file or block device");
		free(e);
		return NULL;
	}
	if (e->be->open(e, spec, &st) < 0) {
		free(e);
		return NULL;
	}
	/* A backend that keeps checkpoints itself took the names at its open. */
	if (spec->bitmaps && !e->be->checkpoint && export_bitmaps_open(e, spec, &st) < 0) {
		err = EINVAL;
		goto out_free;
	}
	e->name = strdup(spec->name ? spec->name : "");
	e->description = strdup(spec->description ? spec->description : "");
	e->path = strdup(spec->path);
	e->ctr = counters_new();
	if (!e->name || !e->description || !e->path || !e->locks || !e->ctr) {
		err = ENOMEM;
		log_error("export \"%s\": %s", spec->path, strerror(err));
		goto out_free;
	}
	e->readonly = spec->readonly || e->readonly; /* the backend may insist (a snapshot) */
	e->cache_mode = spec->cache_mode;
	if (export_access_init(e, spec) < 0)
		goto out_free;
	if (e->cache_mode != CACHE_MODE_NONE && e->align_bytes > CACHE_PAGE_BYTES) {
		log_warn("export \"%s\": direct-I/O alignment %u is over the cache page size: "
			 "cache=none", spec->path, e->align_bytes);
		e->cache_mode = CACHE_MODE_NONE;
	}
	/* No daemon cache: every acknowledged write is in the file, visible to all. */
	e->tflags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
		    NBD_FLAG_SEND_DF | NBD_FLAG_CAN_MULTI_CONN | NBD_FLAG_SEND_CACHE;
	if (e->rotational)
		e->tflags |= NBD_FLAG_ROTATIONAL;
	if (e->readonly)
		e->tflags |= NBD_FLAG_READ_ONLY;
	else
		e->tflags |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES |
			     NBD_FLAG_SEND_FAST_ZERO;
	e->refs = 1;
	return e;

out_free:
	export_access_free(e);
	export_bitmaps_free(e);
	free(e->name);
	free(e->description);
	free(e->path);
	counters_put(e->ctr);
	e->be->close(e);
	free(e->ceph_conf);
	free(e->ceph_id);
	free(e);
	return NULL;
}

void export_get(struct export *e)
{
	atomic_fetch_add(&e->refs, 1);
}

void export_put(struct export *e)
{
	if (!e || atomic_fetch_sub(&e->refs, 1) != 1)
		return;
	e->be->close(e);
	export_bitmaps_free(e);
	export_access_free(e);
	free(e->name);
	free(e->description);
	free(e->path);
	free(e->ceph_conf);
	free(e->ceph_id);
	counters_put(e->ctr);
	free(e);
}

static bool same_str(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

bool export_matches(const struct export *e, const struct export_spec *spec)
{
	return !strcmp(e->name, spec->name) && !strcmp(e->path, spec->path) &&
	       !strcmp(e->description, spec->description ? spec->description : "") &&
	       e->readonly == spec->readonly && e->cache_mode == spec->cache_mode &&
	       same_str(e->access_src[0], spec->allow) && same_str(e->access_src[1], spec->deny) &&
	       same_str(e->access_src[2], spec->tls_allow) &&
	       e->tls_required == spec->tls_required && same_str(e->overlay_src, spec->overlay) &&
	       same_str(e->bitmaps_src, spec->bitmaps) &&
	       same_str(e->bitmap_file_src, spec->bitmap_file) &&
	       e->bitmap_granularity_src == spec->bitmap_granularity && !e->checkpoint &&
	       same_str(e->ceph_conf, spec->ceph_conf) && same_str(e->ceph_id, spec->ceph_id) &&
	       !export_changed(e, NULL, 0);
}

bool export_changed(const struct export *e, char *why, size_t len)
{
	return e->be->changed(e, why, len);
}

void export_spec_of(const struct export *e, struct export_spec *spec)
{
	*spec = (struct export_spec){
		.name = e->name,
		.description = e->description,
		.path = e->path,
		.readonly = e->readonly,
		.cache_mode = e->cache_mode,
		.allow = e->access_src[0],
		.deny = e->access_src[1],
		.tls_allow = e->access_src[2],
		.tls_required = e->tls_required,
		.overlay = e->overlay_src,
		.bitmaps = e->bitmaps_src,
		.bitmap_file = e->bitmap_file_src,
		.bitmap_granularity = e->bitmap_granularity_src,
		.ceph_conf = e->ceph_conf,
		.ceph_id = e->ceph_id,
	};
	export_limits_get(e, &spec->limits, &spec->conn_limits, &spec->group);
}

struct export *export_reopen(const struct export *e)
{
	struct export_spec spec;
	struct export *fresh;

	export_spec_of(e, &spec);
	fresh = export_open(&spec);
	if (fresh)
		export_share_counters(fresh, e);
	return fresh;
}

void export_describe(const struct export *e, struct proto_export *out)
{
	out->name = e->name;
	out->description = e->description;
	out->size_bytes = e->size_bytes;
	out->tflags = e->tflags;
	/* Any offset and length is served (unaligned edges by read-modify-write). */
	out->min_block = 1;
	out->pref_block = e->align_bytes > 4096 ? e->align_bytes : 4096;
	out->max_block = EXPORT_MAX_REQUEST_BYTES;
	out->contexts = (const char *const *)e->ctx_names;
	out->ncontexts = e->nctx;
	out->opaque = (void *)e;
}

size_t export_extents(const struct export *e, uint64_t off, uint64_t len, bool one,
		      struct proto_extent *ext, size_t max)
{
	return e->be->extents(e, off, len, one, ext, max);
}

bool export_names_bitmap(const struct export *e, const char *bitmap)
{
	const char *p = e->bitmaps_src;
	size_t n = strlen(bitmap);

	while (p && *p) {
		if (!strncmp(p, bitmap, n) && (p[n] == ',' || !p[n]))
			return true;
		p = strchr(p, ',');
		p = p ? p + 1 : NULL;
	}
	return false;
}

struct export *export_open_checkpoint(const struct export *base, const struct bitmap_info *ck)
{
	char name[PROTO_NAME_MAX + 1], desc[512], snap[PATH_MAX];
	struct export_spec spec;
	struct export *e;

	if (base->be->checkpoint_open)
		return base->be->checkpoint_open(base, ck);
	snprintf(name, sizeof(name), "%s@%s", base->name, ck->name);
	snprintf(desc, sizeof(desc), "checkpoint %s of %s (bitmap %s)%s", ck->name, base->name,
		 ck->bitmap, ck->snapshot ? "" : ": the live image, not a copy");
	bitmaps_snapshot_path(base->bm, ck->name, snap, sizeof(snap));
	export_spec_of(base, &spec);
	spec.name = name;
	spec.description = desc;
	spec.path = ck->snapshot ? snap : base->path;
	spec.readonly = true;
	spec.bitmaps = NULL;
	spec.bitmap_file = NULL;
	spec.bitmap_granularity = 0;
	e = export_open(&spec);
	if (!e)
		return NULL;
	e->bm = base->bm;
	backing_ref(base->bm_backing);
	e->bm_backing = base->bm_backing;
	e->checkpoint = strdup(ck->name);
	if (!e->checkpoint || export_add_context(e, ck->bitmap, ck->slot) < 0) {
		export_put(e);
		return NULL;
	}
	return e;
}
