// SPDX-License-Identifier: BSD-3-Clause
/*
 * Whole-server fuzzing: runs `uringnbd --single` on a socketpair again and
 * again and throws at it what broken or hostile clients do: random and
 * mutated negotiations, requests with random types, flags, offsets and
 * lengths, partial payloads, garbage, replies never read, connections cut
 * at any byte. Each case ends with the socket closed; the daemon must then
 * exit 0 within a few seconds, with no sanitizer report, assertion or crash.
 * Every case that reaches transmission first writes a canary (a FUA WRITE of
 * a known pattern to a block below 1 MiB, which the chaos never targets) and
 * waits for its acknowledgement; at the end the image must hold the last
 * acknowledged canary of every block: nothing acknowledged was lost.
 *
 * With FUZZ_TLS_DIR (a directory of server-cert.pem, server-key.pem and
 * ca-cert.pem), a third of the cases run the daemon with --tls on, and half
 * of those send STARTTLS followed by bytes that are not a TLS handshake
 * (and the random options may send STARTTLS too): the handshake's failure
 * paths, with the options before and the bytes after it.
 *
 * usage: fuzz_server URINGNBD IMAGE SECONDS [SEED]
 * A failing case prints its seed; FUZZ_SEED=N with SECONDS 0 replays it
 * alone. The bytes it sent (the first 16 MiB) are saved beside the image
 * (IMAGE.case-SEED.bin).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../proto/proto.h"

#define CANARY_BLOCKS 256           /* 4 KiB blocks below 1 MiB */
#define CHAOS_FROM (UINT64_C(1) << 20)
#define CASE_SECONDS 1.5            /* chaos time per case */

static const char *daemon_bin, *image, *logpath;
static uint64_t image_size;
#define MAYBE_MAX 32
/*
 * Per block: the seed of the last acknowledged canary (0: none), and those
 * sent since without an acknowledgement, which may or may not have landed.
 */
static struct {
	uint64_t acked;
	uint64_t maybe[MAYBE_MAX];
	unsigned nmaybe;             /* MAYBE_MAX + 1: too many to tell, not checked */
} canary[CANARY_BLOCKS];
static uint64_t rng;
#define SENT_MAX (16u << 20)           /* what is kept of a case's bytes */
static uint8_t *sent;                 /* what the case sent, for the record */
static size_t sent_len, sent_cap;

static uint64_t rnd(void)
{
	/* splitmix64 */
	uint64_t z = (rng += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static uint64_t below(uint64_t n)
{
	return n ? rnd() % n : 0;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void fill(uint8_t *p, size_t len, uint64_t seed)
{
	size_t i;

	for (i = 0; i < len; i++)
		p[i] = (uint8_t)((seed * 0x9e3779b1u) >> 24) ^ (uint8_t)(i * 131u) ^ (uint8_t)(i >> 9);
}

/* The client's end; non-blocking, every wait bounded by the case deadline. */
struct peer {
	int fd;
	double deadline;
	bool dead;           /* the daemon closed it, or the deadline passed */
	bool structured, extended;
};

static uint32_t request_magic(const struct peer *p)
{
	return p->extended ? NBD_EXTENDED_REQUEST_MAGIC : NBD_REQUEST_MAGIC;
}

static bool wait_fd(struct peer *p, short ev)
{
	struct pollfd pfd = { .fd = p->fd, .events = ev };
	int ms = (int)((p->deadline - now()) * 1000);

	if (p->dead || ms <= 0 || poll(&pfd, 1, ms) <= 0 || (pfd.revents & (POLLERR | POLLNVAL))) {
		p->dead = true;
		return false;
	}
	return true;
}

static void put(struct peer *p, const void *buf, size_t len)
{
	const uint8_t *b = buf;
	size_t keep = sent_len + len <= SENT_MAX ? len : SENT_MAX - sent_len;

	if (sent_len + keep > sent_cap) {
		sent_cap = (sent_len + keep) * 2;
		sent = realloc(sent, sent_cap);
		if (!sent)
			abort();
	}
	memcpy(sent + sent_len, buf, keep);
	sent_len += keep;
	while (len && !p->dead) {
		ssize_t n = send(p->fd, b, len, MSG_NOSIGNAL);

		if (n > 0) {
			b += n;
			len -= (size_t)n;
		} else if (n < 0 && errno == EAGAIN) {
			wait_fd(p, POLLOUT);
		} else {
			p->dead = true;
		}
	}
}

static bool get(struct peer *p, void *buf, size_t len)
{
	uint8_t *b = buf;

	while (len) {
		ssize_t n = recv(p->fd, b, len, 0);

		if (n > 0) {
			b += n;
			len -= (size_t)n;
		} else if (n < 0 && errno == EAGAIN) {
			if (!wait_fd(p, POLLIN))
				return false;
		} else {
			p->dead = true;
			return false;
		}
	}
	return true;
}

/* Reads and drops whatever replies are there, without waiting. */
static void drain(struct peer *p)
{
	static uint8_t sink[65536];

	while (!p->dead && recv(p->fd, sink, sizeof(sink), 0) > 0)
		;
}

static void skip(struct peer *p, uint64_t len)
{
	static uint8_t sink[65536];

	while (len && !p->dead) {
		size_t n = len < sizeof(sink) ? (size_t)len : sizeof(sink);

		if (!get(p, sink, n))
			return;
		len -= n;
	}
}

static void put_option(struct peer *p, uint32_t opt, const void *data, uint32_t len)
{
	uint8_t h[16];

	proto_put_u64(h, NBD_IHAVEOPT);
	proto_put_u32(h + 8, opt);
	proto_put_u32(h + 12, len);
	put(p, h, sizeof(h));
	if (len)
		put(p, data, len);
}

/* Reads the replies to opt until a final one; returns its type (0 if the daemon went). */
static uint32_t get_option_reply(struct peer *p, uint32_t opt)
{
	uint8_t h[20];
	uint32_t type;

	for (;;) {
		if (!get(p, h, sizeof(h)) || proto_get_u64(h) != NBD_REP_MAGIC ||
		    proto_get_u32(h + 8) != opt)
			return 0;
		type = proto_get_u32(h + 12);
		skip(p, proto_get_u32(h + 16));
		if (type != NBD_REP_SERVER && type != NBD_REP_INFO && type != NBD_REP_META_CONTEXT)
			return type;
	}
}

static void put_request(struct peer *p, uint32_t magic, uint16_t flags, uint16_t type,
			uint64_t cookie, uint64_t off, uint64_t len)
{
	uint8_t h[32];

	proto_put_u32(h, magic);
	proto_put_u16(h + 4, flags);
	proto_put_u16(h + 6, type);
	proto_put_u64(h + 8, cookie);
	proto_put_u64(h + 16, off);
	if (p->extended) {
		proto_put_u64(h + 24, len);
		put(p, h, 32);
	} else {
		proto_put_u32(h + 24, (uint32_t)len);
		put(p, h, 28);
	}
}

/* The reply to the one request in flight: true if it succeeded. */
static bool get_reply(struct peer *p, uint64_t cookie)
{
	uint8_t h[32];
	bool ok = true;

	if (!p->structured && !p->extended) {
		if (!get(p, h, 16))
			return false;
		return proto_get_u32(h) == NBD_SIMPLE_REPLY_MAGIC && proto_get_u64(h + 8) == cookie &&
		       proto_get_u32(h + 4) == 0;
	}
	for (;;) {
		uint16_t flags, type;
		uint64_t len;

		if (p->extended) {
			if (!get(p, h, 32) || proto_get_u32(h) != NBD_EXTENDED_REPLY_MAGIC)
				return false;
			len = proto_get_u64(h + 24);
		} else {
			if (!get(p, h, 20) || proto_get_u32(h) != NBD_STRUCTURED_REPLY_MAGIC)
				return false;
			len = proto_get_u32(h + 16);
		}
		flags = proto_get_u16(h + 4);
		type = proto_get_u16(h + 6);
		if (proto_get_u64(h + 8) != cookie)
			return false;
		if (type & 0x8000)
			ok = false;
		skip(p, len);
		if (flags & NBD_REPLY_FLAG_DONE)
			return ok && !p->dead;
	}
}

static void put_garbage(struct peer *p, size_t max)
{
	uint8_t junk[4096];
	size_t n = (size_t)below(max < sizeof(junk) ? max : sizeof(junk)) + 1, i;

	for (i = 0; i < n; i++)
		junk[i] = (uint8_t)rnd();
	put(p, junk, n);
}

/* Options before choosing the export; returns false if the case ends here. */
static bool negotiate(struct peer *p)
{
	uint8_t g[18], f[4], buf[512];
	uint32_t flags = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES, len;
	unsigned i, n = (unsigned)below(7);

	if (!get(p, g, sizeof(g)))
		return false;
	if (below(20) == 0)
		flags = (uint32_t)rnd();
	proto_put_u32(f, flags);
	put(p, f, 4);
	for (i = 0; i < n && !p->dead; i++) {
		uint32_t opt = (uint32_t)below(13), r;

		switch (below(6)) {
		case 0: /* a random option with random data */
			len = (uint32_t)below(sizeof(buf));
			fill(buf, len, rnd());
			put_option(p, below(4) ? opt : (uint32_t)rnd(), buf, len);
			if (opt == NBD_OPT_EXPORT_NAME || opt == NBD_OPT_ABORT)
				return false;
			if (below(2) && get_option_reply(p, opt) == 0)
				return false;
			break;
		case 1:
			put_option(p, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
			if ((r = get_option_reply(p, NBD_OPT_STRUCTURED_REPLY)) == 0)
				return false;
			p->structured |= r == NBD_REP_ACK;
			break;
		case 2:
			put_option(p, NBD_OPT_EXTENDED_HEADERS, NULL, 0);
			if ((r = get_option_reply(p, NBD_OPT_EXTENDED_HEADERS)) == 0)
				return false;
			if (r == NBD_REP_ACK)
				p->structured = p->extended = true;
			break;
		case 3: { /* SET_META_CONTEXT base:allocation on "" */
			static const char q[] = "base:allocation";

			proto_put_u32(buf, 0);
			proto_put_u32(buf + 4, 1);
			proto_put_u32(buf + 8, sizeof(q) - 1);
			memcpy(buf + 12, q, sizeof(q) - 1);
			put_option(p, NBD_OPT_SET_META_CONTEXT, buf, 12 + sizeof(q) - 1);
			if (get_option_reply(p, NBD_OPT_SET_META_CONTEXT) == 0)
				return false;
			break;
		}
		case 4:
			put_option(p, NBD_OPT_LIST, NULL, 0);
			if (get_option_reply(p, NBD_OPT_LIST) == 0)
				return false;
			break;
		default: /* an option header and part of what it announced, then the end */
			put_option(p, opt, NULL, 0);
			proto_put_u64(buf, NBD_IHAVEOPT);
			proto_put_u32(buf + 8, opt);
			proto_put_u32(buf + 12, (uint32_t)rnd());
			put(p, buf, 8 + below(8));
			return false;
		}
	}
	if (p->dead)
		return false;
	if (below(3) == 0) {
		/* The old way: EXPORT_NAME, no replies but the export's size and flags. */
		put_option(p, NBD_OPT_EXPORT_NAME, NULL, 0);
		return get(p, buf, 10);
	}
	memset(buf, 0, 6); /* GO: empty name, no info requests */
	put_option(p, NBD_OPT_GO, buf, 6);
	return get_option_reply(p, NBD_OPT_GO) == NBD_REP_ACK;
}

/* A FUA write of a known pattern below 1 MiB, remembered once acknowledged. */
static void write_canary(struct peer *p, uint64_t case_seed)
{
	static uint8_t data[4096];
	unsigned block = (unsigned)below(CANARY_BLOCKS);
	uint64_t seed = case_seed | 1;

	fill(data, sizeof(data), seed);
	put_request(p, request_magic(p), NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, 1,
		    (uint64_t)block * 4096, sizeof(data));
	put(p, data, sizeof(data));
	if (get_reply(p, 1)) {
		canary[block].acked = seed;
		canary[block].nmaybe = 0;
	} else if (canary[block].nmaybe < MAYBE_MAX) {
		canary[block].maybe[canary[block].nmaybe++] = seed;
	} else {
		canary[block].nmaybe = MAYBE_MAX + 1;
	}
}

/* A length: mostly one that fits before the end of the image from off. */
static uint64_t chaos_len(bool extended, uint64_t off)
{
	uint64_t room = off < image_size ? image_size - off : 0;

	if (below(5) && room) {
		switch (below(4)) {
		case 0: return 1 + below(room < 4096 ? room : 4096);
		case 1: return room >= 65536 ? 4096 * (1 + below(16)) : 1 + below(room);
		case 2: return 1 + below(room < (1 << 20) ? room : (1 << 20));
		default: return 1 + below(room < (32u << 20) ? room : (32u << 20));
		}
	}
	switch (below(6)) {
	case 0: return below(512);
	case 1: return 4096 * (1 + below(16));
	case 2: return 1 + below(1 << 20);
	case 3: return (32u << 20) - below(2) + below(2);
	case 4: return extended ? rnd() : (uint32_t)rnd();
	default: return 1 + below(65536);
	}
}

static void chaos(struct peer *p)
{
	static const uint16_t types[] = { NBD_CMD_READ, NBD_CMD_WRITE, NBD_CMD_FLUSH,
		NBD_CMD_TRIM, NBD_CMD_CACHE, NBD_CMD_WRITE_ZEROES, NBD_CMD_BLOCK_STATUS };
	static uint8_t payload[1 << 20];
	bool reading = below(4) != 0;
	unsigned i, n = 1 + (unsigned)below(40);

	for (i = 0; i < n && !p->dead; i++) {
		uint16_t type = below(12) ? types[below(7)] : (uint16_t)below(16);
		uint16_t flags = below(3) ? 0 : below(4) ? (uint16_t)(1u << below(6)) : (uint16_t)rnd();
		uint64_t off = CHAOS_FROM + below(image_size - CHAOS_FROM + 8192);
		uint64_t len = chaos_len(p->extended, off);
		uint32_t magic = below(40) ? request_magic(p) : (uint32_t)rnd();

		if (below(30) == 0) {
			put_garbage(p, 200);
			continue;
		}
		if (below(60) == 0)
			type = NBD_CMD_DISC;
		put_request(p, magic, flags, type, 100 + i, off, len);
		if (type == NBD_CMD_WRITE || (flags & NBD_CMD_FLAG_PAYLOAD_LEN)) {
			/* The whole payload, part of it and the end, or none at all. */
			uint64_t send_len = below(5) ? len : below(len + 1);

			while (send_len && !p->dead) {
				size_t k = send_len < sizeof(payload) ? (size_t)send_len : sizeof(payload);

				put(p, payload, k);
				send_len -= k;
				if (reading)
					drain(p);
			}
			if (send_len < len && below(2))
				return;
		}
		if (reading)
			drain(p);
	}
	if (reading && !p->dead) {
		p->deadline = now() + 0.2;
		while (wait_fd(p, POLLIN))
			drain(p);
	}
}

static void save_case(uint64_t seed)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s.case-%llu.bin", image, (unsigned long long)seed);
	f = fopen(path, "w");
	if (f) {
		fwrite(sent, 1, sent_len, f);
		fclose(f);
		fprintf(stderr, "fuzz_server: the bytes sent are in %s\n", path);
	}
}

static void show_log(void)
{
	char line[1024];
	FILE *f = fopen(logpath, "r");
	int n = 0;

	if (!f)
		return;
	while (fgets(line, sizeof(line), f) && n++ < 60)
		fputs(line, stderr);
	fclose(f);
}

static bool log_clean(void)
{
	static const char *const bad[] = { "AddressSanitizer", "LeakSanitizer", "runtime error",
					   "Assertion", "Aborted" };
	char line[1024];
	FILE *f = fopen(logpath, "r");
	bool ok = true;
	size_t i;

	if (!f)
		return true;
	while (ok && fgets(line, sizeof(line), f))
		for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
			if (strstr(line, bad[i]))
				ok = false;
	fclose(f);
	return ok;
}

/* One case; returns false (having said why) if the daemon misbehaved. */
static bool run_case(uint64_t seed)
{
	static const char *const modes[] = { "none", "always", "auto" };
	struct peer p = { 0 };
	int sv[2], status, fd;
	pid_t pid;
	double t0;
	const char *tls_dir = getenv("FUZZ_TLS_DIR");
	bool tls;

	rng = seed;
	sent_len = 0;
	tls = tls_dir && below(3) == 0;
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
		perror("socketpair");
		exit(2);
	}
	pid = fork();
	if (pid == 0) {
		const char *mode = modes[below(3)];

		dup2(sv[1], 0);
		dup2(sv[1], 1);
		fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd >= 0)
			dup2(fd, 2);
		close(sv[0]);
		close(sv[1]);
		if (tls)
			execl(daemon_bin, daemon_bin, "--single", "--io-timeout", "1",
			      "--handshake-timeout", "2", "--pool-size", "32M", "--cache", mode, "-l",
			      "warning", "--tls", "on", "--tls-certificates", tls_dir, image,
			      (char *)NULL);
		else
			execl(daemon_bin, daemon_bin, "--single", "--io-timeout", "1",
			      "--handshake-timeout", "2", "--pool-size", "32M", "--cache", mode, "-l",
			      "warning", image, (char *)NULL);
		_exit(127);
	}
	close(sv[1]);
	p.fd = sv[0];
	fcntl(p.fd, F_SETFL, O_NONBLOCK);
	p.deadline = now() + CASE_SECONDS;
	if (below(6) == 0) {
		put_garbage(&p, 2000);
	} else if (tls && below(2)) {
		uint8_t g[18], f[4];

		/* STARTTLS, then what is not a TLS handshake (maybe a plaintext option). */
		if (get(&p, g, sizeof(g))) {
			proto_put_u32(f, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
			put(&p, f, 4);
			if (below(2))
				put_option(&p, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
			put_option(&p, NBD_OPT_STARTTLS, NULL, 0);
			if (below(2))
				put_option(&p, NBD_OPT_LIST, NULL, 0);
			put_garbage(&p, 2000);
		}
	} else if (negotiate(&p)) {
		write_canary(&p, seed);
		p.deadline = now() + CASE_SECONDS;
		chaos(&p);
	}
	if (below(3) == 0)
		shutdown(p.fd, SHUT_WR);
	close(p.fd);

	t0 = now();
	while (waitpid(pid, &status, WNOHANG) == 0) {
		if (now() - t0 > 10.0) {
			fprintf(stderr, "fuzz_server: seed %llu: the daemon did not exit within 10 s "
					"of its client going\n", (unsigned long long)seed);
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			show_log();
			save_case(seed);
			return false;
		}
		usleep(2000);
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !log_clean()) {
		fprintf(stderr, "fuzz_server: seed %llu: the daemon %s %d\n", (unsigned long long)seed,
			WIFSIGNALED(status) ? "died of signal" : "exited with",
			WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
		show_log();
		save_case(seed);
		return false;
	}
	return true;
}

/* Whether a block holds what seed wrote (0: the image's zeroes). */
static bool holds(const uint8_t *got, uint64_t seed)
{
	static uint8_t want[4096];

	if (seed)
		fill(want, sizeof(want), seed);
	else
		memset(want, 0, sizeof(want));
	return !memcmp(want, got, sizeof(want));
}

/*
 * Every acknowledged canary is in the image, unless a canary sent later
 * (acknowledged or not) replaced it.
 */
static bool check_canaries(void)
{
	static uint8_t got[4096];
	int fd = open(image, O_RDONLY);
	unsigned b, i, checked = 0;

	if (fd < 0)
		return false;
	for (b = 0; b < CANARY_BLOCKS; b++) {
		bool ok;

		if (!canary[b].acked || canary[b].nmaybe > MAYBE_MAX)
			continue;
		if (pread(fd, got, sizeof(got), (off_t)b * 4096) != (ssize_t)sizeof(got)) {
			close(fd);
			return false;
		}
		ok = holds(got, canary[b].acked);
		for (i = 0; i < canary[b].nmaybe && !ok; i++)
			ok = holds(got, canary[b].maybe[i]);
		if (!ok) {
			fprintf(stderr, "fuzz_server: block %u lost its acknowledged write (seed %llu)\n",
				b, (unsigned long long)canary[b].acked);
			close(fd);
			return false;
		}
		checked++;
	}
	close(fd);
	printf("fuzz_server: %u blocks hold their last acknowledged FUA write\n", checked);
	return true;
}

int main(int argc, char **argv)
{
	static char logbuf[4200];
	const char *env_seed = getenv("FUZZ_SEED");
	uint64_t base;
	double seconds, end;
	unsigned long cases = 0;
	struct stat st;

	if (argc < 4) {
		fprintf(stderr, "usage: fuzz_server URINGNBD IMAGE SECONDS [SEED]\n");
		return 2;
	}
	daemon_bin = argv[1];
	image = argv[2];
	seconds = atof(argv[3]);
	base = argc > 4 ? strtoull(argv[4], NULL, 0) : (uint64_t)time(NULL) << 20;
	snprintf(logbuf, sizeof(logbuf), "%s.log", image);
	logpath = logbuf;
	if (stat(image, &st) < 0 || (uint64_t)st.st_size < 2 * CHAOS_FROM) {
		fprintf(stderr, "fuzz_server: %s: an image of at least 2 MiB is needed\n", image);
		return 2;
	}
	image_size = (uint64_t)st.st_size;
	signal(SIGPIPE, SIG_IGN);
	if (env_seed)
		return run_case(strtoull(env_seed, NULL, 0)) && check_canaries() ? 0 : 1;
	printf("fuzz_server: base seed %llu, %.0f s\n", (unsigned long long)base, seconds);
	end = now() + seconds;
	while (now() < end) {
		if (!run_case(base + cases))
			return 1;
		cases++;
	}
	printf("fuzz_server: %lu cases, the daemon exited cleanly after each\n", cases);
	return check_canaries() ? 0 : 1;
}
