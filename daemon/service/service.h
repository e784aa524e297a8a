/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * service: the process. Settings (command line, configuration file),
 * listeners, the export table and connection placement, restarts that
 * keep connections, and systemd's notification protocol.
 */
#ifndef URINGNBD_SERVICE_H
#define URINGNBD_SERVICE_H

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "../../cache/cache.h"
#include "../../proto/proto.h"
#include "../base/base.h"
#include "../conn/conn.h"
#include "../engine/engine.h"
#include "../storage/storage.h"

struct server;

/* ---- config.c ---- */
/* A named throttle group's limits (limits.c shares them among its exports). */
struct config_group {
	char *name;
	struct throttle_limits limits;
};

struct config {
	char *unix_path, *bind, *port, *pid_file;
	char *vsock_listen;        /* listen = vsock:PORT: that PORT, or NULL */
	char *control_path;        /* the control socket (control.c), or NULL */
	char *metrics;             /* the metrics endpoint (http.c), or NULL */
	long long threads;         /* 0: not set */
	long long pool_bytes;      /* 0: not set */
	long long cache_bytes;     /* 0: not set */
	long long max_conns;       /* -1: not set; 0: no limit */
	long long handshake_timeout_s; /* -1: not set; 0: none */
	long long keepalive_s;     /* -1: not set; 0: off */
	long long io_timeout_s;    /* -1: not set; 0: none */
	long long idle_timeout_s;  /* -1: not set; 0: none */
	long long busy_poll_us;    /* -1: not set; 0: as poll-max says */
	long long poll_max_us;     /* -1: not set; 0: no adaptive polling */
	long long max_conns_per_client; /* -1: not set; 0: no limit */
	int keep_conns;            /* keep-connections: -1 not set, 0, 1 */
	int defer_taskrun;         /* defer-taskrun: -1 not set, 0, 1 */
	int tls;                   /* enum proto_tls; -1: not set */
	char *tls_certificates;    /* directory (nbdkit's layout) */
	char *tls_psk;             /* psktool file */
	int tls_verify_peer;       /* -1: not set */
	int list;                  /* exports are listed: -1 not set, 0, 1 */
	bool single;               /* -s: one client on stdin/stdout (command line only) */
	int log_level;             /* -1: not set */
	bool log_level_set;
	struct export_spec *exports;
	size_t nexports;
	struct config_group *groups; /* [throttle-group NAME] sections, --throttle-group */
	size_t ngroups;
	char **ublk;               /* --ublk NAME: exports also served as /dev/ublkbN */
	size_t nublk;
};

/* --ublk NAME: marks the merged export NAME; -1 (logged) if there is none. */
int config_apply_ublk(const struct config *cli, struct export_spec *specs, size_t n);
/* Every setting "not set". */
void config_init(struct config *cfg);
/*
 * One [global] key (also what the command line's global options go
 * through, so both accept and refuse the same values). Returns 0, or -1
 * with *why naming the key and what it expects.
 */
int config_set_global(struct config *cfg, const char *key, const char *value, const char **why);
/*
 * One [export NAME] key (the file's and the control socket's, so both
 * accept and refuse the same values): spec keeps a pointer to v. Returns 0,
 * or -1 with err saying why (spec unchanged).
 */
int config_set_export(struct export_spec *spec, const char *key, const char *v, char *err,
		      size_t errlen);
/* Parses the file into *cfg; logs "file:line: why" and returns -1 on error. */
int config_load(const char *path, struct config *cfg);
/* Appends a copy of *spec (its heap strings move to cfg). Returns 0 or -1. */
int config_add_export(struct config *cfg, const struct export_spec *spec);
/*
 * The exports in force: file's, then cli's; a command-line export replaces
 * a file export of the same name. Returns a new array of borrowed specs
 * (free only the array), or NULL with *n = 0 on error.
 */
struct export_spec *config_merge_exports(const struct config *file, const struct config *cli,
					 size_t *n);
/* Refuses no exports, duplicate names, over-long names; logs why. Returns 0 or -1. */
int config_check_exports(const struct export_spec *specs, size_t n);
/*
 * One limit key (iops-total, bps-read-max, ...) into lim: 0, or -1 with err
 * saying why. Whole sets are checked by config_check_limits.
 */
int config_set_limit(struct throttle_limits *lim, const char *key, const char *v, char *err,
		     size_t errlen);
/* A throttle group's name: letters, digits, '-', '_', '.'; 1 to 64 bytes. */
bool config_group_name_ok(const char *name);
/* A new, empty group in cfg: 0, -EEXIST (the name is taken) or -ENOMEM. */
int config_add_group(struct config *cfg, const char *name, struct config_group **out);
/*
 * Limits that make sense (a burst with its rate...) for the merged exports
 * and the groups of both configurations, and every group an export names
 * defined; logs why not. Returns 0 or -1.
 */
int config_check_limits(const struct config *file, const struct config *cli,
			const struct export_spec *specs, size_t n);
/* The groups in force (cli's replace file's of the same name): a new array of borrowed ones. */
struct config_group *config_groups_in_force(const struct config *file, const struct config *cli,
					    size_t *n);
void config_free(struct config *cfg);
long long config_parse_size(const char *s);
long long config_parse_count(const char *s);
int config_parse_bool(const char *v);
int config_parse_log_level(const char *v);
int config_parse_tls(const char *v); /* enum proto_tls, or -1 */
int cache_mode_parse(const char *s); /* enum cache_mode, or -1 if unknown */
const char *cache_mode_name(int mode);

/* ---- cli.c ---- */
/*
 * Parses the command line into *cli (config_init'd here) and *config_path.
 * Returns 0 to go on, 1 to exit 0 (--help, --version), -1 to exit 1.
 */
int cli_parse(int argc, char **argv, struct config *cli, const char **config_path);

/* ---- notify.c: systemd's notification protocol ---- */
/* Sends "READY=1", "STATUS=..." etc. to $NOTIFY_SOCKET, if set. */
void notify_send(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/*
 * The same with descriptors attached (FDSTORE=1): 0, or -errno (-ENOENT
 * without $NOTIFY_SOCKET).
 */
#define NOTIFY_MAX_FDS 16
int notify_send_fds(const int *fds, size_t n, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* ---- handover.c: restarts that keep connections (SIGUSR2: re-exec) ---- */
/* At start: where the binary is (to exec it again) and its arguments. */
void handover_init(int argc, char **argv);
/*
 * At start, before listening: a state handed over by the previous process
 * (its environment), read; its listeners adopted. Returns how many
 * listeners were, 0 if this is no hand-over, -1 on error (logged).
 */
int handover_load(struct server *srv);
/* After the workers started: the handed-over connections go to them. */
void handover_adopt(struct server *srv);
/* SIGUSR2 (main thread): parks every connection, then execs the binary. */
void handover_start(struct server *srv);
/*
 * SIGTERM with keep-connections under systemd (main thread): parks every
 * connection, hands the sockets and the state to the service manager's fd
 * store (kept if this is a restart, dropped if a stop), then stops the loop.
 */
void handover_store(struct server *srv);
/* A descriptor passed with a name of the fd store's (listen.c): true if it is ours. */
bool handover_stored(int fd, const char *name);
/* What this process's start adopted (for the control socket's stats). */
struct handover_stats {
	bool restarted;           /* this process was started by a hand-over */
	unsigned adopted, closed_tls, closed_negotiating, refused;
};
void handover_stats(struct handover_stats *out);

/* ---- listen.c ---- */
#define LISTEN_DEFAULT_PORT "10809"
struct listener {
	int fd;
	ev_io watcher;
	struct server *srv;
	char *desc;                /* "127.0.0.1:10809", "unix:/run/x.sock" */
	char *unix_path;           /* to unlink at exit; NULL if not ours */
};

int listen_tcp(struct server *srv, const char *addr, const char *port);
/* A vsock listener on port (any CID of this machine); 0 or -errno, logged. */
int listen_vsock(struct server *srv, const char *port);
int listen_unix(struct server *srv, const char *path);
/*
 * A listening unix socket at path, no wider than mode (a stale socket there
 * is replaced, a live one refused): its fd, or -errno (logged).
 */
int listen_unix_socket(const char *path, mode_t mode);
/* Whether sa is a loopback address (127/8, ::1, v4-mapped 127/8). */
struct sockaddr;
bool listen_is_loopback(const struct sockaddr *sa);
int listen_inherited(struct server *srv);
/* Fills cl's key and peer from its socket fd (address and port, or SO_PEERCRED). */
void listen_identify(int fd, struct client *cl);
/* Starts accepting on the main loop. */
void listen_start(struct server *srv);
/* Stops or resumes accepting (a hand-over pauses it). */
void listen_pause(struct server *srv, bool paused);
/* Adopts a listening socket handed over (unix_path: ours to unlink at exit, or NULL). */
int listen_adopt(struct server *srv, int fd, const char *desc, const char *unix_path);
/* Closes the listeners (and unlinks unix sockets). */
void listen_close(struct server *srv);

/* ---- server.c ---- */
struct server {
	pthread_rwlock_t exports_lock; /* the table; negotiation reads, reload writes */
	struct export **exports;
	size_t nexports;
	struct worker *workers;
	unsigned nworkers;
	unsigned next_worker;      /* round-robin placement (main thread) */
	struct listener *listeners;
	size_t nlisteners;
	struct worker_config workers_cfg; /* every worker's: pool, polling, task work */
	struct cache *cache;       /* shared by every cached export */
	unsigned max_conns;        /* 0: no limit */
	unsigned handshake_timeout_s; /* 0: none */
	atomic_uint live_conns;    /* accepted, not yet closed */
	unsigned max_conns_per_client; /* 0: no limit */
	pthread_mutex_t clients_lock; /* the per-client counts (accept: main; close: workers) */
	struct client_count *clients; /* keys with connections open, unordered */
	size_t nclients, clients_cap;
	bool single;               /* serving one client on stdin/stdout, then exiting */
	ev_async single_done;      /* main loop: that client is gone */
	unsigned keepalive_s;      /* TCP keepalive idle time; 0: no keepalive */
	unsigned io_timeout_s;     /* a stalled reply or payload ends its connection; 0: never */
	unsigned idle_timeout_s;   /* an idle connection is closed; 0: never */
/*
 * By default a worker polls (up to POLL_MAX_US_DEFAULT per wait, from the
 * credit its work earned: worker.c) only while it held POLL_DEPTH_DEFAULT
 * requests or more lately: at depth a poll spares a sleep and the wake-up
 * of an idle CPU per batch; at depth 1 the ring's own wait serves as well
 * at less CPU (tests/bench/README.md). --poll-max given: adaptive polling
 * at any depth; --busy-poll: a fixed window at any depth.
 */
#define POLL_MAX_US_DEFAULT 300
#define POLL_DEPTH_DEFAULT 4
	bool keep_conns;           /* SIGTERM under systemd stores connections in its fd store */
	ev_timer accept_backoff;   /* listeners stopped after EMFILE and the like */
	double backoff_s;          /* its current length; 0 after a good accept */
	unsigned test_fill_delay_ms; /* test builds only: hold cache fills open */
	enum proto_tls tls_mode;   /* off, on (SELECTIVETLS), require (FORCEDTLS) */
	struct tls_creds *tls_creds; /* under exports_lock: a reload replaces them */
	bool list_refused;         /* list = no */
	struct ev_loop *loop;      /* main thread's */
	atomic_bool shutting_down; /* set once by the main thread (relaxed readers) */
	atomic_uint_fast64_t over_limit; /* clients refused at accept by the limits (main thread) */
	double start_time_s;       /* wall clock at start, for the metrics */
	/* Exports served as local block devices (ublks.c), under ublk_lock. */
	pthread_mutex_t ublk_lock;
	struct server_ublk *ublks;
	size_t nublks;
};

/* Export lookup for negotiation, as struct proto_exports wants it (ctx = srv). */
int server_export_lookup(void *srv, const char *name, size_t name_len, struct proto_export *out);
int server_export_nth(void *srv, size_t i, struct proto_export *out);
/*
 * Hands an accepted client to a worker: it counts against max_conns and
 * its key's max_conns_per_client. Returns 0, or -EUSERS with the client
 * closed when its key is at the per-client limit.
 */
int server_accept(struct server *srv, const struct client *cl);
/*
 * What the connection layer asks of the server (its host: export lookup,
 * TLS credentials, shutdown, the limits' counts) and the settings it runs
 * with, for conns_init(): once the settings are final.
 */
void server_conn_host(struct server *s, struct conn_host *h);
/* An accepted client is closed (any thread). */
void server_conn_gone(struct server *srv, const struct client_key *key);
/* At max_conns: a client accepted now is refused. */
bool server_at_capacity(struct server *srv);
bool server_shutting_down(const struct server *srv);
/*
 * Opens the exports specs describe, keeping (sharing) those of the current
 * table that match. Returns the new table, or NULL with nothing changed.
 */
struct export **server_build_exports(struct server *s, const struct export_spec *specs, size_t n,
					 size_t *nout);
/*
 * The rate limits of specs[0..n) (and the groups in force) applied to the
 * exports t[0..n) built from them, live for their open connections too.
 * 0, or -1 if out of memory.
 */
int server_apply_limits(const struct config *file, const struct config *cli,
			const struct export_spec *specs, size_t n, struct export **t);
/*
 * The exports of base's checkpoints (export_open_checkpoint), those of the
 * current table with the same name and file kept, appended to *t (a heap
 * array of *n). Returns 0, or -1 (logged) with *t unchanged.
 */
int server_add_checkpoint_exports(struct server *s, const struct export *base, struct export ***t,
				  size_t *n);
/* Installs a new table; the old one's references are dropped. */
void server_swap_exports(struct server *s, struct export **t, size_t n);
/*
 * Re-opens the exports whose file changed size or was replaced, for the
 * connections that come next; those already open keep theirs. Any thread.
 */
void server_refresh_exports(struct server *s);
void server_log_exports(struct server *s);
/*
 * The control socket's changes to the table (main thread). add takes e's
 * reference; -EEXIST if the name is taken. remove refuses (-EBUSY) an export
 * with connections unless force, and returns the table's reference, with
 * *conns the connections it had; -ENOENT if there is none. replace puts
 * fresh in the place of the export of its name and returns that one's
 * reference (NULL if none: fresh is then not taken).
 */
int server_add_export(struct server *s, struct export *e);
struct export *server_remove_export(struct server *s, const char *name, bool force,
				    uint64_t *conns, int *err);
struct export *server_replace_export(struct server *s, struct export *fresh);
/* The export of that name, a new reference; NULL if none. */
struct export *server_find_export(struct server *s, const char *name);
/* The table now, each export a new reference; server_exports_put() drops them. */
struct export **server_exports_get(struct server *s, size_t *n);
void server_exports_put(struct export **t, size_t n);
/* Logs what installing table t would add, remove and reopen (a reload). */
void server_log_table_changes(struct server *s, struct export **t, size_t n);
unsigned server_connections(struct server *s);

/* ---- ublks.c: exports as /dev/ublkbN (conn/ublk.c serves them) ---- */
struct server_ublk {
	char *name;               /* the export's */
	struct ublk_dev *dev;
};
/*
 * Makes /dev/ublkbN for export name (or takes over the one a previous
 * process left). Blocks (a control job, or start-up). Returns the device's
 * N, or -errno with msg: -ENOENT (no such export), -EEXIST (it has one).
 */
int server_ublk_add(struct server *s, const char *name, char *msg, size_t len);
/* Removes export name's device: 0, or -ENOENT, or -EBUSY (mounted; msg) unless force. */
int server_ublk_remove(struct server *s, const char *name, bool force, char *msg, size_t len);
/* Export name's device: its N, or -1. */
int server_ublk_of(struct server *s, const char *name);
/*
 * At exit, before the workers stop: every device removed; one in use
 * (mounted) is left for the next start where the kernel can hand it over
 * (else removed all the same); with keep (a restart), all are left.
 */
void server_ublk_close_all(struct server *s, bool keep);

#endif
