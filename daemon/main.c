// SPDX-License-Identifier: BSD-3-Clause
/*
 * uringnbd: configuration, start-up, signals and shutdown.
 *
 * The main thread merges the configuration (defaults < --config file <
 * command line), opens the exports, starts the workers, listens, writes the
 * pid file and tells systemd it is ready; then its libev loop only accepts
 * connections and handles signals:
 *   SIGINT/SIGTERM  stop accepting, let connections finish, flush, exit 0
 *                   (a second one exits at once)
 *   SIGHUP          reload the --config file's exports; a bad file is
 *                   reported and the old configuration stays
 *   SIGUSR1         log the counters
 *   SIGUSR2         restart: exec the binary again, handing over every plaintext
 *                   connection (handover.c)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/base.h"
#include "engine/engine.h"
#include "storage/storage.h"
#include "conn/conn.h"
#include "service/service.h"
#include "ops/ops.h"
#include "ops/metrics.h"

#define DEFAULT_POOL_BYTES (64u * 1024 * 1024)
#define DEFAULT_CACHE_BYTES (64u * 1024 * 1024)
#define DEFAULT_MAX_CONNS 1024
#define DEFAULT_HANDSHAKE_TIMEOUT_S 10
#define DEFAULT_KEEPALIVE_S 60
#define DEFAULT_IO_TIMEOUT_S 60
#define NOFILE_RESERVE 64 /* descriptors beside connections: exports, listeners, rings */
#define STATUS_INTERVAL_S 2.0

static struct server srv;
static struct config cli;          /* what the command line said */
static const char *config_path;    /* --config, or NULL */
static int stop_signals;

static void log_stats(void)
{
	struct worker_stats sum = { 0 };
	uint64_t pool_waits;
	unsigned i;
	char pool_s[128];

	for (i = 0; i < srv.nworkers; i++)
		worker_stats_add(&srv.workers[i], &sum);
	pool_waits = hist_count(&sum.pool_wait);
	log_info("stats: range locks %" PRIu64 " acquired, %" PRIu64 " waited, %.3f ms waited in all; "
		 "%" PRIu64 " read-modify-write writes; %" PRIu64 " partial-last-block requests",
		 (uint64_t)sum.lock_acquired, (uint64_t)sum.lock_waited,
		 (double)sum.lock_wait_ns / 1e6, (uint64_t)sum.rmw_writes,
		 (uint64_t)sum.buffered_ios);
	if (!pool_waits)
		snprintf(pool_s, sizeof(pool_s), "no waits for buffer-pool chunks");
	else
		snprintf(pool_s, sizeof(pool_s), "%" PRIu64 " waits for buffer-pool chunks (%.3f ms in "
			 "all, p99 %.3f ms)", pool_waits, (double)sum.pool_wait.sum_ns / 1e6,
			 hist_quantile(&sum.pool_wait, 0.99) * 1e3);
	log_info("stats: %s; %" PRIu64 " completions found by polling, %.3f s polled", pool_s,
		 (uint64_t)sum.poll_hits, (double)sum.poll_ns / 1e9);
	if (srv.cache) {
		struct cache_stats c;

		cache_get_stats(srv.cache, &c);
		log_info("stats: cache %" PRIu64 " hits, %" PRIu64 " misses, %" PRIu64 " waits on fills, "
			 "%" PRIu64 " fills, %" PRIu64 " stale fills dropped, %" PRIu64 " evictions, "
			 "%" PRIu64 " invalidated, %" PRIu64 " full; %" PRIu64 " of %" PRIu64
			 " pages used (%" PRIu64 " bytes)", c.hits, c.misses, c.waits, c.fills,
			 c.stale_fills_dropped, c.evictions, c.invalidated, c.full, c.pages_used,
			 c.budget_pages, c.pages_used * CACHE_PAGE_BYTES);
	}
}

static void notify_status(void)
{
	notify_send("STATUS=serving %zu export%s, %u connection%s", srv.nexports,
		    srv.nexports == 1 ? "" : "s", server_connections(&srv),
		    server_connections(&srv) == 1 ? "" : "s");
}

static void on_status_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	notify_status();
}

static bool keep_ublk; /* a stop that a restart follows: ublk devices stay */

static void on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)revents;
	if (++stop_signals > 1) {
		log_warn("%s again: exiting at once", strsignal(w->signum));
		_exit(1);
	}
	if (w->signum == SIGTERM && srv.keep_conns && getenv("NOTIFY_SOCKET") && !srv.single) {
		/* A restart keeps the connections: the service manager holds them meanwhile. */
		log_info("%s: shutting down; connections go to the service manager's fd store",
			 strsignal(w->signum));
		keep_ublk = true; /* and ublk devices wait for the restart */
		notify_send("STOPPING=1");
		handover_store(&srv);
		return;
	}
	log_info("%s: shutting down", strsignal(w->signum));
	notify_send("STOPPING=1");
	ev_break(loop, EVBREAK_ALL);
}

/* After the loop has stopped, libev no longer sees signals: this does. */
static void on_second_signal(int sig)
{
	static const char msg[] = "uringnbd: warning: second signal during shutdown: exiting at once\n";

	(void)sig;
	if (write(2, msg, sizeof(msg) - 1) < 0)
		_exit(1);
	_exit(1);
}

static void on_usr1(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	log_stats();
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
/*
 * The page cache and the buffer pools, faulted in on a thread of their
 * own: they are ready before traffic needs them, and a start (a restart
 * under live clients above all) does not wait a few tens of milliseconds
 * per 64 MiB for it. On kernels before 5.14 pages fault in as used.
 *
 * A step at a time: MADV_POPULATE_WRITE holds the process's mmap lock for
 * the whole range it is given, and a worker's mmap() (a connection's area,
 * conn_transmit_start) waits for that lock, and on kernels without per-VMA
 * locks so do its page faults. In one call of 8 GiB a new connection's
 * greeting waited the whole 5-25 s; a step of 2 MiB holds it about a
 * millisecond, and a waiting writer goes before the next step.
 */
#define PREFAULT_STEP_BYTES (2u << 20)

static pthread_t prefault_thread;
static bool prefaulting;

/* 0, or the errno of the first step that failed. */
static int prefault_range(void *mem, size_t len)
{
	size_t off, n;

	for (off = 0; off < len; off += n) {
		n = len - off < PREFAULT_STEP_BYTES ? len - off : PREFAULT_STEP_BYTES;
		if (atomic_load_explicit(&srv.shutting_down, memory_order_relaxed))
			return 0;
		if (madvise((uint8_t *)mem + off, n, MADV_POPULATE_WRITE) < 0)
			return errno;
	}
	return 0;
}

static void *prefault_main(void *arg)
{
	double t0 = now_s();
	size_t len, total;
	unsigned i;
	void *mem;
	int err;

	(void)arg;
	cache_region(srv.cache, &mem, &len);
	total = len;
	err = prefault_range(mem, len);
	for (i = 0; i < srv.nworkers && !err; i++) {
		len = (size_t)srv.workers[i].pool.nchunks * POOL_CHUNK_BYTES;
		total += len;
		err = prefault_range(srv.workers[i].pool.base, len);
	}
	/* Said either way (a test that measures the daemon's memory waits for it),
	 * unless a shutdown cut it short. */
	if (atomic_load_explicit(&srv.shutting_down, memory_order_relaxed))
		return NULL;
	if (err)
		log_info("buffer pools and cache fault in as used (MADV_POPULATE_WRITE: %s)",
			 strerror(err));
	else
		log_info("buffer pools and cache faulted in: %zu MiB in %.0f ms", total >> 20,
			 (now_s() - t0) * 1e3);
	return NULL;
}

/* SIGUSR2: restart (re-exec) keeping the connections (handover.c). */
static void on_usr2(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	handover_start(&srv);
}

/* The TLS settings in force: command line, else file. */
static const char *tls_certs_dir(const struct config *file)
{
	return cli.tls_certificates ? cli.tls_certificates : file->tls_certificates;
}

static const char *tls_psk_file(const struct config *file)
{
	return cli.tls_psk ? cli.tls_psk : file->tls_psk;
}

/*
 * The TLS mode and credentials of cli and *file: srv's mode is set and new
 * credentials are returned in *creds (NULL when none are configured).
 * Returns -1, logged, when they do not fit together or do not load.
 */
static int tls_settings(const struct config *file, const struct export_spec *specs, size_t n,
			enum proto_tls *mode, struct tls_creds **creds)
{
	const char *dir = tls_certs_dir(file), *psk = tls_psk_file(file);
	int verify = cli.tls_verify_peer >= 0 ? cli.tls_verify_peer : file->tls_verify_peer > 0;
	size_t i;

	*creds = NULL;
	*mode = (enum proto_tls)(cli.tls >= 0 ? cli.tls : file->tls >= 0 ? file->tls : PROTO_TLS_OFF);
	if (*mode != PROTO_TLS_OFF && !dir && !psk) {
		log_error("tls=%s needs tls-certificates or tls-psk", *mode == PROTO_TLS_ON ? "on" :
			  "require");
		return -1;
	}
	for (i = 0; i < n && *mode == PROTO_TLS_OFF; i++)
		if (specs[i].tls_required || specs[i].tls_allow) {
			log_error("export \"%s\" is TLS-only (tls = require or tls-allow), but tls is "
				  "off: set tls = on or require", specs[i].name);
			return -1;
		}
	if (*mode == PROTO_TLS_OFF) {
		if (dir || psk)
			log_warn("TLS credentials are configured but tls is off: STARTTLS is refused");
		return 0;
	}
	if (verify && !dir) {
		log_error("tls-verify-peer needs tls-certificates (a CA to check client certificates)");
		return -1;
	}
	*creds = tls_creds_load(dir, psk, verify);
	return *creds ? 0 : -1;
}

static const char *tls_mode_name(enum proto_tls m)
{
	return m == PROTO_TLS_REQUIRE ? "require" : m == PROTO_TLS_ON ? "on" : "off";
}

static bool list_refused(const struct config *file)
{
	return (cli.list >= 0 ? cli.list : file->list) == 0;
}

/*
 * After a reload: a device for each export that `ublk = yes` (or --ublk)
 * asks for and has none, made here as at start-up (the main loop waits
 * while the kernel starts it). A device no longer asked for stays, as
 * connections do: ublk-remove deletes it.
 */
static void reload_ublks(struct export_spec *specs, size_t n)
{
	char msg[512];
	size_t i, j;
	int id;

	if (config_apply_ublk(&cli, specs, n) < 0)
		log_error("reload: --ublk names an export the reload removed; its device stays");
	for (i = 0; i < n; i++) {
		if (!specs[i].ublk || server_ublk_of(&srv, specs[i].name) >= 0)
			continue;
		if (srv.single) {
			log_error("reload: export \"%s\": ublk and --single do not go together",
				  specs[i].name);
			continue;
		}
		id = server_ublk_add(&srv, specs[i].name, msg, sizeof(msg));
		if (id < 0)
			log_error("reload: export \"%s\": %s", specs[i].name, msg);
		else
			log_info("reload: export \"%s\" made /dev/ublkb%d", specs[i].name, id);
	}
	pthread_mutex_lock(&srv.ublk_lock);
	for (i = 0; i < srv.nublks; i++) {
		for (j = 0; j < n && strcmp(specs[j].name, srv.ublks[i].name); j++)
			;
		if (j == n || !specs[j].ublk)
			log_info("reload: export \"%s\" keeps /dev/ublkb%d, which the configuration "
				 "does not ask for%s: ublk-remove deletes it", srv.ublks[i].name,
				 ublk_dev_id(srv.ublks[i].dev), j == n ? " (nor the export)" : "");
	}
	pthread_mutex_unlock(&srv.ublk_lock);
}

/* SIGHUP: the exports of the --config file (and the command line) again. */
static void on_reload(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct config file;
	struct export_spec *specs;
	struct export **t;
	size_t n, nspecs = 0, before = srv.nexports;
	struct tls_creds *creds = NULL, *old_creds;
	enum proto_tls mode = PROTO_TLS_OFF;

	(void)loop;
	(void)w;
	(void)revents;
	notify_send("RELOADING=1");
	if (!config_path) {
		/* The command line's exports stay; TLS credentials are read again. */
		config_init(&file);
	} else if (config_load(config_path, &file) < 0) {
		log_error("reload: \"%s\" refused; the previous configuration stays", config_path);
		notify_send("READY=1");
		return;
	}
	specs = config_merge_exports(&file, &cli, &n);
	if (specs && tls_settings(&file, specs, n, &mode, &creds) < 0) {
		log_error("reload: TLS settings refused; the previous configuration stays");
		t = NULL;
	} else if (specs && mode != srv.tls_mode) {
		log_error("reload: tls cannot change from %s to %s without a restart; the previous "
			  "configuration stays", tls_mode_name(srv.tls_mode), tls_mode_name(mode));
		t = NULL;
	} else if (specs && config_check_limits(&file, &cli, specs, n) < 0) {
		log_error("reload: rate limits refused; the previous configuration stays");
		t = NULL;
	} else {
		nspecs = n;
		t = specs ? server_build_exports(&srv, specs, n, &n) : NULL;
		if (!t)
			log_error("reload: exports of %s could not be opened; the previous "
				  "configuration stays", config_path ? config_path : "the command line");
		else if (server_apply_limits(&file, &cli, specs, nspecs, t) < 0)
			log_error("reload: out of memory for rate limits; some keep their old values");
	}
	if (!t) {
		tls_creds_put(creds);
	} else {
		/* New credentials for new connections; running ones keep theirs. */
		pthread_rwlock_wrlock(&srv.exports_lock);
		old_creds = srv.tls_creds;
		srv.tls_creds = creds;
		srv.list_refused = list_refused(&file);
		pthread_rwlock_unlock(&srv.exports_lock);
		tls_creds_put(old_creds);
		if (creds)
			log_info("reload: TLS credentials reloaded");
		server_log_table_changes(&srv, t, n);
		server_swap_exports(&srv, t, n);
		log_info("reload: %zu export%s (was %zu); existing connections are untouched", n,
			 n == 1 ? "" : "s", before);
		server_log_exports(&srv);
		reload_ublks(specs, nspecs);
	}
	free(specs);
	config_free(&file);
	notify_send("READY=1");
	notify_status();
}

/* A count from the command line, else the file, else the default (-1: not set). */
static unsigned setting(long long from_cli, long long from_file, unsigned dflt)
{
	return (unsigned)(from_cli >= 0 ? from_cli : from_file >= 0 ? from_file : dflt);
}

/*
 * Every connection is a descriptor: raise the soft limit to the hard one,
 * and say so if max-connections still cannot be met.
 */
static void raise_nofile(unsigned max_conns)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			(void)getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (max_conns && rl.rlim_cur != RLIM_INFINITY &&
	    rl.rlim_cur < (rlim_t)max_conns + NOFILE_RESERVE)
		log_warn("descriptor limit %llu is under max-connections %u + %u: clients past it "
			 "are refused until descriptors free up (raise LimitNOFILE= or ulimit -n)",
			 (unsigned long long)rl.rlim_cur, max_conns, NOFILE_RESERVE);
}

static void on_single_done(struct ev_loop *loop, ev_async *w, int revents)
{
	(void)w;
	(void)revents;
	log_info("the client on stdin/stdout is gone: exiting");
	ev_break(loop, EVBREAK_ALL);
}

/*
 * --single: stdin and stdout are the one client (inetd passes a socket,
 * ssh and socat pipes); the daemon exits when it goes.
 */
static void serve_stdio(void)
{
	struct client cl = { .fd = 0, .fd_out = 1 };
	struct stat st;

	if (fstat(0, &st) == 0 && S_ISSOCK(st.st_mode)) {
		cl.fd_out = 0;
		/* inetd's socket: the client's address counts for access rules and logs. */
		listen_identify(0, &cl);
		cl.fd = cl.fd_out = 0;
	} else
		cl.stream = true;
	ev_async_init(&srv.single_done, on_single_done);
	ev_async_start(srv.loop, &srv.single_done);
	server_accept(&srv, &cl);
}

static int write_pid_file(const char *path)
{
	char tmp[4096];
	int fd, ok;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	/* Never through a link someone left at the temporary's name. */
	unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0) {
		log_error("pid file \"%s\": %s", tmp, strerror(errno));
		return -1;
	}
	ok = dprintf(fd, "%ld\n", (long)getpid()) > 0;
	if (close(fd) < 0 || !ok || rename(tmp, path) < 0) {
		log_error("pid file \"%s\": %s", path, strerror(errno));
		unlink(tmp);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct config file;
	struct export_spec *specs = NULL;
	ev_signal sigint_w, sigterm_w, sigusr1_w, sighup_w, sigusr2_w;
	static const int handled_signals[] = { SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2 };
	sigset_t handled;
	ev_timer status_w;
	struct conn_host host;
	const char *unix_path, *bind_addr, *port, *pid_file, *control_path, *metrics, *vsock_port;
	bool bind_vsock;
	size_t nspecs = 0, j;
	long threads;
	int status = 1, inherited, ret;
	bool ran;
	char polling[64];
	unsigned i, started = 0;

	/*
	 * The signals uringnbd handles stay blocked until their watchers are
	 * in place: one sent during start-up (a restart's exec included, which
	 * keeps the mask) waits for them instead of killing the process; the
	 * threads started meanwhile keep them blocked, so they reach the main
	 * thread's handlers.
	 */
	sigemptyset(&handled);
	for (i = 0; i < sizeof(handled_signals) / sizeof(handled_signals[0]); i++)
		sigaddset(&handled, handled_signals[i]);
	pthread_sigmask(SIG_BLOCK, &handled, NULL);
	handover_init(argc, argv);
	config_init(&file);
	ret = cli_parse(argc, argv, &cli, &config_path);
	if (ret)
		return ret < 0 ? 1 : 0;
	if (config_path && config_load(config_path, &file) < 0)
		return 1;
	/* The command line overrides the file. */
	unix_path = cli.unix_path ? cli.unix_path : file.unix_path;
	bind_addr = cli.bind ? cli.bind : file.bind;
	bind_vsock = bind_addr && !strncmp(bind_addr, "vsock:", 6);
	vsock_port = cli.vsock_listen ? cli.vsock_listen : file.vsock_listen;
	port = cli.port ? cli.port : file.port;
	pid_file = cli.pid_file ? cli.pid_file : file.pid_file;
	control_path = cli.control_path ? cli.control_path : file.control_path;
	metrics = cli.metrics ? cli.metrics : file.metrics;
	threads = cli.threads ? cli.threads : file.threads;
	srv.workers_cfg.pool_bytes = (size_t)(cli.pool_bytes ? cli.pool_bytes
				  : file.pool_bytes ? file.pool_bytes : DEFAULT_POOL_BYTES);
	srv.workers_cfg.max_chunks_per_req = EXPORT_MAX_CHUNKS_PER_REQ;
	srv.max_conns = setting(cli.max_conns, file.max_conns, DEFAULT_MAX_CONNS);
	srv.handshake_timeout_s = setting(cli.handshake_timeout_s, file.handshake_timeout_s,
					  DEFAULT_HANDSHAKE_TIMEOUT_S);
	srv.keepalive_s = setting(cli.keepalive_s, file.keepalive_s, DEFAULT_KEEPALIVE_S);
	srv.io_timeout_s = setting(cli.io_timeout_s, file.io_timeout_s, DEFAULT_IO_TIMEOUT_S);
	srv.idle_timeout_s = setting(cli.idle_timeout_s, file.idle_timeout_s, 0);
	srv.workers_cfg.busy_poll_us = setting(cli.busy_poll_us, file.busy_poll_us, 0);
	srv.workers_cfg.poll_max_us = setting(cli.poll_max_us, file.poll_max_us, POLL_MAX_US_DEFAULT);
	/* Polling asked for by name applies at any depth; the default only at depth. */
	srv.workers_cfg.poll_depth =
		cli.poll_max_us >= 0 || file.poll_max_us >= 0 || srv.workers_cfg.busy_poll_us ?
		0 : POLL_DEPTH_DEFAULT;
	srv.keep_conns = (cli.keep_conns >= 0 ? cli.keep_conns : file.keep_conns) > 0;
	srv.workers_cfg.defer_taskrun =
		(cli.defer_taskrun >= 0 ? cli.defer_taskrun : file.defer_taskrun) != 0;
	srv.max_conns_per_client = setting(cli.max_conns_per_client, file.max_conns_per_client, 0);
	srv.single = cli.single;
	if (srv.single && (cli.unix_path || cli.bind || cli.port || cli.vsock_listen)) {
		fprintf(stderr, "uringnbd: --single serves stdin and stdout: -U, -b and -p do not "
				"apply\n");
		return 1;
	}
	if (srv.single && !threads)
		threads = 1;
	if (cli.log_level >= 0)
		log_max_level = (enum log_level)cli.log_level;
	else if (file.log_level_set)
		log_max_level = (enum log_level)file.log_level;
	if (threads == 0) {
		threads = sysconf(_SC_NPROCESSORS_ONLN);
		if (threads < 1)
			threads = 1;
	}
	signal(SIGPIPE, SIG_IGN);
	raise_nofile(srv.max_conns);

	pthread_rwlock_init(&srv.exports_lock, NULL);
	pthread_mutex_init(&srv.clients_lock, NULL);
	pthread_mutex_init(&srv.ublk_lock, NULL);
	srv.cache = cache_new((size_t)(cli.cache_bytes ? cli.cache_bytes
				       : file.cache_bytes ? file.cache_bytes : DEFAULT_CACHE_BYTES));
	if (!srv.cache) {
		log_error("page cache: out of memory");
		goto out_config;
	}
#ifdef URINGNBD_TEST_HOOKS
	if (getenv("URINGNBD_TEST_FILL_DELAY_MS"))
		srv.test_fill_delay_ms = (unsigned)atoi(getenv("URINGNBD_TEST_FILL_DELAY_MS"));
#endif
	specs = config_merge_exports(&file, &cli, &nspecs);
	if (!specs || config_check_exports(specs, nspecs) < 0 ||
	    config_apply_ublk(&cli, specs, nspecs) < 0)
		goto out_config;
	if (tls_init() < 0 || tls_settings(&file, specs, nspecs, &srv.tls_mode, &srv.tls_creds) < 0)
		goto out_config;
	srv.list_refused = list_refused(&file);
	export_set_stat_slots((unsigned)threads);
	if (config_check_limits(&file, &cli, specs, nspecs) < 0)
		goto out_config;
	srv.exports = server_build_exports(&srv, specs, nspecs, &srv.nexports);
	if (!srv.exports)
		goto out_config;
	if (server_apply_limits(&file, &cli, specs, nspecs, srv.exports) < 0) {
		log_error("rate limits: out of memory");
		goto out_listeners;
	}
	srv.loop = ev_default_loop(EVFLAG_AUTO);
	srv.start_time_s = (double)time(NULL);

	if (!srv.single && (ret = handover_load(&srv)) != 0) {
		/* A restart: the listeners are the previous process's, whatever is configured. */
		if (ret < 0)
			goto out_listeners;
	} else if (!srv.single) {
		inherited = listen_inherited(&srv);
		if (inherited < 0)
			goto out_listeners;
		if (unix_path && listen_unix(&srv, unix_path) < 0)
			goto out_listeners;
		/* vsock: -b vsock:PORT (instead of TCP), or listen = vsock:PORT. */
		if (bind_vsock && listen_vsock(&srv, bind_addr + 6) < 0)
			goto out_listeners;
		if (vsock_port && listen_vsock(&srv, vsock_port) < 0)
			goto out_listeners;
		if (((bind_addr && !bind_vsock) || port ||
		     (!unix_path && !inherited && !bind_vsock && !vsock_port)) &&
		    listen_tcp(&srv, bind_addr && !bind_vsock ? bind_addr : "localhost",
			       port ? port : LISTEN_DEFAULT_PORT) < 0)
			goto out_listeners;
	}

	srv.nworkers = (unsigned)threads;
	srv.workers = calloc(srv.nworkers, sizeof(*srv.workers));
	if (!srv.workers)
		goto out_listeners;
	/* The layers meet here: a worker's clients are connections, hosted by the server. */
	server_conn_host(&srv, &host);
	conns_init(&host);
	worker_set_clients(&conns_worker_ops);
	for (started = 0; started < srv.nworkers; started++)
		if (worker_start(&srv.workers[started], &srv.workers_cfg, (int)started) < 0)
			goto out_workers;

	prefaulting = pthread_create(&prefault_thread, NULL, prefault_main, NULL) == 0;
	if (!srv.single)
		handover_adopt(&srv);
	/* Exports also served as /dev/ublkbN: a previous process's devices are taken over. */
	for (j = 0; j < nspecs; j++) {
		char msg[512];

		if (!specs[j].ublk || server_ublk_of(&srv, specs[j].name) >= 0)
			continue; /* or taken over already, as a restart's (handover_adopt) */
		if (srv.single) {
			log_error("export \"%s\": ublk and --single do not go together", specs[j].name);
			goto out_workers;
		}
		if (server_ublk_add(&srv, specs[j].name, msg, sizeof(msg)) < 0) {
			log_error("export \"%s\": %s", specs[j].name, msg);
			goto out_workers;
		}
	}
	if (control_path && control_start(&srv, control_path) < 0)
		goto out_workers;
	if (metrics && http_start(&srv, metrics) < 0)
		goto out_workers;
	listen_start(&srv);
	if (srv.single)
		serve_stdio();
	if (pid_file && write_pid_file(pid_file) < 0)
		goto out_workers;
	server_log_exports(&srv);
	if (srv.max_conns)
		log_info("at most %u connection%s at a time", srv.max_conns,
			 srv.max_conns == 1 ? "" : "s");
	if (srv.tls_mode != PROTO_TLS_OFF)
		log_info("TLS %s (%s%s%s)", srv.tls_mode == PROTO_TLS_REQUIRE ? "required" :
			 "offered (STARTTLS)", tls_certs_dir(&file) ? "X.509" : "",
			 tls_certs_dir(&file) && tls_psk_file(&file) ? ", " : "",
			 tls_psk_file(&file) ? "PSK" : "");
	if (srv.workers_cfg.busy_poll_us)
		snprintf(polling, sizeof(polling), "polling %u us (fixed)", srv.workers_cfg.busy_poll_us);
	else if (srv.workers_cfg.poll_max_us)
		snprintf(polling, sizeof(polling), "adaptive polling up to %u us%s", srv.workers_cfg.poll_max_us,
			 srv.workers_cfg.poll_depth ? " at depth" : "");
	else
		snprintf(polling, sizeof(polling), "no polling");
	log_info("%u worker%s, buffer pool %zu MiB each, %s, %s%s%s", srv.nworkers,
		 srv.nworkers == 1 ? "" : "s", srv.workers_cfg.pool_bytes >> 20, polling, worker_ring_features(),
		 config_path ? ", config " : "", config_path ? config_path : "");

	ev_signal_init(&sigint_w, on_stop_signal, SIGINT);
	ev_signal_start(srv.loop, &sigint_w);
	ev_signal_init(&sigterm_w, on_stop_signal, SIGTERM);
	ev_signal_start(srv.loop, &sigterm_w);
	ev_signal_init(&sigusr1_w, on_usr1, SIGUSR1);
	ev_signal_start(srv.loop, &sigusr1_w);
	ev_signal_init(&sighup_w, on_reload, SIGHUP);
	ev_signal_start(srv.loop, &sighup_w);
	ev_signal_init(&sigusr2_w, on_usr2, SIGUSR2);
	ev_signal_start(srv.loop, &sigusr2_w);
	pthread_sigmask(SIG_UNBLOCK, &handled, NULL);
	ev_timer_init(&status_w, on_status_timer, STATUS_INTERVAL_S, STATUS_INTERVAL_S);
	/* Start-up (exports, bitmaps, workers) took a while: timers count from now. */
	ev_now_update(srv.loop);
	if (getenv("NOTIFY_SOCKET"))
		ev_timer_start(srv.loop, &status_w);
	notify_send("READY=1\nMAINPID=%ld", (long)getpid());
	notify_status();
	ev_run(srv.loop, 0);
	status = 0;

out_workers:
	if (status == 0) {
		struct sigaction sa = { .sa_handler = on_second_signal };

		sigaction(SIGTERM, &sa, NULL);
		sigaction(SIGINT, &sa, NULL);
	}
	/* Stop accepting first, then let every worker finish its connections. */
	atomic_store_explicit(&srv.shutting_down, true, memory_order_relaxed);
	http_stop();
	control_close();
	listen_close(&srv);
	/* The devices end before their workers (a restart leaves them to the next process). */
	server_ublk_close_all(&srv, keep_ublk);
	for (i = 0; i < started; i++)
		worker_stop(&srv.workers[i]);
	for (i = 0; i < started; i++)
		worker_join(&srv.workers[i]);
	ublk_released_free(); /* what was kept of devices left to the next process */
	if (prefaulting)
		pthread_join(prefault_thread, NULL);
	control_free();
	/* Every acknowledged write is on stable storage before exit; if not, say so. */
	ran = status == 0;
	for (j = 0; j < srv.nexports; j++) {
		const struct export *e = srv.exports[j];
		const char *what = e->path;
		int err;

		if (e->readonly)
			continue;
		if ((err = e->be->sync(e, &what)) < 0) {
			log_error("flush \"%s\" at exit: %s", what, strerror(-err));
			status = 1;
		} else if (backing_durability_err(export_store(e))) {
			log_error("\"%s\": exiting with writes that may have been lost (a flush "
				  "failed: %s)", e->path, strerror(backing_durability_err(export_store(e))));
			status = 1;
		}
	}
	if (ran)
		log_stats();
	free(srv.workers);
	if (pid_file && ran)
		unlink(pid_file);
out_listeners:
	listen_close(&srv);
	server_swap_exports(&srv, NULL, 0);
	backend_rbd_quiesce(); /* images a worker let go of close on threads of their own */
out_config:
	free(specs);
	config_free(&file);
	config_free(&cli);
	throttle_groups_free();
	cache_free(srv.cache);
	tls_creds_put(srv.tls_creds);
	pthread_rwlock_destroy(&srv.exports_lock);
	pthread_mutex_destroy(&srv.clients_lock);
	free(srv.clients);
	return status;
}
