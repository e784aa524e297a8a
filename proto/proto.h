/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * proto: the NBD wire protocol, as pure code.
 *
 * What it is for: everything uringnbd knows about bytes on the wire, from the
 * NBD specification (doc/proto.md of the NetworkBlockDevice/nbd project):
 * constants, decoding and validating option and request headers, encoding
 * option replies, simple replies and structured-reply chunks, the errno to
 * NBD error mapping, and the whole fixed-newstyle option negotiation.
 *
 * Invariants:
 *  - No I/O, no allocation, no global state. Every function works on buffers
 *    the caller owns; nothing here keeps a pointer past its return.
 *  - Wire integers are big-endian; structs here are host-order views, never
 *    cast onto wire bytes.
 *  - Functions return >= 0 on success or -errno, like liburing. Encoders
 *    return -ENOBUFS when the caller's buffer is too small and then leave
 *    its length unchanged, so the caller may grow the buffer and call again.
 *  - Negotiation is a function of (state, one option) -> (reply bytes, next
 *    state): proto_negotiate() never changes *state unless it succeeds.
 */
#ifndef URINGNBD_PROTO_H
#define URINGNBD_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Magic numbers. */
#define NBD_MAGIC              UINT64_C(0x4e42444d41474943) /* "NBDMAGIC" */
#define NBD_IHAVEOPT           UINT64_C(0x49484156454f5054) /* "IHAVEOPT" */
#define NBD_REP_MAGIC          UINT64_C(0x0003e889045565a9)
#define NBD_REQUEST_MAGIC      UINT32_C(0x25609513)
#define NBD_SIMPLE_REPLY_MAGIC UINT32_C(0x67446698)
#define NBD_STRUCTURED_REPLY_MAGIC UINT32_C(0x668e33ef)
#define NBD_EXTENDED_REQUEST_MAGIC UINT32_C(0x21e41c71)
#define NBD_EXTENDED_REPLY_MAGIC   UINT32_C(0x6e8a278c)

/* Handshake flags (server) and client flags. */
#define NBD_FLAG_FIXED_NEWSTYLE   (1u << 0)
#define NBD_FLAG_NO_ZEROES        (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_C_NO_ZEROES      (1u << 1)

/* Transmission flags. */
#define NBD_FLAG_HAS_FLAGS         (1u << 0)
#define NBD_FLAG_READ_ONLY         (1u << 1)
#define NBD_FLAG_SEND_FLUSH        (1u << 2)
#define NBD_FLAG_SEND_FUA          (1u << 3)
#define NBD_FLAG_ROTATIONAL        (1u << 4)
#define NBD_FLAG_SEND_TRIM         (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_SEND_DF           (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN    (1u << 8)
#define NBD_FLAG_SEND_RESIZE       (1u << 9)
#define NBD_FLAG_SEND_CACHE        (1u << 10)
#define NBD_FLAG_SEND_FAST_ZERO    (1u << 11)
#define NBD_FLAG_BLOCK_STAT_PAYLOAD (1u << 12)

/* Options. */
#define NBD_OPT_EXPORT_NAME       1
#define NBD_OPT_ABORT             2
#define NBD_OPT_LIST              3
#define NBD_OPT_PEEK_EXPORT       4
#define NBD_OPT_STARTTLS          5
#define NBD_OPT_INFO              6
#define NBD_OPT_GO                7
#define NBD_OPT_STRUCTURED_REPLY  8
#define NBD_OPT_LIST_META_CONTEXT 9
#define NBD_OPT_SET_META_CONTEXT  10
#define NBD_OPT_EXTENDED_HEADERS  11

/* Option reply types. */
#define NBD_REP_ACK          1
#define NBD_REP_SERVER       2
#define NBD_REP_INFO         3
#define NBD_REP_META_CONTEXT 4
#define NBD_REP_ERR(n)       ((UINT32_C(1) << 31) + (n))
#define NBD_REP_ERR_UNSUP           NBD_REP_ERR(1)
#define NBD_REP_ERR_POLICY          NBD_REP_ERR(2)
#define NBD_REP_ERR_INVALID         NBD_REP_ERR(3)
#define NBD_REP_ERR_PLATFORM        NBD_REP_ERR(4)
#define NBD_REP_ERR_TLS_REQD        NBD_REP_ERR(5)
#define NBD_REP_ERR_UNKNOWN         NBD_REP_ERR(6)
#define NBD_REP_ERR_SHUTDOWN        NBD_REP_ERR(7)
#define NBD_REP_ERR_BLOCK_SIZE_REQD NBD_REP_ERR(8)
#define NBD_REP_ERR_TOO_BIG         NBD_REP_ERR(9)
#define NBD_REP_ERR_EXT_HEADER_REQD NBD_REP_ERR(10)

/* NBD_REP_INFO item types. */
#define NBD_INFO_EXPORT      0
#define NBD_INFO_NAME        1
#define NBD_INFO_DESCRIPTION 2
#define NBD_INFO_BLOCK_SIZE  3

/* Commands and command flags. */
#define NBD_CMD_READ         0
#define NBD_CMD_WRITE        1
#define NBD_CMD_DISC         2
#define NBD_CMD_FLUSH        3
#define NBD_CMD_TRIM         4
#define NBD_CMD_CACHE        5
#define NBD_CMD_WRITE_ZEROES 6
#define NBD_CMD_BLOCK_STATUS 7
#define NBD_CMD_RESIZE       8

#define NBD_CMD_FLAG_FUA       (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE   (1u << 1)
#define NBD_CMD_FLAG_DF        (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE   (1u << 3)
#define NBD_CMD_FLAG_FAST_ZERO (1u << 4)
#define NBD_CMD_FLAG_PAYLOAD_LEN (1u << 5)

/* Structured reply chunk types and flags. */
#define NBD_REPLY_FLAG_DONE         (1u << 0)
#define NBD_REPLY_TYPE_NONE         0
#define NBD_REPLY_TYPE_OFFSET_DATA  1
#define NBD_REPLY_TYPE_OFFSET_HOLE  2
#define NBD_REPLY_TYPE_BLOCK_STATUS 5
#define NBD_REPLY_TYPE_BLOCK_STATUS_EXT 6
#define NBD_REPLY_TYPE_ERROR        ((1u << 15) + 1)
#define NBD_REPLY_TYPE_ERROR_OFFSET ((1u << 15) + 2)

/* base:allocation status flags. */
#define NBD_STATE_HOLE (1u << 0)
#define NBD_STATE_ZERO (1u << 1)
#define PROTO_META_BASE_ALLOCATION "base:allocation"
#define PROTO_META_ID_BASE_ALLOCATION 1 /* the id uringnbd gives it */
/*
 * An export may offer more contexts (qemu:dirty-bitmap:NAME): the i-th of
 * them gets id PROTO_META_ID_EXTRA + i. At most PROTO_META_MAX_EXTRA.
 */
#define PROTO_META_ID_EXTRA 2
#define PROTO_META_MAX_EXTRA 24
/* The state bit of a qemu:dirty-bitmap context. */
#define NBD_STATE_DIRTY (1u << 0)

/* NBD error values (transmission phase). */
#define NBD_SUCCESS    0
#define NBD_EPERM      1
#define NBD_EIO        5
#define NBD_ENOMEM     12
#define NBD_EINVAL     22
#define NBD_ENOSPC     28
#define NBD_EOVERFLOW  75
#define NBD_ENOTSUP    95
#define NBD_ESHUTDOWN  108

/* Sizes of fixed wire structures. */
#define PROTO_GREETING_LEN     18  /* NBDMAGIC, IHAVEOPT, 16-bit flags */
#define PROTO_CLIENT_FLAGS_LEN 4
#define PROTO_OPTION_HDR_LEN   16  /* IHAVEOPT, option, length */
#define PROTO_OPTREPLY_HDR_LEN 20  /* magic, option, type, length */
#define PROTO_REQUEST_LEN      28  /* compact request header */
#define PROTO_EXT_REQUEST_LEN  32  /* extended request header */
#define PROTO_REQUEST_MAX_LEN  32
#define PROTO_SIMPLE_REPLY_LEN 16
#define PROTO_CHUNK_HDR_LEN    20  /* structured reply chunk header */
#define PROTO_EXT_REPLY_LEN    32  /* extended reply header */
#define PROTO_REPLY_HDR_MAX_LEN 32
#define PROTO_EXPORT_NAME_REPLY_LEN 10 /* size, flags; + 124 zeroes unless NO_ZEROES */

/* Limits. */
#define PROTO_NAME_MAX        4096        /* longest export name or string */
#define PROTO_OPTION_DATA_MAX (64 * 1024) /* longest option payload kept */

/* A byte buffer owned by the caller; encoders append at data + len. */
struct proto_buf {
	uint8_t *data;
	size_t len;     /* bytes used */
	size_t cap;     /* bytes available at data */
};

/* What negotiation needs to know of one export. Strings are borrowed. */
struct proto_export {
	const char *name;        /* NUL-terminated, at most PROTO_NAME_MAX */
	const char *description; /* NUL-terminated, may be "" */
	uint64_t size_bytes;
	uint16_t tflags;         /* transmission flags the export supports */
	uint32_t min_block;      /* block size constraints (NBD_INFO_BLOCK_SIZE) */
	uint32_t pref_block;
	uint32_t max_block;
	bool tls_only;           /* served only once TLS is up (SELECTIVETLS) */
	const char *const *contexts; /* meta contexts beyond base:allocation, full names */
	uint32_t ncontexts;      /* ...how many (at most PROTO_META_MAX_EXTRA) */
	void *opaque;            /* the caller's export, handed back untouched */
};

/*
 * The server's TLS mode, as the specification names them: NOTLS (STARTTLS
 * gets ERR_POLICY), SELECTIVETLS (STARTTLS is accepted; tls_only exports
 * need it), FORCEDTLS (every option but STARTTLS and ABORT gets
 * ERR_TLS_REQD until TLS is up).
 */
enum proto_tls {
	PROTO_TLS_OFF,
	PROTO_TLS_ON,
	PROTO_TLS_REQUIRE,
};

/*
 * How negotiation sees the caller's exports, as this client may see them.
 * lookup() fills *out and returns 0, or returns -ENOENT (no such export) or
 * -EACCES (this client is refused it: ERR_POLICY). nth() fills *out with
 * the i-th export this client may list and returns 0, or -ENOENT past the
 * last one. Both may be called several times.
 */
struct proto_exports {
	int (*lookup)(void *ctx, const char *name, size_t name_len,
		      struct proto_export *out);
	int (*nth)(void *ctx, size_t i, struct proto_export *out);
	void *ctx;
	bool shutting_down; /* answer ERR_SHUTDOWN to options that would proceed */
	enum proto_tls tls; /* the server's TLS mode */
	bool list_refused;  /* answer LIST with ERR_POLICY */
};

/* Where a connection is in the handshake. */
enum proto_phase {
	PROTO_PHASE_OPTIONS,      /* haggling */
	PROTO_PHASE_TRANSMISSION, /* an export was chosen; send the reply, then serve */
	PROTO_PHASE_CLOSE,        /* send the reply (if any), then close */
};

struct proto_session {
	enum proto_phase phase;
	uint32_t client_flags;
	bool no_zeroes;           /* client and server agreed on NO_ZEROES */
	bool structured;          /* structured replies negotiated (or implied) */
	bool extended;            /* extended headers negotiated */
	bool meta_base_allocation; /* base:allocation selected by SET_META_CONTEXT */
	uint32_t meta_extra;      /* bit i: the export's contexts[i] selected too */
	const void *meta_export;  /* ...for this export (its opaque); else none */
	struct proto_export export; /* valid once phase is TRANSMISSION */
	uint16_t tflags;          /* transmission flags sent to the client */
	bool tls;                 /* TLS is up (every option since went over it) */
	bool starttls;            /* STARTTLS was acknowledged: the caller runs the TLS
				     handshake, then calls proto_session_tls_started() */
};

/* An option header as read from the wire. */
struct proto_option {
	uint32_t option;
	uint32_t len_bytes;
};

/* A transmission request header as read from the wire. */
struct proto_request {
	uint16_t flags;
	uint16_t type;
	uint64_t cookie;
	uint64_t offset;
	uint64_t len_bytes;
};

/* ---- handshake ---- */

/* The server greeting: NBDMAGIC, IHAVEOPT, FIXED_NEWSTYLE|NO_ZEROES. */
void proto_encode_greeting(uint8_t out[PROTO_GREETING_LEN]);

/*
 * Takes the client flags. Returns 0 and sets up *s for option haggling, or
 * -EPROTO when the client sets a flag it must not (the server then closes).
 */
int proto_session_start(struct proto_session *s, const uint8_t in[PROTO_CLIENT_FLAGS_LEN]);

/*
 * The TLS handshake that followed an acknowledged STARTTLS succeeded:
 * whatever was negotiated before it (structured replies, extended headers,
 * meta contexts) is forgotten, as the specification requires, and the
 * client starts over inside TLS.
 */
void proto_session_tls_started(struct proto_session *s);

/* Decodes an option header; -EPROTO when the magic is not IHAVEOPT. */
int proto_decode_option(const uint8_t in[PROTO_OPTION_HDR_LEN], struct proto_option *opt);

/*
 * Handles one option whose payload (opt->len_bytes bytes) is in data. When
 * data is NULL the payload was too large to keep and has been skipped; the
 * option then gets ERR_TOO_BIG (or a close, for EXPORT_NAME). Appends the
 * reply bytes to out and returns 0 with *s advanced, or -ENOBUFS with
 * neither out nor *s changed.
 */
int proto_negotiate(struct proto_session *s, const struct proto_exports *ex,
		    const struct proto_option *opt, const uint8_t *data,
		    struct proto_buf *out);

/* Appends one option reply (header + payload). */
int proto_encode_option_reply(struct proto_buf *out, uint32_t option, uint32_t type,
			      const void *payload, size_t len);

/* ---- transmission ---- */

/* Length of a request header in this session: 28, or 32 with extended headers. */
size_t proto_request_hdr_len(const struct proto_session *s);

/*
 * Decodes a request header (proto_request_hdr_len() bytes). Returns 0, or
 * -EPROTO for a bad magic (the connection must then be closed: nothing after
 * it can be trusted).
 */
int proto_decode_request(const struct proto_session *s, const uint8_t *in,
			 struct proto_request *req);

/* Bytes of payload that follow this request header on the wire. */
uint64_t proto_request_payload_len(const struct proto_session *s, const struct proto_request *req);

/*
 * Validates a decoded request against the session and export. Returns
 * NBD_SUCCESS or the NBD error to reply with (EINVAL, EPERM, ENOSPC, ...),
 * after the payload has been read. max_len_bytes is the largest READ or
 * WRITE the server accepts; any offset and length within it is valid.
 */
uint32_t proto_validate_request(const struct proto_session *s, const struct proto_request *req,
				uint64_t max_len_bytes);

/*
 * BLOCK_STATUS with PAYLOAD_LEN (extended headers, NBD_FLAG_BLOCK_STAT_PAYLOAD
 * advertised): the payload is a 64-bit effect length and the ids of the
 * negotiated contexts the client wants, at most PROTO_BS_PAYLOAD_MAX bytes.
 * Whether req is such a request (its payload to be read whole first), and
 * the decoding of that payload: NBD_SUCCESS with *effect_len set, or
 * NBD_EINVAL (no id, an unknown or repeated id, a malformed length).
 */
#define PROTO_BS_PAYLOAD_MAX (8 + 4 * 16)
bool proto_block_status_payload(const struct proto_session *s, const struct proto_request *req);
uint32_t proto_decode_block_status_payload(const struct proto_session *s, const uint8_t *p,
					   uint64_t len, uint64_t *effect_len);
/*
 * The contexts a BLOCK_STATUS answers, as a mask: bit 0 base:allocation,
 * bit i + 1 the export's contexts[i]. Every negotiated one, or (p not NULL)
 * those a payload that decoded cleanly names.
 */
uint32_t proto_block_status_contexts(const struct proto_session *s, const uint8_t *p,
				     uint64_t len);

/*
 * Encodes the header of one reply chunk for the session: a structured chunk
 * header (20 bytes) or, with extended headers, an extended reply header (32
 * bytes, carrying the request's offset). Returns the header length.
 */
size_t proto_encode_reply_hdr(const struct proto_session *s, uint8_t out[PROTO_REPLY_HDR_MAX_LEN],
			      uint16_t flags, uint16_t type, uint64_t cookie, uint64_t offset,
			      uint64_t payload_len);

/* Encodes a simple reply header. */
void proto_encode_simple_reply(uint8_t out[PROTO_SIMPLE_REPLY_LEN], uint32_t nbd_error,
			       uint64_t cookie);

/*
 * Encodes a structured reply chunk header. The chunk's payload, len_bytes
 * long, follows it on the wire.
 */
void proto_encode_chunk_hdr(uint8_t out[PROTO_CHUNK_HDR_LEN], uint16_t flags, uint16_t type,
			    uint64_t cookie, uint32_t len_bytes);

/*
 * The reply to a request, header and fixed payload, for the session: a
 * simple reply, or a final structured chunk (OFFSET_DATA header + offset for
 * a successful READ with data; ERROR with an empty message for an error;
 * NONE otherwise). The caller sends data_len bytes of data after it when
 * *has_data is set. Returns the bytes written to out.
 */
#define PROTO_REPLY_MAX_LEN (PROTO_REPLY_HDR_MAX_LEN + 8)
size_t proto_encode_reply(const struct proto_session *s, uint8_t out[PROTO_REPLY_MAX_LEN],
			  const struct proto_request *req, uint32_t nbd_error, bool *has_data);

/* One extent of block status. */
struct proto_extent {
	uint64_t len_bytes;
	uint32_t flags;            /* NBD_STATE_* */
};

/*
 * A final BLOCK_STATUS (or, with extended headers, BLOCK_STATUS_EXT) chunk
 * for base:allocation: header, context id and the n extents. With compact
 * descriptors each extent must be below 4 GiB. Returns the bytes written,
 * or -ENOBUFS if cap is too small (proto_block_status_len() tells).
 */
size_t proto_block_status_len(const struct proto_session *s, size_t n);
int proto_encode_block_status(const struct proto_session *s, uint8_t *out, size_t cap,
			      const struct proto_request *req, const struct proto_extent *ext,
			      size_t n);
/* The same for context id, with DONE set only if done (more chunks follow otherwise). */
int proto_encode_block_status_ctx(const struct proto_session *s, uint8_t *out, size_t cap,
				  const struct proto_request *req, uint32_t id, bool done,
				  const struct proto_extent *ext, size_t n);

/* Maps a (positive) errno value to the NBD error sent for it. */
uint32_t proto_errno_to_nbd(int err);

/* Names for logs: "READ", "NBD_OPT_GO", "EINVAL". Unknown values give "?". */
const char *proto_cmd_name(uint16_t type);
const char *proto_opt_name(uint32_t option);

/* Big-endian helpers shared by the encoders and by tests. */
static inline void proto_put_u16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}
static inline void proto_put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}
static inline void proto_put_u64(uint8_t *p, uint64_t v)
{
	proto_put_u32(p, (uint32_t)(v >> 32));
	proto_put_u32(p + 4, (uint32_t)v);
}
static inline uint16_t proto_get_u16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}
static inline uint32_t proto_get_u32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t proto_get_u64(const uint8_t *p)
{
	return ((uint64_t)proto_get_u32(p) << 32) | proto_get_u32(p + 4);
}

#endif
