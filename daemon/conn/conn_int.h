/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * conn_int.h: a client connection and its requests, on the worker that
 * owns them. Private to conn/ (conn.h is what the layers above see):
 * worker.c, server.c and main.c do not see these types.
 *
 * Completions: everything a connection waits for is a struct conn_op (an
 * SQE, a range-lock grant, a cache fill's end, a pool wait, a posted
 * resume). conn.c counts them in c->pending; each conn_op's fn runs from the
 * loop, and the connection is freed once it is closing and nothing is
 * pending, so no memory an SQE names is freed under the kernel.
 *
 * A request's life, one state at a time, every change through
 * req_set_state(), which asserts the transition is legal:
 *
 *   FREE -> NEW --------------------------------------------> REPLY -> FREE
 *            |   (refused, or nothing to move)                 ^
 *            +-> SKIP (refused, payload discarded) ------------+
 *            +-> BUFFERS -> PAYLOAD (WRITE) -> LOCK_WAIT -> LOCKED
 *            +-> FLUSH ----------------------------------------+
 *   LOCKED -> [BITMAP -> LOCKED] -> RMW -> IO | IO | FALLOC -> [ZERO_WRITE] -> [SYNC]
 *          | CACHED | EXTENTS
 *          -> (unlock) REPLY
 *
 * A READ or WRITE over EXPORT_MAX_REQUEST_BYTES (or a WRITE_ZEROES that writes
 * zeroes, on a device) is served in segments
 * (REQ_SEGMENT_BYTES each, their boundaries aligned in the file) under one
 * range lock over all of it, through buffers for one segment: q->whole is
 * the request, q->r the segment being served. After each segment but the
 * last, a READ sends that segment's data (SEG_REPLY) and a WRITE receives
 * the next segment's payload (SEG_PAYLOAD); both hold the lock, and then
 * go back to LOCKED for the next segment:
 *
 *   IO | CACHED | SYNC -> SEG_REPLY | SEG_PAYLOAD -> LOCKED -> ...
 *
 * Steps may be skipped (no buffers needed, lock granted at once, payload
 * already buffered); any state may go to FREE when the connection closes.
 * "Locked" is a set of states: the range lock is held exactly while the
 * request is in LOCKED, BITMAP, RMW, IO, FALLOC, ZERO_WRITE, SYNC, CACHED,
 * EXTENTS, SEG_REPLY or SEG_PAYLOAD. A write to a file with dirty bitmaps
 * waits in BITMAP (lock held) until the bits it sets are on disk (bitmap.c).
 */
#ifndef URINGNBD_CONN_INT_H
#define URINGNBD_CONN_INT_H

#include <sys/socket.h>

#include "../../cache/cache.h"
#include "conn.h"

#define CONN_MAX_REQS 128 /* requests in flight per connection */
#define CACHE_WINDOW 16   /* pages of a cached read looked up at a time */
#define REQ_INLINE_CHUNKS 16 /* iovecs kept in the request: spans up to 1 MiB */
/*
 * Requests are received into a buffer, so that every request that has
 * arrived is dispatched in the same loop iteration (one submit for all of
 * them). WRITE payloads in it are copied to the request's pages; the rest of
 * a larger payload is received straight into them.
 */
#define CONN_RXBUF_BYTES (256u * 1024)
/*
 * A receive posted while the connection has nothing in flight uses only the
 * start of the buffer (room for a header and a 4 KiB payload and more), so
 * the rest of the area can be given back while it waits.
 */
#define CONN_RX_QUIET_BYTES (16u * 1024)
#define CONN_QUIET_NS 2000000000ull /* quiet this long: the area's pages are given back */
/*
 * Timers a connection keeps in its worker's heap: the watchdog, the
 * negotiation's limit and a throttled request's wait.
 */
#define CONN_TIMERS 3
/* A throttled request looks again this often whether its limits changed (rx.c). */
#define CONN_THROTTLE_RECHECK_NS (20 * 1000000ull)
/* A watchdog rule due but not in force (a request in flight) is looked at again this often. */
#define CONN_RECHECK_NS (50 * 1000000ull)
/* A hand-over looks this often for its connections to be parked. */
#define HANDOVER_CHECK_NS 1000000ull
#define CONN_SEND_IOVS 1024   /* iovecs in one reply sendmsg */
/*
 * The bounce chunk of a BLOCK_STATUS, or of a READ answering holes: extents
 * found off the loop from here on; a READ's chunk headers from 0 and its
 * reply_piece list from REQ_BOUNCE_PIECES_OFF.
 */
#define REQ_BOUNCE_EXTENTS_OFF (POOL_CHUNK_BYTES / 2)
#define REQ_BOUNCE_PIECES_OFF (POOL_CHUNK_BYTES / 4)
/* A READ's reply in pieces: a chunk header, and the data it carries (if any). */
struct reply_piece {
	uint32_t hdr_off, hdr_len;  /* in the bounce chunk */
	uint32_t data_off, data_len; /* in the request's buffer; 0 for a hole */
};
/* A segment of a READ or WRITE over EXPORT_MAX_REQUEST_BYTES (see above). */
#define REQ_SEGMENT_BYTES (16u << 20)
/* The most a segment spans: a segment and an alignment block at each end. */
#define REQ_SEGMENT_SPAN_BYTES (REQ_SEGMENT_BYTES + 2 * EXPORT_MAX_ALIGN_BYTES)

/* The host's table and settings (conns_init): read on every worker. */
extern struct conn_host conn_host;

/* What the connection layer keeps per worker (w->clients). */
struct worker_clients {
	struct worker *w;
	struct conn *conns;        /* its connections */
	struct timer watch;        /* finds its oldest request in flight (watch.c) */
	struct timer handover_check; /* a hand-over's poll for its connections to be parked */
	uint64_t handover_since_ns; /* ...since this worker_now() */
	struct op *handover_done;  /* ...posted when they are; NULL: no hand-over under way */
};
/* Timers the layer keeps per worker: the watch and the hand-over's check. */
#define CONNS_WORKER_TIMERS 2

/*
 * watch.c: once a second while w has connections, its oldest request in
 * flight is published (stats.oldest_req_start_ns) and, past 10 s, logged.
 * conns_watch_arm: a connection was adopted.
 */
void conns_watch_fire(struct timer *t);
void conns_watch_arm(struct worker *w);

struct conn;

/* An op of a connection: counted in c->pending until fn has run. */
struct conn_op {
	struct op op;              /* what the worker completes */
	struct conn *c;
	void (*fn)(struct conn_op *o, int res);
};

/* One page of a cached read: its fill, its wait, or its read around the cache. */
struct page_slot {
	struct req *q;
	struct conn_op op;         /* the fill's read, or the end of a wait */
	struct cache_page *p;      /* the placeholder being filled; NULL when reading around */
	uint64_t index;            /* page index in the file */
	uint32_t buf_off;          /* where the page goes in the request's buffer */
	struct cache_waiter w;     /* parked on another request's fill */
#ifdef URINGNBD_TEST_HOOKS
	bool delayed;              /* the fill's end is being held open */
	int held_res;              /* ...and this was its result */
	struct __kernel_timespec hold; /* ...for this long */
#endif
};

enum req_state {
	REQ_FREE,        /* slot unused */
	REQ_NEW,         /* header decoded: being validated and planned */
	REQ_BUFFERS,     /* waiting for pool chunks */
	REQ_PAYLOAD,     /* receiving the rest of a WRITE payload into its chunks */
	REQ_SKIP,        /* refused: discarding the rest of its payload */
	REQ_LOCK_WAIT,   /* waiting for its range lock */
	REQ_LOCKED,      /* lock held: choosing its work (block status is done here) */
	REQ_BITMAP,      /* a write waiting for its dirty-bitmap bits to be on disk */
	REQ_RMW,         /* reading the edge blocks of an unaligned write */
	REQ_IO,          /* reading or writing its data */
	REQ_FALLOC,      /* TRIM / WRITE_ZEROES by fallocate */
	REQ_ZERO_WRITE,  /* WRITE_ZEROES by writing zeroes (no fallocate support) */
	REQ_SYNC,        /* fdatasync after a TRIM / WRITE_ZEROES with FUA */
	REQ_CACHED,      /* pages through the page cache */
	REQ_EXTENTS,     /* BLOCK_STATUS: the extent query runs on an offload thread */
	REQ_SEG_REPLY,   /* a segmented READ: a segment's data being sent, lock held */
	REQ_SEG_PAYLOAD, /* a segmented WRITE: the next segment's payload coming, lock held */
	REQ_FLUSH,       /* fdatasync (no lock) */
	REQ_REPLY,       /* queued for sending, or being sent */
	REQ_THROTTLED,   /* waiting for its rate limits; then REQ_NEW again */
	REQ_NSTATES
};

struct req {
	struct conn *c;
	enum req_state state;      /* change only through req_set_state() */
	struct proto_request r;    /* the request; of a segmented one, its current segment */
	struct proto_request whole; /* a segmented request as the client sent it */
	bool seg;                  /* served in segments (whole is set) */
	bool seg_sent;             /* a segmented READ: some of its reply is on the wire */
	struct plan plan;          /* which bytes move, where, under which lock */
	uint32_t nbd_error;        /* error to reply with, NBD_SUCCESS if none */
	struct conn_op op;         /* its one op in flight: payload, lock grant, edge reads,
				      file I/O, a pool wait, or an offloaded extent query */
	struct backend_io bio;     /* its call to the export's backend (fileio.c); bio.job also
				      runs BLOCK_STATUS's and a READ's extent queries off the loop */
	size_t nextents;           /* ...and how many extents it found (also a READ's holes) */
	uint32_t bs_contexts;      /* BLOCK_STATUS: the contexts to answer (proto's mask) */
	struct bitmap_wait bm_wait; /* REQ_BITMAP: its place in the commit queue */
	uint16_t npieces;          /* a READ answered in data and hole chunks: how many */
	int falloc_mode;           /* TRIM / WRITE_ZEROES: the fallocate mode tried */
	/* Buffers: the span in pool chunks, and a bounce chunk for edge blocks. */
	struct iovec *iov;         /* one pool chunk each, the last trimmed to io_len */
	uint32_t niov;             /* chunks held in iov */
	struct iovec *io_iov;      /* scratch: the slice the current op moves */
	struct iovec bounce;       /* edge blocks (head at 0, tail at align); or NULL */
	struct iovec iov_inline[REQ_INLINE_CHUNKS];
	struct iovec io_iov_inline[REQ_INLINE_CHUNKS];
	uint64_t io_done_bytes;    /* progress of the current file or receive op */
	unsigned rmw_pending;      /* edge reads in flight */
	int rmw_err;               /* first error of those */
	uint32_t cache_next, cache_npages; /* pages looked up so far, of the span */
	uint32_t cache_pending;    /* fills, waits and reads of the window in flight */
	struct page_slot slots[CACHE_WINDOW];
	struct rl_lock lock;       /* held in the locked states */
	uint64_t start_ns;         /* now_ns() when its header was taken */
	uint64_t wait_start_ns;    /* now_ns() when it began to wait for chunks or its lock */
	uint8_t reply_hdr[PROTO_REPLY_MAX_LEN]; /* simple reply or final chunk */
	uint32_t reply_hdr_len;
	bool reply_data;           /* data pages follow the reply header */
	uint32_t reply_raw_len;    /* if set: the whole reply is in the bounce chunk */
	uint16_t ublk_tag;         /* a ublk queue's request: its tag (ublk.c) */
	bool ublk_buf;             /* ...whose iov is its tag's own buffer, not pool chunks */
	struct req *next;          /* free list or send queue */
};

/*
 * What a connection needs only while it serves requests. Mapped (not
 * touched) when transmission starts; its pages are touched as traffic needs
 * them, request slots are handed out lowest first and reused most recently
 * freed first, and once the connection has been quiet for CONN_QUIET_S
 * everything but the start of rxbuf is given back (MADV_DONTNEED), so an
 * idle connection costs a few KiB however busy it once was.
 */
struct conn_area {
	uint8_t rxbuf[CONN_RXBUF_BYTES];     /* first, page-aligned */
	struct iovec send_iov[CONN_SEND_IOVS];
	struct req reqs[CONN_MAX_REQS];
};

enum conn_state {
	CONN_HANDSHAKE,   /* option haggling */
	CONN_TRANSMIT,    /* serving requests */
	CONN_STOPPING,    /* server stopping: new requests get ESHUTDOWN; close when idle */
	CONN_DRAINING,    /* DISC seen: finish in-flight requests, then close */
	CONN_CLOSING,     /* socket shut down; freed once nothing is pending */
};

/* The receive side of a connection in transmission. */
enum rx_state {
	RX_IDLE,          /* nothing in flight: parse what is buffered, then receive */
	RX_RECV,          /* a receive into rxbuf is in flight */
	RX_PAYLOAD,       /* rx_req's payload is being received into its chunks */
	RX_SKIP,          /* rx_req's refused payload is being discarded */
	RX_WAIT_SLOT,     /* every request slot is busy */
	RX_WAIT_BUFFERS,  /* rx_req waits for pool chunks */
	RX_STREAM,        /* the intake belongs to rx_req's later segments (a segmented WRITE) */
	RX_WAIT_THROTTLE, /* rx_req waits for its rate limits; what follows stays in the socket */
	RX_STOPPED,       /* DISC seen, or closing: nothing more is read */
};

struct ublk_queue;

struct conn {
	struct worker *w;
	struct ublk_queue *uq;     /* a ublk device's queue (ublk.c), not a socket; else NULL */
	struct conn *prev, *next;  /* worker's list */
	uint64_t id;
	int fd;                    /* the socket; or, serving stdin/stdout, what it reads */
	int fd_out;                /* what it writes: fd, or stdout */
	bool stream;               /* fd and fd_out are pipes or files: read/write, not recv/send */
	struct client_key key;     /* who it is, for the per-client limit */
	struct client_peer peer;   /* ...and the rest of what is known of it */
	struct tls_conn *tls;      /* TLS session (tls.c) once STARTTLS was acknowledged */
	enum conn_state state;
	bool handover;             /* a hand-over: read no more requests, park when idle */
	unsigned pending;          /* conn_ops not yet completed (SQEs, waits, posts) */
	struct conn_op close_op;   /* posted by conn_close: the free is checked from the loop */
	struct conn_op shut_op;    /* a stream's cancel of its reads and writes at close */
	struct timer watchdog;     /* io-timeout, idle-timeout, the area's release, stop_by_ns */
	uint64_t last_progress_ns; /* worker_now() a send or payload receive last moved */
	uint64_t last_active_ns;   /* worker_now() bytes last came in */
	uint64_t stop_by_ns;       /* disconnect asked: closed by this worker_now() however busy; 0: not */
	uint64_t progress_len_ns;  /* the shortest rule counted from last_progress_ns (io-timeout); 0: none */
	uint64_t active_len_ns;    /* ...and from last_active_ns (idle-timeout, the area's release) */
	uint64_t started_ns;       /* now_ns() at adoption */
	uint64_t requests, errors; /* replied to, and of those with an error */
	enum transport transport;  /* set when an export is chosen (its counters' label) */
	int result;                /* enum conn_result once known, else -1 */
	uint64_t bytes_read, bytes_written; /* by successful READs and WRITEs */

	/* handshake (handshake.c) */
	struct timer hs_timer;     /* bounds the negotiation (server handshake_timeout_s) */
	struct conn_op hs_op;      /* the handshake send or receive in flight */
	struct proto_session sess;
	int hs_step;               /* which handshake step the current I/O is for */
	unsigned hs_options;       /* options received so far */
	unsigned hs_refusals_logged; /* access refusals logged so far */
	uint8_t *hs_buf;           /* option payload (heap, handshake only) */
	size_t hs_cap;
	struct proto_buf hs_out;   /* replies (heap, handshake only) */
	uint8_t hs_hdr[PROTO_OPTION_HDR_LEN];
	struct proto_option opt;
	uint8_t *io_ptr;           /* exact send/recv in progress */
	size_t io_left;
	uint64_t skip_left;        /* payload bytes still to discard */

	/* transmission: receiving (rx.c) */
	const struct export *exp;
	struct conn_area *area;    /* mmap'd at transmission start; NULL before */
	bool area_quiet;           /* its pages were given back; nothing touched since */
	enum rx_state rx;
	bool rx_quiet;             /* the receive in flight uses only CONN_RX_QUIET_BYTES */
	bool rx_cancelling;        /* a full-size receive is being replaced by a quiet one */
	struct conn_op cancel_op;  /* that cancel's own completion */
	uint8_t *rxbuf;            /* area->rxbuf: requests as they arrive */
	size_t rx_start, rx_end;   /* unparsed bytes are rxbuf[rx_start, rx_end) */
	size_t rx_hdr_len;         /* 28, or 32 with extended headers */
	struct conn_op rx_op;      /* the receive into rxbuf, or a skip */
	struct conn_op resume_op;  /* posted when a slot frees while RX_WAIT_SLOT */
	struct msghdr rx_msg;      /* WRITE payload recvmsg in flight */
	struct req *rx_req;        /* RX_PAYLOAD, RX_SKIP, RX_WAIT_BUFFERS: which request */
	struct pool_account acct;  /* pool chunks its requests hold (the fair share) */
	struct pool_waiter buf_wait; /* rx_req's wait for chunks (RX_WAIT_BUFFERS) */
	/* rate limits (rx.c): its own, then its export's and group's (limits.c) */
	struct throttle thr;       /* the export's per-connection limits, its own buckets */
	unsigned thr_gen;          /* the export's conn_gen thr's limits were copied at */
	struct timer thr_timer;    /* RX_WAIT_THROTTLE: when rx_req may go, or look again */
	uint64_t thr_due_ns;       /* worker_now() rx_req may go at */
	uint64_t thr_since_ns;     /* ...and began waiting at */
	unsigned thr_seen;         /* the limits' generations it was charged under */
	struct throttle *thr_exp, *thr_grp; /* whose counters its wait is on (grp: or NULL) */

	struct req *free_reqs;     /* slots used before and free again, most recent first */
	unsigned reqs_fresh;       /* area->reqs[reqs_fresh..] never used since mapped or given back */
	unsigned live_reqs;        /* slots taken */

	/* replies (reply.c): one sendmsg in flight, many replies per sendmsg */
	struct conn_op send_op;
	struct req *sendq_head, *sendq_tail;
	struct req *sending;       /* replies in the sendmsg in flight (chained) */
	struct req *seg_stream;    /* a segmented READ part-way through its reply: only its
				      segments may be sent until its last one is */
	struct msghdr send_msg;    /* its iovecs are area->send_iov */
};

/* ---- conn.c ---- */
/* Prepares o to run fn for connection c. */
void conn_op_init(struct conn_op *o, struct conn *c, void (*fn)(struct conn_op *, int));
/* A fresh SQE completing o (counted as pending). Never NULL. */
struct io_uring_sqe *conn_sqe(struct conn_op *o);
/* Posts o to the ready list with res (counted as pending); from c's worker. */
void conn_post(struct conn_op *o, int res);
/* o will be posted from elsewhere (a lock grant, a cache wait): count it now. */
void conn_expect(struct conn_op *o);
/* Shuts the socket down; the connection is freed once nothing is pending. */
void conn_close(struct conn *c, const char *why);
/* DRAINING or STOPPING with no request left: close. */
void conn_close_if_idle(struct conn *c);
/*
 * The watchdog must look no later than due_ns: armed sooner, it stays (one
 * compare); unarmed (nothing could come due without a stamp, conn.c) or
 * later, it moves. Not before transmission, nor once closing.
 */
static inline void conn_watchdog_by(struct conn *c, uint64_t due_ns)
{
	if (c->area && c->state != CONN_CLOSING &&
	    (!timer_armed(&c->watchdog) || c->watchdog.due_ns > due_ns))
		worker_timer_at(c->w, &c->watchdog, due_ns);
}
/* A fresh stamp starts a rule's count of len_ns again (0: no such rule). */
static inline void conn_watchdog_pull(struct conn *c, uint64_t len_ns)
{
	if (len_ns)
		conn_watchdog_by(c, worker_now(c->w) + len_ns);
}
/* A send or payload receive starts or moves on (for io-timeout). */
static inline void conn_progress(struct conn *c)
{
	c->last_progress_ns = worker_now(c->w);
	conn_watchdog_pull(c, c->progress_len_ns);
}
/* Bytes came in (for idle-timeout and the area's release). */
static inline void conn_active(struct conn *c)
{
	c->last_active_ns = worker_now(c->w);
	conn_watchdog_pull(c, c->active_len_ns);
}
/*
 * The connection's own I/O: o completes with the bytes moved (or -errno, or
 * 0 at the end of the stream), like the SQE it stands for. Over TLS the
 * bytes are plaintext and tls.c moves them; otherwise it is one SQE.
 * recvmsg waits for all (MSG_WAITALL); a send may be short only on error.
 */
void conn_recv(struct conn_op *o, void *buf, size_t len, bool waitall);
void conn_recvmsg(struct conn_op *o, struct msghdr *m);
void conn_send(struct conn_op *o, const void *buf, size_t len);
void conn_sendmsg(struct conn_op *o, struct msghdr *m);
/* "127.0.0.1:40000", "[::1]:40000", "uid 1000 gid 1000 pid 42": for log lines. */
const char *conn_peer_name(const struct conn *c, char *buf, size_t len);
/*
 * The transport underneath: recv/send (MSG_WAITALL where asked) on a
 * socket, read/write on the pipes of a single-connection daemon. Used by
 * the above, and by tls.c for ciphertext.
 */
void conn_prep_recv(struct io_uring_sqe *sqe, const struct conn *c, void *buf, size_t len,
		    bool waitall);
void conn_prep_recvmsg(struct io_uring_sqe *sqe, const struct conn *c, struct msghdr *m);
void conn_prep_send(struct io_uring_sqe *sqe, const struct conn *c, const void *buf, size_t len);
void conn_prep_sendmsg(struct io_uring_sqe *sqe, const struct conn *c, struct msghdr *m);
/* Transmission starts: the area is mapped and the watchdog runs. Returns 0 or -errno. */
int conn_transmit_start(struct conn *c);

/* ---- tls.c: the connection side ---- */
/*
 * STARTTLS was acknowledged: runs the TLS handshake on c's socket; done is
 * posted with 0 once TLS is up, or -errno (the failure is logged and the
 * client told by an alert). From then on conn_recv/conn_send go through
 * TLS. Returns -errno if the session could not even be set up.
 */
int tls_conn_start(struct conn *c, struct tls_creds *creds, struct conn_op *done);
void tls_recv(struct conn_op *o, const struct iovec *iov, unsigned niov, bool waitall);
void tls_send(struct conn_op *o, const struct iovec *iov, unsigned niov);
/* Ends a receive that has received nothing yet with -ECANCELED; false if it cannot. */
bool tls_cancel_recv(struct conn *c, struct conn_op *o);
/* The connection closes: ops waiting inside TLS end. */
void tls_conn_closing(struct conn *c);
void tls_conn_free(struct conn *c);
bool tls_conn_up(const struct conn *c);
/* A PSK username or a verified client certificate's DN; NULL if none. */
const char *tls_conn_identity(const struct conn *c);
/* What tls-allow matches: the PSK username or the certificate's CN; NULL if none. */
const char *tls_conn_name(const struct conn *c);
/* "(TLS1.3)-(ECDHE-SECP256R1)-...": free with tls_desc_free(). NULL before TLS. */
char *tls_conn_desc(const struct conn *c);
void tls_desc_free(char *desc);

/* ---- handshake.c ---- */
/* The greeting goes out; negotiation runs until an export is chosen. */
void handshake_start(struct conn *c);

/* ---- rx.c ---- */
/* An export is chosen: serve requests. */
void rx_start(struct conn *c);
/* A connection handed over: serve requests, starting with the n bytes it had sent. */
void rx_start_resumed(struct conn *c, const uint8_t *p, size_t n);
/* Parses what is buffered, then receives more; only in RX_IDLE. */
void rx_next(struct conn *c);
/* A request slot was freed: resume a receive waiting for one. */
void rx_slot_freed(struct conn *c);
/* Closing: a request waiting for its rate limits is dropped (rx_req, recycled). */
void rx_throttle_cancel(struct conn *c);
/* Receives the rest of q's WRITE payload into its chunks. */
void rx_payload(struct req *q);
/* A segmented WRITE: takes the payload of its (new) current segment, then runs it. */
void rx_segment_payload(struct req *q);
/*
 * A request that failed (q->nbd_error) with len_bytes of its payload still
 * on the wire: drop them, reply, and go on reading requests.
 */
void rx_skip_rest(struct req *q, uint64_t len_bytes);

/* ---- request.c ---- */
/* Asserts that the transition is one of the life cycle's, then makes it. */
void req_set_state(struct req *q, enum req_state to);
/* Whether q holds its range lock. */
static inline bool req_locked(const struct req *q)
{
	return q->state >= REQ_LOCKED && q->state <= REQ_SEG_PAYLOAD;
}
/* A segmented request's current segment is its last. */
static inline bool req_seg_last(const struct req *q)
{
	return q->r.offset + q->r.len_bytes == q->whole.offset + q->whole.len_bytes;
}
/* Plans q->r (rx.c's geometry): a segmented request keeps its lock and buffers. */
void req_plan(struct req *q);
/* q->r is over EXPORT_MAX_REQUEST_BYTES and moves data through buffers: serve it in segments. */
void req_segment_start(struct req *q);
/* Runs the locked work of q's plan (it holds its lock). */
void req_run_locked(struct req *q);
/* A segmented READ's segment reply has been sent: the next segment. */
void req_segment_sent(struct req *q);
/* Takes a free slot (there is one) for a request being decoded: REQ_NEW. */
struct req *req_take(struct conn *c);
/*
 * Takes the pool chunks q's plan needs, within the connection's fair share
 * (or those promised to its wait): 0, -ENOBUFS (none taken: wait for the
 * pool), or -ENOMEM (fail the request).
 */
int req_get_buffers(struct req *q);
/* Gives q's chunks back to the pool. */
void req_release_buffers(struct req *q);
/* Buffers in hand, payload received: lock, then do the work. */
void req_lock(struct req *q);
/*
 * The request's work is over: a write tells the cache, the lock is released,
 * and the reply is queued (or the request recycled if the connection closes).
 */
void req_finish(struct req *q, uint32_t nbd_error);
/*
 * The slot is free again: buffers back to the pool (pool waiters are posted
 * by the worker), a receive waiting for a slot is posted, an idle draining
 * connection closes. Calls nothing that could come back here.
 */
void req_recycle(struct req *q);

/* ---- fileio.c ---- */
/* Under the lock: the work of a direct request (read, write, trim, zero, extents). */
void fileio_start(struct req *q);
/* FLUSH: fdatasync, no lock. */
void fileio_flush(struct req *q);

/* ---- cached.c ---- */
/* Under the lock: a READ or CACHE through the page cache. */
void cached_start(struct req *q);

/* ---- ublk.c: a ublk queue's side of the request path ---- */
/* Takes the requests the kernel handed over, in order, while the intake is open. */
void ublk_intake(struct conn *c);
/*
 * q's buffers: its tag's own, where the kernel put a WRITE's data and takes
 * a READ's (true); or false, and it takes pool chunks (planned wider).
 */
bool ublk_buffers(struct req *q);
/* A WRITE's data is where its plan wants it (copied into pool chunks if it has them). */
void ublk_payload(struct req *q);
/* Answers q to the kernel (a READ's data first) and re-arms its tag. */
void ublk_reply(struct req *q);
/* The queue's conn is being freed. */
void ublk_queue_closed(struct conn *c);
/* "ublk0 queue 1": for log lines. */
void ublk_queue_name(const struct conn *c, char *buf, size_t len);

/* ---- conn.c: a client without a socket ---- */
/*
 * A connection in transmission with export e (a reference it takes over)
 * and no socket, for a ublk queue: no watchdog, not counted as a client
 * (w->nattached instead, which polling heeds). NULL if out of memory.
 */
struct conn *conn_attach(struct worker *w, struct export *e, enum transport t);
/*
 * Frees c, whose worker is gone (joined) with ops of c's still in its ring,
 * which nobody will reap: no request of c's may be in hand.
 */
void conn_forget(struct conn *c);

/* ---- rx.c: a request from elsewhere than the socket ---- */
/*
 * q->r is valid: rate limits, plan, buffers and payload, then its lock, as
 * for a request read from the socket. Returns false if the intake must wait.
 */
bool rx_take_request(struct req *q);

/* ---- reply.c ---- */
/* Encodes q's reply (nbd_error) and queues it; sends if none is in flight. */
void reply_queue(struct req *q);

#endif
