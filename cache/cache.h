/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * cache: a small, bounded page cache with placeholder entries, for clients
 * that want buffered I/O, kept coherent with direct I/O on the same file.
 *
 * Model:
 *  - Pages are CACHE_PAGE_BYTES (4 KiB), page-aligned, all allocated at
 *    cache_new() within a memory budget; nothing is allocated afterwards.
 *  - A page is keyed by (file, index): file is any 64-bit id the caller
 *    gives each backing file (device and inode, say); index is the byte
 *    offset divided by CACHE_PAGE_BYTES.
 *  - An entry is a PLACEHOLDER (a fill is in flight: its owner is reading
 *    the page from the file) or VALID.
 *  - cache_lookup() answers HIT (the page is VALID; it is pinned for the
 *    caller to copy from), MISS (the caller now owns a new placeholder and
 *    must read the page into cache_page_data() and call cache_fill_done()),
 *    WAIT (another caller's fill is in flight: the waiter's callback runs
 *    once it ends, and the caller looks up again), or FULL (every page is
 *    pinned or being filled: the caller reads around the cache). So
 *    concurrent readers of a cold page cause exactly one read of the file.
 *  - cache_invalidate() is called after any write to a file lands (through
 *    any export, cached or direct), before the write is acknowledged: it
 *    drops the VALID pages the write overlaps and marks the overlapping
 *    placeholders stale, so a fill that read the file before the write
 *    landed is dropped by cache_fill_done() instead of being installed.
 *    Waiters of a dropped fill are woken and look up again (a new fill).
 *  - Eviction is CLOCK over VALID unpinned pages: a hit sets the page's
 *    reference bit; the hand clears set bits and evicts the first page
 *    whose bit is clear.
 *
 * Threads: every call may come from any thread; the cache has one mutex.
 * Waiter callbacks run after it is dropped, on the thread that ended the
 * fill; they must not block.
 *
 * Ownership: a HIT or MISS page is pinned for the caller until
 * cache_unpin() or cache_fill_done(); its memory stays valid (and, for a
 * HIT, unchanged) while pinned, even if a write invalidates it meanwhile.
 * struct cache_waiter is the caller's; it belongs to the cache from a WAIT
 * until its callback runs.
 */
#ifndef URINGNBD_CACHE_H
#define URINGNBD_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CACHE_PAGE_BYTES 4096u

struct cache;      /* opaque */
struct cache_page; /* opaque: one entry */

enum cache_result {
	CACHE_HIT,     /* *page is VALID and pinned */
	CACHE_MISS,    /* *page is a new placeholder the caller must fill */
	CACHE_WAIT,    /* a fill is in flight; the waiter is parked */
	CACHE_FULL,    /* nothing could be evicted: go around the cache */
};

struct cache_waiter {
	void (*wake)(struct cache_waiter *w); /* runs once, outside the cache's mutex */
	struct cache_waiter *next;            /* private to the cache */
};

struct cache_stats {
	uint64_t hits, misses, waits, fills, stale_fills_dropped, evictions, invalidated;
	uint64_t full;           /* lookups answered FULL */
	uint64_t pages_used;     /* placeholders + valid pages now */
	uint64_t budget_pages;
};

/* A cache of budget_bytes (rounded down to whole pages, at least one). NULL on ENOMEM. */
struct cache *cache_new(size_t budget_bytes);
/* Every page must be unpinned and no fill in flight. */
void cache_free(struct cache *c);
/* The pages' memory (to fault it in ahead of use). */
void cache_region(const struct cache *c, void **mem, size_t *len);

enum cache_result cache_lookup(struct cache *c, uint64_t file, uint64_t index,
			       struct cache_waiter *w, struct cache_page **page);
/* The page's CACHE_PAGE_BYTES of memory, page-aligned (usable for O_DIRECT). */
uint8_t *cache_page_data(struct cache_page *p);

/*
 * Ends the fill of a placeholder from cache_lookup() == MISS. ok: the data
 * was read. Returns true if the page became VALID; false if it was dropped
 * (ok was false, or a write made it stale). Wakes its waiters either way
 * and unpins it: the caller must copy what it needs before calling this.
 */
bool cache_fill_done(struct cache *c, struct cache_page *p, bool ok);

/* Releases a page pinned by a HIT. */
void cache_unpin(struct cache *c, struct cache_page *p);

/* A write to bytes [off, off + len) of file has landed: see above. */
void cache_invalidate(struct cache *c, uint64_t file, uint64_t off, uint64_t len);

void cache_get_stats(struct cache *c, struct cache_stats *out);

#endif
