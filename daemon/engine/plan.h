/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * plan: which bytes of the file a request moves, where the client's data
 * sits in the request's buffer, and which range it locks. Pure arithmetic
 * (no I/O, no state), unit-tested in tests/unit/test_plan.c.
 *
 * Direct requests are planned on the aligned span around them: reads move
 * the whole span and the reply sends the client's slice; unaligned writes
 * read their one or two edge blocks into a bounce chunk, merge, and write
 * the span, under one exclusive lock over the span. A request touching the
 * partial last block of a file (size not a multiple of the alignment) is
 * done on exactly its bytes through the buffered descriptor instead.
 * Cached reads cover the whole cache pages around them; a CACHE prefetch
 * covers the pages of its first PLAN_PREFETCH_MAX_BYTES, and locks only those.
 *
 * TRIM and WRITE_ZEROES are fallocate()s of io_off/io_len: their bytes on a
 * file; on a block device, which takes whole blocks only, TRIM shrinks to
 * the blocks inside it (it is advisory; none is fine) and an unaligned
 * WRITE_ZEROES becomes a write of zeroes over its span with its edges read
 * first, like an unaligned WRITE.
 *
 * Locks: READ, BLOCK_STATUS and CACHE shared over their bytes; WRITE (and a
 * zero_write) exclusive over its span (its bytes when buffered); TRIM and
 * WRITE_ZEROES exclusive over their bytes (on an overlay, WRITE_ZEROES over
 * the whole granules it touches, which it rewrites). So a writer's lock
 * covers every block it rewrites and a reader's covers every byte it returns.
 */
#ifndef URINGNBD_PLAN_H
#define URINGNBD_PLAN_H

#include <stdbool.h>
#include <stdint.h>

/* Which reads go through the page cache. */
enum cache_mode {
	CACHE_MODE_NONE,    /* direct only */
	CACHE_MODE_ALWAYS,  /* every read served from and filled into the cache */
	CACHE_MODE_AUTO,    /* reads under 64 KiB or unaligned through the cache */
};
#define CACHE_AUTO_MAX_BYTES (64u * 1024)
/* NBD_CMD_CACHE is advisory: a prefetch fills at most this much from its offset. */
#define PLAN_PREFETCH_MAX_BYTES (32u << 20)
/* A direct READ this long, where holes may be, asks for them first (plan.holes). */
#define PLAN_HOLES_MIN_BYTES (256u * 1024)

/* What the plan is made from: the request and the export's geometry. */
struct plan_in {
	uint16_t type;            /* NBD_CMD_* */
	uint64_t offset;
	uint64_t len_bytes;
	uint32_t align_bytes;     /* direct-I/O alignment, a power of two */
	uint64_t direct_end;      /* file size rounded down to align_bytes */
	enum cache_mode cache;    /* the export's mode; CACHE_MODE_NONE without a cache */
	bool blockdev;            /* a block device: fallocate takes whole blocks only */
	uint32_t cache_page_bytes; /* the cache's page size */
	uint32_t granule_bytes;   /* an overlay's granule (WRITE_ZEROES locks whole ones); 0: none */
	bool holes_ok;            /* holes may be answered as OFFSET_HOLE: structured replies,
				     no DF, a file that may have holes */
};

struct plan {
	uint32_t align_bytes;     /* the alignment it was planned with (in's) */
	uint64_t io_off;          /* file offset of buffer byte 0 */
	uint64_t io_len;          /* bytes of file I/O: the span, or the request */
	uint32_t data_off;        /* the client's bytes start here in the buffer */
	uint32_t chunks;          /* pool chunks the span needs in the buffer */
	bool bounce;              /* also a bounce chunk (edge blocks, block status reply) */
	bool buffered;            /* touches the partial last block: buffered descriptor */
	bool rmw_head, rmw_tail;  /* unaligned write: edge blocks to read first */
	bool cached;              /* a READ or CACHE through the page cache */
	bool zero_write;          /* WRITE_ZEROES done as a write of zeroes (unaligned, device) */
	bool holes;               /* a READ that finds its holes first, to answer them as
				     OFFSET_HOLE (its extents and chunk headers in the bounce chunk) */
	bool locks;               /* takes a range lock (FLUSH and empty requests do not) */
	bool exclusive;           /* ...exclusive, else shared */
	uint64_t lock_first, lock_last; /* ...over these bytes (closed interval) */
};

/* Whether a request is served through the page cache under mode. */
bool plan_wants_cache(const struct plan_in *in);
/* Fills *out from *in. */
void plan_request(const struct plan_in *in, struct plan *out);

#endif
