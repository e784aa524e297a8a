// SPDX-License-Identifier: BSD-3-Clause
/*
 * Dirty bitmaps: the committer thread that makes new bits durable before
 * their writes go, and the bits' reads (marks, extents, listing). The
 * ordering it keeps is at the top of bitmap.c.
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <libgen.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bitmap_int.h"


/*
 * The committer: takes every queued write, writes the pages of bits
 * changed since the last commit, syncs, then marks them durable and lets
 * the writes go. A write queued while a commit runs waits for the next,
 * which syncs even if it has no page to write: its bits may be in a page
 * the running commit wrote.
 */
void *committer_main(void *arg)
{
	static struct log_limit failed;
	struct bitmaps *bm = arg;
	struct page_ref { int slot; uint64_t page; unsigned gen; } *pages = NULL;
	size_t npages, cap = 0, k;

	pthread_mutex_lock(&bm->lock);
	for (;;) {
		struct bitmap_wait *batch, *wt;
		int err = 0, i;
		uint64_t p, w;

#ifdef URINGNBD_TEST_HOOKS
		if (bm->test_late_ms && !bm->stop) {
			/* Test builds: bits written lazily, after the data (the crash test's foil). */
			struct timespec ts;

			clock_gettime(CLOCK_MONOTONIC, &ts);
			ts.tv_nsec += (long)bm->test_late_ms * 1000000L;
			ts.tv_sec += ts.tv_nsec / 1000000000L;
			ts.tv_nsec %= 1000000000L;
			pthread_cond_timedwait(&bm->wake, &bm->lock, &ts);
		} else
#endif
		while (!bm->queue && !bm->stop)
			pthread_cond_wait(&bm->wake, &bm->lock);
		if (!bm->queue && bm->stop)
			break; /* stopping, nothing waits */
		batch = bm->queue;
		bm->queue = NULL;
		npages = 0;
		for (i = 0; i < BITMAP_SLOTS && !err; i++) {
			struct slot *s = &bm->slot[i];

			if (s->kind != BITMAP_LIVE)
				continue;
			for (p = 0; p < bm->npages; p++) {
				if (!s->dirty[p])
					continue;
				if (npages == cap) {
					size_t ncap = cap ? 2 * cap : 64;
					void *n = realloc(pages, ncap * sizeof(*pages));

					if (!n) {
						err = -ENOMEM;
						break;
					}
					pages = n;
					cap = ncap;
				}
				s->dirty[p] = 0;
				pages[npages++] = (struct page_ref){ i, p, s->gen };
			}
		}
		/* Each page copied under the lock (a marker may be setting bits), written outside. */
		for (k = 0; k < npages && !err; k++) {
			struct slot *s = &bm->slot[pages[k].slot];

			if (s->gen != pages[k].gen)
				continue;
			for (w = 0; w < PAGE_WORDS; w++)
				bm->page_buf[w] = htole64(atomic_load_explicit(
					&s->bits[pages[k].page * PAGE_WORDS + w], memory_order_relaxed));
			pthread_mutex_unlock(&bm->lock);
			err = write_all(bm->fd, bm->page_buf, SIDECAR_PAGE,
					slot_off(bm, pages[k].slot) + pages[k].page * SIDECAR_PAGE);
			pthread_mutex_lock(&bm->lock);
		}
		if (!err) {
			pthread_mutex_unlock(&bm->lock);
			if (fdatasync(bm->fd) < 0)
				err = -errno;
			atomic_fetch_add_explicit(&bm->commits, 1, memory_order_relaxed);
			atomic_fetch_add_explicit(&bm->commit_pages, npages, memory_order_relaxed);
			pthread_mutex_lock(&bm->lock);
		}
		for (k = 0; k < npages; k++) {
			struct slot *s = &bm->slot[pages[k].slot];

			if (s->kind != BITMAP_LIVE || s->gen != pages[k].gen)
				continue; /* cleared or removed meanwhile */
			if (err) {
				s->dirty[pages[k].page] = 1; /* the next commit writes it again */
				continue;
			}
			/*
			 * Clean since it was copied: what is set now is what was
			 * written, all durable. Dirty again: some bits are not, and
			 * the next commit makes the page durable.
			 */
			if (s->dirty[pages[k].page])
				continue;
			for (w = 0; w < PAGE_WORDS; w++) {
				uint64_t idx = pages[k].page * PAGE_WORDS + w;

				atomic_store_explicit(&s->durable[idx],
						      atomic_load_explicit(&s->bits[idx],
									   memory_order_relaxed),
						      memory_order_release);
			}
		}
		pthread_mutex_unlock(&bm->lock);
		if (err)
			log_msg_limited(&failed, LOG_ERROR, "bitmap file \"%s\": %s: the writes "
					"waiting for it fail, their data unwritten", bm->path,
					strerror(-err));
		while ((wt = batch)) {
			batch = wt->next;
			worker_post(wt->w, wt->op, err);
		}
		pthread_mutex_lock(&bm->lock);
	}
	pthread_mutex_unlock(&bm->lock);
	free(pages);
	return NULL;
}

static uint64_t word_mask(uint64_t w, uint64_t g0, uint64_t g1)
{
	uint64_t lo = w * WORD_BITS, hi = lo + WORD_BITS - 1;
	unsigned a = g0 > lo ? (unsigned)(g0 - lo) : 0, b = g1 < hi ? (unsigned)(g1 - lo) : 63;

	return (b == 63 ? ~0ull : (1ull << (b + 1)) - 1) & ~((1ull << a) - 1);
}

static bool all_durable(struct bitmaps *bm, uint64_t live, uint64_t g0, uint64_t g1)
{
	uint64_t w;
	int i;

	for (i = 0; live; i++, live >>= 1) {
		if (!(live & 1))
			continue;
		for (w = g0 / WORD_BITS; w <= g1 / WORD_BITS; w++) {
			uint64_t m = word_mask(w, g0, g1);

			if ((atomic_load_explicit(&bm->slot[i].durable[w], memory_order_acquire) & m) != m)
				return false;
		}
	}
	return true;
}

int bitmaps_mark(struct bitmaps *bm, uint64_t off, uint64_t len, struct bitmap_wait *wt)
{
	uint64_t live = atomic_load_explicit(&bm->live_mask, memory_order_acquire);
	uint64_t g0, g1, w, end;
	int i;

	if (!live || !len || off >= bm->size_bytes)
		return 0;
	end = off + len < bm->size_bytes ? off + len : bm->size_bytes;
	g0 = off / bm->granularity;
	g1 = (end - 1) / bm->granularity;
	if (all_durable(bm, live, g0, g1))
		return 0;
	pthread_mutex_lock(&bm->lock);
	live = atomic_load_explicit(&bm->live_mask, memory_order_relaxed);
	for (i = 0; live; i++, live >>= 1) {
		struct slot *s = &bm->slot[i];

		if (!(live & 1))
			continue;
		for (w = g0 / WORD_BITS; w <= g1 / WORD_BITS; w++) {
			uint64_t m = word_mask(w, g0, g1);

			if ((atomic_fetch_or_explicit(&s->bits[w], m, memory_order_relaxed) & m) != m)
				s->dirty[w / PAGE_WORDS] = 1;
		}
	}
#ifdef URINGNBD_TEST_HOOKS
	if (bm->test_late_ms) {
		/* The foil: the write goes ahead, its bits reach the disk later. */
		pthread_mutex_unlock(&bm->lock);
		return 0;
	}
#endif
	wt->next = bm->queue;
	bm->queue = wt;
	pthread_cond_signal(&bm->wake);
	pthread_mutex_unlock(&bm->lock);
	return 1;
}

static bool bit_at(_Atomic uint64_t *bits, uint64_t g)
{
	return atomic_load_explicit(&bits[g / WORD_BITS], memory_order_relaxed) >> (g % WORD_BITS) & 1;
}

/* The first granule after g, up to last + 1, whose bit is not state. */
static uint64_t run_end(_Atomic uint64_t *bits, uint64_t g, uint64_t last, bool state)
{
	for (g++; g <= last; g++) {
		uint64_t v = atomic_load_explicit(&bits[g / WORD_BITS], memory_order_relaxed);

		if (g % WORD_BITS == 0 && v == (state ? ~0ull : 0)) {
			g += WORD_BITS - 1;
			continue;
		}
		if ((v >> (g % WORD_BITS) & 1) != state)
			return g;
	}
	return last + 1;
}

size_t bitmaps_extents(struct bitmaps *bm, int slot, uint64_t off, uint64_t len, bool one,
		       struct proto_extent *ext, size_t max)
{
	_Atomic uint64_t *bits = bm->slot[slot].bits;
	uint64_t end = off + len < bm->size_bytes ? off + len : bm->size_bytes;
	uint64_t pos = off, last, g, next, stop;
	size_t n = 0;

	if (!bits || pos >= end)
		return 0;
	last = (end - 1) / bm->granularity;
	while (pos < end && n < max) {
		bool state;

		g = pos / bm->granularity;
		state = bit_at(bits, g);
		next = run_end(bits, g, last, state);
		stop = next * bm->granularity < end ? next * bm->granularity : end;
		ext[n].len_bytes = stop - pos;
		ext[n].flags = state ? NBD_STATE_DIRTY : 0;
		n++;
		pos = stop;
		if (one)
			break;
	}
	return n;
}

static uint64_t popcount_slot(const struct bitmaps *bm, const struct slot *s)
{
	uint64_t w, n = 0;

	for (w = 0; w < bm->nwords; w++)
		n += (uint64_t)__builtin_popcountll(atomic_load_explicit(&s->bits[w],
									 memory_order_relaxed));
	return n;
}

size_t bitmaps_list(struct bitmaps *bm, struct bitmap_info *out)
{
	size_t n = 0;
	int i;

	pthread_mutex_lock(&bm->lock);
	for (i = 0; i < BITMAP_SLOTS; i++) {
		const struct slot *s = &bm->slot[i];

		if (s->kind == BITMAP_FREE)
			continue;
		out[n] = (struct bitmap_info){ .slot = i, .kind = s->kind, .created_s = s->created_s,
					       .snapshot = s->snapshot };
		snprintf(out[n].name, sizeof(out[n].name), "%s", s->name);
		snprintf(out[n].bitmap, sizeof(out[n].bitmap), "%s", s->bitmap);
		out[n].dirty_granules = popcount_slot(bm, s);
		n++;
	}
	pthread_mutex_unlock(&bm->lock);
	return n;
}

void bitmaps_snapshot_path(const struct bitmaps *bm, const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s@%s", bm->image_path, name);
}

