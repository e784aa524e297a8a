// SPDX-License-Identifier: BSD-3-Clause
/*
 * The buffer pool and iovec helpers (see pool.h). Chunks are handed out
 * lowest index first, so consecutive gets tend to be contiguous.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "pool.h"

int pool_init(struct pool *p, size_t size_bytes, uint32_t min_chunks)
{
	uint32_t i;

	p->nchunks = (uint32_t)(size_bytes / POOL_CHUNK_BYTES);
	if (p->nchunks < min_chunks)
		p->nchunks = min_chunks;
	p->base = mmap(NULL, (size_t)p->nchunks * POOL_CHUNK_BYTES, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (p->base == MAP_FAILED)
		return -errno;
	p->free_stack = calloc(p->nchunks, sizeof(*p->free_stack));
	if (!p->free_stack) {
		munmap(p->base, (size_t)p->nchunks * POOL_CHUNK_BYTES);
		return -ENOMEM;
	}
	/* Lowest index on top, so consecutive gets tend to be contiguous. */
	for (i = 0; i < p->nchunks; i++)
		p->free_stack[i] = p->nchunks - 1 - i;
	p->nfree = p->nchunks;
	return 0;
}

void pool_release(struct pool *p)
{
	if (p->base && p->base != MAP_FAILED)
		munmap(p->base, (size_t)p->nchunks * POOL_CHUNK_BYTES);
	free(p->free_stack);
	p->base = NULL;
	p->free_stack = NULL;
}

int pool_get(struct pool *p, uint64_t len_bytes, struct iovec *iov)
{
	uint32_t n = pool_chunks_for(len_bytes), i;

	if (n > p->nfree)
		return -ENOBUFS;
	for (i = 0; i < n; i++) {
		uint32_t idx = p->free_stack[--p->nfree];

		iov[i].iov_base = p->base + (size_t)idx * POOL_CHUNK_BYTES;
		iov[i].iov_len = POOL_CHUNK_BYTES;
	}
	if (n && len_bytes % POOL_CHUNK_BYTES)
		iov[n - 1].iov_len = len_bytes % POOL_CHUNK_BYTES;
	return (int)n;
}

void pool_put(struct pool *p, uint32_t n, const struct iovec *iov)
{
	uint32_t i;

	for (i = n; i-- > 0;) {
		size_t off = (size_t)((uint8_t *)iov[i].iov_base - p->base);

		assert(off % POOL_CHUNK_BYTES == 0 && off / POOL_CHUNK_BYTES < p->nchunks);
		assert(p->nfree < p->nchunks);
		p->free_stack[p->nfree++] = (uint32_t)(off / POOL_CHUNK_BYTES);
	}
}

unsigned iov_slice(const struct iovec *src, unsigned nsrc, size_t off, size_t len,
		   struct iovec *dst)
{
	unsigned i = 0, n = 0;

	while (i < nsrc && off >= src[i].iov_len) {
		off -= src[i].iov_len;
		i++;
	}
	for (; i < nsrc && len; i++) {
		size_t take = src[i].iov_len - off;

		if (take > len)
			take = len;
		dst[n].iov_base = (uint8_t *)src[i].iov_base + off;
		dst[n].iov_len = take;
		n++;
		len -= take;
		off = 0;
	}
	assert(len == 0);
	return n;
}

void iov_copy_in(const struct iovec *iov, unsigned n, size_t off, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	unsigned i = 0;

	while (i < n && off >= iov[i].iov_len) {
		off -= iov[i].iov_len;
		i++;
	}
	for (; i < n && len; i++) {
		size_t take = iov[i].iov_len - off;

		if (take > len)
			take = len;
		memcpy((uint8_t *)iov[i].iov_base + off, p, take);
		p += take;
		len -= take;
		off = 0;
	}
	assert(len == 0);
}
