/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * pool: page-aligned memory for O_DIRECT, and iovec helpers over it.
 *
 * A pool is mapped and faulted in once at start and handed out in 64 KiB
 * chunks (one iovec each) from a stack of free chunk indices. A request of
 * n bytes takes ceil(n / 64 KiB) chunks, so even the largest request
 * (32 MiB) is one readv/writev of 512 iovecs.
 *
 * Fair shares: the chunks a client (a connection) holds are counted in its
 * pool_account, so that no client can starve the others by holding buffers
 * it never gives back (a reader that stops reading its replies, a writer
 * that withholds its payload):
 *  - the general pool is everything but a reserve of 1/8 of the chunks; a
 *    client may hold at most its cap of it (half, or one largest request);
 *    clients waiting for it are served oldest first, and while one waits no
 *    newcomer overtakes it;
 *  - the reserve serves "light" clients, those holding no more than an even
 *    split of the reserve among the worker's clients, so a fresh client's
 *    small request is served however the others behave.
 * A waiter that the chunks can satisfy is promised them (pool_next_ready);
 * promised chunks are not handed to anyone else until claimed.
 *
 * Pure code: no io_uring, no event loop, no NBD. A pool is owned by one
 * worker and is not thread-safe; the worker posts the waiters it is handed
 * (engine.h, worker_pool_*).
 */
#ifndef URINGNBD_POOL_H
#define URINGNBD_POOL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define POOL_CHUNK_BYTES (64u * 1024) /* unit of allocation: one iovec */

/* What one client holds. */
struct pool_account {
	uint32_t held;          /* chunks it holds now */
};

/* A client waiting for chunks. */
struct pool_waiter {
	struct pool_account *acct;
	uint32_t chunks;        /* how many it needs */
	uint32_t promised;      /* set aside for it by pool_next_ready, until claimed */
	void *ctx;              /* the owner's (the worker posts it) */
	struct pool_waiter *next;
	int queued;             /* in the waiting list */
};

struct pool {
	uint8_t *base;          /* mmap'd, page-aligned, nchunks * POOL_CHUNK_BYTES */
	uint32_t nchunks;       /* chunks in the pool */
	uint32_t *free_stack;   /* indices of free chunks */
	uint32_t nfree;         /* how many of them are free */
	uint32_t reserve;       /* chunks kept for light clients */
	uint32_t cap;           /* most a client may hold of the general pool */
	uint32_t promised;      /* free chunks promised to waiters */
	struct pool_waiter *waiters; /* oldest first */
	uint32_t nwaiting;      /* how many */
};

/*
 * Maps size_bytes, at least enough that one client can hold max_req chunks
 * beside the reserve. Returns 0 or -errno. The caller owns *p and gives it
 * back with pool_release().
 */
int pool_init(struct pool *p, size_t size_bytes, uint32_t max_req);
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
 * Whether a client holding a->held may take need more chunks now, among
 * nclients clients (itself included), without overtaking a waiter.
 */
int pool_may_take(const struct pool *p, const struct pool_account *a, uint32_t need,
		  unsigned nclients);
/* Queues pw (acct and chunks set) at the tail. */
void pool_wait(struct pool *p, struct pool_waiter *pw);
/* Takes pw out of the queue, if it is in it. */
void pool_unwait(struct pool *p, struct pool_waiter *pw);
/*
 * The next queued waiter whose chunks are free and within its share, taken
 * out of the queue with its chunks promised; NULL if none. Waiters stuck on
 * their own cap do not hold up those behind them.
 */
struct pool_waiter *pool_next_ready(struct pool *p, unsigned nclients);
/* The waiter's promise ends (it takes its chunks now, or gives up). */
void pool_claim(struct pool *p, struct pool_waiter *pw);

/*
 * dst[] covers bytes [off, off + len) of src[0..nsrc) (which has them all);
 * returns dst's count, at most nsrc. Nothing is copied.
 */
unsigned iov_slice(const struct iovec *src, unsigned nsrc, size_t off, size_t len,
		   struct iovec *dst);
/* Copies len bytes from buf to byte offset off of the iovecs. */
void iov_copy_in(const struct iovec *iov, unsigned n, size_t off, const void *buf, size_t len);
/* Zeroes len bytes from byte offset off of the iovecs. */
void iov_zero(const struct iovec *iov, unsigned n, size_t off, size_t len);

#endif
