// SPDX-License-Identifier: BSD-3-Clause
/*
 * Every request answered, in every wait mode the daemon has: deferred task
 * work or not, adaptive polling or none, and a fixed polling window. In
 * each mode, first a solo client (below, solo_sequence) moves big requests
 * one at a time through a daemon with 32 MiB pools, each to be answered
 * within REPLY_MAX_S of its first byte. Then one daemon (two workers, the
 * default 64 MiB pool each, so the big requests wait for buffers) serves
 * for LOAD_S seconds:
 * - pipelined clients on every export kind (cache=none, always and auto,
 *   a copy-on-write overlay, a raw image with a dirty bitmap), in simple,
 *   structured and extended replies, sending bursts of READs, WRITEs,
 *   WRITE_ZEROES, TRIMs and FLUSHes of 4 KiB to 33 MiB (segmented past
 *   32 MiB), at unaligned offsets, with random pauses between bursts;
 * - a client moving 100 MiB READs and WRITEs (16 MiB segments);
 * - a slow client, which trickles its payloads and reads its replies in
 *   small pieces.
 * The big clients use one half of the image and the rest the other, so
 * none waits long for a range lock behind a 100 MiB request.
 * Each connection has a sender and a receiver thread, so replies are read
 * as they come. The test fails if any reply takes more than REPLY_MAX_S
 * after its request was sent, or if a socket of the daemon keeps the same
 * unread bytes for STUCK_S (a receive that is never armed, or never run).
 * The previous binary fails it on the stall: its solo client's first
 * 100 MiB WRITE was unanswered after 5.1 s (3 runs of 3, with the
 * all-holes assertion fixed in it; this binary: 0.1 s at most).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "../../proto/proto.h"
#include "harness.h"

#define IMG_SIZE (512ull << 20)
#define LOAD_S 12.0
#define REPLY_MAX_S 5.0
#define STUCK_S 5.0
#define MAX_OUT 8                /* requests in flight per connection */
#define BIG (100ull << 20)

enum mode { SIMPLE = RAW_SIMPLE, STRUCTURED = RAW_STRUCTURED, EXTENDED = RAW_EXTENDED };

struct out {                     /* a request awaiting its reply */
	uint64_t cookie;
	uint16_t type;
	uint64_t len;
	double sent;                 /* when its last byte went out; 0 while sending */
	bool used;
};

struct client {
	struct daemon *d;
	const char *export;
	enum mode m;
	int fd;
	unsigned seed;
	bool slow, big, solo;
	unsigned max_out;            /* requests in flight at most (MAX_OUT) */
	pthread_mutex_t lock;
	pthread_cond_t room;
	struct out out[MAX_OUT];
	unsigned nout;
	uint64_t next_cookie;
	atomic_bool sending_done;
	uint64_t requests, replies;
	double worst;
	pthread_t tx, rx;
};

static atomic_bool stop_load;
static char e_always[2300], e_auto[2300], e_ovl[2300], e_bm[2300]; /* -e arguments */
static uint8_t *payload;         /* BIG bytes of pattern, shared by writers */

static int connect_mode(struct daemon *d, enum mode m, const char *name)
{
	return raw_connect_mode(d, (enum raw_mode)m, name);
}

/* Sends len bytes; a slow client trickles them. */
static void send_all(struct client *cl, const uint8_t *p, size_t len)
{
	if (!cl->slow) {
		raw_send(cl->fd, p, len);
		return;
	}
	while (len) {
		size_t n = len < 16384 ? len : 16384;

		raw_send(cl->fd, p, n);
		p += n;
		len -= n;
		usleep(2000);
	}
}

static void check_deadlines(struct client *cl);

/* Receives len bytes (a slow client in small pieces), minding the deadlines meanwhile. */
static void recv_all(struct client *cl, void *p, size_t len)
{
	uint8_t *b = p;

	while (len) {
		size_t want = cl->slow && len > 8192 ? 8192 : len;
		ssize_t n = recv(cl->fd, b, want, 0);

		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			check_deadlines(cl);
			continue;
		}
		CHECK(n > 0, "export \"%s\": the connection ended (%s)", cl->export,
		      n < 0 ? strerror(errno) : "EOF");
		b += n;
		len -= (size_t)n;
		if (cl->slow)
			usleep(200);
	}
}

/* Discards len bytes of reply data. */
static void drain(struct client *cl, uint64_t len)
{
	static __thread uint8_t sink[1 << 20];

	while (len) {
		size_t n = len < sizeof(sink) ? (size_t)len : sizeof(sink);

		recv_all(cl, sink, n);
		len -= n;
	}
}

static struct out *find_out(struct client *cl, uint64_t cookie)
{
	struct out *o = NULL;

	pthread_mutex_lock(&cl->lock);
	for (unsigned i = 0; i < MAX_OUT; i++)
		if (cl->out[i].used && cl->out[i].cookie == cookie)
			o = &cl->out[i];
	pthread_mutex_unlock(&cl->lock);
	CHECK(o, "%s: a reply to cookie %llu, which is not in flight", cl->export,
	      (unsigned long long)cookie);
	return o;
}

/* The reply to o is all in: its time is checked, its slot freed. */
static void retire(struct client *cl, struct out *o)
{
	/* A reply may come while the sender is still marking its request sent. */
	double t = o->sent ? harness_now() - o->sent : 0;

	CHECK(t <= REPLY_MAX_S, "export \"%s\": %s of %llu bytes answered after %.1f s",
	      cl->export, proto_cmd_name(o->type), (unsigned long long)o->len, t);
	pthread_mutex_lock(&cl->lock);
	if (t > cl->worst)
		cl->worst = t;
	o->used = false;
	cl->nout--;
	cl->replies++;
	pthread_cond_signal(&cl->room);
	pthread_mutex_unlock(&cl->lock);
}

/* Reads one whole reply (all chunks of it). */
static void read_reply(struct client *cl)
{
	uint8_t h[PROTO_EXT_REPLY_LEN];
	struct out *o;

	if (cl->m == SIMPLE) {
		recv_all(cl, h, PROTO_SIMPLE_REPLY_LEN);
		CHECK(proto_get_u32(h) == NBD_SIMPLE_REPLY_MAGIC, "simple reply magic");
		o = find_out(cl, proto_get_u64(h + 8));
		CHECK(proto_get_u32(h + 4) == 0, "%s failed: error %u", proto_cmd_name(o->type),
		      proto_get_u32(h + 4));
		if (o->type == NBD_CMD_READ)
			drain(cl, o->len);
		retire(cl, o);
		return;
	}
	for (;;) {
		uint16_t flags, type;
		uint64_t clen;

		if (cl->m == EXTENDED) {
			recv_all(cl, h, PROTO_EXT_REPLY_LEN);
			CHECK(proto_get_u32(h) == NBD_EXTENDED_REPLY_MAGIC, "extended reply magic");
			clen = proto_get_u64(h + 24);
		} else {
			recv_all(cl, h, 4);
			if (proto_get_u32(h) == NBD_SIMPLE_REPLY_MAGIC) {
				recv_all(cl, h + 4, PROTO_SIMPLE_REPLY_LEN - 4);
				o = find_out(cl, proto_get_u64(h + 8));
				CHECK(proto_get_u32(h + 4) == 0 && o->type != NBD_CMD_READ,
				      "simple reply to %s", proto_cmd_name(o->type));
				retire(cl, o);
				return;
			}
			recv_all(cl, h + 4, PROTO_CHUNK_HDR_LEN - 4);
			CHECK(proto_get_u32(h) == NBD_STRUCTURED_REPLY_MAGIC, "chunk magic");
			clen = proto_get_u32(h + 16);
		}
		flags = proto_get_u16(h + 4);
		type = proto_get_u16(h + 6);
		o = find_out(cl, proto_get_u64(h + 8));
		CHECK(!(type & (1u << 15)), "%s failed (chunk type %u)", proto_cmd_name(o->type),
		      type);
		drain(cl, clen);
		if (flags & NBD_REPLY_FLAG_DONE) {
			retire(cl, o);
			return;
		}
	}
}

/* The lines of a small /proc file, each prefixed, to stderr (what is there). */
static void dump_file(const char *path, const char *prefix, unsigned max_lines)
{
	char line[512];
	FILE *f = fopen(path, "r");

	if (!f)
		return;
	while (max_lines-- && fgets(line, sizeof(line), f))
		fprintf(stderr, "%s%s", prefix, line);
	fclose(f);
}

/*
 * Before a late reply fails the test: the daemon's threads (state and the
 * kernel function each sleeps in) and each io_uring's fdinfo (queue heads
 * and tails, pending task work), then a wait past the daemon's own warning
 * (CONN_WATCH_WARN_S, 10 s after the request began), which names the
 * state the request waits in if the worker's loop still turns. Only the
 * first thread to find a late reply does this; others wait for it.
 */
static void dump_daemon(pid_t pid)
{
	static atomic_bool dumping;
	char path[256], link[256], prefix[64];
	struct dirent *e;
	DIR *dir;

	if (atomic_exchange(&dumping, true)) {
		sleep(60);
		return;
	}
	fprintf(stderr, "---- daemon %d at the late reply ----\n", (int)pid);
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	if ((dir = opendir(path))) {
		while ((e = readdir(dir))) {
			long tid = strtol(e->d_name, NULL, 10);

			if (tid <= 0)
				continue;
			snprintf(prefix, sizeof(prefix), "thread %ld comm: ", tid);
			snprintf(path, sizeof(path), "/proc/%d/task/%ld/comm", (int)pid, tid);
			dump_file(path, prefix, 1);
			snprintf(prefix, sizeof(prefix), "thread %ld stat: ", tid);
			snprintf(path, sizeof(path), "/proc/%d/task/%ld/stat", (int)pid, tid);
			dump_file(path, prefix, 1);
			snprintf(prefix, sizeof(prefix), "thread %ld stack: ", tid);
			snprintf(path, sizeof(path), "/proc/%d/task/%ld/stack", (int)pid, tid);
			dump_file(path, prefix, 8);
		}
		closedir(dir);
	}
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	if ((dir = opendir(path))) {
		while ((e = readdir(dir))) {
			long fd = strtol(e->d_name, NULL, 10);
			ssize_t n;

			if (fd < 0 || e->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "/proc/%d/fd/%ld", (int)pid, fd);
			n = readlink(path, link, sizeof(link) - 1);
			if (n <= 0)
				continue;
			link[n] = 0;
			if (!strstr(link, "io_uring"))
				continue;
			snprintf(prefix, sizeof(prefix), "ring fd %ld: ", fd);
			snprintf(path, sizeof(path), "/proc/%d/fdinfo/%ld", (int)pid, fd);
			dump_file(path, prefix, 24);
		}
		closedir(dir);
	}
	fflush(stderr);
	sleep(6);
}

/* Fails if a request sent has waited more than REPLY_MAX_S for its reply. */
static void check_deadlines(struct client *cl)
{
	pthread_mutex_lock(&cl->lock);
	for (unsigned i = 0; i < MAX_OUT; i++) {
		struct out *o = &cl->out[i];

		if (o->used && o->sent && harness_now() - o->sent > REPLY_MAX_S)
			dump_daemon(cl->d->pid);
		CHECK(!o->used || !o->sent || harness_now() - o->sent <= REPLY_MAX_S,
		      "export \"%s\" (%s): %s cookie %llu of %llu bytes unanswered for %.1f s",
		      cl->export, cl->slow ? "slow client" : cl->solo ? "solo client" : "client",
		      proto_cmd_name(o->type),
		      (unsigned long long)o->cookie, (unsigned long long)o->len,
		      harness_now() - o->sent);
	}
	pthread_mutex_unlock(&cl->lock);
}

static void *receiver(void *arg)
{
	struct client *cl = arg;
	struct timeval tv = { .tv_sec = 0, .tv_usec = 250000 };

	/* Receives time out, so a stalled reply is noticed while waiting for it. */
	CHECK(setsockopt(cl->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0, "SO_RCVTIMEO");
	for (;;) {
		uint8_t b;
		ssize_t n;

		pthread_mutex_lock(&cl->lock);
		if (!cl->nout && atomic_load(&cl->sending_done)) {
			pthread_mutex_unlock(&cl->lock);
			return NULL;
		}
		pthread_mutex_unlock(&cl->lock);
		check_deadlines(cl);
		n = recv(cl->fd, &b, 1, MSG_PEEK);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		CHECK(n == 1, "export \"%s\": the connection ended (%s)", cl->export,
		      n < 0 ? strerror(errno) : "EOF");
		read_reply(cl);
	}
}

/* A request's length: mostly small, some large, a few past the segment size. */
static uint64_t pick_len(struct client *cl)
{
	static const uint64_t sizes[] = { 4096, 4096, 4096, 4096, 4096, 4096, 65536, 65536, 65536,
					  262144, 1 << 20, 4 << 20 };
	unsigned r = (unsigned)rand_r(&cl->seed);
	uint64_t len = sizes[r % (sizeof(sizes) / sizeof(sizes[0]))];

	if (cl->big)
		return BIG - (r % 3) * 4096;
	if ((r >> 4) % 100 == 0)
		len = (33 << 20) + 4097; /* segmented */
	if (r & 0x100)
		len += (r >> 9) % 4000; /* unaligned */
	if (cl->m != EXTENDED && len > (32u << 20))
		len = 32u << 20;        /* compact headers: the advertised maximum at most */
	/*
	 * A slow client's WRITE holds pool chunks for all of its payload until
	 * the last byte is in: one of 32 MiB would hold half the pool for
	 * seconds (a known limit, tests/README.md), so it sends 1 MiB at most.
	 */
	if (cl->slow && len > (1u << 20))
		len = 1u << 20;
	return len;
}

static void send_request(struct client *cl, uint16_t type, uint64_t off, uint64_t len)
{
	struct out *o = NULL;

	pthread_mutex_lock(&cl->lock);
	while (cl->nout == cl->max_out)
		pthread_cond_wait(&cl->room, &cl->lock);
	for (unsigned i = 0; i < MAX_OUT && !o; i++)
		if (!cl->out[i].used)
			o = &cl->out[i];
	o->used = true;
	o->cookie = ++cl->next_cookie;
	o->type = type;
	o->len = len;
	/* The solo client's clock runs from the first byte: its payload must move too. */
	o->sent = cl->solo ? harness_now() : 0;
	cl->nout++;
	cl->requests++;
	pthread_mutex_unlock(&cl->lock);

	if (cl->m == EXTENDED) {
		raw_request_ext(cl->fd, 0, type, o->cookie, off, len);
	} else {
		raw_request(cl->fd, NBD_REQUEST_MAGIC, 0, type, o->cookie, off, (uint32_t)len);
	}
	if (type == NBD_CMD_WRITE)
		send_all(cl, payload, len);
	if (!cl->solo) {
		pthread_mutex_lock(&cl->lock);
		o->sent = harness_now();
		pthread_mutex_unlock(&cl->lock);
	}
}

/*
 * The solo client: on its own, one request at a time, big WRITEs and READs
 * back to back, as a copy tool sends them, each timed from its first byte
 * (a WRITE's payload must be read on time too). Its payloads arrive in
 * many pieces, each a receive's task work that makes no completion: with
 * deferred task work, this is the load under which the previous binary's
 * worker, asleep outside the ring, left a payload unread until a timer
 * woke it (a 100 MiB WRITE took seconds where it takes a tenth of one).
 */
static void solo_sequence(struct client *cl)
{
	static const uint64_t lens[] = { (33u << 20) + 12345, 32u << 20, BIG, (16u << 20) + 1 };

	for (unsigned round = 0; round < 2; round++)
		for (unsigned i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
			uint64_t off = 7777 + round * (1u << 20);

			send_request(cl, NBD_CMD_WRITE, off, lens[i]);
			send_request(cl, NBD_CMD_READ, off, lens[i]);
		}
}

static void *sender(void *arg)
{
	struct client *cl = arg;

	if (cl->solo) {
		solo_sequence(cl);
		atomic_store(&cl->sending_done, true);
		return NULL;
	}
	while (!atomic_load(&stop_load)) {
		unsigned r = (unsigned)rand_r(&cl->seed), burst = cl->big ? 1 : 1 + r % 16, i;

		for (i = 0; i < burst && !atomic_load(&stop_load); i++) {
			uint64_t len = pick_len(cl), off;
			unsigned k = (unsigned)rand_r(&cl->seed) % 16;
			uint16_t type = k < 7 ? NBD_CMD_READ : k < 13 ? NBD_CMD_WRITE :
					k == 13 ? NBD_CMD_WRITE_ZEROES : k == 14 ? NBD_CMD_TRIM :
					NBD_CMD_FLUSH;

			/* The big ones hold range locks over 100 MiB: they get a half of their own. */
			off = ((uint64_t)rand_r(&cl->seed) * 4099) % (IMG_SIZE / 2 - len);
			if (cl->big)
				off += IMG_SIZE / 2;
			if (type == NBD_CMD_FLUSH)
				off = len = 0;
			send_request(cl, type, off, len);
		}
		/* Bursty: a pause of up to 300 ms, sometimes none; the big ones pause longer. */
		if (cl->big)
			usleep(1500000 + (r >> 1) % 1000000);
		else if (r & 1)
			usleep((r >> 1) % 300000);
	}
	atomic_store(&cl->sending_done, true);
	return NULL;
}

/*
 * Unread bytes of the daemon's sockets, from ss: true if one has kept the
 * same non-zero count for STUCK_S. *inode names it.
 */
#define MAX_SOCKS 64
static struct { unsigned long inode; unsigned long q; double since; } seen[MAX_SOCKS];

static bool socket_stuck(pid_t pid, unsigned long *inode, unsigned long *q)
{
	char cmd[128], line[1024], who[32];
	double now = harness_now();
	bool stuck = false;
	FILE *f;

	snprintf(cmd, sizeof(cmd), "ss -xnp 2>/dev/null");
	snprintf(who, sizeof(who), "pid=%ld,", (long)pid);
	f = popen(cmd, "r");
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		unsigned long rq, sq, ino;
		char state[32], path[512];
		unsigned i, free_i = MAX_SOCKS;

		if (!strstr(line, who) ||
		    sscanf(line, "%*s %31s %lu %lu %511s %lu", state, &rq, &sq, path, &ino) != 5)
			continue;
		for (i = 0; i < MAX_SOCKS; i++) {
			if (seen[i].inode == ino)
				break;
			if (!seen[i].inode && free_i == MAX_SOCKS)
				free_i = i;
		}
		if (i == MAX_SOCKS) {
			if (free_i == MAX_SOCKS)
				continue;
			i = free_i;
			seen[i].inode = ino;
			seen[i].q = ~0ul;
		}
		if (rq != seen[i].q) {
			seen[i].q = rq;
			seen[i].since = now;
		} else if (rq && now - seen[i].since >= STUCK_S) {
			*inode = ino;
			*q = rq;
			stuck = true;
		}
	}
	pclose(f);
	return stuck;
}

static void client_start(struct daemon *d, struct client *cl, unsigned seed, unsigned max_out)
{
	cl->d = d;
	cl->seed = seed;
	cl->max_out = max_out;
	pthread_mutex_init(&cl->lock, NULL);
	pthread_cond_init(&cl->room, NULL);
	cl->fd = connect_mode(d, cl->m, cl->export);
	CHECK(pthread_create(&cl->rx, NULL, receiver, cl) == 0, "receiver");
	CHECK(pthread_create(&cl->tx, NULL, sender, cl) == 0, "sender");
}

static void client_join(struct client *cl)
{
	pthread_join(cl->tx, NULL);
	pthread_join(cl->rx, NULL);
	close(cl->fd);
}

static void run_mode(struct daemon *d, const char *what, const char *a1, const char *a2,
		     const char *a3)
{
	static const char *const exports[] = { "", "always", "auto", "ovl", "bm" };
	struct client cls[16], solo;
	unsigned n = 0, i;
	uint64_t requests = 0;
	double worst = 0, t0;

	/* First the solo client, alone, with 32 MiB pools (nobody else to wait for). */
	harness_start(d, "-t", "2", "--pool-size", "32M", a1, a2, a3, NULL);
	t0 = harness_now();
	memset(&solo, 0, sizeof(solo));
	solo.export = "";
	solo.m = EXTENDED;
	solo.solo = true;
	client_start(d, &solo, 1, 1);
	client_join(&solo);
	harness_stop(d);
	printf("%s: the solo client's %llu big requests answered in %.1f s, the slowest in %.2f s\n",
	       what, (unsigned long long)solo.requests, harness_now() - t0, solo.worst);

	memset(seen, 0, sizeof(seen));
	harness_start(d, "-t", "2", "--cache-size", "16M", "-e", e_always,
		      "-e", e_auto, "-e", e_ovl, "-e", e_bm, a1, a2, a3, NULL);
	atomic_store(&stop_load, false);
	memset(cls, 0, sizeof(cls));
	for (i = 0; i < 10; i++) {
		cls[n].export = exports[i % 5];
		cls[n].m = (enum mode)(i % 3);
		n++;
	}
	cls[n].export = ""; cls[n].m = EXTENDED; cls[n].big = true; n++;
	cls[n].export = "auto"; cls[n].m = EXTENDED; cls[n].big = true; n++;
	cls[n].export = ""; cls[n].m = STRUCTURED; cls[n].slow = true; n++;
	cls[n].export = "bm"; cls[n].m = SIMPLE; cls[n].slow = true; n++;
	for (i = 0; i < n; i++)
		client_start(d, &cls[i], 1234 + i, MAX_OUT);
	t0 = harness_now();
	while (harness_now() - t0 < LOAD_S) {
		unsigned long inode = 0, q = 0;
		bool stuck;

		usleep(250000);
		stuck = socket_stuck(d->pid, &inode, &q);
		if (stuck)
			dump_daemon(d->pid);
		CHECK(!stuck,
		      "%s: a socket of the daemon (inode %lu) kept %lu unread bytes for %.0f s", what,
		      inode, q, STUCK_S);
	}
	atomic_store(&stop_load, true);
	for (i = 0; i < n; i++) {
		client_join(&cls[i]);
		requests += cls[i].requests;
		if (cls[i].worst > worst)
			worst = cls[i].worst;
	}
	harness_stop(d);
	printf("%s: %llu requests on %u connections in %.1f s, every one answered, the slowest "
	       "in %.2f s\n", what, (unsigned long long)requests, n, harness_now() - t0, worst);
	fflush(stdout);
}

int main(void)
{
	struct daemon d;
	char base[2200], bm[2200];
	FILE *f;

	harness_init("liveness", 240);
	harness_image(&d, IMG_SIZE);
	snprintf(base, sizeof(base), "%s/base.img", d.dir);
	snprintf(bm, sizeof(bm), "%s/bm.img", d.dir);
	snprintf(e_always, sizeof(e_always), "always=%s,cache=always", d.img);
	snprintf(e_auto, sizeof(e_auto), "auto=%s,cache=auto", d.img);
	snprintf(e_ovl, sizeof(e_ovl), "ovl=%s,overlay=temporary", base);
	snprintf(e_bm, sizeof(e_bm), "bm=%s,bitmap=b1", bm);
	f = fopen(base, "w");
	CHECK(f && ftruncate(fileno(f), (off_t)IMG_SIZE) == 0, "base image");
	fclose(f);
	f = fopen(bm, "w");
	CHECK(f && ftruncate(fileno(f), (off_t)IMG_SIZE) == 0, "bitmap image");
	fclose(f);
	payload = harness_alloc(BIG);
	harness_fill(payload, BIG, 7);

	run_mode(&d, "the defaults (deferred task work, adaptive polling at depth)", NULL,
		 NULL, NULL);
	run_mode(&d, "task work as it comes, no polling", "--no-defer-taskrun", "--poll-max", "0");
	run_mode(&d, "deferred task work, adaptive polling", "--poll-max", "100", NULL);
	run_mode(&d, "task work as it comes, 50 us polling", "--no-defer-taskrun", "--busy-poll",
		 "50");
	return 0;
}
