// SPDX-License-Identifier: BSD-3-Clause
/*
 * Checkpoints of rbd: exports: snapshots of the image (backend_rbd.c has
 * the rest of the backend; rbd_int.h what they share).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rbd_int.h"

/*
 * A checkpoint NAME of bitmap B is the image's snapshot NAME, with
 * "uringnbd.checkpoint.NAME" = B in the image's metadata (set after the
 * snapshot: a crash between leaves a snapshot that is no checkpoint, so
 * the next checkpoint's bitmap marks more, never less). EXPORT@NAME serves
 * the snapshot; its qemu:dirty-bitmap:B is what changed between B's
 * checkpoint before NAME (by snapshot id) and NAME, from the cluster
 * (rbd_diff_iterate2), found once when the export opens. Nothing lives on
 * the server: another server of the image finds the same checkpoints.
 */
#define RBD_CHECKPOINT_KEY "uringnbd.checkpoint."

struct rbd_checkpoint {
	uint64_t snap_id;
	struct bitmap_info info;
};

/* The image's checkpoints, oldest first, at most max: the count, or -errno. */
static int rbd_checkpoint_list(struct rbd_image *img, struct rbd_checkpoint *out, size_t max)
{
	rbd_snap_info_t *snaps = NULL;
	int room = 16, r, i;
	size_t k = 0;

	for (;;) {
		rbd_snap_info_t *grown = realloc(snaps, (size_t)room * sizeof(*snaps));

		if (!grown) {
			free(snaps);
			return -ENOMEM;
		}
		snaps = grown;
		r = rbd_lib.rbd_snap_list(img->image, snaps, &room);
		if (r != -ERANGE)
			break;
	}
	if (r < 0) {
		free(snaps);
		return r;
	}
	for (i = 0; i < r && k < max; i++) {
		char key[sizeof(RBD_CHECKPOINT_KEY) + 256], val[BITMAP_NAME_MAX + 1];
		size_t vlen = sizeof(val);
		struct timespec ts = { 0 };
		struct rbd_checkpoint *c = &out[k];

		if (strlen(snaps[i].name) > BITMAP_NAME_MAX)
			continue;
		snprintf(key, sizeof(key), "%s%s", RBD_CHECKPOINT_KEY, snaps[i].name);
		if (rbd_lib.rbd_metadata_get(img->image, key, val, &vlen) < 0)
			continue;
		rbd_lib.rbd_snap_get_timestamp(img->image, snaps[i].id, &ts);
		memset(c, 0, sizeof(*c));
		c->snap_id = snaps[i].id;
		c->info.slot = 0;
		c->info.kind = BITMAP_FROZEN;
		c->info.created_s = ts.tv_sec;
		c->info.snapshot = true;
		snprintf(c->info.name, sizeof(c->info.name), "%s", snaps[i].name);
		snprintf(c->info.bitmap, sizeof(c->info.bitmap), "%s", val);
		k++;
	}
	rbd_lib.rbd_snap_list_end(snaps);
	free(snaps);
	/* Oldest first: by snapshot id (insertion: there are few). */
	for (i = 1; i < (int)k; i++) {
		struct rbd_checkpoint t = out[i];
		int j = i;

		for (; j > 0 && out[j - 1].snap_id > t.snap_id; j--)
			out[j] = out[j - 1];
		out[j] = t;
	}
	return (int)k;
}

int rbd_be_checkpoints(const struct export *e, struct bitmap_info *out, size_t max)
{
	struct rbd_checkpoint *c = calloc(max ? max : 1, sizeof(*c));
	int n, i;

	if (!c)
		return -ENOMEM;
	n = rbd_checkpoint_list(e->priv, c, max);
	for (i = 0; i < n; i++)
		out[i] = c[i].info;
	free(c);
	return n;
}

int rbd_be_checkpoint(const struct export *e, const char *bitmap, const char *name,
		      char *err, size_t errlen)
{
	struct rbd_image *img = e->priv;
	char key[sizeof(RBD_CHECKPOINT_KEY) + BITMAP_NAME_MAX + 1];
	int r;

	/* librbd lets the writes in flight finish and flushes its cache first. */
	r = rbd_lib.rbd_snap_create(img->image, name);
	if (r < 0) {
		snprintf(err, errlen, "snapshot \"%s\" of %s: %s", name, img->name,
			 r == -EEXIST ? "a snapshot of that name exists" : strerror(-r));
		return r;
	}
	snprintf(key, sizeof(key), "%s%s", RBD_CHECKPOINT_KEY, name);
	r = rbd_lib.rbd_metadata_set(img->image, key, bitmap);
	if (r < 0) {
		snprintf(err, errlen, "snapshot \"%s\" of %s: recording its bitmap: %s", name,
			 img->name, strerror(-r));
		rbd_lib.rbd_snap_remove(img->image, name);
		return r;
	}
	log_info("%s: checkpoint \"%s\" of bitmap \"%s\" (a snapshot)", img->name, name, bitmap);
	return 0;
}

int rbd_be_checkpoint_remove(const struct export *e, const char *name, char *err,
			     size_t errlen)
{
	struct rbd_image *img = e->priv;
	char key[sizeof(RBD_CHECKPOINT_KEY) + BITMAP_NAME_MAX + 1], val[BITMAP_NAME_MAX + 1];
	size_t vlen = sizeof(val);
	int r;

	snprintf(key, sizeof(key), "%s%s", RBD_CHECKPOINT_KEY, name);
	r = rbd_lib.rbd_metadata_get(img->image, key, val, &vlen);
	if (r < 0) {
		snprintf(err, errlen, "export \"%s\" has no checkpoint \"%s\"%s%s", e->name, name,
			 r == -ENOENT ? "" : ": ", r == -ENOENT ? "" : strerror(-r));
		return r == -ENOENT ? -ENOENT : r;
	}
	r = rbd_lib.rbd_snap_remove(img->image, name);
	if (r < 0 && r != -ENOENT) {
		snprintf(err, errlen, "removing snapshot \"%s\" of %s: %s", name, img->name,
			 strerror(-r));
		return r;
	}
	r = rbd_lib.rbd_metadata_remove(img->image, key);
	if (r < 0 && r != -ENOENT)
		log_warn("%s: checkpoint \"%s\": removing its metadata: %s", img->name, name,
			 strerror(-r));
	return 0;
}

/* rbd_diff_iterate2's callback: [off, off + len) changed (written, or discarded). */
static int rbd_dirty_seen(uint64_t off, size_t len, int exists, void *arg)
{
	struct rbd_image *img = arg;

	(void)exists;
	if (img->ndirty && img->dirty[img->ndirty - 1].end >= off) {
		if (off + len > img->dirty[img->ndirty - 1].end)
			img->dirty[img->ndirty - 1].end = off + len;
		return 0;
	}
	if (img->ndirty == img->dirty_cap) {
		size_t cap = img->dirty_cap ? img->dirty_cap * 2 : 256;
		struct rbd_range *grown = realloc(img->dirty, cap * sizeof(*grown));

		if (!grown)
			return -ENOMEM;
		img->dirty = grown;
		img->dirty_cap = cap;
	}
	img->dirty[img->ndirty++] = (struct rbd_range){ off, off + len };
	return 0;
}

static int rbd_range_cmp(const void *a, const void *b)
{
	const struct rbd_range *x = a, *y = b;

	return x->off < y->off ? -1 : x->off > y->off;
}

/* What changed between the bitmap's checkpoint before ck and ck (snap: ck's image). */
static int rbd_dirty_find(struct rbd_image *base, struct rbd_image *snap,
			  const struct bitmap_info *ck)
{
	struct rbd_checkpoint *c = calloc(BITMAP_SLOTS * 4, sizeof(*c));
	const char *from = NULL;
	size_t i, out;
	int n, k, r;

	if (!c)
		return -ENOMEM;
	n = rbd_checkpoint_list(base, c, BITMAP_SLOTS * 4);
	for (k = 0; k < n && strcmp(c[k].info.name, ck->name); k++)
		;
	if (n < 0 || k == n) {
		free(c);
		return n < 0 ? n : -ENOENT;
	}
	for (i = (size_t)k; i-- > 0;)
		if (!strcmp(c[i].info.bitmap, ck->bitmap)) {
			from = c[i].info.name;
			break;
		}
	snap->ndirty = 0;
	r = rbd_lib.rbd_diff_iterate2(snap->image, from, 0, atomic_load(&snap->size), 1, 0,
				  rbd_dirty_seen, snap);
	free(c);
	if (r < 0)
		return r;
	/* Sorted and apart, whatever order the walk came in. */
	qsort(snap->dirty, snap->ndirty, sizeof(*snap->dirty), rbd_range_cmp);
	for (i = 0, out = 0; i < snap->ndirty; i++) {
		if (out && snap->dirty[out - 1].end >= snap->dirty[i].off) {
			if (snap->dirty[i].end > snap->dirty[out - 1].end)
				snap->dirty[out - 1].end = snap->dirty[i].end;
		} else {
			snap->dirty[out++] = snap->dirty[i];
		}
	}
	snap->ndirty = out;
	snap->dirty_known = true;
	return 0;
}

struct export *rbd_be_checkpoint_open(const struct export *base, const struct bitmap_info *ck)
{
	char name[PROTO_NAME_MAX + 1], desc[512], path[2048];
	struct export_spec spec;
	struct rbd_image *img;
	struct export *e;
	int r = 0;

	snprintf(name, sizeof(name), "%s@%s", base->name, ck->name);
	snprintf(desc, sizeof(desc), "checkpoint %s of %s (bitmap %s): RBD snapshot %s@%s",
		 ck->name, base->name, ck->bitmap, base->path + 4, ck->name);
	snprintf(path, sizeof(path), "%s@%s", base->path, ck->name);
	export_spec_of(base, &spec);
	spec.name = name;
	spec.description = desc;
	spec.path = path;
	spec.readonly = true;
	spec.bitmaps = NULL;
	e = export_open(&spec);
	if (!e)
		return NULL;
	img = e->priv;
	pthread_mutex_lock(&rbd_open_lock);
	if (!img->dirty_known)
		r = rbd_dirty_find(base->priv, img, ck);
	pthread_mutex_unlock(&rbd_open_lock);
	if (r < 0) {
		log_error("export \"%s\": what changed before checkpoint \"%s\": %s", name,
			  ck->name, strerror(-r));
		export_put(e);
		return NULL;
	}
	e->checkpoint = strdup(ck->name);
	if (!e->checkpoint || export_add_context(e, ck->bitmap, 0) < 0) {
		export_put(e);
		return NULL;
	}
	return e;
}

size_t rbd_be_dirty_extents(const struct export *e, uint32_t k, uint64_t off, uint64_t len,
			    bool one, struct proto_extent *ext, size_t max)
{
	const struct rbd_image *img = e->priv;
	uint64_t end = off + len < e->size_bytes ? off + len : e->size_bytes, pos = off;
	size_t lo = 0, hi = img->ndirty, n = 0;

	(void)k;
	/* The first range that ends past off. */
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (img->dirty[mid].end <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	while (pos < end && n < max) {
		const struct rbd_range *r = lo < img->ndirty ? &img->dirty[lo] : NULL;
		uint64_t stop;
		uint32_t flags;

		if (r && r->off <= pos) {
			stop = r->end;
			flags = NBD_STATE_DIRTY;
			lo++;
		} else {
			stop = r ? r->off : end;
			flags = 0;
		}
		if (stop > end)
			stop = end;
		ext[n++] = (struct proto_extent){ .len_bytes = stop - pos, .flags = flags };
		pos = stop;
		if (one)
			break;
	}
	return n;
}
