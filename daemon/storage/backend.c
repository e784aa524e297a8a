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
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/uio.h>

#include "storage.h"

/* Asked in this order: the first that claims a spec serves it. */
static const struct backend_ops *const backends[] = {
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
	return S_ISREG(st->st_mode);
}

static size_t file_extents(const struct export *e, uint64_t off, uint64_t len, bool one,
			   struct proto_extent *ext, size_t max)
{
	return export_file_extents(e->fd, 0, off, len, ext, 0, one ? 1 : max);
}

const struct backend_ops backend_file = {
	.kind = "file",
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
	return S_ISBLK(st->st_mode);
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
	.claims = blockdev_claims,
	.read = file_read,
	.write = file_write,
	.flush = file_flush,
	.trim = file_trim,
	.zero = file_zero,
	.writes_cached = true,
	.extents = blockdev_extents,
};
