/*
 * Transmission phase: request headers in, reply headers out, and the one
 * place where a request is judged valid or given its NBD error.
 */
#include <errno.h>
#include <string.h>

#include "proto.h"

int proto_decode_request(const uint8_t in[PROTO_REQUEST_LEN], struct proto_request *req)
{
	if (proto_get_u32(in) != NBD_REQUEST_MAGIC)
		return -EPROTO;
	req->flags = proto_get_u16(in + 4);
	req->type = proto_get_u16(in + 6);
	req->cookie = proto_get_u64(in + 8);
	req->offset = proto_get_u64(in + 16);
	req->len_bytes = proto_get_u32(in + 24);
	return 0;
}

uint64_t proto_request_payload_len(const struct proto_request *req)
{
	return req->type == NBD_CMD_WRITE ? req->len_bytes : 0;
}

/* Flags each command may carry, given what was negotiated. */
static uint16_t allowed_flags(const struct proto_session *s, uint16_t type)
{
	uint16_t flags = 0;

	/* FUA is valid on every command once SEND_FUA is advertised. */
	if (s->tflags & NBD_FLAG_SEND_FUA)
		flags |= NBD_CMD_FLAG_FUA;
	if (type == NBD_CMD_READ && (s->tflags & NBD_FLAG_SEND_DF))
		flags |= NBD_CMD_FLAG_DF;
	return flags;
}

uint32_t proto_validate_request(const struct proto_session *s, const struct proto_request *req,
				uint64_t max_len_bytes, uint32_t align_bytes)
{
	uint64_t size = s->export.size_bytes;

	switch (req->type) {
	case NBD_CMD_READ:
	case NBD_CMD_WRITE:
		break;
	case NBD_CMD_FLUSH:
		if (!(s->tflags & NBD_FLAG_SEND_FLUSH))
			return NBD_EINVAL;
		break;
	default:
		return NBD_EINVAL;
	}
	if (req->flags & ~allowed_flags(s, req->type))
		return NBD_EINVAL;
	if (req->type == NBD_CMD_FLUSH)
		return NBD_SUCCESS;

	if (req->type == NBD_CMD_WRITE && (s->tflags & NBD_FLAG_READ_ONLY))
		return NBD_EPERM;
	if (req->len_bytes > max_len_bytes)
		return NBD_EINVAL;
	if (req->offset > size || req->len_bytes > size - req->offset)
		return req->type == NBD_CMD_WRITE ? NBD_ENOSPC : NBD_EINVAL;
	if (align_bytes > 1 && (req->offset % align_bytes || req->len_bytes % align_bytes))
		return NBD_EINVAL;
	return NBD_SUCCESS;
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

void proto_encode_offset_data(uint8_t out[PROTO_OFFSET_DATA_HDR_LEN], bool done,
			      uint64_t cookie, uint64_t offset, uint32_t len_bytes)
{
	proto_encode_chunk_hdr(out, done ? NBD_REPLY_FLAG_DONE : 0, NBD_REPLY_TYPE_OFFSET_DATA,
			       cookie, 8 + len_bytes);
	proto_put_u64(out + PROTO_CHUNK_HDR_LEN, offset);
}

void proto_encode_error_chunk(uint8_t out[PROTO_ERROR_CHUNK_LEN], uint64_t cookie,
			      uint32_t nbd_error)
{
	proto_encode_chunk_hdr(out, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, cookie, 6);
	proto_put_u32(out + PROTO_CHUNK_HDR_LEN, nbd_error);
	proto_put_u16(out + PROTO_CHUNK_HDR_LEN + 4, 0);
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
