// SPDX-License-Identifier: BSD-3-Clause
/*
 * Dirty bitmaps of a file, and checkpoints: which granules changed since a
 * point in time, kept in a sidecar file so that they survive restarts and
 * crashes (the promise is in storage.h's bitmap.c section).
 *
 * The sidecar, version 1 (integers little-endian):
 *   0      header, 4096 bytes: "URNBDBMP", u32 version, u32 granularity,
 *          u64 image size, u64 inode, u64 device number (block devices),
 *          i64 and u32 birth time (s, ns), u32 slots (64), u64 bytes per
 *          slot's bits (rounded up to 4096), u64 table offset (4096),
 *          u64 data offset (20480)
 *   4096   64 records of 256 bytes: u32 kind (0 free, 1 live bitmap,
 *          2 checkpoint), u32 flags (1: it has a reflink copy), i64 created
 *          (Unix seconds), name[112], bitmap[112] (a checkpoint's bitmap),
 *          each NUL-padded
 *   20480  slot i's bits at data offset + i * bytes per slot: bit g of
 *          byte g / 8 (least significant first) is granule g
 * The image's identity (inode and birth time, or device number; and size)
 * is checked at load: a sidecar of another file is refused.
 *
 * Ordering. A write first sets its granules' bits in memory; a bit not yet
 * known to be on disk (durable) makes it wait for a commit: the committer
 * thread writes every bitmap page changed since its last commit, syncs the
 * sidecar, then marks those bits durable and posts the waiting writes, which
 * only then are issued. Commits are grouped: writes that arrive while one
 * runs wait for the next, which takes them all. A write whose bits are all
 * durable already costs two loads per 64 granules and no lock.
 *
 * Bits only grow between checkpoints; a checkpoint (or clear) runs under an
 * exclusive lock over the whole file, when no write is between its mark and
 * its end, so clearing cannot lose a bit a write still relies on. The
 * checkpoint's copy is in place (renamed, synced) and its frozen bits are on
 * disk before the live bits are cleared: a crash anywhere leaves a bitmap
 * with extra bits, never fewer.
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

bool bitmap_name_ok(const char *name, char *why, size_t len)
{
	size_t i, n = strlen(name);

	if (!n || n > BITMAP_NAME_MAX) {
		snprintf(why, len, "\"%.*s\": a name is 1 to %d characters", 64, name,
			 BITMAP_NAME_MAX);
		return false;
	}
	for (i = 0; i < n; i++) {
		char ch = name[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '_' || ch == '-' || ch == '.' || ch == '+') ||
		    (i == 0 && ch == '.')) {
			snprintf(why, len, "\"%.*s\": a name takes letters, digits and _ - . + only "
				 "(it becomes part of a meta context, an export name and a file "
				 "name), and does not start with a dot", 64, name);
			return false;
		}
	}
	return true;
}

uint32_t bitmaps_granularity(const struct bitmaps *bm)
{
	return bm->granularity;
}

void bitmaps_commits(const struct bitmaps *bm, uint64_t *commits, uint64_t *pages)
{
	*commits = atomic_load_explicit(&bm->commits, memory_order_relaxed);
	*pages = atomic_load_explicit(&bm->commit_pages, memory_order_relaxed);
}

uint64_t slot_off(const struct bitmaps *bm, int i)
{
	return SIDECAR_DATA_OFF + (uint64_t)i * bm->slot_bytes;
}

int write_all(int fd, const void *p, size_t len, uint64_t off)
{
	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p = (const uint8_t *)p + n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static int read_all(int fd, void *p, size_t len, uint64_t off)
{
	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -ENODATA;
		p = (uint8_t *)p + n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int sync_dir_of(const char *path)
{
	char *copy = strdup(path);
	int fd, ret = 0;

	if (!copy)
		return -ENOMEM;
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(copy);
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

static void record_encode(const struct slot *s, uint8_t *r)
{
	uint32_t v;
	int64_t t = htole64(s->created_s);

	memset(r, 0, SIDECAR_RECORD_BYTES);
	v = htole32((uint32_t)s->kind);
	memcpy(r, &v, 4);
	v = htole32(s->snapshot ? 1 : 0);
	memcpy(r + 4, &v, 4);
	memcpy(r + 8, &t, 8);
	if (s->kind != BITMAP_FREE) {
		memcpy(r + 16, s->name, strlen(s->name));
		memcpy(r + 16 + SIDECAR_NAME_BYTES, s->bitmap, strlen(s->bitmap));
	}
}

/* Writes slot i's record and syncs. */
int record_store(struct bitmaps *bm, int i)
{
	uint8_t r[SIDECAR_RECORD_BYTES];
	int ret;

	record_encode(&bm->slot[i], r);
	ret = write_all(bm->fd, r, sizeof(r), SIDECAR_TABLE_OFF + (uint64_t)i * sizeof(r));
	if (!ret && fdatasync(bm->fd) < 0)
		ret = -errno;
	return ret;
}

/* The image's identity as the header keeps it. */
struct identity {
	uint64_t size, ino, rdev;
	int64_t btime_s;
	uint32_t btime_ns;
};

static void identity_of(const char *path, const struct stat *st, uint64_t size,
			struct identity *id)
{
	struct statx stx;

	memset(id, 0, sizeof(*id));
	id->size = size;
	if (S_ISBLK(st->st_mode)) {
		id->rdev = st->st_rdev;
		return;
	}
	id->ino = st->st_ino;
	if (statx(AT_FDCWD, path, 0, STATX_BTIME, &stx) == 0 && (stx.stx_mask & STATX_BTIME)) {
		id->btime_s = stx.stx_btime.tv_sec;
		id->btime_ns = stx.stx_btime.tv_nsec;
	}
}

static void header_encode(const struct bitmaps *bm, const struct identity *id, uint8_t *h)
{
	memset(h, 0, SIDECAR_PAGE);
	memcpy(h, SIDECAR_MAGIC, 8);
	put_le32(h + 8, SIDECAR_VERSION);
	put_le32(h + 12, bm->granularity);
	put_le64(h + 16, id->size);
	put_le64(h + 24, id->ino);
	put_le64(h + 32, id->rdev);
	put_le64(h + 40, (uint64_t)id->btime_s);
	put_le32(h + 48, id->btime_ns);
	put_le32(h + 52, BITMAP_SLOTS);
	put_le64(h + 56, bm->slot_bytes);
	put_le64(h + 64, SIDECAR_TABLE_OFF);
	put_le64(h + 72, SIDECAR_DATA_OFF);
}

static void geometry(struct bitmaps *bm, uint64_t size, uint32_t granularity)
{
	bm->granularity = granularity;
	bm->size_bytes = size;
	bm->ngranules = (size + granularity - 1) / granularity;
	bm->nwords = (bm->ngranules + WORD_BITS - 1) / WORD_BITS;
	bm->npages = (bm->nwords + PAGE_WORDS - 1) / PAGE_WORDS;
	if (!bm->npages)
		bm->npages = 1;
	bm->slot_bytes = bm->npages * SIDECAR_PAGE;
}

/* A new sidecar, made whole under a temporary name, then renamed into place. */
static int sidecar_create(struct bitmaps *bm, const struct identity *id, char *err, size_t errlen)
{
	char tmp[PATH_MAX];
	uint8_t *page = calloc(1, SIDECAR_DATA_OFF);
	int fd, ret = 0;

	if (!page)
		return -ENOMEM;
	snprintf(tmp, sizeof(tmp), "%s.tmp", bm->path);
	fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "bitmap file \"%s\": %s", tmp, strerror(-ret));
		free(page);
		return ret;
	}
	header_encode(bm, id, page);
	ret = write_all(fd, page, SIDECAR_DATA_OFF, 0);
	if (!ret && fsync(fd) < 0)
		ret = -errno;
	if (!ret && rename(tmp, bm->path) < 0)
		ret = -errno;
	if (!ret)
		ret = sync_dir_of(bm->path);
	free(page);
	if (ret) {
		snprintf(err, errlen, "bitmap file \"%s\": %s", bm->path, strerror(-ret));
		close(fd);
		unlink(tmp);
		return ret;
	}
	bm->fd = fd;
	return 0;
}

static int slot_alloc_memory(struct bitmaps *bm, struct slot *s, bool live)
{
	s->bits = calloc(bm->npages * PAGE_WORDS, 8);
	if (live) {
		s->durable = calloc(bm->npages * PAGE_WORDS, 8);
		s->dirty = calloc(bm->npages, 1);
	}
	if (!s->bits || (live && (!s->durable || !s->dirty))) {
		free((void *)s->bits);
		free((void *)s->durable);
		free(s->dirty);
		s->bits = s->durable = NULL;
		s->dirty = NULL;
		return -ENOMEM;
	}
	return 0;
}

/* Slot arrays that exports may still read: kept until close. */
void slot_retire_memory(struct bitmaps *bm, struct slot *s)
{
	struct old_bits *o = calloc(1, sizeof(*o));

	if (o) {
		o->p[0] = (void *)s->bits;
		o->p[1] = (void *)s->durable;
		o->p[2] = s->dirty;
		o->next = bm->old;
		bm->old = o;
	} /* else leaked: better than freed under a reader */
	s->bits = s->durable = NULL;
	s->dirty = NULL;
}

/* Loads an existing sidecar; refuses one of another file, a newer one, a cut one. */
static int sidecar_load(struct bitmaps *bm, int fd, const struct identity *id,
			uint32_t granularity, char *err, size_t errlen)
{
	uint8_t h[SIDECAR_PAGE], *table = NULL;
	struct stat st;
	uint64_t end = SIDECAR_DATA_OFF;
	uint32_t version, gran;
	int i, ret;

	if (fstat(fd, &st) < 0)
		return -errno;
	memset(h, 0, sizeof(h));
	ret = read_all(fd, h, (uint64_t)st.st_size < sizeof(h) ? (size_t)st.st_size : sizeof(h), 0);
	if (ret)
		goto io_err;
	if (st.st_size < 8 || memcmp(h, SIDECAR_MAGIC, 8)) {
		snprintf(err, errlen, "\"%s\" is not a uringnbd bitmap file", bm->path);
		return -EINVAL;
	}
	if ((uint64_t)st.st_size < SIDECAR_DATA_OFF) {
		snprintf(err, errlen, "bitmap file \"%s\" is truncated (%lld bytes): move it away "
			 "to start the bitmaps afresh", bm->path, (long long)st.st_size);
		return -EINVAL;
	}
	version = get_le32(h + 8);
	if (version != SIDECAR_VERSION) {
		snprintf(err, errlen, "bitmap file \"%s\" has format version %u; this uringnbd "
			 "reads version %u", bm->path, version, SIDECAR_VERSION);
		return -EINVAL;
	}
	if (get_le64(h + 24) != id->ino || get_le64(h + 32) != id->rdev ||
	    (int64_t)get_le64(h + 40) != id->btime_s || get_le32(h + 48) != id->btime_ns) {
		snprintf(err, errlen, "bitmap file \"%s\" belongs to another image (or this one was "
			 "replaced): move it away to start the bitmaps afresh", bm->path);
		return -EINVAL;
	}
	if (get_le64(h + 16) != id->size) {
		snprintf(err, errlen, "bitmap file \"%s\" was made for %" PRIu64 " bytes and the image "
			 "has %" PRIu64 " now: move it away to start the bitmaps afresh", bm->path,
			 get_le64(h + 16), id->size);
		return -EINVAL;
	}
	gran = get_le32(h + 12);
	if (!gran || (gran & (gran - 1)) || get_le32(h + 52) != BITMAP_SLOTS ||
	    get_le64(h + 64) != SIDECAR_TABLE_OFF || get_le64(h + 72) != SIDECAR_DATA_OFF) {
		snprintf(err, errlen, "bitmap file \"%s\": its header is damaged", bm->path);
		return -EINVAL;
	}
	if (granularity && granularity != gran)
		log_warn("bitmap file \"%s\" has granularity %u; bitmap-granularity %u applies "
			 "only to a new one", bm->path, gran, granularity);
	geometry(bm, id->size, gran);
	if (get_le64(h + 56) != bm->slot_bytes) {
		snprintf(err, errlen, "bitmap file \"%s\": its header is damaged", bm->path);
		return -EINVAL;
	}
	table = malloc(BITMAP_SLOTS * SIDECAR_RECORD_BYTES);
	if (!table)
		return -ENOMEM;
	ret = read_all(fd, table, BITMAP_SLOTS * SIDECAR_RECORD_BYTES, SIDECAR_TABLE_OFF);
	if (ret)
		goto io_err;
	for (i = 0; i < BITMAP_SLOTS; i++) {
		const uint8_t *r = table + i * SIDECAR_RECORD_BYTES;
		struct slot *s = &bm->slot[i];
		uint32_t kind = get_le32(r);
		char why[256];

		if (kind == BITMAP_FREE)
			continue;
		if (kind > BITMAP_FROZEN || r[16 + SIDECAR_NAME_BYTES - 1] ||
		    r[16 + 2 * SIDECAR_NAME_BYTES - 1]) {
			snprintf(err, errlen, "bitmap file \"%s\": record %d is damaged", bm->path, i);
			ret = -EINVAL;
			goto out;
		}
		s->kind = (enum bitmap_kind)kind;
		s->snapshot = get_le32(r + 4) & 1;
		s->created_s = (int64_t)get_le64(r + 8);
		snprintf(s->name, sizeof(s->name), "%s", (const char *)r + 16);
		snprintf(s->bitmap, sizeof(s->bitmap), "%s", (const char *)r + 16 + SIDECAR_NAME_BYTES);
		if (!bitmap_name_ok(s->name, why, sizeof(why)) ||
		    (kind == BITMAP_FROZEN && !bitmap_name_ok(s->bitmap, why, sizeof(why)))) {
			snprintf(err, errlen, "bitmap file \"%s\": record %d: %s", bm->path, i, why);
			ret = -EINVAL;
			goto out;
		}
		if (slot_off(bm, i) + bm->slot_bytes > end)
			end = slot_off(bm, i) + bm->slot_bytes;
	}
	if ((uint64_t)st.st_size < end) {
		snprintf(err, errlen, "bitmap file \"%s\" is truncated (%lld bytes, its records need "
			 "%" PRIu64 "): move it away to start the bitmaps afresh", bm->path,
			 (long long)st.st_size, end);
		ret = -EINVAL;
		goto out;
	}
	for (i = 0; i < BITMAP_SLOTS; i++) {
		struct slot *s = &bm->slot[i];
		uint64_t w;

		if (s->kind == BITMAP_FREE)
			continue;
		ret = slot_alloc_memory(bm, s, s->kind == BITMAP_LIVE);
		if (ret)
			goto out;
		ret = read_all(fd, (void *)s->bits, bm->slot_bytes, slot_off(bm, i));
		if (ret)
			goto io_err;
		for (w = 0; w < bm->nwords; w++) {
			uint64_t v = le64toh(atomic_load_explicit(&s->bits[w], memory_order_relaxed));

			/* Bits past the last granule mean nothing. */
			if (w == bm->nwords - 1 && bm->ngranules % WORD_BITS)
				v &= (1ull << (bm->ngranules % WORD_BITS)) - 1;
			atomic_store_explicit(&s->bits[w], v, memory_order_relaxed);
			if (s->durable)
				atomic_store_explicit(&s->durable[w], v, memory_order_relaxed);
		}
		if (s->kind == BITMAP_LIVE)
			atomic_fetch_or(&bm->live_mask, 1ull << i);
	}
	ret = 0;
	goto out;
io_err:
	snprintf(err, errlen, "bitmap file \"%s\": %s", bm->path, strerror(-ret));
out:
	free(table);
	return ret;
}

/* A free slot for kind, its bits' room allocated in the file. -ENOSPC if none. */
int slot_take(struct bitmaps *bm, enum bitmap_kind kind, char *err, size_t errlen)
{
	int i, ret;

	for (i = 0; i < BITMAP_SLOTS; i++)
		if (bm->slot[i].kind == BITMAP_FREE && !bm->slot[i].bits)
			break;
	if (i == BITMAP_SLOTS) {
		snprintf(err, errlen, "\"%s\" holds %d bitmaps and checkpoints already: remove some",
			 bm->path, BITMAP_SLOTS);
		return -ENOSPC;
	}
	/* The room first, so that a later write of bits cannot run out of space. */
	ret = posix_fallocate(bm->fd, (off_t)slot_off(bm, i), (off_t)bm->slot_bytes);
	if (ret == EOPNOTSUPP || ret == EINVAL)
		ret = ftruncate(bm->fd, (off_t)(slot_off(bm, i) + bm->slot_bytes)) < 0 ? errno : 0;
	if (ret) {
		snprintf(err, errlen, "bitmap file \"%s\": room for a bitmap: %s", bm->path,
			 strerror(ret));
		return -ret;
	}
	ret = slot_alloc_memory(bm, &bm->slot[i], kind == BITMAP_LIVE);
	if (ret) {
		snprintf(err, errlen, "out of memory");
		return ret;
	}
	return i;
}

/* Writes slot i's bits (all of them) and syncs. */
int slot_store_bits(struct bitmaps *bm, int i)
{
	struct slot *s = &bm->slot[i];
	uint64_t page[PAGE_WORDS], p, w; /* not page_buf: the committer writes that unlocked */
	int ret;

	for (p = 0; p < bm->npages; p++) {
		for (w = 0; w < PAGE_WORDS; w++)
			page[w] = htole64(atomic_load_explicit(&s->bits[p * PAGE_WORDS + w],
							       memory_order_relaxed));
		ret = write_all(bm->fd, page, SIDECAR_PAGE, slot_off(bm, i) + p * SIDECAR_PAGE);
		if (ret)
			return ret;
	}
	return fdatasync(bm->fd) < 0 ? -errno : 0;
}

/* Under bm->lock (or before the committer runs): a new live bitmap name. */
static int live_add(struct bitmaps *bm, const char *name, char *err, size_t errlen)
{
	int i, ret;

	if (bitmaps_find(bm, BITMAP_LIVE, name) >= 0)
		return 0;
	i = slot_take(bm, BITMAP_LIVE, err, errlen);
	if (i < 0)
		return i;
	bm->slot[i].kind = BITMAP_LIVE;
	snprintf(bm->slot[i].name, sizeof(bm->slot[i].name), "%s", name);
	bm->slot[i].bitmap[0] = '\0';
	bm->slot[i].created_s = time(NULL);
	bm->slot[i].snapshot = false;
	ret = slot_store_bits(bm, i);
	if (!ret)
		ret = record_store(bm, i);
	if (ret) {
		snprintf(err, errlen, "bitmap file \"%s\": %s", bm->path, strerror(-ret));
		bm->slot[i].kind = BITMAP_FREE;
		slot_retire_memory(bm, &bm->slot[i]);
		return ret;
	}
	atomic_fetch_or(&bm->live_mask, 1ull << i);
	log_info("\"%s\": dirty bitmap \"%s\" created (granularity %u bytes)", bm->image_path,
		 name, bm->granularity);
	return 0;
}
int bitmaps_find(struct bitmaps *bm, enum bitmap_kind kind, const char *name)
{
	int i;

	for (i = 0; i < BITMAP_SLOTS; i++)
		if (bm->slot[i].kind == kind && !strcmp(bm->slot[i].name, name))
			return i;
	return -1;
}

static int add_names(struct bitmaps *bm, const char *names, char *err, size_t errlen)
{
	char *copy = strdup(names ? names : ""), *save = NULL, *n;
	int ret = 0;

	if (!copy)
		return -ENOMEM;
	for (n = strtok_r(copy, ",", &save); n && !ret; n = strtok_r(NULL, ",", &save)) {
		pthread_mutex_lock(&bm->lock);
		ret = live_add(bm, n, err, errlen);
		pthread_mutex_unlock(&bm->lock);
	}
	free(copy);
	return ret;
}

int bitmaps_attach(struct backing *b, const char *sidecar, uint32_t granularity,
		   const struct stat *st, const char *path, uint64_t size, const char *names,
		   char *err, size_t errlen)
{
	struct bitmaps *bm = atomic_load(&b->bm);
	struct identity id;
	int fd, ret;

	if (bm) {
		if (strcmp(bm->path, sidecar)) {
			snprintf(err, errlen, "the file's bitmaps are in \"%s\" already (another export "
				 "of it): give the same bitmap-file", bm->path);
			return -1;
		}
		pthread_mutex_lock(&bm->admin);
		ret = add_names(bm, names, err, errlen);
		pthread_mutex_unlock(&bm->admin);
		return ret ? -1 : 0;
	}
	bm = calloc(1, sizeof(*bm));
	if (!bm || !(bm->path = strdup(sidecar)) || !(bm->image_path = strdup(path)) ||
	    !(bm->page_buf = malloc(SIDECAR_PAGE))) {
		snprintf(err, errlen, "out of memory");
		goto out_free;
	}
	bm->fd = -1;
	pthread_mutex_init(&bm->lock, NULL);
	pthread_mutex_init(&bm->admin, NULL);
	{
		/* Its one timed wait (a test build's) counts on the monotonic clock. */
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&bm->wake, &ca);
		pthread_condattr_destroy(&ca);
	}
	identity_of(path, st, size, &id);
	fd = open(sidecar, O_RDWR | O_CLOEXEC);
	if (fd >= 0) {
		bm->fd = fd;
		if (sidecar_load(bm, fd, &id, granularity, err, errlen) < 0)
			goto out_free;
	} else if (errno == ENOENT) {
		geometry(bm, size, granularity ? granularity : BITMAP_DEFAULT_GRANULARITY);
		if (sidecar_create(bm, &id, err, errlen) < 0)
			goto out_free;
		log_info("\"%s\": bitmap file \"%s\" created", path, sidecar);
	} else {
		snprintf(err, errlen, "bitmap file \"%s\": %s", sidecar, strerror(errno));
		goto out_free;
	}
	if (add_names(bm, names, err, errlen) < 0)
		goto out_free;
#ifdef URINGNBD_TEST_HOOKS
	if (getenv("URINGNBD_TEST_BITMAP_LATE_MS"))
		bm->test_late_ms = (unsigned)atoi(getenv("URINGNBD_TEST_BITMAP_LATE_MS"));
#endif
	ret = pthread_create(&bm->committer, NULL, committer_main, bm);
	if (ret) {
		snprintf(err, errlen, "bitmap committer thread: %s", strerror(ret));
		goto out_free;
	}
	atomic_store_explicit(&b->bm, bm, memory_order_release);
	return 0;

out_free:
	if (bm) {
		bm->stop = true;
		bm->committer = 0;
		bitmaps_close(bm);
	}
	return -1;
}

void bitmaps_close(struct bitmaps *bm)
{
	struct old_bits *o;
	int i;

	if (!bm)
		return;
	if (bm->committer) {
		pthread_mutex_lock(&bm->lock);
		bm->stop = true;
		pthread_cond_signal(&bm->wake);
		pthread_mutex_unlock(&bm->lock);
		pthread_join(bm->committer, NULL);
	}
	if (bm->fd >= 0)
		close(bm->fd);
	for (i = 0; i < BITMAP_SLOTS; i++) {
		free((void *)bm->slot[i].bits);
		free((void *)bm->slot[i].durable);
		free(bm->slot[i].dirty);
	}
	while ((o = bm->old)) {
		bm->old = o->next;
		free(o->p[0]);
		free(o->p[1]);
		free(o->p[2]);
		free(o);
	}
	free(bm->page_buf);
	free(bm->path);
	free(bm->image_path);
	free(bm);
}

/* The bits of granules [g0, g1] in word w. */
