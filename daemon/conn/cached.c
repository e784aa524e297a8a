// SPDX-License-Identifier: BSD-3-Clause
/*
 * Reads through the page cache (exports with cache=always or auto).
 *
 * A cached READ (or CACHE prefetch) holds its shared range lock like any
 * read, and walks the 4 KiB pages of its span CACHE_WINDOW at a time, one
 * page_slot each. For each page: a hit is copied into the request's buffer;
 * a miss gets one O_DIRECT read into the new placeholder, copied once it
 * lands; a wait parks the slot until the other request's fill ends (the end
 * is posted to this worker) and then looks up again; FULL reads the page
 * straight into the buffer. When a window has nothing in flight the next
 * one starts; after the last, the request finishes like a direct read. A
 * prefetch copies nothing and has no buffer.
 *
 * On an overlay export the cache holds the base's pages (keyed by the
 * base's file, so every overlay of one base shares them); pages that live
 * in the overlay are read around it, and overlay writes invalidate
 * nothing, since the base never changes.
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

#include "conn_int.h"

static uint64_t file_cache_id(const struct req *q)
{
	return q->c->exp->backing->cache_id;
}

static void cached_window(struct req *q);
static void slot_fill_done(struct conn_op *o, int res);
static void slot_resume(struct conn_op *o, int res);

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

/* Any thread: the fill it waited for has ended; resume on its own worker. */
static void slot_wake(struct cache_waiter *w)
{
	struct page_slot *s = container_of(w, struct page_slot, w);

	worker_post(s->q->c->w, &s->op.op, 0);
}

/* Reads page s->index into dst (a placeholder, or the request's buffer). */
static void slot_prep_read(struct page_slot *s, void *dst)
{
	struct req *q = s->q;
	const struct export *e = q->c->exp;
	struct iovec v = { .iov_base = dst, .iov_len = CACHE_PAGE_BYTES };
	struct backend_io io = {
		.w = q->c->w, .op = &s->op.op, .e = e, .off = s->index * CACHE_PAGE_BYTES,
		.len = CACHE_PAGE_BYTES, .iov = &v, .niov = 1,
	};

	conn_op_init(&s->op, q->c, slot_fill_done);
	conn_expect(&s->op);
	/* A read is queued in the ring: io is read before the call returns (storage.h). */
	e->be->read(&io);
	q->cache_pending++;
}

/* The page's place in the request's buffer (a page never straddles a chunk). */
static void *slot_buf(const struct page_slot *s)
{
	struct iovec v;

	iov_slice(s->q->iov, s->q->niov, s->buf_off, CACHE_PAGE_BYTES, &v);
	return v.iov_base;
}

/* Looks page s up; whatever cannot be answered now adds to cache_pending. */
static void slot_lookup(struct page_slot *s)
{
	struct req *q = s->q;
	struct cache *cache = conn_host.cache;
	bool read = q->r.type == NBD_CMD_READ;
	const struct export *e = q->c->exp;
	struct cache_page *p;

	/* A page the cache may not hold (an overlay's own): straight from the backend. */
	if (e->be->cacheable && !e->be->cacheable(e, s->index * CACHE_PAGE_BYTES)) {
		s->p = NULL;
		if (read)
			slot_prep_read(s, slot_buf(s));
		return;
	}
	switch (cache_lookup(cache, file_cache_id(q), s->index, &s->w, &p)) {
	case CACHE_HIT:
		if (read)
			memcpy(slot_buf(s), cache_page_data(p), CACHE_PAGE_BYTES);
		cache_unpin(cache, p);
		break;
	case CACHE_MISS:
		s->p = p;
		slot_prep_read(s, cache_page_data(p));
		break;
	case CACHE_WAIT:
		conn_op_init(&s->op, q->c, slot_resume);
		conn_expect(&s->op); /* slot_wake posts it */
		q->cache_pending++;
		break;
	case CACHE_FULL:
		s->p = NULL;
		if (read)
			slot_prep_read(s, slot_buf(s));
		break;
	}
}

static void cached_window(struct req *q)
{
	uint64_t first = q->plan.io_off / CACHE_PAGE_BYTES;
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
			struct page_slot *s = &q->slots[i];

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

void cached_start(struct req *q)
{
	req_set_state(q, REQ_CACHED);
	q->cache_next = 0;
	q->cache_npages = (uint32_t)(q->plan.io_len / CACHE_PAGE_BYTES);
	q->cache_pending = 0;
	q->nbd_error = NBD_SUCCESS;
	cached_window(q);
}

#ifdef URINGNBD_TEST_HOOKS
/*
 * Test builds only: hold a fill open for srv->test_fill_delay_ms (a timeout
 * on the ring, so the loop runs on) so that a write can overtake it.
 * Returns true if the fill's end was deferred.
 */
static bool slot_hold_fill(struct page_slot *s, int res)
{
	unsigned delay = conn_host.test_fill_delay_ms;
	struct io_uring_sqe *sqe;

	if (!delay || !s->p || s->delayed)
		return false;
	s->delayed = true;
	s->held_res = res;
	s->hold.tv_sec = delay / 1000;
	s->hold.tv_nsec = (long long)(delay % 1000) * 1000000;
	sqe = conn_sqe(&s->op);
	io_uring_prep_timeout(sqe, &s->hold, 0, 0);
	return true;
}
#endif

static void slot_fill_done(struct conn_op *o, int res)
{
	struct page_slot *s = container_of(o, struct page_slot, op);
	struct req *q = s->q;
	bool read = q->r.type == NBD_CMD_READ;

#ifdef URINGNBD_TEST_HOOKS
	if (slot_hold_fill(s, res))
		return;
	if (s->delayed) {
		s->delayed = false;
		res = s->held_res;
	}
#endif
	if (res >= 0 && res < (int)CACHE_PAGE_BYTES) {
		uint64_t end = s->index * CACHE_PAGE_BYTES + (uint64_t)res;
		uint8_t *dst = s->p ? cache_page_data(s->p) : read ? slot_buf(s) : NULL;

		if (end < q->c->exp->size_bytes) {
			/* Short before the export's end (the file shrank?): an error, not zeroes. */
			log_warn("conn %" PRIu64 ": cache fill at offset %" PRIu64 ": %d bytes of %u "
				 "before the end of the export", q->c->id, s->index * CACHE_PAGE_BYTES,
				 res, CACHE_PAGE_BYTES);
			res = -EIO;
		} else if (dst) {
			/* The end of the file: the rest of the page reads as zeroes. */
			memset(dst + res, 0, CACHE_PAGE_BYTES - (unsigned)res);
		}
	}
	if (res < 0 && q->nbd_error == NBD_SUCCESS) {
		log_warn("conn %" PRIu64 ": cache fill at offset %" PRIu64 ": %s", q->c->id,
			 s->index * CACHE_PAGE_BYTES, strerror(-res));
		q->nbd_error = proto_errno_to_nbd(-res);
	}
	if (s->p) {
		if (res >= 0 && read)
			memcpy(slot_buf(s), cache_page_data(s->p), CACHE_PAGE_BYTES);
		cache_fill_done(conn_host.cache, s->p, res >= 0);
		s->p = NULL;
	}
	slot_done(q);
}

static void slot_resume(struct conn_op *o, int res)
{
	struct page_slot *s = container_of(o, struct page_slot, op);
	struct req *q = s->q;

	(void)res;
	/* The wait is over: look up again (a hit now, or a new fill). */
	if (q->c->state != CONN_CLOSING && q->nbd_error == NBD_SUCCESS) {
		q->cache_pending--;
		slot_lookup(s);
		q->cache_pending++;
	}
	slot_done(q);
}
