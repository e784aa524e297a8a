// SPDX-License-Identifier: BSD-3-Clause
/*
 * Request planning (see plan.h): offsets, spans, edges and lock ranges.
 */
#include <string.h>

#include "../../proto/proto.h"
#include "plan.h"
#include "pool.h"

bool plan_wants_cache(const struct plan_in *in)
{
	uint64_t a = in->align_bytes;

	if (in->cache == CACHE_MODE_NONE || in->len_bytes == 0)
		return false;
	if (in->type == NBD_CMD_CACHE)
		return true;
	if (in->type != NBD_CMD_READ)
		return false;
	return in->cache == CACHE_MODE_ALWAYS || in->len_bytes < CACHE_AUTO_MAX_BYTES ||
	       in->offset % a || in->len_bytes % a;
}

static void plan_lock(const struct plan_in *in, struct plan *out)
{
	out->locks = in->len_bytes > 0 && in->type != NBD_CMD_FLUSH && in->type != NBD_CMD_DISC &&
		     (in->type != NBD_CMD_CACHE || out->cached);
	out->exclusive = in->type == NBD_CMD_WRITE || in->type == NBD_CMD_TRIM ||
			 in->type == NBD_CMD_WRITE_ZEROES;
	if (!out->locks)
		return;
	out->lock_first = in->offset;
	out->lock_last = in->offset + in->len_bytes - 1;
	if ((in->type == NBD_CMD_WRITE && !out->buffered) || in->type == NBD_CMD_CACHE ||
	    out->zero_write) {
		out->lock_first = out->io_off;
		out->lock_last = out->io_off + out->io_len - 1;
	}
	if (in->granule_bytes && in->type == NBD_CMD_WRITE_ZEROES) {
		uint64_t g = in->granule_bytes;

		out->lock_first = in->offset / g * g;
		out->lock_last = (in->offset + in->len_bytes + g - 1) / g * g - 1;
	}
}

void plan_request(const struct plan_in *in, struct plan *out)
{
	uint64_t off = in->offset, end = off + in->len_bytes, a = in->align_bytes;
	uint64_t a_first = off / a * a, a_end = (end + a - 1) / a * a;

	memset(out, 0, sizeof(*out));
	out->align_bytes = in->align_bytes;
	out->bounce = in->type == NBD_CMD_BLOCK_STATUS; /* the reply is built there */
	if (plan_wants_cache(in)) {
		/* Whole cache pages around the request; the reply slices them. */
		uint64_t p = in->cache_page_bytes;

		out->cached = true;
		if (in->type == NBD_CMD_CACHE && end - off > PLAN_PREFETCH_MAX_BYTES)
			end = off + PLAN_PREFETCH_MAX_BYTES;
		out->io_off = off / p * p;
		out->io_len = (end + p - 1) / p * p - out->io_off;
		out->data_off = (uint32_t)(off - out->io_off);
		/* A prefetch only fills the cache: it needs no buffer of its own. */
		if (in->type == NBD_CMD_READ)
			out->chunks = pool_chunks_for(out->io_len);
		plan_lock(in, out);
		return;
	}
	if ((in->type == NBD_CMD_TRIM || in->type == NBD_CMD_WRITE_ZEROES) && in->len_bytes) {
		out->io_off = off;
		out->io_len = in->len_bytes;
		if (in->blockdev && in->type == NBD_CMD_TRIM) {
			/* The whole blocks inside it, if any. */
			uint64_t first = (off + a - 1) / a * a, last = end / a * a;

			out->io_off = first;
			out->io_len = last > first ? last - first : 0;
		} else if (in->blockdev && (off % a || end % a)) {
			out->zero_write = true;
			out->io_off = a_first;
			out->io_len = a_end - a_first;
			out->data_off = (uint32_t)(off - a_first);
			out->rmw_head = off != a_first;
			out->rmw_tail = end != a_end;
			out->bounce = true;
			out->chunks = pool_chunks_for(out->io_len);
		}
	} else if ((in->type == NBD_CMD_READ || in->type == NBD_CMD_WRITE) && in->len_bytes) {
		if (a_end > in->direct_end) {
			out->buffered = true;
			out->io_off = off;
			out->io_len = in->len_bytes;
		} else {
			out->io_off = a_first;
			out->io_len = a_end - a_first;
			out->data_off = (uint32_t)(off - a_first);
			if (in->type == NBD_CMD_WRITE) {
				out->rmw_head = off != a_first;
				out->rmw_tail = end != a_end;
			}
		}
		out->holes = in->type == NBD_CMD_READ && in->holes_ok && !out->buffered &&
			     in->len_bytes >= PLAN_HOLES_MIN_BYTES;
		out->bounce = out->rmw_head || out->rmw_tail || out->holes;
		out->chunks = pool_chunks_for(out->io_len);
	}
	plan_lock(in, out);
}
