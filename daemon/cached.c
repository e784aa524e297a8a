/*
 * Reads through the page cache (exports with cache=always or auto).
 *
 * A cached READ (or CACHE prefetch) holds its shared range lock like any
 * read, and walks the 4 KiB pages of its span CACHE_WINDOW at a time. For
 * each page: a hit is copied into the request's buffer; a miss gets one
 * O_DIRECT read into the new placeholder, copied once it lands; a wait
 * parks the slot until the other request's fill ends and then looks up
 * again; FULL reads the page straight into the buffer. When a window has
 * nothing in flight the next one starts; after the last, the request
 * finishes like a direct read.
 *
 * Coherence is kept by the writers: every WRITE, TRIM and WRITE_ZEROES of
 * the file, through any export, calls cache_invalidate() after its I/O and
 * before it unlocks (req_finish), so a fill that read the file before a
 * write landed is dropped rather than installed.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"

#define CACHE_PREFETCH_MAX_BYTES (32u << 20) /* NBD_CMD_CACHE is advisory beyond this */

static struct cache *srv_cache(const struct req *q)
{
	return q->c->w->srv->cache;
}

static uint64_t cache_id(const struct req *q)
{
	return q->c->exp->file_locks->cache_id;
}

static void cached_window(struct req *q);

/* One outcome of the window is in: the next window when none is left. */
static void slot_done(struct req *q)
{
	assert(q->cache_pending > 0);
	if (--q->cache_pending)
		return;
	if (q->c->state == CONN_CLOSING)
		req_finish(q, NBD_EIO);
	else
		cached_window(q);
}

static void slot_wake(struct cache_waiter *w)
{
	struct cache_slot *s = (struct cache_slot *)((char *)w - offsetof(struct cache_slot, w));

	worker_post_slot(s); /* any thread: the request resumes on its own worker */
}

/* Reads page s->index into dst (a placeholder, or the request's buffer). */
static void slot_prep_read(struct cache_slot *s, void *dst)
{
	struct req *q = s->q;
	struct io_uring_sqe *sqe = ring_get_sqe(q->c, s, OP_CACHE_FILL);

	io_uring_prep_read(sqe, q->c->exp->fd, dst, CACHE_PAGE_BYTES, s->index * CACHE_PAGE_BYTES);
	q->cache_pending++;
}

/* Looks page s up; whatever cannot be answered now adds to cache_pending. */
static void slot_lookup(struct cache_slot *s)
{
	struct req *q = s->q;
	struct cache *cache = srv_cache(q);
	bool read = q->r.type == NBD_CMD_READ;
	struct cache_page *p;

	switch (cache_lookup(cache, cache_id(q), s->index, &s->w, &p)) {
	case CACHE_HIT:
		if (read)
			iov_copy_in(q->iov, q->niov, s->buf_off, cache_page_data(p), CACHE_PAGE_BYTES);
		cache_unpin(cache, p);
		break;
	case CACHE_MISS:
		s->p = p;
		slot_prep_read(s, cache_page_data(p));
		break;
	case CACHE_WAIT:
		q->cache_pending++;
		q->c->sqes++; /* parked: the connection outlives the wait */
		break;
	case CACHE_FULL:
		s->p = NULL;
		if (read) {
			struct iovec v;

			/* A page never straddles a pool chunk: both are page-aligned. */
			iov_slice(q->iov, q->niov, s->buf_off, CACHE_PAGE_BYTES, &v);
			slot_prep_read(s, v.iov_base);
		}
		break;
	}
}

static void cached_window(struct req *q)
{
	uint64_t first = q->io_off / CACHE_PAGE_BYTES;
	unsigned i, n;

	while (q->cache_pending == 0) {
		if (q->cache_next == q->cache_npages || q->nbd_error != NBD_SUCCESS) {
			req_finish(q, q->nbd_error);
			return;
		}
		n = q->cache_npages - q->cache_next;
		if (n > CACHE_WINDOW)
			n = CACHE_WINDOW;
		for (i = 0; i < n; i++) {
			struct cache_slot *s = &q->slots[i];

			s->q = q;
			s->p = NULL;
			s->index = first + q->cache_next + i;
			s->buf_off = (q->cache_next + i) * CACHE_PAGE_BYTES;
			s->w.wake = slot_wake;
			slot_lookup(s);
		}
		q->cache_next += n;
	}
}

void req_cached_start(struct req *q)
{
	uint64_t len = q->io_len;

	if (q->r.type == NBD_CMD_CACHE && len > CACHE_PREFETCH_MAX_BYTES)
		len = CACHE_PREFETCH_MAX_BYTES;
	q->cache_next = 0;
	q->cache_npages = (uint32_t)(len / CACHE_PAGE_BYTES);
	q->cache_pending = 0;
	q->nbd_error = NBD_SUCCESS;
	cached_window(q);
}

void cache_slot_fill_done(struct cache_slot *s, int res)
{
	struct req *q = s->q;
	unsigned delay = q->c->w->srv->test_fill_delay_ms;

	if (res >= 0 && res < (int)CACHE_PAGE_BYTES) {
		/* The end of the file: the rest of the page reads as zeroes. */
		uint8_t *dst = s->p ? cache_page_data(s->p) : NULL;

		if (dst)
			memset(dst + res, 0, CACHE_PAGE_BYTES - (unsigned)res);
		else if (q->r.type == NBD_CMD_READ) {
			struct iovec v;

			iov_slice(q->iov, q->niov, s->buf_off, CACHE_PAGE_BYTES, &v);
			memset((uint8_t *)v.iov_base + res, 0, CACHE_PAGE_BYTES - (unsigned)res);
		}
	}
	if (res < 0 && q->nbd_error == NBD_SUCCESS) {
		log_warn("conn %" PRIu64 ": cache fill at offset %" PRIu64 ": %s", q->c->id,
			 s->index * CACHE_PAGE_BYTES, strerror(-res));
		q->nbd_error = proto_errno_to_nbd(-res);
	}
	if (s->p) {
		/* Tests only: hold the fill open so that a write can overtake it. */
		if (delay)
			usleep(delay * 1000u);
		if (res >= 0 && q->r.type == NBD_CMD_READ)
			iov_copy_in(q->iov, q->niov, s->buf_off, cache_page_data(s->p),
				    CACHE_PAGE_BYTES);
		cache_fill_done(srv_cache(q), s->p, res >= 0);
		s->p = NULL;
	}
	slot_done(q);
}

void cache_slot_resume(struct cache_slot *s)
{
	struct req *q = s->q;

	/* The wait is over: look up again (a hit now, or a new fill). */
	if (q->c->state != CONN_CLOSING && q->nbd_error == NBD_SUCCESS) {
		q->cache_pending--;
		slot_lookup(s);
		q->cache_pending++;
	}
	slot_done(q);
}

int cache_mode_parse(const char *s)
{
	if (!strcmp(s, "none"))
		return CACHE_MODE_NONE;
	if (!strcmp(s, "always"))
		return CACHE_MODE_ALWAYS;
	if (!strcmp(s, "auto"))
		return CACHE_MODE_AUTO;
	return -1;
}

const char *cache_mode_name(int mode)
{
	return mode == CACHE_MODE_ALWAYS ? "always" : mode == CACHE_MODE_AUTO ? "auto" : "none";
}
