// SPDX-License-Identifier: BSD-3-Clause
/* See harness.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../proto/proto.h"
#include "harness.h"

struct daemon *harness_current;
static const char *test_name = "test";

/*
 * The daemon log's last SHOW_LOG_LINES lines (the log gathers every daemon
 * the test started, so its end is the one that failed).
 */
#define SHOW_LOG_LINES 120
static void show_log(void)
{
	static char lines[SHOW_LOG_LINES][1024];
	unsigned n = 0, i;
	FILE *f;

	if (!harness_current || !harness_current->log[0])
		return;
	f = fopen(harness_current->log, "r");
	if (!f)
		return;
	while (fgets(lines[n % SHOW_LOG_LINES], sizeof(lines[0]), f))
		n++;
	fclose(f);
	fprintf(stderr, "---- daemon log (%s), its last %u lines ----\n", harness_current->log,
		n < SHOW_LOG_LINES ? n : SHOW_LOG_LINES);
	for (i = n < SHOW_LOG_LINES ? 0 : n - SHOW_LOG_LINES; i < n; i++)
		fputs(lines[i % SHOW_LOG_LINES], stderr);
}

/* Says why, shows the log, and says why again: a runner showing the tail shows the reason. */
void harness_fail(const char *file, int line, const char *fmt, ...)
{
	char why[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	fprintf(stderr, "FAIL %s: %s:%d: %s\n", test_name, file, line, why);
	show_log();
	fprintf(stderr, "FAIL %s: %s:%d: %s\n", test_name, file, line, why);
	if (harness_current && harness_current->pid > 0)
		kill(harness_current->pid, SIGKILL);
	exit(1);
}

void harness_skip(const char *why)
{
	fprintf(stderr, "SKIP %s: %s\n", test_name, why);
	exit(77);
}

static void on_alarm(int sig)
{
	static const char msg[] = "FAIL: test timed out\n";

	(void)sig;
	if (write(2, msg, sizeof(msg) - 1) < 0)
		_exit(1);
	if (harness_current && harness_current->pid > 0)
		kill(harness_current->pid, SIGKILL);
	_exit(1);
}

void harness_init(const char *name, unsigned timeout_s)
{
	test_name = name;
	signal(SIGALRM, on_alarm);
	signal(SIGPIPE, SIG_IGN);
	alarm(timeout_s);
}

void harness_image(struct daemon *d, uint64_t size_bytes)
{
	const char *base = getenv("TEST_TMPDIR");
	int fd;

	memset(d, 0, sizeof(*d));
	if (!base)
		base = "build/tmp";
	mkdir(base, 0755);
	snprintf(d->dir, sizeof(d->dir), "%s/%s.XXXXXX", base, test_name);
	CHECK(mkdtemp(d->dir), "mkdtemp %s: %s", d->dir, strerror(errno));
	snprintf(d->sockdir, sizeof(d->sockdir), "/tmp/uringnbd-test.XXXXXX");
	CHECK(mkdtemp(d->sockdir), "mkdtemp %s: %s", d->sockdir, strerror(errno));
	snprintf(d->sock, sizeof(d->sock), "%s/sock", d->sockdir);
	snprintf(d->img, sizeof(d->img), "%s/disk.img", d->dir);
	snprintf(d->log, sizeof(d->log), "%s/daemon.log", d->dir);
	fd = open(d->img, O_RDWR | O_CREAT | O_TRUNC, 0644);
	CHECK(fd >= 0, "create %s: %s", d->img, strerror(errno));
	CHECK(ftruncate(fd, (off_t)size_bytes) == 0, "truncate: %s", strerror(errno));
	close(fd);
}

/* The listening socket the daemon inherits, made by the test (as systemd does). */
static int listen_socket(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	CHECK(fd >= 0, "socket: %s", strerror(errno));
	CHECK(strlen(path) < sizeof(sun.sun_path), "socket path too long");
	strcpy(sun.sun_path, path);
	unlink(path);
	CHECK(bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0, "bind %s: %s", path,
	      strerror(errno));
	CHECK(listen(fd, 128) == 0, "listen: %s", strerror(errno));
	return fd;
}

void harness_start(struct daemon *d, ...)
{
	const char *argv[64];
	const char *bin = getenv("URINGNBD");
	va_list ap;
	int argc = 0, fd, lfd;
	const char *a;

	if (!bin)
		bin = "build/uringnbd";
	argv[argc++] = bin;
	va_start(ap, d);
	while ((a = va_arg(ap, const char *)) && argc < 60)
		argv[argc++] = a;
	va_end(ap);
	argv[argc++] = d->img;
	argv[argc] = NULL;

	mkdir(d->sockdir, 0700); /* again, after a harness_stop() */
	harness_current = d;
	/* Socket activation: clients may connect at once; nothing to poll for. */
	lfd = listen_socket(d->sock);
	/* The log exists before the daemon runs: the test may read it at once. */
	fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
	CHECK(fd >= 0, "create %s: %s", d->log, strerror(errno));
	close(fd);
	d->pid = fork();
	CHECK(d->pid >= 0, "fork: %s", strerror(errno));
	if (d->pid == 0) {
		char pid[32];

		fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd >= 0) {
			dup2(fd, 2);
			close(fd);
		}
		if (lfd != 3) {
			dup2(lfd, 3);
			close(lfd);
		}
		snprintf(pid, sizeof(pid), "%ld", (long)getpid());
		setenv("LISTEN_PID", pid, 1);
		setenv("LISTEN_FDS", "1", 1);
		unsetenv("LISTEN_FDNAMES");
		execv(bin, (char *const *)argv);
		fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
		_exit(127);
	}
	/* Only the daemon holds it: if it dies, waiting clients are refused. */
	close(lfd);
}

static uint64_t piece_seed(unsigned k, unsigned p, unsigned round)
{
	return ((uint64_t)k << 40) | ((uint64_t)p << 8) | round;
}

void harness_write_pieces(struct nbd_handle *h, unsigned k, unsigned conns, unsigned pieces,
			  unsigned rounds, uint64_t base)
{
	uint8_t (*data)[HARNESS_PIECE] = calloc(pieces, HARNESS_PIECE);
	unsigned p, round;

	CHECK(data, "out of memory");
	for (round = 0; round < rounds; round++) {
		for (p = 0; p < pieces; p++) {
			uint64_t piece = (uint64_t)p * conns + k; /* interleaved with the others */

			harness_fill(data[p], HARNESS_PIECE, piece_seed(k, p, round));
			CHECK(nbd_aio_pwrite(h, data[p], HARNESS_PIECE, base + piece * HARNESS_PIECE,
					     NBD_NULL_COMPLETION, 0) > 0,
			      "aio_pwrite: %s", nbd_get_error());
			/* Keep up to 64 in flight. */
			while (nbd_aio_in_flight(h) >= 64)
				CHECK(nbd_poll(h, -1) != -1, "poll: %s", nbd_get_error());
			while (nbd_aio_peek_command_completed(h) > 0)
				CHECK(nbd_aio_command_completed(h, (uint64_t)nbd_aio_peek_command_completed(h)) == 1,
				      "write failed: %s", nbd_get_error());
		}
		while (nbd_aio_in_flight(h) > 0)
			CHECK(nbd_poll(h, -1) != -1, "poll: %s", nbd_get_error());
		while (nbd_aio_peek_command_completed(h) > 0)
			CHECK(nbd_aio_command_completed(h, (uint64_t)nbd_aio_peek_command_completed(h)) == 1,
			      "write failed: %s", nbd_get_error());
	}
	free(data);
}

void harness_check_pieces(struct nbd_handle *h, unsigned conns, unsigned pieces,
			  unsigned rounds, uint64_t base)
{
	uint8_t *all = malloc((size_t)conns * pieces * HARNESS_PIECE), want[HARNESS_PIECE];
	unsigned k, p;

	CHECK(all, "out of memory");
	NBD_OK(nbd_pread(h, all, (size_t)conns * pieces * HARNESS_PIECE, base, 0));
	for (k = 0; k < conns; k++)
		for (p = 0; p < pieces; p++) {
			uint64_t piece = (uint64_t)p * conns + k;

			harness_fill(want, HARNESS_PIECE, piece_seed(k, p, rounds - 1));
			CHECK(memcmp(all + piece * HARNESS_PIECE, want, HARNESS_PIECE) == 0,
			      "piece %u of writer %u lost its last write", p, k);
		}
	free(all);
}

struct nbd_handle *harness_connect_export(struct daemon *d, const char *name)
{
	struct nbd_handle *h = nbd_create();

	CHECK(h, "nbd_create: %s", nbd_get_error());
	NBD_OK(nbd_set_export_name(h, name));
	NBD_OK(nbd_connect_unix(h, d->sock));
	return h;
}

struct nbd_handle *harness_connect(struct daemon *d, bool structured)
{
	struct nbd_handle *h = nbd_create();

	CHECK(h, "nbd_create: %s", nbd_get_error());
	NBD_OK(nbd_set_request_structured_replies(h, structured));
	NBD_OK(nbd_connect_unix(h, d->sock));
	return h;
}

static int wait_exit(struct daemon *d, unsigned timeout_ms)
{
	struct timespec nap = { 0, 5 * 1000 * 1000 };
	unsigned i;
	int status;

	for (i = 0; i < timeout_ms / 5; i++) {
		if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
			d->pid = 0;
			return status;
		}
		nanosleep(&nap, NULL);
	}
	return -1;
}

void harness_stop(struct daemon *d)
{
	int status;

	if (d->pid <= 0)
		return;
	kill(d->pid, SIGTERM);
	status = wait_exit(d, 10000);
	CHECK(status != -1, "daemon did not exit within 10 s of SIGTERM");
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "daemon exited with status 0x%x after SIGTERM", status);
	unlink(d->sock); /* the test's, like systemd's */
	rmdir(d->sockdir);
}

void harness_wait(struct daemon *d)
{
	int status;

	if (d->pid <= 0)
		return;
	status = wait_exit(d, 10000);
	CHECK(status != -1, "daemon did not exit within 10 s");
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "daemon exited with status 0x%x",
	      status);
	unlink(d->sock);
	rmdir(d->sockdir);
}

void harness_kill(struct daemon *d)
{
	if (d->pid <= 0)
		return;
	kill(d->pid, SIGKILL);
	CHECK(wait_exit(d, 10000) != -1, "daemon did not die of SIGKILL");
	unlink(d->sock);
	rmdir(d->sockdir);
}

int harness_raw_connect(struct daemon *d)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct timeval tv = { .tv_sec = 10 };

	CHECK(fd >= 0, "socket: %s", strerror(errno));
	memcpy(sun.sun_path, d->sock, sizeof(sun.sun_path));
	CHECK(connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0, "connect %s: %s", d->sock,
	      strerror(errno));
	/* A raw test never waits forever on the daemon. */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	return fd;
}

void harness_fill(uint8_t *buf, size_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
	size_t i;

	for (i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (uint8_t)x;
	}
}

void *harness_alloc(size_t len)
{
	void *p = mmap(NULL, len ? len : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);

	CHECK(p != MAP_FAILED, "mmap %zu: %s", len, strerror(errno));
	return p;
}

void harness_read_image(struct daemon *d, void *buf, size_t len, uint64_t off)
{
	int fd = open(d->img, O_RDONLY);
	ssize_t n;

	CHECK(fd >= 0, "open %s: %s", d->img, strerror(errno));
	n = pread(fd, buf, len, (off_t)off);
	CHECK(n == (ssize_t)len, "pread %s: %zd of %zu", d->img, n, len);
	close(fd);
}

/* ---- raw protocol helpers ---- */

void raw_send(int fd, const void *p, size_t len)
{
	ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

	CHECK(n == (ssize_t)len, "send %zu: %zd (%s)", len, n, strerror(errno));
}

void raw_recv(int fd, void *p, size_t len)
{
	ssize_t n;

	if (len == 0)
		return; /* recv(0, MSG_WAITALL) would wait for data that is not owed */
	n = recv(fd, p, len, MSG_WAITALL);

	CHECK(n == (ssize_t)len, "recv %zu: %zd (%s)", len, n, n < 0 ? strerror(errno) : "eof");
}

void raw_expect_closed(int fd, const char *what)
{
	uint8_t b;
	ssize_t n = recv(fd, &b, 1, 0);

	CHECK(n == 0 || (n < 0 && errno == ECONNRESET), "%s: connection not closed (%zd, %s)",
	      what, n, n < 0 ? strerror(errno) : "data");
	close(fd);
}

/* Connects and takes the greeting; sends the given client flags. */
int raw_hello(struct daemon *d, uint32_t client_flags)
{
	uint8_t g[PROTO_GREETING_LEN], f[4];
	int fd = harness_raw_connect(d);

	raw_recv(fd, g, sizeof(g));
	CHECK(proto_get_u64(g) == NBD_MAGIC && proto_get_u64(g + 8) == NBD_IHAVEOPT,
	      "bad greeting");
	CHECK(proto_get_u16(g + 16) == (NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES),
	      "handshake flags 0x%x", proto_get_u16(g + 16));
	proto_put_u32(f, client_flags);
	raw_send(fd, f, 4);
	return fd;
}

int raw_transmission(struct daemon *d, uint64_t *size_bytes)
{
	uint8_t r[10];
	int fd = raw_hello(d, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);

	raw_option(fd, NBD_IHAVEOPT, NBD_OPT_EXPORT_NAME, NULL, 0);
	raw_recv(fd, r, sizeof(r));
	CHECK(proto_get_u16(r + 8) & NBD_FLAG_HAS_FLAGS, "EXPORT_NAME flags");
	if (size_bytes)
		*size_bytes = proto_get_u64(r);
	return fd;
}

int raw_connect_mode(struct daemon *d, enum raw_mode m, const char *name)
{
	int fd = raw_hello(d, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	uint8_t r[10];

	if (m == RAW_STRUCTURED) {
		raw_option(fd, NBD_IHAVEOPT, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
		CHECK(raw_option_reply(fd, NBD_OPT_STRUCTURED_REPLY) == NBD_REP_ACK, "structured");
	} else if (m == RAW_EXTENDED) {
		raw_option(fd, NBD_IHAVEOPT, NBD_OPT_EXTENDED_HEADERS, NULL, 0);
		CHECK(raw_option_reply(fd, NBD_OPT_EXTENDED_HEADERS) == NBD_REP_ACK, "extended");
	}
	raw_option(fd, NBD_IHAVEOPT, NBD_OPT_EXPORT_NAME, name, (uint32_t)strlen(name));
	raw_recv(fd, r, sizeof(r));
	CHECK(proto_get_u16(r + 8) & NBD_FLAG_HAS_FLAGS, "EXPORT_NAME flags");
	return fd;
}

void raw_request(int fd, uint32_t magic, uint16_t flags, uint16_t type, uint64_t cookie,
		 uint64_t off, uint32_t len)
{
	uint8_t h[PROTO_REQUEST_LEN];

	proto_put_u32(h, magic);
	proto_put_u16(h + 4, flags);
	proto_put_u16(h + 6, type);
	proto_put_u64(h + 8, cookie);
	proto_put_u64(h + 16, off);
	proto_put_u32(h + 24, len);
	raw_send(fd, h, sizeof(h));
}

void raw_request_ext(int fd, uint16_t flags, uint16_t type, uint64_t cookie, uint64_t off,
		     uint64_t len)
{
	uint8_t h[PROTO_EXT_REQUEST_LEN];

	proto_put_u32(h, NBD_EXTENDED_REQUEST_MAGIC);
	proto_put_u16(h + 4, flags);
	proto_put_u16(h + 6, type);
	proto_put_u64(h + 8, cookie);
	proto_put_u64(h + 16, off);
	proto_put_u64(h + 24, len);
	raw_send(fd, h, sizeof(h));
}

void raw_option(int fd, uint64_t magic, uint32_t opt, const void *data, uint32_t len)
{
	uint8_t h[PROTO_OPTION_HDR_LEN];

	proto_put_u64(h, magic);
	proto_put_u32(h + 8, opt);
	proto_put_u32(h + 12, len);
	raw_send(fd, h, sizeof(h));
	if (len && data)
		raw_send(fd, data, len);
}

/* Reads one option reply header; returns its type, skips its payload. */
uint32_t raw_option_reply(int fd, uint32_t opt)
{
	uint8_t h[PROTO_OPTREPLY_HDR_LEN], skip[4096];
	uint32_t len;

	raw_recv(fd, h, sizeof(h));
	CHECK(proto_get_u64(h) == NBD_REP_MAGIC, "option reply magic");
	CHECK(proto_get_u32(h + 8) == opt, "reply to option %u, expected %u",
	      proto_get_u32(h + 8), opt);
	len = proto_get_u32(h + 16);
	CHECK(len <= sizeof(skip), "reply payload %u", len);
	raw_recv(fd, skip, len);
	return proto_get_u32(h + 12);
}

double harness_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

bool harness_wait_ready(struct nbd_handle *h, double secs)
{
	double end = harness_now() + secs;

	while (!nbd_aio_is_ready(h)) {
		CHECK(!nbd_aio_is_dead(h) && !nbd_aio_is_closed(h), "connection died: %s",
		      nbd_get_error());
		if (harness_now() >= end)
			return false;
		CHECK(nbd_poll(h, 50) >= 0, "nbd_poll: %s", nbd_get_error());
	}
	return true;
}

bool harness_log_has(struct daemon *d, const char *what)
{
	static char buf[1 << 20];
	FILE *f = fopen(d->log, "r");
	size_t n;

	CHECK(f, "open %s: %s", d->log, strerror(errno));
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	return strstr(buf, what) != NULL;
}

void harness_wait_memory(struct daemon *d)
{
	double t0 = harness_now();

	while (!harness_log_has(d, "buffer pools and cache fault")) {
		CHECK(harness_now() - t0 < 30, "the daemon did not fault in its buffers within 30 s");
		usleep(50 * 1000);
	}
}
