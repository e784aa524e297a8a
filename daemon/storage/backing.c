// SPDX-License-Identifier: BSD-3-Clause
/*
 * The registry of backing files: one record per file (by device and inode;
 * a block device by its device number; storage that is no local file, such
 * as an RBD image, by a name its backend makes), shared by every export of that
 * file for as long as any of them lives, across any number of reloads. It
 * holds what must be one per file, whichever export or table a request
 * came through: the range lock manager, the page cache's key, and the
 * first failed flush (a durability error, which every later FLUSH and FUA
 * write of the file then reports).
 *
 * The registry is a list under a mutex; exports get and put records when
 * they open and close (rare), requests only read them.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "storage.h"

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct backing *registry;       /* every record with a reference */
static uint64_t next_cache_id;         /* under registry_lock */

/* The record st (or, st NULL, the name path) has, or a new one; under registry_lock. */
static struct backing *backing_lookup(const struct stat *st, const char *path)
{
	bool dev = st && S_ISBLK(st->st_mode);
	struct backing *b;

	for (b = registry; b; b = b->next) {
		if (!st) {
			if (b->named && !strcmp(b->path, path))
				break;
		} else if (!b->named && b->is_blockdev == dev &&
			   (dev ? b->rdev == st->st_rdev
				: b->dev == st->st_dev && b->ino == st->st_ino)) {
			break;
		}
	}
	if (b) {
		b->refs++;
		return b;
	}
	b = calloc(1, sizeof(*b));
	if (b) {
		b->locks = rl_manager_new();
		b->path = strdup(path);
	}
	if (!b || !b->locks || !b->path) {
		if (b) {
			rl_manager_free(b->locks);
			free(b->path);
		}
		free(b);
		return NULL;
	}
	b->named = !st;
	b->is_blockdev = dev;
	if (st) {
		b->dev = st->st_dev;
		b->ino = st->st_ino;
		b->rdev = st->st_rdev;
	}
	b->cache_id = ++next_cache_id;
	b->refs = 1;
	b->next = registry;
	registry = b;
	return b;
}

struct backing *backing_get(const struct stat *st, const char *path)
{
	struct backing *b;

	pthread_mutex_lock(&registry_lock);
	b = backing_lookup(st, path);
	pthread_mutex_unlock(&registry_lock);
	return b;
}

struct backing *backing_get_named(const char *name)
{
	return backing_get(NULL, name);
}

void backing_ref(struct backing *b)
{
	pthread_mutex_lock(&registry_lock);
	b->refs++;
	pthread_mutex_unlock(&registry_lock);
}

void backing_put(struct backing *b)
{
	struct backing **pp;

	if (!b)
		return;
	pthread_mutex_lock(&registry_lock);
	if (--b->refs) {
		pthread_mutex_unlock(&registry_lock);
		return;
	}
	for (pp = &registry; *pp != b; pp = &(*pp)->next)
		;
	*pp = b->next;
	pthread_mutex_unlock(&registry_lock);
	overlay_close(b->ov);
	bitmaps_close(atomic_load(&b->bm));
	rl_manager_free(b->locks);
	free(b->path);
	free(b);
}

void backing_fail(struct backing *b, int err)
{
	int none = 0;

	if (atomic_compare_exchange_strong(&b->durability_err, &none, err))
		log_error("\"%s\": a flush failed (%s): writes since the last good flush may be lost; "
			  "every later FLUSH and FUA write to this file fails with EIO until uringnbd "
			  "is restarted", b->path, strerror(err));
}

int backing_durability_err(const struct backing *b)
{
	return atomic_load_explicit(&b->durability_err, memory_order_relaxed);
}
