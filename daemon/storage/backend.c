// SPDX-License-Identifier: BSD-3-Clause
/*
 * The backends' registry, and the two kinds that are one file on the
 * server's own disks: a plain file and a block device (storage.h has the
 * table's rules). Both complete every queued call in the worker's ring:
 * O_DIRECT reads and writes (the partial last block buffered), fdatasync,
 * and fallocate for TRIM and WRITE_ZEROES. Their difference is in
 * base:allocation: a file's holes come from SEEK_DATA/SEEK_HOLE, a device
 * reports all of itself allocated.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <linux/fs.h>

#include "storage.h"

/* Direct-I/O offset alignment: statx, else the logical block size, else 4096. */
uint32_t export_probe_align(int fd, bool is_blockdev)
{
	struct statx stx;
	int ssz;

	if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
	    (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align)
		return stx.stx_dio_offset_align;
	if (is_blockdev && ioctl(fd, BLKSSZGET, &ssz) == 0 && ssz > 0)
		return (uint32_t)ssz;
	return 4096;
}

/*
 * A queue attribute of the disk under the file (or of the device itself),
 * from sysfs: the device's queue, or its parent's for a partition. Returns
 * the number it holds, or dflt if there is none.
 */
uint64_t export_queue_attr(const struct stat *st, const char *attr, uint64_t dflt)
{
	dev_t d = S_ISBLK(st->st_mode) ? st->st_rdev : st->st_dev;
	static const char *const where[] = { "queue", "../queue" };
	char path[160], text[32];
	size_t i;

	for (i = 0; i < 2; i++) {
		ssize_t n;
		int fd;

		snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/%s/%s", major(d), minor(d),
			 where[i], attr);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		n = read(fd, text, sizeof(text) - 1);
		close(fd);
		if (n <= 0)
			return dflt;
		text[n] = '\0';
		return strtoull(text, NULL, 10);
	}
	return dflt;
}

/* One aligned read proves the filesystem really does direct I/O. */
int export_probe_direct(int fd, uint32_t align, uint64_t size)
{
	void *buf;
	ssize_t n;
	int err = 0;

	if (size == 0)
		return 0;
	buf = mmap(NULL, align < 4096 ? 4096 : align, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		return -errno;
	n = pread(fd, buf, align, 0);
	if (n < 0)
		err = -errno;
	munmap(buf, align < 4096 ? 4096 : align);
	return err;
}

size_t export_file_extents(int fd, uint64_t shift, uint64_t off, uint64_t len,
			   struct proto_extent *ext, size_t n, size_t max)
{
	uint64_t pos = off, end = off + len;

	while (pos < end && n < max) {
		off_t data = lseek(fd, (off_t)(pos + shift), SEEK_DATA), hole;
		uint64_t stop;
		uint32_t flags;

		if (data < 0) {
			/* ENXIO: only a hole from here to the end; else say "data". */
			stop = end;
			flags = errno == ENXIO ? NBD_STATE_HOLE | NBD_STATE_ZERO : 0;
		} else if ((uint64_t)data - shift > pos) {
			stop = (uint64_t)data - shift < end ? (uint64_t)data - shift : end;
			flags = NBD_STATE_HOLE | NBD_STATE_ZERO;
		} else {
			hole = lseek(fd, (off_t)(pos + shift), SEEK_HOLE);
			stop = hole < 0 || (uint64_t)hole - shift > end ? end : (uint64_t)hole - shift;
			flags = 0;
		}
		/* Equal neighbours merge (an overlay's layers meet). */
		if (n && ext[n - 1].flags == flags)
			ext[n - 1].len_bytes += stop - pos;
		else
			ext[n++] = (struct proto_extent){ .len_bytes = stop - pos, .flags = flags };
		pos = stop;
	}
	return n;
}

/* Asked in this order: the first that claims a spec serves it. */
static const struct backend_ops *const backends[] = {
	&backend_rbd,     /* rbd:POOL/IMAGE[@SNAP], before any local file of that name */
	&backend_overlay, /* any base with an overlay over it */
	&backend_blockdev,
	&backend_file,
};

const struct backend_ops *backend_for(const struct export_spec *spec, const struct stat *st)
{
	size_t i;

	for (i = 0; i < sizeof(backends) / sizeof(backends[0]); i++)
		if (backends[i]->claims(spec, st))
			return backends[i];
	return NULL;
}

/*
 * Opens a local file or block device for an export: O_DIRECT (and a
 * buffered descriptor for the partial last block and written zeroes), its
 * size, the alignment direct I/O needs there, its backing record, and
 * what the disk under it can do. st: stat() of the path, then fstat() of
 * what was opened. -1 (logged, nothing left open) on error.
 */
static int local_open(struct export *e, const struct export_spec *spec, struct stat *st)
{
	/* An overlay export never writes its base. */
	int flags = (spec->readonly || spec->overlay ? O_RDONLY : O_RDWR) | O_DIRECT | O_CLOEXEC;
	int err;

	e->fd = open(spec->path, flags);
	if (e->fd < 0) {
		err = errno;
		if (err == EINVAL)
			log_error("open \"%s\": the filesystem does not support O_DIRECT",
				  spec->path);
		else
			log_error("open \"%s\": %s", spec->path, strerror(err));
		return -1;
	}
	if (fstat(e->fd, st) < 0) {
		err = errno;
		log_error("stat \"%s\": %s", spec->path, strerror(err));
		goto out_close_fd;
	}
	if (S_ISBLK(st->st_mode)) {
		e->is_blockdev = true;
		if (ioctl(e->fd, BLKGETSIZE64, &e->size_bytes) < 0) {
			err = errno;
			log_error("size of \"%s\": %s", spec->path, strerror(err));
			goto out_close_fd;
		}
	} else if (S_ISREG(st->st_mode)) {
		e->size_bytes = (uint64_t)st->st_size;
	} else {
		log_error("export \"%s\": not a regular file or block device", spec->path);
		goto out_close_fd;
	}
	e->align_bytes = export_probe_align(e->fd, e->is_blockdev);
	if (e->align_bytes > EXPORT_MAX_ALIGN_BYTES || (e->align_bytes & (e->align_bytes - 1))) {
		log_error("export \"%s\": direct-I/O alignment %u is not a power of two up to %u",
			  spec->path, e->align_bytes, EXPORT_MAX_ALIGN_BYTES);
		goto out_close_fd;
	}
	e->direct_end = e->size_bytes / e->align_bytes * e->align_bytes;
	err = -export_probe_direct(e->fd, e->align_bytes, e->size_bytes);
	if (err) {
		if (err == EINVAL)
			log_error("read \"%s\": the filesystem does not support O_DIRECT",
				  spec->path);
		else
			log_error("read \"%s\": %s", spec->path, strerror(err));
		goto out_close_fd;
	}

	/*
	 * Without O_DIRECT: the partial last block, if any, and writing zeroes
	 * where the filesystem cannot allocate them.
	 */
	e->fd_buffered = open(spec->path, (flags & ~O_DIRECT));
	if (e->fd_buffered < 0) {
		err = errno;
		log_error("open \"%s\": %s", spec->path, strerror(err));
		goto out_close_fd;
	}
	e->backing = backing_get(st, spec->path);
	if (!e->backing) {
		log_error("export \"%s\": out of memory", spec->path);
		goto out_close_fd;
	}
	e->locks = e->backing->locks;
	/* Fully allocated files have no holes to find until something punches one. */
	atomic_init(&e->may_have_holes, !e->is_blockdev &&
		    (uint64_t)st->st_blocks * 512 < e->size_bytes);
	e->rotational = export_queue_attr(st, "rotational", 0) == 1;
	/* A device without a zeroing command would write zeroes: FAST_ZERO says no. */
	e->zeroes_fast = !e->is_blockdev || export_queue_attr(st, "write_zeroes_max_bytes", 0) > 0;
	return 0;

out_close_fd:
	if (e->fd_buffered >= 0)
		close(e->fd_buffered);
	close(e->fd);
	e->fd = e->fd_buffered = -1;
	return -1;
}

static void local_close(struct export *e)
{
	close(e->fd);
	close(e->fd_buffered);
	backing_put(e->backing);
}

/* Whether the path now names another file, or the file has another size. */
static bool local_changed(const struct export *e, char *why, size_t len)
{
	struct stat st;
	uint64_t size;

	if (stat(e->path, &st) < 0) {
		/* Gone: keep serving the open file; nothing better to offer. */
		return false;
	}
	if (e->is_blockdev ? !S_ISBLK(st.st_mode) || st.st_rdev != e->backing->rdev
			   : !S_ISREG(st.st_mode) || st.st_dev != e->backing->dev ||
			     st.st_ino != e->backing->ino) {
		if (why)
			snprintf(why, len, "replaced by another file");
		return true;
	}
	if (e->is_blockdev) {
		if (ioctl(e->fd, BLKGETSIZE64, &size) < 0)
			return false;
	} else {
		size = (uint64_t)st.st_size;
	}
	if (size != e->size_bytes) {
		if (why)
			snprintf(why, len, "size %" PRIu64 " -> %" PRIu64 " bytes", e->size_bytes, size);
		return true;
	}
	return false;
}

static int local_sync(const struct export *e, const char **what)
{
	*what = e->path;
	return fdatasync(e->fd) < 0 ? -errno : 0;
}

static int file_fd(const struct backend_io *io)
{
	return io->flags & BACKEND_BUFFERED ? io->e->fd_buffered : io->e->fd;
}

static void file_read(struct backend_io *io)
{
	struct io_uring_sqe *sqe = worker_sqe(io->w, io->op);

	if (io->niov == 1)
		io_uring_prep_read(sqe, file_fd(io), io->iov[0].iov_base,
				   (unsigned)io->iov[0].iov_len, io->off);
	else
		io_uring_prep_readv(sqe, file_fd(io), io->iov, io->niov, io->off);
}

static void file_write(struct backend_io *io)
{
	struct io_uring_sqe *sqe = worker_sqe(io->w, io->op);
	int rwf = io->flags & BACKEND_FUA ? RWF_DSYNC : 0;

	if (io->niov == 1) {
		io_uring_prep_write(sqe, file_fd(io), io->iov[0].iov_base,
				    (unsigned)io->iov[0].iov_len, io->off);
		sqe->rw_flags = rwf;
	} else {
		io_uring_prep_writev2(sqe, file_fd(io), io->iov, io->niov, io->off, rwf);
	}
}

static void file_flush(struct backend_io *io)
{
	io_uring_prep_fsync(worker_sqe(io->w, io->op), io->e->fd, IORING_FSYNC_DATASYNC);
}

static void file_trim(struct backend_io *io)
{
	io_uring_prep_fallocate(worker_sqe(io->w, io->op), io->e->fd,
				FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)io->off,
				(off_t)io->len);
}

static void file_zero(struct backend_io *io)
{
	io_uring_prep_fallocate(worker_sqe(io->w, io->op), io->e->fd, io->mode, (off_t)io->off,
				(off_t)io->len);
}

static bool file_claims(const struct export_spec *spec, const struct stat *st)
{
	(void)spec;
	return st && S_ISREG(st->st_mode);
}

static size_t file_extents(const struct export *e, uint64_t off, uint64_t len, bool one,
			   struct proto_extent *ext, size_t max)
{
	return export_file_extents(e->fd, 0, off, len, ext, 0, one ? 1 : max);
}

const struct backend_ops backend_file = {
	.kind = "file",
	.open = local_open,
	.close = local_close,
	.changed = local_changed,
	.sync = local_sync,
	.claims = file_claims,
	.read = file_read,
	.write = file_write,
	.flush = file_flush,
	.trim = file_trim,
	.zero = file_zero,
	.writes_cached = true,
	.extents = file_extents,
};

static bool blockdev_claims(const struct export_spec *spec, const struct stat *st)
{
	(void)spec;
	return st && S_ISBLK(st->st_mode);
}

/* A block device reports everything allocated. */
static size_t blockdev_extents(const struct export *e, uint64_t off, uint64_t len, bool one,
			       struct proto_extent *ext, size_t max)
{
	(void)e;
	(void)off;
	(void)one;
	(void)max;
	ext[0] = (struct proto_extent){ .len_bytes = len, .flags = 0 };
	return 1;
}

const struct backend_ops backend_blockdev = {
	.kind = "block device",
	.open = local_open,
	.close = local_close,
	.changed = local_changed,
	.sync = local_sync,
	.claims = blockdev_claims,
	.read = file_read,
	.write = file_write,
	.flush = file_flush,
	.trim = file_trim,
	.zero = file_zero,
	.writes_cached = true,
	.extents = blockdev_extents,
};
