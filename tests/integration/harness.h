/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Integration test harness: each test starts its own uringnbd on a private
 * unix socket in a fresh temporary directory (the socket is made by the
 * harness and passed by socket activation, so clients connect at once with
 * no polling), talks to it with libnbd (or a raw socket), and stops it. Every test is bounded by alarm(); a failure
 * prints where and why, then the daemon's log. Exit 0 pass, 1 fail, 77 skip.
 */
#ifndef URINGNBD_HARNESS_H
#define URINGNBD_HARNESS_H

#include <libnbd.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct daemon {
	pid_t pid;
	char dir[2048];       /* private temporary directory (on a filesystem with O_DIRECT) */
	char sockdir[64];     /* short directory under /tmp for the socket */
	char sock[108];       /* its unix socket (sun_path is 108 bytes) */
	char img[2100];       /* the image it exports (created by harness_image) */
	char log[2100];       /* its stderr */
};

/* Starts the test's clock (seconds) and names it in messages. */
void harness_init(const char *name, unsigned timeout_s);
/* Makes d->dir and a sparse image of size_bytes at d->img. */
void harness_image(struct daemon *d, uint64_t size_bytes);
/* Starts uringnbd [args...] d->img on d->sock (inherited); NULL-terminated args. */
void harness_start(struct daemon *d, ...);
/* A libnbd handle connected to the daemon (structured replies as asked). */
struct nbd_handle *harness_connect(struct daemon *d, bool structured);
/* A libnbd handle connected to the export called name. */
struct nbd_handle *harness_connect_export(struct daemon *d, const char *name);
/* SIGTERM, then waits; fails the test unless the daemon exits 0. */
void harness_stop(struct daemon *d);
/* Waits for a daemon already told to stop; fails the test unless it exits 0. */
void harness_wait(struct daemon *d);
/* SIGKILL and reap. */
void harness_kill(struct daemon *d);
/* A raw unix-socket connection to the daemon. */
int harness_raw_connect(struct daemon *d);

/* Raw protocol, for input libnbd will not send. Each fails the test on error. */
void raw_send(int fd, const void *p, size_t len);
void raw_recv(int fd, void *p, size_t len);
/* The daemon closed the connection (EOF or reset). Closes fd. */
void raw_expect_closed(int fd, const char *what);
/* Connects, checks the greeting, sends client_flags. */
int raw_hello(struct daemon *d, uint32_t client_flags);
void raw_option(int fd, uint64_t magic, uint32_t opt, const void *data, uint32_t len);
/* raw_hello, then EXPORT_NAME of the default export: the socket, in transmission. */
int raw_transmission(struct daemon *d, uint64_t *size_bytes);
/* How a raw client has its replies: simple, structured, or extended headers. */
enum raw_mode { RAW_SIMPLE, RAW_STRUCTURED, RAW_EXTENDED };
/* raw_hello, the option m needs, then EXPORT_NAME name (so no block sizes learnt). */
int raw_connect_mode(struct daemon *d, enum raw_mode m, const char *name);
/* One compact request header (magic NBD_REQUEST_MAGIC, or a bad one). */
void raw_request(int fd, uint32_t magic, uint16_t flags, uint16_t type, uint64_t cookie,
		 uint64_t off, uint32_t len);
/* One extended (32-byte) request header. */
void raw_request_ext(int fd, uint16_t flags, uint16_t type, uint64_t cookie, uint64_t off,
		     uint64_t len);
/* Reads one option reply to opt; returns its type and skips its payload. */
uint32_t raw_option_reply(int fd, uint32_t opt);

/*
 * Writer k of conns writes pieces of HARNESS_PIECE bytes interleaved with
 * the other writers' from byte base (so neighbours share sectors), rounds
 * times over, up to 64 in flight; harness_check_pieces() then finds every
 * piece holding its writer's last round.
 */
#define HARNESS_PIECE 100
void harness_write_pieces(struct nbd_handle *h, unsigned k, unsigned conns, unsigned pieces,
			  unsigned rounds, uint64_t base);
void harness_check_pieces(struct nbd_handle *h, unsigned conns, unsigned pieces,
			  unsigned rounds, uint64_t base);

/* Monotonic seconds. */
double harness_now(void);
/* Drives an nbd_aio_connect_* handshake for up to secs; true once ready. */
bool harness_wait_ready(struct nbd_handle *h, double secs);
/* The daemon's log so far contains what. */
bool harness_log_has(struct daemon *d, const char *what);
/* Until the daemon has faulted in its buffer pools and cache (after start-up,
 * on a thread of its own): a test that measures its memory starts from there. */
void harness_wait_memory(struct daemon *d);

/* Deterministic data: byte i of a pattern seeded by seed. */
void harness_fill(uint8_t *buf, size_t len, uint64_t seed);
/* Aligned memory for pread on the image file. */
void *harness_alloc(size_t len);
/* Reads the image file directly. */
void harness_read_image(struct daemon *d, void *buf, size_t len, uint64_t off);

void harness_fail(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4), noreturn));
void harness_skip(const char *why) __attribute__((noreturn));

extern struct daemon *harness_current; /* whose log to show on failure */

#define CHECK(cond, ...) \
	do { if (!(cond)) harness_fail(__FILE__, __LINE__, __VA_ARGS__); } while (0)
/* A libnbd call that must succeed. */
#define NBD_OK(call) \
	do { if ((call) == -1) harness_fail(__FILE__, __LINE__, "%s: %s", #call, nbd_get_error()); } while (0)

#endif
