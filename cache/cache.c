// SPDX-License-Identifier: BSD-3-Clause
/*
 * The page cache: see cache.h for the model.
 *
 * Layout: one mmap'd slab of npages * 4 KiB (the data) and an array of
 * entries beside it; a hash table of (file, index) -> entry with chains
 * through entry indices; a free list; a CLOCK hand over the entries.
 *
 * States of an entry:
 *   FREE         on the free list
 *   PLACEHOLDER  hashed (or unhashed and stale); pinned by its filler
 *   VALID        hashed; or unhashed after an invalidation, until unpinned
 * An entry leaves the hash when a write invalidates it, so new lookups
 * never find stale data; it returns to the free list when nobody pins it.
 */
#include <assert.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "cache.h"

enum page_state { PAGE_FREE, PAGE_PLACEHOLDER, PAGE_VALID };

struct cache_page {
	uint64_t file, index;
	uint8_t state;               /* enum page_state */
	bool hashed;                 /* in the hash table: lookups find it */
	bool stale;                  /* placeholder overtaken by a write */
	bool ref;                    /* CLOCK reference bit */
	uint32_t pins;
	uint32_t hnext;              /* hash chain: entry index + 1, 0 ends */
	uint32_t fnext;              /* free list: entry index + 1, 0 ends */
	struct cache_waiter *waiters; /* parked on this placeholder */
	uint8_t *data;
};

struct cache {
	pthread_mutex_t mu;
	struct cache_page *pages;
	uint32_t npages;
	uint8_t *mem;                /* npages * CACHE_PAGE_BYTES, page-aligned */
	uint32_t *buckets;           /* entry index + 1, 0 empty */
	uint32_t mask;               /* buckets - 1 (a power of two) */
	uint32_t free_head;          /* entry index + 1, 0 empty */
	uint32_t hand;               /* CLOCK */
	struct cache_stats st;
};

static uint32_t bucket_of(const struct cache *c, uint64_t file, uint64_t index)
{
	uint64_t h = (file * 0x9e3779b97f4a7c15ull) ^ (index * 0xc2b2ae3d27d4eb4full);

	h ^= h >> 29;
	return (uint32_t)h & c->mask;
}

struct cache *cache_new(size_t budget_bytes)
{
	struct cache *c = calloc(1, sizeof(*c));
	uint32_t nb = 1, i;

	if (!c)
		return NULL;
	c->npages = (uint32_t)(budget_bytes / CACHE_PAGE_BYTES);
	if (c->npages == 0)
		c->npages = 1;
	while (nb < 2 * c->npages)
		nb <<= 1;
	c->mask = nb - 1;
	c->pages = calloc(c->npages, sizeof(*c->pages));
	c->buckets = calloc(nb, sizeof(*c->buckets));
	c->mem = mmap(NULL, (size_t)c->npages * CACHE_PAGE_BYTES, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0); /* faulted in by the caller, or as used */
	if (!c->pages || !c->buckets || c->mem == MAP_FAILED) {
		if (c->mem != MAP_FAILED && c->mem)
			munmap(c->mem, (size_t)c->npages * CACHE_PAGE_BYTES);
		free(c->pages);
		free(c->buckets);
		free(c);
		return NULL;
	}
	for (i = c->npages; i-- > 0;) {
		c->pages[i].data = c->mem + (size_t)i * CACHE_PAGE_BYTES;
		c->pages[i].fnext = c->free_head;
		c->free_head = i + 1;
	}
	pthread_mutex_init(&c->mu, NULL);
	c->st.budget_pages = c->npages;
	return c;
}

void cache_free(struct cache *c)
{
	uint32_t i;

	if (!c)
		return;
	for (i = 0; i < c->npages; i++)
		assert(c->pages[i].pins == 0 && c->pages[i].state != PAGE_PLACEHOLDER);
	munmap(c->mem, (size_t)c->npages * CACHE_PAGE_BYTES);
	pthread_mutex_destroy(&c->mu);
	free(c->pages);
	free(c->buckets);
	free(c);
}

static uint32_t idx_of(const struct cache *c, const struct cache_page *p)
{
	return (uint32_t)(p - c->pages);
}

static struct cache_page *hash_find(struct cache *c, uint64_t file, uint64_t index)
{
	uint32_t i = c->buckets[bucket_of(c, file, index)];

	while (i) {
		struct cache_page *p = &c->pages[i - 1];

		if (p->file == file && p->index == index)
			return p;
		i = p->hnext;
	}
	return NULL;
}

static void hash_insert(struct cache *c, struct cache_page *p)
{
	uint32_t *b = &c->buckets[bucket_of(c, p->file, p->index)];

	p->hnext = *b;
	*b = idx_of(c, p) + 1;
	p->hashed = true;
}

static void hash_remove(struct cache *c, struct cache_page *p)
{
	uint32_t *link = &c->buckets[bucket_of(c, p->file, p->index)], me = idx_of(c, p) + 1;

	assert(p->hashed);
	while (*link != me) {
		assert(*link);
		link = &c->pages[*link - 1].hnext;
	}
	*link = p->hnext;
	p->hnext = 0;
	p->hashed = false;
}

static void page_release(struct cache *c, struct cache_page *p)
{
	assert(!p->hashed && p->pins == 0 && !p->waiters);
	p->state = PAGE_FREE;
	p->stale = false;
	p->fnext = c->free_head;
	c->free_head = idx_of(c, p) + 1;
	c->st.pages_used--;
}

/* A free entry: from the free list, else CLOCK over VALID unpinned pages. */
static struct cache_page *page_take(struct cache *c)
{
	struct cache_page *p;
	uint32_t steps;

	if (c->free_head) {
		p = &c->pages[c->free_head - 1];
		c->free_head = p->fnext;
		c->st.pages_used++;
		return p;
	}
	for (steps = 0; steps < 2 * c->npages; steps++) {
		p = &c->pages[c->hand];
		c->hand = (c->hand + 1) % c->npages;
		if (p->state != PAGE_VALID || p->pins || !p->hashed)
			continue;
		if (p->ref) {
			p->ref = false;
			continue;
		}
		hash_remove(c, p);
		c->st.evictions++;
		return p; /* stays counted in pages_used */
	}
	return NULL;
}

enum cache_result cache_lookup(struct cache *c, uint64_t file, uint64_t index,
			       struct cache_waiter *w, struct cache_page **page)
{
	struct cache_page *p;
	enum cache_result r;

	pthread_mutex_lock(&c->mu);
	p = hash_find(c, file, index);
	if (p && p->state == PAGE_VALID) {
		p->pins++;
		p->ref = true;
		c->st.hits++;
		*page = p;
		r = CACHE_HIT;
	} else if (p) {
		assert(p->state == PAGE_PLACEHOLDER && w);
		w->next = p->waiters;
		p->waiters = w;
		c->st.waits++;
		*page = NULL;
		r = CACHE_WAIT;
	} else if ((p = page_take(c))) {
		p->file = file;
		p->index = index;
		p->state = PAGE_PLACEHOLDER;
		p->stale = false;
		p->ref = false;
		p->pins = 1;
		p->waiters = NULL;
		hash_insert(c, p);
		c->st.misses++;
		*page = p;
		r = CACHE_MISS;
	} else {
		c->st.full++;
		*page = NULL;
		r = CACHE_FULL;
	}
	pthread_mutex_unlock(&c->mu);
	return r;
}

uint8_t *cache_page_data(struct cache_page *p)
{
	return p->data;
}

bool cache_fill_done(struct cache *c, struct cache_page *p, bool ok)
{
	struct cache_waiter *w, *next;
	bool installed;

	pthread_mutex_lock(&c->mu);
	assert(p->state == PAGE_PLACEHOLDER && p->pins == 1);
	w = p->waiters;
	p->waiters = NULL;
	p->pins = 0;
	installed = ok && !p->stale;
	if (installed) {
		p->state = PAGE_VALID;
		p->ref = true;
		c->st.fills++;
	} else {
		if (p->stale)
			c->st.stale_fills_dropped++;
		if (p->hashed)
			hash_remove(c, p);
		page_release(c, p);
	}
	pthread_mutex_unlock(&c->mu);
	/* Outside the mutex: a waiter may look up again straight away. */
	for (; w; w = next) {
		next = w->next;
		w->wake(w);
	}
	return installed;
}

void cache_unpin(struct cache *c, struct cache_page *p)
{
	pthread_mutex_lock(&c->mu);
	assert(p->state == PAGE_VALID && p->pins > 0);
	if (--p->pins == 0 && !p->hashed)
		page_release(c, p); /* invalidated while it was being read */
	pthread_mutex_unlock(&c->mu);
}

static void invalidate_page(struct cache *c, struct cache_page *p)
{
	hash_remove(c, p);
	c->st.invalidated++;
	if (p->state == PAGE_PLACEHOLDER)
		p->stale = true; /* its fill may hold data from before the write */
	else if (p->pins == 0)
		page_release(c, p);
}

void cache_invalidate(struct cache *c, uint64_t file, uint64_t off, uint64_t len)
{
	uint64_t first, last, i;

	if (len == 0)
		return;
	first = off / CACHE_PAGE_BYTES;
	last = (off + len - 1) / CACHE_PAGE_BYTES;
	pthread_mutex_lock(&c->mu);
	if (last - first >= c->npages) {
		/* A long range: cheaper to look at every entry. */
		for (i = 0; i < c->npages; i++) {
			struct cache_page *p = &c->pages[i];

			if (p->hashed && p->file == file && p->index >= first && p->index <= last)
				invalidate_page(c, p);
		}
	} else {
		for (i = first; i <= last; i++) {
			struct cache_page *p = hash_find(c, file, i);

			if (p)
				invalidate_page(c, p);
		}
	}
	pthread_mutex_unlock(&c->mu);
}

void cache_get_stats(struct cache *c, struct cache_stats *out)
{
	pthread_mutex_lock(&c->mu);
	*out = c->st;
	pthread_mutex_unlock(&c->mu);
}

void cache_region(const struct cache *c, void **mem, size_t *len)
{
	*mem = c->mem;
	*len = (size_t)c->npages * CACHE_PAGE_BYTES;
}
