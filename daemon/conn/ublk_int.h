/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * ublk_int.h: a ublk request as the request path sees it, and its result as
 * the kernel wants it. Pure: tests/unit/test_ublk.c runs it without a kernel.
 *
 * A ublk device is served like a client: each of its queues is a struct
 * conn on one worker (conn_int.h), whose requests come from the kernel's
 * descriptors instead of a socket. They become NBD requests here, so the
 * range locks, the cache, overlays and dirty bitmaps treat them exactly as
 * a network client's.
 */
#ifndef URINGNBD_UBLK_INT_H
#define URINGNBD_UBLK_INT_H

#include <errno.h>
#include <stdint.h>

#include "../../proto/proto.h"
#include "ublk_uapi.h"

/*
 * The NBD request a descriptor asks for: 0, or -EOPNOTSUPP for an operation
 * the export has no counterpart of (WRITE_SAME, zones). A discard is a TRIM;
 * a write of zeroes may punch a hole unless the kernel said NOUNMAP; FUA is
 * FUA. The cookie is the tag.
 */
static inline int ublk_map_request(const struct ublk_io_desc *d, uint16_t tag,
				   struct proto_request *r)
{
	uint32_t flags = d->op_flags >> 8 << 8;

	r->cookie = tag;
	r->offset = d->start_sector << 9;
	r->len_bytes = (uint64_t)d->nr_sectors << 9;
	r->flags = 0;
	switch (d->op_flags & 0xff) {
	case UBLK_IO_OP_READ:
		r->type = NBD_CMD_READ;
		break;
	case UBLK_IO_OP_WRITE:
		r->type = NBD_CMD_WRITE;
		break;
	case UBLK_IO_OP_FLUSH:
		r->type = NBD_CMD_FLUSH;
		r->offset = r->len_bytes = 0;
		return 0;
	case UBLK_IO_OP_DISCARD:
		r->type = NBD_CMD_TRIM;
		break;
	case UBLK_IO_OP_WRITE_ZEROES:
		r->type = NBD_CMD_WRITE_ZEROES;
		if (flags & UBLK_IO_F_NOUNMAP)
			r->flags |= NBD_CMD_FLAG_NO_HOLE;
		break;
	default:
		return -EOPNOTSUPP;
	}
	if (flags & UBLK_IO_F_FUA)
		r->flags |= NBD_CMD_FLAG_FUA;
	return 0;
}

/* What a request's commit tells the kernel: the bytes moved, or -errno. */
static inline int32_t ublk_result(uint32_t nbd_error, const struct proto_request *r)
{
	switch (nbd_error) {
	case NBD_SUCCESS:
		return r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE ? (int32_t)r->len_bytes : 0;
	case NBD_EPERM:
		return -EPERM;
	case NBD_ENOMEM:
		return -ENOMEM;
	case NBD_EINVAL:
		return -EINVAL;
	case NBD_ENOSPC:
		return -ENOSPC;
	case NBD_EOVERFLOW:
		return -EOVERFLOW;
	case NBD_ENOTSUP:
		return -EOPNOTSUPP;
	case NBD_ESHUTDOWN:
		return -ESHUTDOWN;
	default:
		return -EIO;
	}
}

/* Where tag's data is, in /dev/ublkcN, for a pread or pwrite (UBLK_F_USER_COPY). */
static inline uint64_t ublk_data_pos(uint16_t q_id, uint16_t tag)
{
	return UBLKSRV_IO_BUF_OFFSET + ((uint64_t)q_id << UBLK_QID_OFF) +
	       ((uint64_t)tag << UBLK_TAG_OFF);
}

/* A queue's descriptor array in /dev/ublkcN: where it is mapped from, and how long. */
static inline uint64_t ublk_descs_pos(uint16_t q_id)
{
	uint64_t stride = ((uint64_t)UBLK_MAX_QUEUE_DEPTH * sizeof(struct ublk_io_desc) + 4095) &
			  ~4095ull;

	return UBLKSRV_CMD_BUF_OFFSET + q_id * stride;
}
static inline size_t ublk_descs_len(unsigned depth)
{
	return ((size_t)depth * sizeof(struct ublk_io_desc) + 4095) & ~(size_t)4095;
}

/* uringnbd's tag for the device of export name, kept by the kernel for the next process. */
static inline uint64_t ublk_export_tag(const char *name)
{
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */

	for (const char *p = "uringnbd:"; *p; p++)
		h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
	for (; *name; name++)
		h = (h ^ (uint8_t)*name) * 0x100000001b3ull;
	return h ? h : 1;
}

#endif
