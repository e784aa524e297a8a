/*
 * daemon: the internal header shared by the files of daemon/ (nothing
 * outside daemon/ includes it).
 *
 * Threads and ownership:
 *  - The main thread parses options, opens exports, owns the listeners and
 *    the signal watchers (one libev loop), and hands each accepted socket to
 *    a worker.
 *  - A worker owns one libev loop, one io_uring, one buffer pool, and every
 *    connection it was handed, for the connection's whole life. Nothing of a
 *    worker is touched by another thread except its inbox (under its mutex)
 *    and its ev_async watcher.
 *  - Exports are opened before workers start and are read-only afterwards.
 *
 * io_uring: every SQE's user_data is (object pointer | op code) and every
 * completion goes through one dispatch table (worker.c). Memory named in an
 * SQE belongs to the kernel until its CQE arrives; a connection counts its
 * SQEs in flight and is freed only when that count is zero.
 */
#ifndef URINGNBD_DAEMON_H
#define URINGNBD_DAEMON_H

#include <ev.h>
#include <liburing.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "../cache/cache.h"
#include "../lock/rangelock.h"
#include "../proto/proto.h"

#define URINGNBD_VERSION "0.1.0"

/* ---- log.c ---- */
enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };
extern enum log_level log_max_level;
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) do { if (log_max_level >= LOG_DEBUG) log_msg(LOG_DEBUG, __VA_ARGS__); } while (0)

/* ---- export.c ---- */
#define EXPORT_MAX_REQUEST_BYTES (32u * 1024 * 1024) /* largest READ/WRITE served */
#define EXPORT_MAX_ALIGN_BYTES (32u * 1024)          /* two edge blocks fit one pool chunk */

/* One lock manager per backing file, shared by every export of that file. */
struct file_locks {
	struct rl_manager *m;
	uint64_t cache_id;        /* this file's key in the page cache (never reused) */
	_Atomic int refs;
	dev_t dev;
	ino_t ino;
};

/*
 * An export. Heap object, reference counted: the server's table holds one
 * reference and every connection that chose it holds one, so an export
 * removed by a reload lives on until its last connection closes.
 */
struct export {
	_Atomic int refs;
	char *name;            /* export name ("" is the default export) */
	char *description;
	char *path;            /* backing file or block device */
	int fd;                /* opened O_DIRECT */
	int fd_buffered;       /* same file without O_DIRECT: the partial last block only */
	bool readonly;
	bool is_blockdev;
	uint64_t size_bytes;
	uint64_t direct_end;   /* size rounded down to align_bytes: O_DIRECT below it */
	uint32_t align_bytes;  /* direct-I/O offset/length alignment */
	uint16_t tflags;       /* transmission flags it supports */
	int cache_mode;        /* enum cache_mode */
	struct rl_manager *locks; /* every request locks the byte range it touches */
	struct file_locks *file_locks; /* whose manager that is (shared per file) */
	dev_t dev;
	ino_t ino;
};

/* Which reads go through the page cache. */
enum cache_mode {
	CACHE_MODE_NONE,    /* direct only */
	CACHE_MODE_ALWAYS,  /* every read served from and filled into the cache */
	CACHE_MODE_AUTO,    /* reads under 64 KiB or unaligned through the cache */
};
#define CACHE_AUTO_MAX_BYTES (64u * 1024)
int cache_mode_parse(const char *s); /* -1 if unknown */
const char *cache_mode_name(int mode);

struct export_spec {
	const char *name;
	const char *description;
	const char *path;
	bool readonly;
	int cache_mode;        /* enum cache_mode */
	char *storage;         /* heap copy the strings point into, or NULL */
	char *extra[2];        /* more heap strings (config file), freed with it */
	unsigned nextra;
	int config_line;       /* where a config file defined it */
};

/*
 * Opens and probes the backing file; logs one clear message on failure.
 * Returns a new export holding one reference, or NULL. Exports of the same
 * file among others[0..nothers) share its lock manager.
 */
struct export *export_open(const struct export_spec *spec, struct export *const *others,
			   size_t nothers);
void export_get(struct export *e);
/* Drops a reference; the last one closes and frees the export. */
void export_put(struct export *e);
/* Whether e is what spec describes (a reload may keep it). */
bool export_matches(const struct export *e, const struct export_spec *spec);
/*
 * base:allocation of [off, off + len) from SEEK_DATA/SEEK_HOLE: at most max
 * extents (one if `one`), covering at least the first byte. Returns the count.
 */
size_t export_extents(const struct export *e, uint64_t off, uint64_t len, bool one,
		      struct proto_extent *ext, size_t max);
/* Fills the negotiation view of e. */
void export_describe(const struct export *e, struct proto_export *out);

/* ---- pool.c: page-aligned buffers for O_DIRECT, sized at start ---- */
#define POOL_CHUNK_BYTES (64u * 1024) /* unit of allocation: one iovec */
/* The largest request's aligned span (request + two edge blocks), plus a bounce chunk. */
#define POOL_MAX_CHUNKS_PER_REQ \
	((EXPORT_MAX_REQUEST_BYTES + 2 * EXPORT_MAX_ALIGN_BYTES) / POOL_CHUNK_BYTES + 1)

struct pool {
	uint8_t *base;          /* mmap'd, page-aligned, nchunks * POOL_CHUNK_BYTES */
	uint32_t nchunks;
	uint32_t *free_stack;   /* indices of free chunks */
	uint32_t nfree;
};

int pool_init(struct pool *p, size_t size_bytes);
void pool_release(struct pool *p);
/*
 * Takes enough chunks for len_bytes into iov[] (each a whole chunk but the
 * last, trimmed to what is left). Returns the number of chunks, or -ENOBUFS
 * with nothing taken.
 */
int pool_get(struct pool *p, uint64_t len_bytes, struct iovec *iov);
void pool_put(struct pool *p, uint32_t n, const struct iovec *iov);

/* iovec helpers: dst covers bytes [off, off + len) of src; returns dst's count. */
unsigned iov_slice(const struct iovec *src, unsigned nsrc, size_t off, size_t len,
		   struct iovec *dst);
/* Copies len bytes from buf to byte offset off of the iovecs. */
void iov_copy_in(const struct iovec *iov, unsigned n, size_t off, const void *buf, size_t len);
static inline uint32_t pool_chunks_for(uint64_t len_bytes)
{
	return (uint32_t)((len_bytes + POOL_CHUNK_BYTES - 1) / POOL_CHUNK_BYTES);
}

/* ---- worker.c ---- */
struct server;
struct conn;
struct req;

/* Counters a worker updates and the main thread reads (relaxed atomics). */
struct worker_stats {
	_Atomic uint64_t lock_acquired;  /* range locks taken */
	_Atomic uint64_t lock_waited;    /* of which had to wait */
	_Atomic uint64_t lock_wait_ns;   /* total time waited */
	_Atomic uint64_t rmw_writes;     /* unaligned writes done by read-modify-write */
	_Atomic uint64_t buffered_ios;   /* requests on the partial last block */
};

/* Operation codes packed in the low bits of user_data. */
enum op {
	OP_NONE,
	OP_CONN_HS,       /* handshake send or recv (conn) */
	OP_CONN_RX,       /* recv into the connection's receive buffer (conn) */
	OP_CONN_RX_SKIP,  /* discarding the rest of a refused payload (conn) */
	OP_CONN_SEND,     /* reply batch sendmsg (conn) */
	OP_REQ_RX_DATA,   /* WRITE payload recv into the request's pages (req) */
	OP_REQ_FILE,      /* file read/write/fsync of the request's data (req) */
	OP_REQ_RMW,       /* edge-block read before an unaligned write (req) */
	OP_CACHE_FILL,    /* one page read for the cache, or around it (cache slot) */
	OP_MAX
};
#define OP_BITS 4u
#define OP_MASK ((1u << OP_BITS) - 1)

struct worker {
	int id;
	struct server *srv;
	pthread_t thread;
	struct ev_loop *loop;
	struct io_uring ring;
	int efd;                  /* eventfd the ring signals on completions */
	ev_io efd_watcher;
	ev_prepare submit_watcher; /* one io_uring_submit per loop iteration */
	ev_async wake;            /* inbox or stop */
	ev_timer grace;           /* bounds a graceful stop */
	pthread_mutex_t inbox_lock;
	int *inbox;               /* accepted sockets waiting to be adopted */
	size_t inbox_len, inbox_cap;
	bool stop;                /* set under inbox_lock by the main thread */
	bool stopping;            /* worker-local copy once it acted on stop */
	struct pool pool;
	struct conn *conns;       /* every live connection (doubly linked) */
	unsigned nconns;
	struct conn *pool_waiters_head; /* connections waiting for buffers, FIFO */
	struct conn *pool_waiters_tail;
	struct req *grants_local;  /* lock grants made on this thread, to resume */
	struct req *grants_remote; /* made on other threads (under inbox_lock) */
	struct cache_slot *slots_local;  /* cache waits ended on this thread, to resume */
	struct cache_slot *slots_remote; /* ended on other threads (under inbox_lock) */
	struct worker_stats stats;
	void *zeroes;             /* WORKER_ZEROES_BYTES of zeroes, never written */
};
#define WORKER_ZEROES_BYTES (1u << 20)
#define WORKER_STOP_GRACE_S 5.0   /* a stop closes whatever is left after this */

int worker_start(struct worker *w, struct server *srv, int id);
/* Hands an accepted socket to w (from the main thread). */
void worker_adopt(struct worker *w, int fd);
void worker_stop(struct worker *w);
void worker_join(struct worker *w);

/*
 * A fresh SQE tagged with (obj, op), counted against connection c: c is not
 * freed until the CQE has been handled. Never NULL (submits to make room).
 */
struct io_uring_sqe *ring_get_sqe(struct conn *c, void *obj, enum op op);
/* Lets connections parked for buffers retry, oldest first. */
void worker_pool_kick(struct worker *w);
void worker_pool_wait(struct worker *w, struct conn *c);
void worker_pool_unwait(struct worker *w, struct conn *c);
/* Hands a granted request back to its own worker (from any thread). */
void worker_post_grant(struct req *q);
/* Hands a cache slot whose wait ended back to its own worker (from any thread). */
void worker_post_slot(struct cache_slot *s);
/* Adds a worker's counters into *sum. */
void worker_stats_add(const struct worker *w, struct worker_stats *sum);

/* ---- conn.c / transmit.c / reply.c ---- */
#define CONN_MAX_REQS 128 /* requests in flight per connection */
#define CACHE_WINDOW 16   /* pages of a cached read looked up at a time */

/* One page of a cached read: its fill, its wait, or its read around the cache. */
struct cache_slot {
	struct req *q;
	struct cache_page *p;      /* the placeholder being filled; NULL when reading around */
	uint64_t index;            /* page index in the file */
	uint32_t buf_off;          /* where the page goes in the request's buffer */
	struct cache_waiter w;     /* parked on another request's fill */
	struct cache_slot *next;   /* worker's resume list */
} __attribute__((aligned(1u << 4)));
#define REQ_INLINE_CHUNKS 16
/*
 * Requests are received into a buffer, so that every request that has
 * arrived is dispatched in the same loop iteration (one submit for all of
 * them). WRITE payloads in it are copied to the request's pages; the rest of
 * a larger payload is received straight into them.
 */
#define CONN_RXBUF_BYTES (256u * 1024)

struct req {
	struct conn *c;
	struct proto_request r;
	uint32_t nbd_error;        /* error to reply with, NBD_SUCCESS if none */
	/* The plan: which bytes of the file move, and where the client's data sits. */
	uint64_t io_off;           /* file offset of buffer byte 0 */
	uint64_t io_len;           /* bytes of file I/O (the aligned span, or the request) */
	uint32_t data_off;         /* client's data starts here in the buffer */
	bool buffered;             /* touches the partial last block: use fd_buffered */
	bool rmw_head, rmw_tail;   /* unaligned write: edge blocks to read first */
	uint32_t chunks_needed;    /* pool chunks the plan needs (span + bounce) */
	bool want_bounce;          /* edge blocks, or a block status reply */
	int falloc_mode;           /* TRIM / WRITE_ZEROES: the fallocate mode tried */
	/* Buffers: the span in pool chunks, and a bounce chunk for edge blocks. */
	struct iovec *iov;         /* one pool chunk each, the last trimmed to io_len */
	uint32_t niov;             /* chunks held in iov */
	struct iovec *io_iov;      /* scratch: the slice the current op moves */
	struct iovec bounce;       /* edge blocks (head at 0, tail at align); or NULL */
	struct iovec iov_inline[REQ_INLINE_CHUNKS];    /* iov for spans up to 1 MiB */
	struct iovec io_iov_inline[REQ_INLINE_CHUNKS];
	uint64_t io_done_bytes;    /* progress of the current file or recv op */
	unsigned rmw_pending;      /* edge reads in flight */
	int rmw_err;               /* first error of those */
	bool cached;               /* a READ or CACHE through the page cache */
	uint32_t cache_next, cache_npages; /* pages looked up so far, of the span */
	uint32_t cache_pending;    /* fills, waits and reads of the window in flight */
	struct cache_slot slots[CACHE_WINDOW];
	struct rl_lock lock;       /* held from before the I/O until it completes */
	bool locked;
	uint64_t lock_wait_start_ns;
	uint8_t reply_hdr[PROTO_REPLY_MAX_LEN]; /* simple reply or final chunk */
	uint32_t reply_hdr_len;
	bool reply_data;           /* data pages follow the reply header */
	uint32_t reply_raw_len;    /* if set: the whole reply is in the bounce chunk */
	uint8_t step;              /* which file op an OP_REQ_FILE completion ends */
	bool in_use;               /* slot taken */
	struct req *next;          /* free list or send queue */
} __attribute__((aligned(1u << OP_BITS))); /* low bits of user_data hold the op */

enum conn_state {
	CONN_HANDSHAKE,   /* option haggling */
	CONN_TRANSMIT,    /* serving requests */
	CONN_DRAINING,    /* DISC seen: finish in-flight requests, then close */
	CONN_CLOSING,     /* socket shut down; freed once no SQE is in flight */
};

struct conn {
	struct worker *w;          /* allocated 64-byte aligned (see user_data) */
	struct conn *prev, *next;  /* worker's list */
	uint64_t id;
	int fd;
	enum conn_state state;
	bool close_when_idle;      /* server stopping: close once no request is live */
	unsigned sqes;             /* SQEs in flight naming this conn or its requests,
				      plus requests waiting for a range lock */

	/* handshake */
	ev_timer hs_timer;         /* bounds the negotiation (server handshake_timeout_s) */
	struct proto_session sess;
	int hs_step;               /* which handshake step the current I/O is for */
	uint8_t *hs_buf;           /* option payload (heap, handshake only) */
	size_t hs_cap;
	struct proto_buf hs_out;   /* replies (heap, handshake only) */
	uint8_t hs_hdr[PROTO_OPTION_HDR_LEN];
	struct proto_option opt;
	uint8_t *io_ptr;           /* exact send/recv in progress */
	size_t io_left;
	uint64_t skip_left;        /* payload bytes still to discard */

	/* transmission */
	const struct export *exp;
	uint8_t *rxbuf;            /* CONN_RXBUF_BYTES: requests as they arrive */
	size_t rx_start, rx_end;   /* unparsed bytes are rxbuf[rx_start, rx_end) */
	size_t rx_hdr_len;         /* 28, or 32 with extended headers */
	bool rx_parsing;           /* inside conn_rx_parse(): no re-entry */
	struct msghdr rx_msg;      /* WRITE payload recvmsg in flight */
	bool rx_busy;              /* a header recv or payload recv is in flight */
	bool rx_parked;            /* waiting for a free slot or buffers */
	struct req *rx_req;        /* request being received (waiting for buffers) */
	struct conn *pool_next;    /* worker's buffer-wait FIFO */
	bool in_pool_wait;

	struct req *free_reqs;
	unsigned live_reqs;        /* slots taken */
	struct req reqs[CONN_MAX_REQS];

	/* replies: one sendmsg in flight, many replies per sendmsg */
	struct req *sendq_head, *sendq_tail;
	struct req *sending;       /* replies in the sendmsg in flight (chained) */
	struct msghdr send_msg;
	struct iovec send_iov[1024];
};

/* conn.c */
void conn_new(struct worker *w, int fd);
void conn_close(struct conn *c, const char *why);
void conn_hs_done(struct conn *c, int res);
/* Called after each completion naming c; frees c once it is closed and idle. */
void conn_put(struct conn *c);

/* transmit.c */
void conn_transmit_start(struct conn *c);
void conn_rx_done(struct conn *c, int res);
void conn_rx_skip_done(struct conn *c, int res);
void req_rx_data_done(struct req *q, int res);
void req_file_done(struct req *q, int res);
void req_rmw_done(struct req *q, int res);
void req_lock_granted(struct req *q);
void req_finish(struct req *q, uint32_t nbd_error);

/* cached.c */
void req_cached_start(struct req *q);
void cache_slot_fill_done(struct cache_slot *s, int res);
void cache_slot_resume(struct cache_slot *s);
void conn_pool_ready(struct conn *c);
void req_free(struct req *q);
void req_release_buffers(struct req *q, struct pool *pool);

/* reply.c */
void req_reply(struct req *q);
void conn_send_done(struct conn *c, int res);
void conn_send_kick(struct conn *c);

/* ---- listen.c ---- */
struct listener {
	int fd;
	ev_io watcher;
	struct server *srv;
	char *desc;                /* "127.0.0.1:10809", "unix:/run/x.sock" */
	char *unix_path;           /* to unlink at exit; NULL if not ours */
};

int listen_tcp(struct server *srv, const char *addr, const char *port);
int listen_unix(struct server *srv, const char *path);
int listen_inherited(struct server *srv);
/* Starts accepting on the main loop; closes (and unlinks unix sockets). */
void listen_start(struct server *srv);
/*
 * At the connection limit the listeners stop (clients wait in the backlog)
 * and start again when a connection ends. Main thread only.
 */
void listen_pause(struct server *srv);
void listen_resume(struct server *srv);
void listen_close(struct server *srv);

/* ---- config.c ---- */
struct config {
	char *unix_path, *bind, *port, *pid_file;
	int threads;               /* 0: not set */
	long long pool_bytes;      /* 0: not set */
	long long cache_bytes;     /* 0: not set */
	long long max_conns;       /* -1: not set; 0: no limit */
	long long handshake_timeout_s; /* -1: not set; 0: none */
	int log_level;             /* -1: not set */
	bool log_level_set;
	struct export_spec *exports;
	size_t nexports;
};

/* Every setting "not set". */
void config_init(struct config *cfg);
/*
 * One [global] key (also what the command line's global options go
 * through, so both accept and refuse the same values). Returns 0, or -1
 * with *why naming the key and what it expects.
 */
int config_set_global(struct config *cfg, const char *key, const char *value, const char **why);
/* Parses the file into *cfg; logs "file:line: why" and returns -1 on error. */
int config_load(const char *path, struct config *cfg);
void config_free(struct config *cfg);
long long config_parse_size(const char *s);
long long config_parse_count(const char *s);
int config_parse_bool(const char *v);
int config_parse_log_level(const char *v);

/* ---- notify.c: systemd's notification protocol ---- */
/* Sends "READY=1", "STATUS=..." etc. to $NOTIFY_SOCKET, if set. */
void notify_send(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- main.c ---- */
struct server {
	pthread_rwlock_t exports_lock; /* the table; negotiation reads, reload writes */
	struct export **exports;
	size_t nexports;
	struct worker *workers;
	unsigned nworkers;
	unsigned next_worker;      /* round-robin placement */
	struct listener *listeners;
	size_t nlisteners;
	size_t pool_bytes;         /* per worker */
	struct cache *cache;       /* shared by every cached export */
	unsigned max_conns;        /* 0: no limit */
	unsigned handshake_timeout_s; /* 0: none */
	unsigned live_conns;       /* accepted, not yet closed (atomic) */
	bool accept_paused;        /* listeners stopped at max_conns (atomic) */
	ev_async accept_resume;    /* main loop: a connection ended while paused */
	unsigned test_fill_delay_ms; /* URINGNBD_TEST_FILL_DELAY_MS: tests only */
	struct ev_loop *loop;      /* main thread's */
	volatile bool shutting_down;
};

/* Export lookup for negotiation, as struct proto_exports wants it (ctx = srv). */
int server_export_lookup(void *srv, const char *name, size_t name_len, struct proto_export *out);
int server_export_nth(void *srv, size_t i, struct proto_export *out);
/* Hands an accepted socket to a worker; it counts against max_conns. */
void server_accept(struct server *srv, int fd);
/* An accepted socket is closed (any thread); wakes paused listeners. */
void server_conn_gone(struct server *srv);
/* At max_conns: accepting more would exceed the limit. */
bool server_at_capacity(struct server *srv);
struct export **server_build_exports(struct server *s, const struct export_spec *specs, size_t n);
void server_swap_exports(struct server *s, struct export **t, size_t n);
void server_log_exports(struct server *s);
unsigned server_connections(struct server *s);

#endif
