// SPDX-License-Identifier: BSD-3-Clause
/*
 * Transmission phase: request headers in, reply headers out, and the one
 * place where a request is judged valid or given its NBD error.
 */
#include <errno.h>
#include <string.h>

#include "proto.h"

size_t proto_request_hdr_len(const struct proto_session *s)
{
	return s->extended ? PROTO_EXT_REQUEST_LEN : PROTO_REQUEST_LEN;
}

int proto_decode_request(const struct proto_session *s, const uint8_t *in,
			 struct proto_request *req)
{
	uint32_t magic = proto_get_u32(in);

	if (magic != (s->extended ? NBD_EXTENDED_REQUEST_MAGIC : NBD_REQUEST_MAGIC))
		return -EPROTO;
	req->flags = proto_get_u16(in + 4);
	req->type = proto_get_u16(in + 6);
	req->cookie = proto_get_u64(in + 8);
	req->offset = proto_get_u64(in + 16);
	req->len_bytes = s->extended ? proto_get_u64(in + 24) : proto_get_u32(in + 24);
	return 0;
}

uint64_t proto_request_payload_len(const struct proto_session *s, const struct proto_request *req)
{
	if (req->type == NBD_CMD_WRITE)
		return req->len_bytes;
	/* With extended headers, PAYLOAD_LEN says the length is a payload's. */
	if (s->extended && (req->flags & NBD_CMD_FLAG_PAYLOAD_LEN))
		return req->len_bytes;
	return 0;
}

/* Flags each command may carry, given what was negotiated. */
static uint16_t allowed_flags(const struct proto_session *s, uint16_t type)
{
	uint16_t flags = 0;

	/* FUA is valid on every command once SEND_FUA is advertised. */
	if (s->tflags & NBD_FLAG_SEND_FUA)
		flags |= NBD_CMD_FLAG_FUA;
	switch (type) {
	case NBD_CMD_READ:
		if (s->tflags & NBD_FLAG_SEND_DF)
			flags |= NBD_CMD_FLAG_DF;
		break;
	case NBD_CMD_WRITE:
		if (s->extended)
			flags |= NBD_CMD_FLAG_PAYLOAD_LEN; /* redundant but allowed */
		break;
	case NBD_CMD_WRITE_ZEROES:
		flags |= NBD_CMD_FLAG_NO_HOLE;
		if (s->tflags & NBD_FLAG_SEND_FAST_ZERO)
			flags |= NBD_CMD_FLAG_FAST_ZERO;
		break;
	case NBD_CMD_BLOCK_STATUS:
		flags |= NBD_CMD_FLAG_REQ_ONE;
		break;
	}
	return flags;
}

/* The transmission flag that advertises a command (0: always there). */
static uint16_t command_tflag(uint16_t type)
{
	switch (type) {
	case NBD_CMD_FLUSH: return NBD_FLAG_SEND_FLUSH;
	case NBD_CMD_TRIM: return NBD_FLAG_SEND_TRIM;
	case NBD_CMD_WRITE_ZEROES: return NBD_FLAG_SEND_WRITE_ZEROES;
	case NBD_CMD_CACHE: return NBD_FLAG_SEND_CACHE;
	default: return 0;
	}
}

uint32_t proto_validate_request(const struct proto_session *s, const struct proto_request *req,
				uint64_t max_len_bytes)
{
	uint64_t size = s->export.size_bytes;
	bool writes = req->type == NBD_CMD_WRITE || req->type == NBD_CMD_TRIM ||
		      req->type == NBD_CMD_WRITE_ZEROES;
	uint16_t tflag;

	switch (req->type) {
	case NBD_CMD_READ:
	case NBD_CMD_WRITE:
	case NBD_CMD_FLUSH:
	case NBD_CMD_TRIM:
	case NBD_CMD_CACHE:
	case NBD_CMD_WRITE_ZEROES:
	case NBD_CMD_BLOCK_STATUS:
		break;
	default:
		return NBD_EINVAL;
	}
	if (req->flags & ~allowed_flags(s, req->type))
		return NBD_EINVAL;
	if (writes && (s->tflags & NBD_FLAG_READ_ONLY))
		return NBD_EPERM;
	tflag = command_tflag(req->type);
	if (tflag && !(s->tflags & tflag))
		return NBD_EINVAL;
	if (req->type == NBD_CMD_FLUSH)
		return NBD_SUCCESS; /* offset and length mean nothing */
	if (req->type == NBD_CMD_BLOCK_STATUS &&
	    ((!s->meta_base_allocation && !s->meta_extra) || req->len_bytes == 0))
		return NBD_EINVAL;
	if ((req->type == NBD_CMD_READ || req->type == NBD_CMD_WRITE) && req->len_bytes > max_len_bytes)
		return NBD_EINVAL;
	if (req->offset > size || req->len_bytes > size - req->offset)
		return (req->type == NBD_CMD_WRITE || req->type == NBD_CMD_WRITE_ZEROES) ? NBD_ENOSPC
											  : NBD_EINVAL;
	return NBD_SUCCESS;
}

bool proto_block_status_payload(const struct proto_session *s, const struct proto_request *req)
{
	return s->extended && req->type == NBD_CMD_BLOCK_STATUS &&
	       (req->flags & NBD_CMD_FLAG_PAYLOAD_LEN) && (s->tflags & NBD_FLAG_BLOCK_STAT_PAYLOAD) &&
	       req->len_bytes <= PROTO_BS_PAYLOAD_MAX;
}

/* The mask bit of context id in this session, or 0 if it was not negotiated. */
static uint32_t context_bit(const struct proto_session *s, uint32_t id)
{
	if (id == PROTO_META_ID_BASE_ALLOCATION)
		return s->meta_base_allocation ? 1u : 0;
	if (id < PROTO_META_ID_EXTRA || id - PROTO_META_ID_EXTRA >= PROTO_META_MAX_EXTRA)
		return 0;
	return (s->meta_extra >> (id - PROTO_META_ID_EXTRA) & 1u) << (id - PROTO_META_ID_EXTRA + 1);
}

uint32_t proto_decode_block_status_payload(const struct proto_session *s, const uint8_t *p,
					   uint64_t len, uint64_t *effect_len)
{
	uint64_t i;
	uint32_t seen = 0, bit;

	if (len < 12 || len > PROTO_BS_PAYLOAD_MAX || (len - 8) % 4)
		return NBD_EINVAL;
	for (i = 8; i < len; i += 4) {
		bit = context_bit(s, proto_get_u32(p + i));
		if (!bit || (seen & bit))
			return NBD_EINVAL; /* not negotiated, or repeated */
		seen |= bit;
	}
	*effect_len = proto_get_u64(p);
	return NBD_SUCCESS;
}

uint32_t proto_block_status_contexts(const struct proto_session *s, const uint8_t *p,
				     uint64_t len)
{
	uint32_t mask = 0;
	uint64_t i;

	if (!p)
		return (s->meta_base_allocation ? 1u : 0) | s->meta_extra << 1;
	for (i = 8; i + 4 <= len; i += 4)
		mask |= context_bit(s, proto_get_u32(p + i));
	return mask;
}

size_t proto_encode_reply_hdr(const struct proto_session *s, uint8_t out[PROTO_REPLY_HDR_MAX_LEN],
			      uint16_t flags, uint16_t type, uint64_t cookie, uint64_t offset,
			      uint64_t payload_len)
{
	if (!s->extended) {
		proto_encode_chunk_hdr(out, flags, type, cookie, (uint32_t)payload_len);
		return PROTO_CHUNK_HDR_LEN;
	}
	proto_put_u32(out, NBD_EXTENDED_REPLY_MAGIC);
	proto_put_u16(out + 4, flags);
	proto_put_u16(out + 6, type);
	proto_put_u64(out + 8, cookie);
	proto_put_u64(out + 16, offset);
	proto_put_u64(out + 24, payload_len);
	return PROTO_EXT_REPLY_LEN;
}

size_t proto_encode_reply(const struct proto_session *s, uint8_t out[PROTO_REPLY_MAX_LEN],
			  const struct proto_request *req, uint32_t nbd_error, bool *has_data)
{
	bool read = req->type == NBD_CMD_READ;
	size_t n;

	*has_data = false;
	/* Simple replies: without structured replies; and for success without data. */
	if (!s->structured || (!s->extended && nbd_error == NBD_SUCCESS && !read)) {
		proto_encode_simple_reply(out, nbd_error, req->cookie);
		*has_data = read && nbd_error == NBD_SUCCESS && req->len_bytes;
		return PROTO_SIMPLE_REPLY_LEN;
	}
	if (nbd_error != NBD_SUCCESS) {
		n = proto_encode_reply_hdr(s, out, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR,
					   req->cookie, req->offset, 6);
		proto_put_u32(out + n, nbd_error);
		proto_put_u16(out + n + 4, 0);
		return n + 6;
	}
	if (read && req->len_bytes) {
		n = proto_encode_reply_hdr(s, out, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA,
					   req->cookie, req->offset, 8 + req->len_bytes);
		proto_put_u64(out + n, req->offset);
		*has_data = true;
		return n + 8;
	}
	return proto_encode_reply_hdr(s, out, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE,
				      req->cookie, req->offset, 0);
}

size_t proto_block_status_len(const struct proto_session *s, size_t n)
{
	return s->extended ? PROTO_EXT_REPLY_LEN + 8 + 16 * n : PROTO_CHUNK_HDR_LEN + 4 + 8 * n;
}

int proto_encode_block_status(const struct proto_session *s, uint8_t *out, size_t cap,
			      const struct proto_request *req, const struct proto_extent *ext,
			      size_t n)
{
	return proto_encode_block_status_ctx(s, out, cap, req, PROTO_META_ID_BASE_ALLOCATION, true,
					     ext, n);
}

int proto_encode_block_status_ctx(const struct proto_session *s, uint8_t *out, size_t cap,
				  const struct proto_request *req, uint32_t id, bool done,
				  const struct proto_extent *ext, size_t n)
{
	size_t len = proto_block_status_len(s, n), hdr, i;
	uint16_t flags = done ? NBD_REPLY_FLAG_DONE : 0;
	uint8_t *p;

	if (cap < len)
		return -ENOBUFS;
	if (s->extended) {
		hdr = proto_encode_reply_hdr(s, out, flags, NBD_REPLY_TYPE_BLOCK_STATUS_EXT,
					     req->cookie, req->offset, 8 + 16 * n);
		proto_put_u32(out + hdr, id);
		proto_put_u32(out + hdr + 4, (uint32_t)n);
		for (i = 0, p = out + hdr + 8; i < n; i++, p += 16) {
			proto_put_u64(p, ext[i].len_bytes);
			proto_put_u64(p + 8, ext[i].flags);
		}
	} else {
		hdr = proto_encode_reply_hdr(s, out, flags, NBD_REPLY_TYPE_BLOCK_STATUS,
					     req->cookie, req->offset, 4 + 8 * n);
		proto_put_u32(out + hdr, id);
		for (i = 0, p = out + hdr + 4; i < n; i++, p += 8) {
			proto_put_u32(p, (uint32_t)ext[i].len_bytes);
			proto_put_u32(p + 4, ext[i].flags);
		}
	}
	return (int)len;
}

void proto_encode_simple_reply(uint8_t out[PROTO_SIMPLE_REPLY_LEN], uint32_t nbd_error,
			       uint64_t cookie)
{
	proto_put_u32(out, NBD_SIMPLE_REPLY_MAGIC);
	proto_put_u32(out + 4, nbd_error);
	proto_put_u64(out + 8, cookie);
}

void proto_encode_chunk_hdr(uint8_t out[PROTO_CHUNK_HDR_LEN], uint16_t flags, uint16_t type,
			    uint64_t cookie, uint32_t len_bytes)
{
	proto_put_u32(out, NBD_STRUCTURED_REPLY_MAGIC);
	proto_put_u16(out + 4, flags);
	proto_put_u16(out + 6, type);
	proto_put_u64(out + 8, cookie);
	proto_put_u32(out + 16, len_bytes);
}

uint32_t proto_errno_to_nbd(int err)
{
	switch (err) {
	case 0:
		return NBD_SUCCESS;
	case EPERM:
	case EROFS:
	case EACCES:
		return NBD_EPERM;
	case ENOMEM:
		return NBD_ENOMEM;
	case EINVAL:
		return NBD_EINVAL;
	case ENOSPC:
	case EDQUOT:
	case EFBIG:
		return NBD_ENOSPC;
	case EOVERFLOW:
		return NBD_EOVERFLOW;
	case ENOTSUP:
#if EOPNOTSUPP != ENOTSUP
	case EOPNOTSUPP:
#endif
		return NBD_ENOTSUP;
	case ESHUTDOWN:
		return NBD_ESHUTDOWN;
	default:
		return NBD_EIO;
	}
}

const char *proto_cmd_name(uint16_t type)
{
	static const char *const names[] = {
		[NBD_CMD_READ] = "READ",
		[NBD_CMD_WRITE] = "WRITE",
		[NBD_CMD_DISC] = "DISC",
		[NBD_CMD_FLUSH] = "FLUSH",
		[NBD_CMD_TRIM] = "TRIM",
		[NBD_CMD_CACHE] = "CACHE",
		[NBD_CMD_WRITE_ZEROES] = "WRITE_ZEROES",
		[NBD_CMD_BLOCK_STATUS] = "BLOCK_STATUS",
		[NBD_CMD_RESIZE] = "RESIZE",
	};

	if (type < sizeof(names) / sizeof(names[0]) && names[type])
		return names[type];
	return "?";
}
