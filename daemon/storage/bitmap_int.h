/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * bitmap_int.h: what the files of a file's dirty bitmaps share (bitmap.c:
 * the sidecar and its slots; bitmap_commit.c: the committer and the bits'
 * reads; bitmap_checkpoint.c: checkpoints, clear, remove). Private to them.
 */
#ifndef URINGNBD_BITMAP_INT_H
#define URINGNBD_BITMAP_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "storage.h"

#define SIDECAR_MAGIC "URNBDBMP"
#define SIDECAR_VERSION 1
#define SIDECAR_PAGE 4096u
#define SIDECAR_TABLE_OFF SIDECAR_PAGE
#define SIDECAR_RECORD_BYTES 256u
#define SIDECAR_DATA_OFF (SIDECAR_TABLE_OFF + BITMAP_SLOTS * SIDECAR_RECORD_BYTES)
#define SIDECAR_NAME_BYTES 112
#define WORD_BITS 64
#define PAGE_WORDS (SIDECAR_PAGE / 8)

struct slot {
	enum bitmap_kind kind;
	char name[BITMAP_NAME_MAX + 1];
	char bitmap[BITMAP_NAME_MAX + 1];
	int64_t created_s;
	bool snapshot;
	_Atomic uint64_t *bits;     /* ngranules bits; read by any thread */
	_Atomic uint64_t *durable;  /* live: bits known to be on disk */
	uint8_t *dirty;             /* live: pages of bits changed since the last commit */
	unsigned gen;               /* bumped by a clear: a commit of older bits is stale */
};

/* Arrays of slots freed while exports may still read them: freed at close. */
struct old_bits {
	struct old_bits *next;
	void *p[3];
};

struct bitmaps {
	int fd;
	char *path;                 /* the sidecar */
	char *image_path;
	uint32_t granularity;
	uint64_t size_bytes, ngranules, nwords, npages, slot_bytes;
	pthread_mutex_t lock;       /* slots' records and dirty pages, the queue */
	pthread_cond_t wake;
	pthread_t committer;
	bool stop;
	struct bitmap_wait *queue;  /* writes waiting for the next commit */
	_Atomic uint64_t live_mask; /* slots that are live bitmaps */
	struct slot slot[BITMAP_SLOTS];
	struct old_bits *old;
	pthread_mutex_t admin;      /* one checkpoint, clear or remove at a time */
	uint64_t *page_buf;         /* the committer's copy of a page (its thread only) */
	atomic_uint_fast64_t commits, commit_pages; /* syncs done, pages they wrote */
#ifdef URINGNBD_TEST_HOOKS
	unsigned test_late_ms;      /* test builds: bits synced after the data, this late */
#endif
};


/* bitmap.c */
uint64_t slot_off(const struct bitmaps *bm, int i);
int write_all(int fd, const void *p, size_t len, uint64_t off);
int record_store(struct bitmaps *bm, int i);
void slot_retire_memory(struct bitmaps *bm, struct slot *s);
int slot_store_bits(struct bitmaps *bm, int i);
int slot_take(struct bitmaps *bm, enum bitmap_kind kind, char *err, size_t errlen);
int sync_dir_of(const char *path);
/* bitmap_commit.c: the committer thread's body (arg: the bitmaps) */
void *committer_main(void *arg);

#endif
