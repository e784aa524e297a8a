// SPDX-License-Identifier: BSD-3-Clause
/*
 * The overlay backend: a read-only base (e->fd) under a copy-on-write
 * overlay file (overlay.c has its format). Reads and writes complete in
 * the worker's ring: a write goes to the overlay, a read takes the run of
 * granules that live in one layer (the next run is the short transfer's
 * rest). FLUSH (data, then the map) and WRITE_ZEROES block, so they run on
 * an offload thread. TRIM does nothing: it is advisory, and the base
 * cannot shrink. FUA is a flush after the write, so the map that says
 * where the data is becomes durable with it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "storage.h"

static void overlay_close_export(struct export *e);

/* Cuts iov[0..*niov) to its first len bytes. */
static void iov_trim(struct iovec *iov, unsigned *niov, uint64_t len)
{
	unsigned i;

	for (i = 0; i < *niov && len; i++) {
		if (iov[i].iov_len >= len) {
			iov[i].iov_len = len;
			*niov = i + 1;
			return;
		}
		len -= iov[i].iov_len;
	}
}

static void overlay_read(struct backend_io *io)
{
	const struct export *e = io->e;
	const struct overlay *ov = e->ov;
	struct io_uring_sqe *sqe = worker_sqe(io->w, io->op);
	bool in_ov = true;
	uint64_t run = overlay_run(ov, io->off, io->len, &in_ov);

	int fd = in_ov ? ov->fd : e->fd;
	uint64_t off = in_ov ? ov->data_off + io->off : io->off;

	if (run < io->len)
		iov_trim(io->iov, &io->niov, run);
	/* One iovec goes in the SQE itself: the caller's may be gone by the submit. */
	if (io->niov == 1)
		io_uring_prep_read(sqe, fd, io->iov[0].iov_base, (unsigned)io->iov[0].iov_len, off);
	else
		io_uring_prep_readv(sqe, fd, io->iov, io->niov, off);
}

static void overlay_write(struct backend_io *io)
{
	const struct overlay *ov = io->e->ov;
	struct io_uring_sqe *sqe = worker_sqe(io->w, io->op);

	if (io->niov == 1)
		io_uring_prep_write(sqe, ov->fd, io->iov[0].iov_base, (unsigned)io->iov[0].iov_len,
				    ov->data_off + io->off);
	else
		io_uring_prep_writev(sqe, ov->fd, io->iov, io->niov, ov->data_off + io->off);
}

static void overlay_flush_job(struct offload_job *j)
{
	struct backend_io *io = container_of(j, struct backend_io, job);

	j->res = overlay_flush(io->e->ov);
}

static void overlay_zero_job(struct offload_job *j)
{
	struct backend_io *io = container_of(j, struct backend_io, job);

	j->res = overlay_zero(io->e->ov, io->e->fd, io->off, io->len);
}

static void overlay_offload(struct backend_io *io, void (*fn)(struct offload_job *j))
{
	io->job = (struct offload_job){ .fn = fn, .w = io->w, .op = io->op };
	offload_queue(&io->job);
}

static void overlay_flush_io(struct backend_io *io)
{
	overlay_offload(io, overlay_flush_job);
}

static void overlay_zero_io(struct backend_io *io)
{
	overlay_offload(io, overlay_zero_job);
}

static void overlay_trim(struct backend_io *io)
{
	worker_post(io->w, io->op, 0);
}

static void overlay_written(const struct export *e, uint64_t off, uint64_t len)
{
	/* Every granule of the span is whole in the overlay now. */
	overlay_mark(e->ov, off, len);
}

/* Over a local file or block device (their backend opens it, read-only). */
static bool overlay_claims(const struct export_spec *spec, const struct stat *st)
{
	return spec->overlay && (backend_file.claims(spec, st) || backend_blockdev.claims(spec, st));
}

static const struct backend_ops *overlay_base(const struct export *e)
{
	return e->is_blockdev ? &backend_blockdev : &backend_file;
}

static int overlay_open(struct export *e, const struct export_spec *spec, struct stat *st)
{
	const struct backend_ops *base = S_ISBLK(st->st_mode) ? &backend_blockdev : &backend_file;

	if (base->open(e, spec, st) < 0)
		return -1;
	if (export_overlay_open(e, spec, st) < 0) {
		overlay_close_export(e);
		return -1;
	}
	/* The base is read-only: holes may be anywhere in the overlay; zeroing is the map's. */
	atomic_store(&e->may_have_holes, true);
	e->zeroes_fast = true;
	return 0;
}

static void overlay_close_export(struct export *e)
{
	backing_put(e->ov_backing);
	free(e->overlay_src);
	overlay_base(e)->close(e);
}

static bool overlay_changed(const struct export *e, char *why, size_t len)
{
	return overlay_base(e)->changed(e, why, len);
}

/* The base is never written: the overlay's data and map are what a flush makes durable. */
static int overlay_sync(const struct export *e, const char **what)
{
	*what = e->ov->path;
	return overlay_flush(e->ov);
}

/* What an overlay acknowledged must be in its map on disk for the next process. */
static int overlay_persist(const struct export *e)
{
	return overlay_flush(e->ov);
}

static size_t overlay_extents_of(const struct export *e, uint64_t off, uint64_t len, bool one,
				 struct proto_extent *ext, size_t max)
{
	return overlay_extents(e->ov, e->fd, off, len, one, ext, max);
}

static uint32_t overlay_align(const struct export *e, uint64_t off, uint64_t len, uint32_t align)
{
	return overlay_write_align(e->ov, off, len, align);
}

/* The page cache holds the base's pages; an overlay's own are read around it. */
static bool overlay_cacheable(const struct export *e, uint64_t off)
{
	return !overlay_allocated(e->ov, off);
}

const struct backend_ops backend_overlay = {
	.kind = "overlay",
	.open = overlay_open,
	.close = overlay_close_export,
	.changed = overlay_changed,
	.sync = overlay_sync,
	.persist = overlay_persist,
	.claims = overlay_claims,
	.read = overlay_read,
	.write = overlay_write,
	.flush = overlay_flush_io,
	.trim = overlay_trim,
	.zero = overlay_zero_io,
	.written = overlay_written,
	.fua_by_flush = true,
	.writes_cached = false, /* they go to the overlay; the cache holds the base's pages */
	.zero_granule = OVERLAY_GRANULE_BYTES,
	.extents = overlay_extents_of,
	.write_align = overlay_align,
	.cacheable = overlay_cacheable,
};

/*
 * The overlay of an export over base st (e->fd, read-only): its file,
 * shared state, lock manager and alignment. Logs and returns -1 on error.
 */
int export_overlay_open(struct export *e, const struct export_spec *spec,
			       const struct stat *st)
{
	struct stat ost;
	char err[512] = "";
	bool created;
	int fd, ret;
	uint32_t align;

	if (spec->readonly) {
		log_error("export \"%s\": readonly and overlay together: the overlay would never "
			  "be written", spec->name);
		return -1;
	}
	if (e->size_bytes % OVERLAY_GRANULE_BYTES) {
		log_error("export \"%s\": overlay: the base's size %llu is not a multiple of %u",
			  spec->name, (unsigned long long)e->size_bytes, OVERLAY_GRANULE_BYTES);
		return -1;
	}
	ret = overlay_open_file(spec->overlay, &created, &fd);
	if (ret < 0) {
		log_error("export \"%s\": overlay \"%s\": %s%s", spec->name, spec->overlay,
			  strerror(-ret), ret == -EINVAL ? " (no O_DIRECT there?)" : "");
		return -1;
	}
	if (fstat(fd, &ost) < 0 || !S_ISREG(ost.st_mode) ||
	    (ost.st_dev == st->st_dev && ost.st_ino == st->st_ino)) {
		log_error("export \"%s\": overlay \"%s\": not a regular file apart from the base",
			  spec->name, spec->overlay);
		close(fd);
		return -1;
	}
	align = export_probe_align(fd, false);
	e->ov_backing = backing_get(&ost, spec->overlay);
	e->overlay_src = strdup(spec->overlay);
	if (!e->ov_backing || !e->overlay_src) {
		log_error("export \"%s\": out of memory", spec->name);
		close(fd);
		return -1;
	}
	ret = overlay_attach(e->ov_backing, fd, created, spec->overlay, st, spec->path,
			     e->size_bytes, err, sizeof(err));
	if (ret < 0) {
		log_error("export \"%s\": overlay \"%s\": %s", spec->name, spec->overlay, err);
		return -1;
	}
	e->ov = e->ov_backing->ov;
	e->locks = e->ov_backing->locks;
	if (align > e->align_bytes)
		e->align_bytes = align;
	if (e->align_bytes > EXPORT_MAX_ALIGN_BYTES) {
		log_error("export \"%s\": overlay alignment %u too large", spec->name, align);
		return -1;
	}
	e->direct_end = e->size_bytes;
	log_info("export \"%s\": overlay \"%s\" (%s), %llu bytes of %llu in it",
		 spec->name, spec->overlay, created ? "new" : "existing",
		 (unsigned long long)overlay_allocated_bytes(e->ov), (unsigned long long)e->size_bytes);
	return 0;
}
