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

int pool_init(struct pool *p, size_t size_bytes, uint32_t max_req)
{
	/* nchunks - nchunks / 8 >= max_req: one largest request fits beside the reserve. */
	uint32_t min_chunks = max_req + max_req / 7 + 1, i;

	memset(p, 0, sizeof(*p));
	p->nchunks = (uint32_t)(size_bytes / POOL_CHUNK_BYTES);
	if (p->nchunks < min_chunks)
		p->nchunks = min_chunks;
	p->reserve = p->nchunks / 8;
	p->cap = (p->nchunks - p->reserve) / 2;
	if (p->cap < max_req)
		p->cap = max_req;
	p->base = mmap(NULL, (size_t)p->nchunks * POOL_CHUNK_BYTES, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0); /* faulted in by the daemon, off its path */
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

/* Light: within an even split of the reserve among the clients. */
static int pool_light(const struct pool *p, const struct pool_account *a, uint32_t need,
		      unsigned nclients)
{
	uint32_t share = p->reserve / (nclients ? nclients : 1);

	return a->held + need <= (share ? share : 1);
}

static int pool_fits_general(const struct pool *p, const struct pool_account *a,
			     uint32_t need, uint32_t avail)
{
	return avail >= need + p->reserve && a->held + need <= p->cap;
}

/* A queued waiter that holds the line for the general pool. */
static int pool_in_line(const struct pool *p, const struct pool_waiter *pw)
{
	return pw->acct->held + pw->chunks <= p->cap;
}

int pool_may_take(const struct pool *p, const struct pool_account *a, uint32_t need,
		  unsigned nclients)
{
	uint32_t avail = p->nfree - p->promised;
	const struct pool_waiter *pw;

	if (avail >= need && pool_light(p, a, need, nclients))
		return 1;
	for (pw = p->waiters; pw; pw = pw->next)
		if (pool_in_line(p, pw))
			return 0;
	return pool_fits_general(p, a, need, avail);
}

void pool_wait(struct pool *p, struct pool_waiter *pw)
{
	struct pool_waiter **pp = &p->waiters;

	assert(!pw->queued && !pw->promised);
	while (*pp)
		pp = &(*pp)->next;
	pw->next = NULL;
	*pp = pw;
	pw->queued = 1;
	p->nwaiting++;
}

void pool_unwait(struct pool *p, struct pool_waiter *pw)
{
	struct pool_waiter **pp;

	if (!pw->queued)
		return;
	for (pp = &p->waiters; *pp != pw; pp = &(*pp)->next)
		assert(*pp);
	*pp = pw->next;
	pw->next = NULL;
	pw->queued = 0;
	p->nwaiting--;
}

struct pool_waiter *pool_next_ready(struct pool *p, unsigned nclients)
{
	uint32_t avail = p->nfree - p->promised;
	struct pool_waiter *pw;
	int line_held = 0;

	for (pw = p->waiters; pw; pw = pw->next) {
		int ok = avail >= pw->chunks && pool_light(p, pw->acct, pw->chunks, nclients);

		if (!ok && !line_held && pool_in_line(p, pw)) {
			ok = pool_fits_general(p, pw->acct, pw->chunks, avail);
			line_held = !ok; /* the oldest in line keeps its turn */
		}
		if (ok) {
			pool_unwait(p, pw);
			pw->promised = pw->chunks;
			p->promised += pw->chunks;
			return pw;
		}
	}
	return NULL;
}

void pool_claim(struct pool *p, struct pool_waiter *pw)
{
	assert(p->promised >= pw->promised);
	p->promised -= pw->promised;
	pw->promised = 0;
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

/* Writes len bytes from buf (zeroes if buf is NULL) at byte offset off of the iovecs. */
static void iov_put(const struct iovec *iov, unsigned n, size_t off, const void *buf, size_t len)
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
		if (p) {
			memcpy((uint8_t *)iov[i].iov_base + off, p, take);
			p += take;
		} else {
			memset((uint8_t *)iov[i].iov_base + off, 0, take);
		}
		len -= take;
		off = 0;
	}
	assert(len == 0);
}

void iov_copy_in(const struct iovec *iov, unsigned n, size_t off, const void *buf, size_t len)
{
	iov_put(iov, n, off, buf, len);
}

void iov_zero(const struct iovec *iov, unsigned n, size_t off, size_t len)
{
	iov_put(iov, n, off, NULL, len);
}

