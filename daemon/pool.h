/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * pool: page-aligned memory for O_DIRECT, and iovec helpers over it.
 *
 * A pool is mapped and faulted in once at start and handed out in 64 KiB
 * chunks (one iovec each) from a stack of free chunk indices. A request of
 * n bytes takes ceil(n / 64 KiB) chunks, so even the largest request
 * (32 MiB) is one readv/writev of 512 iovecs.
 *
 * Pure code: no io_uring, no event loop, no NBD. A pool is owned by one
 * worker and is not thread-safe. Who waits for chunks, and in what order,
 * is the worker's business (worker_pool_wait in daemon.h).
 */
#ifndef URINGNBD_POOL_H
#define URINGNBD_POOL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define POOL_CHUNK_BYTES (64u * 1024) /* unit of allocation: one iovec */

struct pool {
	uint8_t *base;          /* mmap'd, page-aligned, nchunks * POOL_CHUNK_BYTES */
	uint32_t nchunks;       /* chunks in the pool */
	uint32_t *free_stack;   /* indices of free chunks */
	uint32_t nfree;         /* how many of them are free */
};

/*
 * Maps size_bytes (at least min_chunks chunks). Returns 0 or -errno. The
 * caller owns *p and gives it back with pool_release().
 */
int pool_init(struct pool *p, size_t size_bytes, uint32_t min_chunks);
void pool_release(struct pool *p);

static inline uint32_t pool_chunks_for(uint64_t len_bytes)
{
	return (uint32_t)((len_bytes + POOL_CHUNK_BYTES - 1) / POOL_CHUNK_BYTES);
}

/*
 * Takes pool_chunks_for(len_bytes) chunks into iov[] (which has room for
 * them): each a whole chunk but the last, trimmed to what is left. Returns
 * the number of chunks, or -ENOBUFS with nothing taken. The chunks are the
 * caller's until pool_put().
 */
int pool_get(struct pool *p, uint64_t len_bytes, struct iovec *iov);
/* Gives back n chunks that pool_get() handed out (iov_base is all it reads). */
void pool_put(struct pool *p, uint32_t n, const struct iovec *iov);

/*
 * dst[] covers bytes [off, off + len) of src[0..nsrc) (which has them all);
 * returns dst's count, at most nsrc. Nothing is copied.
 */
unsigned iov_slice(const struct iovec *src, unsigned nsrc, size_t off, size_t len,
		   struct iovec *dst);
/* Copies len bytes from buf to byte offset off of the iovecs. */
void iov_copy_in(const struct iovec *iov, unsigned n, size_t off, const void *buf, size_t len);

#endif
