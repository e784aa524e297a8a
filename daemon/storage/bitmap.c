// SPDX-License-Identifier: BSD-3-Clause
/*
 * Dirty bitmaps of a file, and checkpoints: which granules changed since a
 * point in time, kept in a sidecar file so that they survive restarts and
 * crashes (the promise is in daemon.h's bitmap.c section).
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

#include "../daemon.h"

#define SIDECAR_MAGIC "URNBDBMP"
#define SIDECAR_VERSION 1
#define SIDECAR_PAGE 4096u
#define SIDECAR_TABLE_OFF SIDECAR_PAGE
#define SIDECAR_RECORD_BYTES 256u
#define SIDECAR_DATA_OFF (SIDECAR_TABLE_OFF + BITMAP_SLOTS * SIDECAR_RECORD_BYTES)
#define SIDECAR_NAME_BYTES 112
#define WORD_BITS 64
#define PAGE_WORDS (SIDECAR_PAGE / 8)

struct slot {
	enum bitmap_kind kind;
	char name[BITMAP_NAME_MAX + 1];
	char bitmap[BITMAP_NAME_MAX + 1];
	int64_t created_s;
	bool snapshot;
	_Atomic uint64_t *bits;     /* ngranules bits; read by any thread */
	_Atomic uint64_t *durable;  /* live: bits known to be on disk */
	uint8_t *dirty;             /* live: pages of bits changed since the last commit */
	unsigned gen;               /* bumped by a clear: a commit of older bits is stale */
};

/* Arrays of slots freed while exports may still read them: freed at close. */
struct old_bits {
	struct old_bits *next;
	void *p[3];
};

struct bitmaps {
	int fd;
	char *path;                 /* the sidecar */
	char *image_path;
	uint32_t granularity;
	uint64_t size_bytes, ngranules, nwords, npages, slot_bytes;
	pthread_mutex_t lock;       /* slots' records and dirty pages, the queue */
	pthread_cond_t wake;
	pthread_t committer;
	bool stop;
	struct bitmap_wait *queue;  /* writes waiting for the next commit */
	_Atomic uint64_t live_mask; /* slots that are live bitmaps */
	struct slot slot[BITMAP_SLOTS];
	struct old_bits *old;
	pthread_mutex_t admin;      /* one checkpoint, clear or remove at a time */
	uint64_t *page_buf;         /* the committer's copy of a page (its thread only) */
	atomic_uint_fast64_t commits, commit_pages; /* syncs done, pages they wrote */
#ifdef URINGNBD_TEST_HOOKS
	unsigned test_late_ms;      /* test builds: bits synced after the data, this late */
#endif
};

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

static uint64_t slot_off(const struct bitmaps *bm, int i)
{
	return SIDECAR_DATA_OFF + (uint64_t)i * bm->slot_bytes;
}

static int write_all(int fd, const void *p, size_t len, uint64_t off)
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

static int sync_dir_of(const char *path)
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
static int record_store(struct bitmaps *bm, int i)
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
static void slot_retire_memory(struct bitmaps *bm, struct slot *s)
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
static int slot_take(struct bitmaps *bm, enum bitmap_kind kind, char *err, size_t errlen)
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
static int slot_store_bits(struct bitmaps *bm, int i)
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

/*
 * The committer: takes every queued write, writes the pages of bits
 * changed since the last commit, syncs, then marks them durable and lets
 * the writes go. A write queued while a commit runs waits for the next,
 * which syncs even if it has no page to write: its bits may be in a page
 * the running commit wrote.
 */
static void *committer_main(void *arg)
{
	static struct log_limit failed;
	struct bitmaps *bm = arg;
	struct page_ref { int slot; uint64_t page; unsigned gen; } *pages = NULL;
	size_t npages, cap = 0, k;

	pthread_mutex_lock(&bm->lock);
	for (;;) {
		struct bitmap_wait *batch, *wt;
		int err = 0, i;
		uint64_t p, w;

#ifdef URINGNBD_TEST_HOOKS
		if (bm->test_late_ms && !bm->stop) {
			/* Test builds: bits written lazily, after the data (the crash test's foil). */
			struct timespec ts;

			clock_gettime(CLOCK_MONOTONIC, &ts);
			ts.tv_nsec += (long)bm->test_late_ms * 1000000L;
			ts.tv_sec += ts.tv_nsec / 1000000000L;
			ts.tv_nsec %= 1000000000L;
			pthread_cond_timedwait(&bm->wake, &bm->lock, &ts);
		} else
#endif
		while (!bm->queue && !bm->stop)
			pthread_cond_wait(&bm->wake, &bm->lock);
		if (!bm->queue && bm->stop)
			break; /* stopping, nothing waits */
		batch = bm->queue;
		bm->queue = NULL;
		npages = 0;
		for (i = 0; i < BITMAP_SLOTS && !err; i++) {
			struct slot *s = &bm->slot[i];

			if (s->kind != BITMAP_LIVE)
				continue;
			for (p = 0; p < bm->npages; p++) {
				if (!s->dirty[p])
					continue;
				if (npages == cap) {
					size_t ncap = cap ? 2 * cap : 64;
					void *n = realloc(pages, ncap * sizeof(*pages));

					if (!n) {
						err = -ENOMEM;
						break;
					}
					pages = n;
					cap = ncap;
				}
				s->dirty[p] = 0;
				pages[npages++] = (struct page_ref){ i, p, s->gen };
			}
		}
		/* Each page copied under the lock (a marker may be setting bits), written outside. */
		for (k = 0; k < npages && !err; k++) {
			struct slot *s = &bm->slot[pages[k].slot];

			if (s->gen != pages[k].gen)
				continue;
			for (w = 0; w < PAGE_WORDS; w++)
				bm->page_buf[w] = htole64(atomic_load_explicit(
					&s->bits[pages[k].page * PAGE_WORDS + w], memory_order_relaxed));
			pthread_mutex_unlock(&bm->lock);
			err = write_all(bm->fd, bm->page_buf, SIDECAR_PAGE,
					slot_off(bm, pages[k].slot) + pages[k].page * SIDECAR_PAGE);
			pthread_mutex_lock(&bm->lock);
		}
		if (!err) {
			pthread_mutex_unlock(&bm->lock);
			if (fdatasync(bm->fd) < 0)
				err = -errno;
			atomic_fetch_add_explicit(&bm->commits, 1, memory_order_relaxed);
			atomic_fetch_add_explicit(&bm->commit_pages, npages, memory_order_relaxed);
			pthread_mutex_lock(&bm->lock);
		}
		for (k = 0; k < npages; k++) {
			struct slot *s = &bm->slot[pages[k].slot];

			if (s->kind != BITMAP_LIVE || s->gen != pages[k].gen)
				continue; /* cleared or removed meanwhile */
			if (err) {
				s->dirty[pages[k].page] = 1; /* the next commit writes it again */
				continue;
			}
			/*
			 * Clean since it was copied: what is set now is what was
			 * written, all durable. Dirty again: some bits are not, and
			 * the next commit makes the page durable.
			 */
			if (s->dirty[pages[k].page])
				continue;
			for (w = 0; w < PAGE_WORDS; w++) {
				uint64_t idx = pages[k].page * PAGE_WORDS + w;

				atomic_store_explicit(&s->durable[idx],
						      atomic_load_explicit(&s->bits[idx],
									   memory_order_relaxed),
						      memory_order_release);
			}
		}
		pthread_mutex_unlock(&bm->lock);
		if (err)
			log_msg_limited(&failed, LOG_ERROR, "bitmap file \"%s\": %s: the writes "
					"waiting for it fail, their data unwritten", bm->path,
					strerror(-err));
		while ((wt = batch)) {
			batch = wt->next;
			worker_post(wt->w, wt->op, err);
		}
		pthread_mutex_lock(&bm->lock);
	}
	pthread_mutex_unlock(&bm->lock);
	free(pages);
	return NULL;
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
static uint64_t word_mask(uint64_t w, uint64_t g0, uint64_t g1)
{
	uint64_t lo = w * WORD_BITS, hi = lo + WORD_BITS - 1;
	unsigned a = g0 > lo ? (unsigned)(g0 - lo) : 0, b = g1 < hi ? (unsigned)(g1 - lo) : 63;

	return (b == 63 ? ~0ull : (1ull << (b + 1)) - 1) & ~((1ull << a) - 1);
}

static bool all_durable(struct bitmaps *bm, uint64_t live, uint64_t g0, uint64_t g1)
{
	uint64_t w;
	int i;

	for (i = 0; live; i++, live >>= 1) {
		if (!(live & 1))
			continue;
		for (w = g0 / WORD_BITS; w <= g1 / WORD_BITS; w++) {
			uint64_t m = word_mask(w, g0, g1);

			if ((atomic_load_explicit(&bm->slot[i].durable[w], memory_order_acquire) & m) != m)
				return false;
		}
	}
	return true;
}

int bitmaps_mark(struct bitmaps *bm, uint64_t off, uint64_t len, struct bitmap_wait *wt)
{
	uint64_t live = atomic_load_explicit(&bm->live_mask, memory_order_acquire);
	uint64_t g0, g1, w, end;
	int i;

	if (!live || !len || off >= bm->size_bytes)
		return 0;
	end = off + len < bm->size_bytes ? off + len : bm->size_bytes;
	g0 = off / bm->granularity;
	g1 = (end - 1) / bm->granularity;
	if (all_durable(bm, live, g0, g1))
		return 0;
	pthread_mutex_lock(&bm->lock);
	live = atomic_load_explicit(&bm->live_mask, memory_order_relaxed);
	for (i = 0; live; i++, live >>= 1) {
		struct slot *s = &bm->slot[i];

		if (!(live & 1))
			continue;
		for (w = g0 / WORD_BITS; w <= g1 / WORD_BITS; w++) {
			uint64_t m = word_mask(w, g0, g1);

			if ((atomic_fetch_or_explicit(&s->bits[w], m, memory_order_relaxed) & m) != m)
				s->dirty[w / PAGE_WORDS] = 1;
		}
	}
#ifdef URINGNBD_TEST_HOOKS
	if (bm->test_late_ms) {
		/* The foil: the write goes ahead, its bits reach the disk later. */
		pthread_mutex_unlock(&bm->lock);
		return 0;
	}
#endif
	wt->next = bm->queue;
	bm->queue = wt;
	pthread_cond_signal(&bm->wake);
	pthread_mutex_unlock(&bm->lock);
	return 1;
}

static bool bit_at(_Atomic uint64_t *bits, uint64_t g)
{
	return atomic_load_explicit(&bits[g / WORD_BITS], memory_order_relaxed) >> (g % WORD_BITS) & 1;
}

/* The first granule after g, up to last + 1, whose bit is not state. */
static uint64_t run_end(_Atomic uint64_t *bits, uint64_t g, uint64_t last, bool state)
{
	for (g++; g <= last; g++) {
		uint64_t v = atomic_load_explicit(&bits[g / WORD_BITS], memory_order_relaxed);

		if (g % WORD_BITS == 0 && v == (state ? ~0ull : 0)) {
			g += WORD_BITS - 1;
			continue;
		}
		if ((v >> (g % WORD_BITS) & 1) != state)
			return g;
	}
	return last + 1;
}

size_t bitmaps_extents(struct bitmaps *bm, int slot, uint64_t off, uint64_t len, bool one,
		       struct proto_extent *ext, size_t max)
{
	_Atomic uint64_t *bits = bm->slot[slot].bits;
	uint64_t end = off + len < bm->size_bytes ? off + len : bm->size_bytes;
	uint64_t pos = off, last, g, next, stop;
	size_t n = 0;

	if (!bits || pos >= end)
		return 0;
	last = (end - 1) / bm->granularity;
	while (pos < end && n < max) {
		bool state;

		g = pos / bm->granularity;
		state = bit_at(bits, g);
		next = run_end(bits, g, last, state);
		stop = next * bm->granularity < end ? next * bm->granularity : end;
		ext[n].len_bytes = stop - pos;
		ext[n].flags = state ? NBD_STATE_DIRTY : 0;
		n++;
		pos = stop;
		if (one)
			break;
	}
	return n;
}

static uint64_t popcount_slot(const struct bitmaps *bm, const struct slot *s)
{
	uint64_t w, n = 0;

	for (w = 0; w < bm->nwords; w++)
		n += (uint64_t)__builtin_popcountll(atomic_load_explicit(&s->bits[w],
									 memory_order_relaxed));
	return n;
}

size_t bitmaps_list(struct bitmaps *bm, struct bitmap_info *out)
{
	size_t n = 0;
	int i;

	pthread_mutex_lock(&bm->lock);
	for (i = 0; i < BITMAP_SLOTS; i++) {
		const struct slot *s = &bm->slot[i];

		if (s->kind == BITMAP_FREE)
			continue;
		out[n] = (struct bitmap_info){ .slot = i, .kind = s->kind, .created_s = s->created_s,
					       .snapshot = s->snapshot };
		snprintf(out[n].name, sizeof(out[n].name), "%s", s->name);
		snprintf(out[n].bitmap, sizeof(out[n].bitmap), "%s", s->bitmap);
		out[n].dirty_granules = popcount_slot(bm, s);
		n++;
	}
	pthread_mutex_unlock(&bm->lock);
	return n;
}

void bitmaps_snapshot_path(const struct bitmaps *bm, const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s@%s", bm->image_path, name);
}

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
