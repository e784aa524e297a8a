// SPDX-License-Identifier: BSD-3-Clause
/*
 * Dirty bitmaps: checkpoints (frozen bits beside a reflink copy of the
 * image), clear and remove, each under an exclusive lock over the whole
 * file. Why a crash leaves extra bits, never fewer, is at the top of
 * bitmap.c.
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <libgen.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bitmap_int.h"

/* An exclusive lock over the whole file, waited for on this (non-worker) thread. */
struct whole_lock {
	struct rl_lock l;
	pthread_mutex_t m;
	pthread_cond_t c;
	bool granted;
};

static void whole_granted(struct rl_lock *l, void *arg)
{
	struct whole_lock *wl = arg;

	(void)l;
	pthread_mutex_lock(&wl->m);
	wl->granted = true;
	pthread_cond_signal(&wl->c);
	pthread_mutex_unlock(&wl->m);
}

static void lock_whole(struct rl_manager *locks, struct whole_lock *wl)
{
	pthread_mutex_init(&wl->m, NULL);
	pthread_cond_init(&wl->c, NULL);
	wl->granted = false;
	if (!rl_acquire(locks, &wl->l, 0, UINT64_MAX, true, whole_granted, wl)) {
		pthread_mutex_lock(&wl->m);
		while (!wl->granted)
			pthread_cond_wait(&wl->c, &wl->m);
		pthread_mutex_unlock(&wl->m);
	}
}

static void unlock_whole(struct rl_manager *locks, struct whole_lock *wl)
{
	rl_release(locks, &wl->l);
	pthread_mutex_destroy(&wl->m);
	pthread_cond_destroy(&wl->c);
}

/* Under bm->lock: live slot i starts afresh (every write that set a bit is done). */
static void live_zero(struct bitmaps *bm, int i)
{
	struct slot *s = &bm->slot[i];
	uint64_t w;

	for (w = 0; w < bm->npages * PAGE_WORDS; w++) {
		atomic_store_explicit(&s->bits[w], 0, memory_order_relaxed);
		atomic_store_explicit(&s->durable[w], 0, memory_order_relaxed);
	}
	memset(s->dirty, 0, bm->npages);
	s->gen++;
}

/* The reflink copy of the image: whole, synced, renamed into place. */
static int snapshot_make(struct bitmaps *bm, int image_fd, const char *final, char *err,
			 size_t errlen)
{
	char tmp[PATH_MAX + 8];
	struct stat st;
	int fd, ret = 0;

	snprintf(tmp, sizeof(tmp), "%s.tmp", final);
	unlink(tmp);
	if (fstat(image_fd, &st) < 0 || fdatasync(image_fd) < 0) {
		ret = -errno;
		snprintf(err, errlen, "\"%s\": %s", bm->image_path, strerror(-ret));
		return ret;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, st.st_mode & 0777);
	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "\"%s\": %s", tmp, strerror(-ret));
		return ret;
	}
	if (ioctl(fd, FICLONE, image_fd) < 0) {
		ret = -errno;
		if (ret == -EOPNOTSUPP || ret == -EXDEV || ret == -EINVAL || ret == -ENOTTY)
			snprintf(err, errlen, "\"%s\" is on a filesystem that cannot make reflink "
				 "copies (FICLONE: %s; XFS and btrfs can): checkpoint the bitmap "
				 "alone with bitmap-only, and copy a quiesced image yourself",
				 bm->image_path, strerror(-ret));
		else
			snprintf(err, errlen, "reflink copy \"%s\": %s", final, strerror(-ret));
	} else if (fsync(fd) < 0) {
		ret = -errno;
		snprintf(err, errlen, "\"%s\": %s", tmp, strerror(-ret));
	}
	close(fd);
	if (!ret && rename(tmp, final) < 0) {
		ret = -errno;
		snprintf(err, errlen, "rename \"%s\": %s", final, strerror(-ret));
	}
	if (ret) {
		unlink(tmp);
		return ret;
	}
	ret = sync_dir_of(final);
	if (ret)
		snprintf(err, errlen, "\"%s\": %s", final, strerror(-ret));
	return ret;
}

int bitmaps_checkpoint(struct bitmaps *bm, struct rl_manager *locks, int image_fd,
		       const char *bitmap, const char *name, bool bitmap_only, char *err,
		       size_t errlen)
{
	struct whole_lock wl;
	char snap[PATH_MAX];
	int live, i, ret;
	uint64_t w;

	if (!bitmap_name_ok(name, err, errlen))
		return -EINVAL;
	pthread_mutex_lock(&bm->admin);
	live = bitmaps_find(bm, BITMAP_LIVE, bitmap);
	if (live < 0) {
		snprintf(err, errlen, "no bitmap \"%s\"", bitmap);
		ret = -ENOENT;
		goto out;
	}
	if (bitmaps_find(bm, BITMAP_FROZEN, name) >= 0) {
		snprintf(err, errlen, "checkpoint \"%s\" exists already", name);
		ret = -EEXIST;
		goto out;
	}
	pthread_mutex_lock(&bm->lock);
	i = slot_take(bm, BITMAP_FROZEN, err, errlen);
	pthread_mutex_unlock(&bm->lock);
	if (i < 0) {
		ret = i;
		goto out;
	}
	bitmaps_snapshot_path(bm, name, snap, sizeof(snap));
	lock_whole(locks, &wl);
	if (!bitmap_only) {
		ret = snapshot_make(bm, image_fd, snap, err, errlen);
		if (ret)
			goto out_unlock;
	}
	/* The frozen bits on disk, then the record naming them. */
	pthread_mutex_lock(&bm->lock);
	for (w = 0; w < bm->npages * PAGE_WORDS; w++)
		atomic_store_explicit(&bm->slot[i].bits[w],
				      atomic_load_explicit(&bm->slot[live].bits[w], memory_order_relaxed),
				      memory_order_relaxed);
	bm->slot[i].snapshot = !bitmap_only;
	bm->slot[i].created_s = time(NULL);
	snprintf(bm->slot[i].name, sizeof(bm->slot[i].name), "%s", name);
	snprintf(bm->slot[i].bitmap, sizeof(bm->slot[i].bitmap), "%s", bitmap);
	bm->slot[i].kind = BITMAP_FROZEN;
	pthread_mutex_unlock(&bm->lock);
	ret = slot_store_bits(bm, i);
	if (!ret)
		ret = record_store(bm, i);
	if (ret) {
		snprintf(err, errlen, "bitmap file \"%s\": %s", bm->path, strerror(-ret));
		pthread_mutex_lock(&bm->lock);
		bm->slot[i].kind = BITMAP_FREE;
		pthread_mutex_unlock(&bm->lock);
		record_store(bm, i); /* best effort: a free record is what was there */
		if (!bitmap_only)
			unlink(snap);
		goto out_unlock;
	}
	/* Only now may the live bitmap forget: the checkpoint holds its bits. */
	pthread_mutex_lock(&bm->lock);
	live_zero(bm, live);
	pthread_mutex_unlock(&bm->lock);
	if (slot_store_bits(bm, live) < 0)
		log_warn("bitmap file \"%s\": bitmap \"%s\" could not be cleared on disk: after a "
			 "restart it shows the checkpoint's bits as well", bm->path, bitmap);
	log_info("\"%s\": checkpoint \"%s\" of bitmap \"%s\" taken%s", bm->image_path, name,
		 bitmap, bitmap_only ? " (bitmap only)" : "");
	ret = 0;
out_unlock:
	unlock_whole(locks, &wl);
	if (ret) {
		pthread_mutex_lock(&bm->lock);
		slot_retire_memory(bm, &bm->slot[i]);
		pthread_mutex_unlock(&bm->lock);
	}
out:
	pthread_mutex_unlock(&bm->admin);
	return ret;
}

int bitmaps_clear(struct bitmaps *bm, struct rl_manager *locks, const char *bitmap, char *err,
		  size_t errlen)
{
	struct whole_lock wl;
	int i, ret;

	pthread_mutex_lock(&bm->admin);
	i = bitmaps_find(bm, BITMAP_LIVE, bitmap);
	if (i < 0) {
		snprintf(err, errlen, "no bitmap \"%s\"", bitmap);
		pthread_mutex_unlock(&bm->admin);
		return -ENOENT;
	}
	lock_whole(locks, &wl);
	pthread_mutex_lock(&bm->lock);
	live_zero(bm, i);
	pthread_mutex_unlock(&bm->lock);
	ret = slot_store_bits(bm, i);
	unlock_whole(locks, &wl);
	if (ret)
		snprintf(err, errlen, "bitmap file \"%s\": %s (the bitmap is empty now; on disk it "
			 "may keep bits until the next clear)", bm->path, strerror(-ret));
	pthread_mutex_unlock(&bm->admin);
	return ret;
}

int bitmaps_remove(struct bitmaps *bm, struct rl_manager *locks, enum bitmap_kind kind,
		   const char *name, char *err, size_t errlen)
{
	struct whole_lock wl;
	char snap[PATH_MAX];
	bool snapshot;
	int i, ret;

	pthread_mutex_lock(&bm->admin);
	i = bitmaps_find(bm, kind, name);
	if (i < 0) {
		snprintf(err, errlen, "no %s \"%s\"", kind == BITMAP_LIVE ? "bitmap" : "checkpoint",
			 name);
		pthread_mutex_unlock(&bm->admin);
		return -ENOENT;
	}
	snapshot = bm->slot[i].snapshot;
	lock_whole(locks, &wl);
	pthread_mutex_lock(&bm->lock);
	bm->slot[i].kind = BITMAP_FREE;
	bm->slot[i].gen++;
	atomic_fetch_and(&bm->live_mask, ~(1ull << i));
	pthread_mutex_unlock(&bm->lock);
	ret = record_store(bm, i);
	unlock_whole(locks, &wl);
	if (ret) {
		snprintf(err, errlen, "bitmap file \"%s\": %s", bm->path, strerror(-ret));
		pthread_mutex_lock(&bm->lock);
		bm->slot[i].kind = kind;
		if (kind == BITMAP_LIVE)
			atomic_fetch_or(&bm->live_mask, 1ull << i);
		pthread_mutex_unlock(&bm->lock);
		pthread_mutex_unlock(&bm->admin);
		return ret;
	}
	pthread_mutex_lock(&bm->lock);
	slot_retire_memory(bm, &bm->slot[i]);
	pthread_mutex_unlock(&bm->lock);
	if (kind == BITMAP_FROZEN && snapshot) {
		bitmaps_snapshot_path(bm, name, snap, sizeof(snap));
		if (unlink(snap) < 0 && errno != ENOENT)
			log_warn("checkpoint \"%s\": removing \"%s\": %s", name, snap, strerror(errno));
		sync_dir_of(snap);
	}
	log_info("\"%s\": %s \"%s\" removed", bm->image_path,
		 kind == BITMAP_LIVE ? "bitmap" : "checkpoint", name);
	pthread_mutex_unlock(&bm->admin);
	return 0;
}
