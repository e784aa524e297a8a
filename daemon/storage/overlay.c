// SPDX-License-Identifier: BSD-3-Clause
/*
 * Copy-on-write overlays: an export whose `path` is a read-only base and
 * whose writes go to an overlay file (`overlay = PATH`, or `temporary`).
 *
 * The overlay file (all integers little-endian):
 *
 *   0     header, 4096 bytes:
 *           0  magic "URINGNBD-OVERLAY" (16 bytes)
 *          16  u32 version (1)
 *          20  u32 granule size in bytes (32768)
 *          24  u64 virtual size (= the base's size)
 *          32  u64 map offset (4096)        40  u64 map length in bytes
 *          48  u64 data offset (map end rounded up to 1 MiB)
 *          56  the base's identity when the overlay was made:
 *              u64 size, u64 inode, i64 mtime seconds, u32 mtime nanoseconds
 *          84  u32 flags (0)
 *          88  the base's path as given, NUL-terminated (up to 4008 bytes;
 *              informational, for people and for a future merge)
 *   4096  allocation map: bit g (byte g / 8, bit g % 8) set means granule g
 *         lives in the overlay; its length is a multiple of 4096
 *   data  granule g at data offset + g * granule size; the file is sparse,
 *         an unset granule is never read
 *
 * Reads take each granule from the overlay when its bit is set, else from
 * the base. A write covers whole granules or granules already in the
 * overlay: one that would leave part of an unset granule is planned with
 * the granule as its alignment (rx.c), so the existing read-modify-write
 * path copies the rest of the granule up (from the base) under an
 * exclusive range lock over the whole granule, and the whole granule is
 * written to the overlay. Bits are set in memory once a write's data is
 * in the overlay file (before its lock is released); bits only ever go
 * from unset to set, which is what lets a plan made before the lock stay
 * right.
 *
 * Durability and ordering: the map on disk is only ever written by
 * overlay_flush(), which (1) takes a snapshot of the bits set in memory,
 * whose data writes have all completed, (2) fdatasync()s the overlay, so
 * that data is stable, (3) writes the map pages that differ from what is on
 * disk, (4) fdatasync()s again. So a bit is never set on disk before its
 * granule's data is. FLUSH, FUA writes and WRITE_ZEROES with FUA run it
 * (on an offload thread) before they are acknowledged, and so does the
 * last close; a write acknowledged without FUA and not followed by an
 * acknowledged FLUSH may be lost in a crash (as on any disk), in which case
 * the granule reads from the base again.
 *
 * One struct overlay per overlay file, held by the file's backing record,
 * so every export and connection using it shares one map and one lock
 * manager. The base's backing record is shared with every other export of
 * the base (its cache id: cached base pages serve every overlay).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage.h"

#define OVERLAY_MAGIC "URINGNBD-OVERLAY"
#define OVERLAY_VERSION 1
#define OVERLAY_HEADER_BYTES 4096u
#define OVERLAY_DATA_ALIGN (1u << 20)
#define OVERLAY_PATH_MAX (OVERLAY_HEADER_BYTES - 88)

static pthread_mutex_t attach_lock = PTHREAD_MUTEX_INITIALIZER;

static bool live_bit(const struct overlay *ov, uint64_t g)
{
	return atomic_load_explicit(&ov->live[g / 64], memory_order_acquire) >> (g % 64) & 1;
}

bool overlay_allocated(const struct overlay *ov, uint64_t off)
{
	return live_bit(ov, off / OVERLAY_GRANULE_BYTES);
}

uint64_t overlay_run(const struct overlay *ov, uint64_t off, uint64_t len, bool *in_overlay)
{
	uint64_t g = off / OVERLAY_GRANULE_BYTES, end = off + len, pos;
	bool first = live_bit(ov, g);

	*in_overlay = first;
	pos = (g + 1) * OVERLAY_GRANULE_BYTES;
	while (pos < end && live_bit(ov, pos / OVERLAY_GRANULE_BYTES) == first)
		pos += OVERLAY_GRANULE_BYTES;
	return (pos < end ? pos : end) - off;
}

void overlay_mark(struct overlay *ov, uint64_t off, uint64_t len)
{
	uint64_t g, last;

	if (!len)
		return;
	last = (off + len - 1) / OVERLAY_GRANULE_BYTES;
	for (g = off / OVERLAY_GRANULE_BYTES; g <= last; g++)
		atomic_fetch_or_explicit(&ov->live[g / 64], UINT64_C(1) << (g % 64),
					 memory_order_release);
}

uint32_t overlay_write_align(const struct overlay *ov, uint64_t off, uint64_t len, uint32_t align)
{
	uint64_t end = off + len;

	/* An edge that would leave part of a granule of the base: copy the granule up. */
	if ((off % OVERLAY_GRANULE_BYTES && !overlay_allocated(ov, off)) ||
	    (end % OVERLAY_GRANULE_BYTES && !overlay_allocated(ov, end - 1)))
		return OVERLAY_GRANULE_BYTES;
	return align;
}

int overlay_flush(struct overlay *ov)
{
	uint64_t words = (ov->ngranules + 63) / 64, i, page;
	uint8_t *snap;
	int ret = 0;

	pthread_mutex_lock(&ov->flush_lock);
	snap = ov->snapshot;
	memset(snap, 0, ov->map_bytes);
	/* (1) Only bits whose data writes have completed are set in memory. */
	for (i = 0; i < words; i++)
		put_le64(snap + 8 * i, atomic_load_explicit(&ov->live[i], memory_order_acquire));
	/* (2) Their data is stable before any of them is. */
	if (fdatasync(ov->fd) < 0) {
		ret = -errno;
		goto out;
	}
	/* (3) The map pages that changed. */
	for (page = 0; page < ov->map_bytes; page += 4096) {
		if (!memcmp(snap + page, ov->durable + page, 4096))
			continue;
		if (pwrite(ov->fd_meta, snap + page, 4096, (off_t)(ov->map_off + page)) != 4096) {
			ret = errno ? -errno : -EIO;
			goto out;
		}
		memcpy(ov->durable + page, snap + page, 4096);
		ov->map_dirty = true;
	}
	/* (4) The map itself. */
	if (ov->map_dirty) {
		if (fdatasync(ov->fd_meta) < 0) {
			ret = -errno;
			goto out;
		}
		ov->map_dirty = false;
	}
out:
	pthread_mutex_unlock(&ov->flush_lock);
	if (ret < 0)
		log_error("overlay \"%s\": flush: %s", ov->path, strerror(-ret));
	return ret;
}

/*
 * WRITE_ZEROES on an overlay (offload thread, under the request's
 * exclusive lock over whole granules): a granule partly covered gets the
 * rest of its bytes from where they live now and is written whole; whole
 * granules become holes in the overlay (they read as zeroes); then the
 * bits.
 */
int overlay_zero(struct overlay *ov, int base_fd, uint64_t off, uint64_t len)
{
	const uint64_t G = OVERLAY_GRANULE_BYTES;
	uint64_t end = off + len, g0 = off / G * G, g1 = (end + G - 1) / G * G, pos;
	uint8_t *buf = NULL;
	int ret = 0;

	if (posix_memalign((void **)&buf, 4096, G))
		return -ENOMEM;
	for (pos = g0; pos < g1; pos += G) {
		uint64_t from = pos > off ? pos : off, to = pos + G < end ? pos + G : end;

		if (from == pos && to == pos + G) {
			/* Whole granules, as one hole (the run up to the last whole one). */
			uint64_t run_end = end / G * G;

			if (fallocate(ov->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				      (off_t)(ov->data_off + pos), (off_t)(run_end - pos)) < 0) {
				ret = -errno;
				break;
			}
			overlay_mark(ov, pos, run_end - pos);
			pos = run_end - G;
			continue;
		}
		/* A partial granule: read it whole from where it lives, zero part, write it whole. */
		if (overlay_allocated(ov, pos)) {
			if (pread(ov->fd, buf, G, (off_t)(ov->data_off + pos)) != (ssize_t)G) {
				ret = errno ? -errno : -EIO;
				break;
			}
		} else if (pread(base_fd, buf, G, (off_t)pos) != (ssize_t)G) {
			ret = errno ? -errno : -EIO;
			break;
		}
		memset(buf + (from - pos), 0, to - from);
		if (pwrite(ov->fd, buf, G, (off_t)(ov->data_off + pos)) != (ssize_t)G) {
			ret = errno ? -errno : -EIO;
			break;
		}
		overlay_mark(ov, pos, G);
	}
	free(buf);
	return ret;
}

size_t overlay_extents(const struct overlay *ov, int base_fd, uint64_t off, uint64_t len,
		       bool one, struct proto_extent *ext, size_t max)
{
	uint64_t pos = off, end = off + len;
	size_t n = 0;

	while (pos < end && n < max) {
		bool in_ov;
		uint64_t run = overlay_run(ov, pos, end - pos, &in_ov);

		/* Equal neighbours merge, within a layer and across them. */
		n = in_ov ? export_file_extents(ov->fd, ov->data_off, pos, run, ext, n, max)
			  : export_file_extents(base_fd, 0, pos, run, ext, n, max);
		pos += run;
		if (one && n)
			break;
	}
	if (one && n > 1)
		n = 1;
	return n;
}

/* A new overlay file: header, an empty map, the data area sparse. */
static int overlay_format(struct overlay *ov, const struct stat *base, const char *base_path)
{
	uint8_t *h = calloc(1, OVERLAY_HEADER_BYTES);
	int ret = 0;

	if (!h)
		return -ENOMEM;
	memcpy(h, OVERLAY_MAGIC, 16);
	put_le32(h + 16, OVERLAY_VERSION);
	put_le32(h + 20, OVERLAY_GRANULE_BYTES);
	put_le64(h + 24, ov->size_bytes);
	put_le64(h + 32, ov->map_off);
	put_le64(h + 40, ov->map_bytes);
	put_le64(h + 48, ov->data_off);
	put_le64(h + 56, (uint64_t)base->st_size);
	put_le64(h + 64, (uint64_t)base->st_ino);
	put_le64(h + 72, (uint64_t)base->st_mtim.tv_sec);
	put_le32(h + 80, (uint32_t)base->st_mtim.tv_nsec);
	put_le32(h + 84, 0);
	snprintf((char *)h + 88, OVERLAY_PATH_MAX, "%s", base_path);
	if (ftruncate(ov->fd_meta, (off_t)(ov->data_off + ov->size_bytes)) < 0 ||
	    pwrite(ov->fd_meta, h, OVERLAY_HEADER_BYTES, 0) != OVERLAY_HEADER_BYTES ||
	    fdatasync(ov->fd_meta) < 0)
		ret = errno ? -errno : -EIO;
	free(h);
	return ret;
}

/* An existing overlay file: its header must describe this base, unchanged. */
static int overlay_load(struct overlay *ov, const struct stat *base, char *err, size_t errlen)
{
	uint8_t *h = calloc(1, OVERLAY_HEADER_BYTES);
	int ret = -EINVAL;

	if (!h)
		return -ENOMEM;
	if (pread(ov->fd_meta, h, OVERLAY_HEADER_BYTES, 0) != OVERLAY_HEADER_BYTES ||
	    memcmp(h, OVERLAY_MAGIC, 16)) {
		snprintf(err, errlen, "not a uringnbd overlay (no header)");
	} else if (get_le32(h + 16) != OVERLAY_VERSION ||
		   get_le32(h + 20) != OVERLAY_GRANULE_BYTES) {
		snprintf(err, errlen, "overlay version %u, granule %u: not supported",
			 get_le32(h + 16), get_le32(h + 20));
	} else if (get_le64(h + 24) != ov->size_bytes || get_le64(h + 32) != ov->map_off ||
		   get_le64(h + 40) != ov->map_bytes || get_le64(h + 48) != ov->data_off) {
		snprintf(err, errlen, "made for a base of %llu bytes, not %llu",
			 (unsigned long long)get_le64(h + 24), (unsigned long long)ov->size_bytes);
	} else if (get_le64(h + 56) != (uint64_t)base->st_size ||
		   get_le64(h + 64) != (uint64_t)base->st_ino ||
		   get_le64(h + 72) != (uint64_t)base->st_mtim.tv_sec ||
		   get_le32(h + 80) != (uint32_t)base->st_mtim.tv_nsec) {
		snprintf(err, errlen, "the base is not the file this overlay was made over, or it "
			 "changed since (size, inode or modification time differ; it was \"%.200s\")",
			 (const char *)h + 88);
	} else if (pread(ov->fd_meta, ov->durable, ov->map_bytes, (off_t)ov->map_off) !=
		   (ssize_t)ov->map_bytes) {
		snprintf(err, errlen, "the allocation map cannot be read");
	} else {
		uint64_t i, words = (ov->ngranules + 63) / 64;

		for (i = 0; i < words; i++)
			atomic_store_explicit(&ov->live[i], get_le64(ov->durable + 8 * i),
					      memory_order_relaxed);
		ret = 0;
	}
	free(h);
	return ret;
}

static void overlay_free(struct overlay *ov)
{
	if (ov->fd >= 0)
		close(ov->fd);
	if (ov->fd_meta >= 0)
		close(ov->fd_meta);
	free(ov->live);
	free(ov->durable);
	free(ov->snapshot);
	free(ov->path);
	pthread_mutex_destroy(&ov->flush_lock);
	free(ov);
}

int overlay_open_file(const char *path, bool *created, int *fd_out)
{
	int fd;

	*created = false;
	if (!strcmp(path, "temporary")) {
		const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";

		fd = open(dir, O_TMPFILE | O_RDWR | O_DIRECT | O_CLOEXEC, 0600);
		*created = true;
	} else {
		fd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
		if (fd < 0 && errno == ENOENT) {
			fd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC | O_CREAT | O_EXCL, 0600);
			*created = fd >= 0;
		}
	}
	if (fd < 0)
		return -errno;
	*fd_out = fd;
	return 0;
}

int overlay_attach(struct backing *b, int fd, bool created, const char *path,
		   const struct stat *base_st, const char *base_path, uint64_t size,
		   char *err, size_t errlen)
{
	struct overlay *ov;
	char proc[64];
	int ret;

	pthread_mutex_lock(&attach_lock);
	if (b->ov) {
		/* Another export of the same overlay file: one map for all of them. */
		ov = b->ov;
		pthread_mutex_unlock(&attach_lock);
		close(fd);
		if (ov->size_bytes != size || ov->base_ino != base_st->st_ino) {
			snprintf(err, errlen, "already in use over another base");
			return -EINVAL;
		}
		return 0;
	}
	ov = calloc(1, sizeof(*ov));
	if (!ov) {
		pthread_mutex_unlock(&attach_lock);
		close(fd);
		return -ENOMEM;
	}
	pthread_mutex_init(&ov->flush_lock, NULL);
	ov->fd = fd;
	ov->fd_meta = -1;
	ov->path = strdup(path);
	ov->size_bytes = size;
	ov->base_ino = base_st->st_ino;
	ov->ngranules = (size + OVERLAY_GRANULE_BYTES - 1) / OVERLAY_GRANULE_BYTES;
	ov->map_off = OVERLAY_HEADER_BYTES;
	ov->map_bytes = ((ov->ngranules + 7) / 8 + 4095) / 4096 * 4096;
	if (ov->map_bytes < 4096)
		ov->map_bytes = 4096;
	ov->data_off = (ov->map_off + ov->map_bytes + OVERLAY_DATA_ALIGN - 1) /
		       OVERLAY_DATA_ALIGN * OVERLAY_DATA_ALIGN;
	ov->live = calloc((ov->map_bytes + 7) / 8, sizeof(*ov->live));
	ov->durable = calloc(1, ov->map_bytes);
	ov->snapshot = calloc(1, ov->map_bytes);
	/* The header and map without O_DIRECT: small, and written only by flushes. */
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	ov->fd_meta = open(proc, O_RDWR | O_CLOEXEC);
	if (!ov->path || !ov->live || !ov->durable || !ov->snapshot || ov->fd_meta < 0) {
		ret = ov->fd_meta < 0 ? -errno : -ENOMEM;
		snprintf(err, errlen, "%s", strerror(-ret));
		goto fail;
	}
	ret = created ? overlay_format(ov, base_st, base_path) : overlay_load(ov, base_st, err, errlen);
	if (ret < 0) {
		if (created)
			snprintf(err, errlen, "cannot be made: %s", strerror(-ret));
		goto fail;
	}
	b->ov = ov;
	pthread_mutex_unlock(&attach_lock);
	return 0;
fail:
	pthread_mutex_unlock(&attach_lock);
	overlay_free(ov);
	return ret;
}

void overlay_close(struct overlay *ov)
{
	if (!ov)
		return;
	overlay_flush(ov);
	overlay_free(ov);
}

uint64_t overlay_allocated_bytes(const struct overlay *ov)
{
	uint64_t g, n = 0;

	for (g = 0; g < ov->ngranules; g++)
		n += live_bit(ov, g);
	return n * OVERLAY_GRANULE_BYTES;
}
