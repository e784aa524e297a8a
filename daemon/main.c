/*
 * uringnbd: command line, start-up, signals and shutdown.
 *
 * The main thread opens the exports, starts the workers, listens, writes
 * the pid file once listening, and then runs a libev loop that only accepts
 * connections and handles signals. SIGINT/SIGTERM: stop accepting, let each
 * worker close its connections once their requests are done, exit 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"

#define DEFAULT_PORT "10809"
#define DEFAULT_POOL_BYTES (64u * 1024 * 1024)

static struct server srv;

int server_export_lookup(void *ctx, const char *name, size_t name_len, struct proto_export *out)
{
	struct server *s = ctx;
	size_t i;

	for (i = 0; i < s->nexports; i++) {
		const struct export *e = &s->exports[i];

		if (strlen(e->name) == name_len && memcmp(e->name, name, name_len) == 0) {
			export_describe(e, out);
			return 0;
		}
	}
	return -ENOENT;
}

int server_export_nth(void *ctx, size_t i, struct proto_export *out)
{
	struct server *s = ctx;

	if (i >= s->nexports)
		return -ENOENT;
	export_describe(&s->exports[i], out);
	return 0;
}

void server_accept(struct server *s, int fd)
{
	struct worker *w;

	if (s->shutting_down) {
		close(fd);
		return;
	}
	/* Round-robin: a connection stays on its worker for its whole life. */
	w = &s->workers[s->next_worker++ % s->nworkers];
	worker_adopt(w, fd);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: uringnbd [OPTIONS] [FILE]\n"
		"Export FILE (a regular file or block device) over NBD with O_DIRECT I/O.\n\n"
		"  -e, --export NAME=PATH[,readonly][,description=TEXT]\n"
		"                       one more export (repeatable); FILE is the export -n names\n"
		"  -U, --unix PATH      listen on a unix socket (with only -U, no TCP)\n"
		"  -b, --bind ADDR      TCP address to listen on (default localhost)\n"
		"  -p, --port PORT      TCP port (default " DEFAULT_PORT ")\n"
		"  -n, --name NAME      export name (default \"\")\n"
		"  -d, --description TEXT  export description\n"
		"  -r, --read-only      refuse writes\n"
		"  -t, --threads N      worker threads (default: online CPUs)\n"
		"      --pool-size SIZE buffer pool per worker, e.g. 64M (default 64M)\n"
		"      --pid-file PATH  write the pid here once listening\n"
		"  -v, --verbose        log every connection and request\n"
		"  -V, --version        print the version and exit\n"
		"  -h, --help           print this help and exit\n");
}

/*
 * --export NAME=PATH[,readonly][,description=TEXT]: fills *spec from a
 * copy of arg (kept for the life of the process). description= takes the
 * rest of the argument, commas included.
 */
static int parse_export(const char *arg, struct export_spec *spec)
{
	char *s, *eq, *key, *next;

	memset(spec, 0, sizeof(*spec));
	s = spec->storage = strdup(arg);
	if (!s)
		return -1;
	spec->description = "";
	eq = strchr(s, '=');
	if (!eq || eq == s) {
		fprintf(stderr, "uringnbd: --export \"%s\": expected NAME=PATH[,readonly]"
				"[,description=TEXT]\n", arg);
		return -1;
	}
	*eq = '\0';
	spec->name = s;
	spec->path = eq + 1;
	next = strchr(spec->path, ',');
	if (next)
		*next++ = '\0';
	if (!spec->path[0]) {
		fprintf(stderr, "uringnbd: --export \"%s\": no PATH\n", arg);
		return -1;
	}
	while ((key = next)) {
		if (strncmp(key, "description=", 12) == 0) {
			spec->description = key + 12;
			break;
		}
		next = strchr(key, ',');
		if (next)
			*next++ = '\0';
		if (strcmp(key, "readonly") == 0 || strcmp(key, "ro") == 0) {
			spec->readonly = true;
		} else {
			fprintf(stderr, "uringnbd: --export \"%s\": unknown key \"%s\"\n", arg, key);
			return -1;
		}
	}
	return 0;
}

/* "64M", "1G", "4096": bytes, or -1. */
static long long parse_size(const char *s)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || v < 0 || end == s)
		return -1;
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	case '\0': break;
	default: return -1;
	}
	return *end ? -1 : v;
}

static void on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)revents;
	log_info("%s: shutting down", strsignal(w->signum));
	ev_break(loop, EVBREAK_ALL);
}

/* Counters of every worker, summed: logged on SIGUSR1 and at exit. */
static void log_stats(void)
{
	struct worker_stats sum = { 0 };
	unsigned i;

	for (i = 0; i < srv.nworkers; i++)
		worker_stats_add(&srv.workers[i], &sum);
	log_info("stats: range locks %" PRIu64 " acquired, %" PRIu64 " waited, %.3f ms waited in all; "
		 "%" PRIu64 " read-modify-write writes; %" PRIu64 " partial-last-block requests",
		 (uint64_t)sum.lock_acquired, (uint64_t)sum.lock_waited,
		 (double)sum.lock_wait_ns / 1e6, (uint64_t)sum.rmw_writes,
		 (uint64_t)sum.buffered_ios);
}

static void on_usr1(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	log_stats();
}

static int write_pid_file(const char *path)
{
	char tmp[4096];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (!f || fprintf(f, "%ld\n", (long)getpid()) < 0 || fclose(f) != 0 ||
	    rename(tmp, path) < 0) {
		log_error("pid file \"%s\": %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "unix", required_argument, NULL, 'U' },
		{ "export", required_argument, NULL, 'e' },
		{ "bind", required_argument, NULL, 'b' },
		{ "port", required_argument, NULL, 'p' },
		{ "name", required_argument, NULL, 'n' },
		{ "description", required_argument, NULL, 'd' },
		{ "read-only", no_argument, NULL, 'r' },
		{ "threads", required_argument, NULL, 't' },
		{ "pool-size", required_argument, NULL, 'P' },
		{ "pid-file", required_argument, NULL, 'F' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *unix_path = NULL, *bind_addr = NULL, *port = NULL, *pid_file = NULL;
	struct export_spec spec = { .name = "", .description = "" };
	struct export_spec *specs = NULL;
	size_t nspecs = 0, j, k;
	ev_signal sigint_w, sigterm_w, sigusr1_w;
	long threads = 0;
	char *end;
	long long pool = DEFAULT_POOL_BYTES;
	int opt, status = 1, inherited;
	unsigned i, started = 0;

	while ((opt = getopt_long(argc, argv, "U:e:b:p:n:d:rt:vVh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'e': {
			struct export_spec *p = realloc(specs, (nspecs + 1) * sizeof(*specs));

			if (!p)
				return 1;
			specs = p;
			if (parse_export(optarg, &p[nspecs]) < 0) {
				free(p[nspecs].storage);
				return 1;
			}
			specs = p;
			nspecs++;
			break;
		}
		case 'U': unix_path = optarg; break;
		case 'b': bind_addr = optarg; break;
		case 'p': port = optarg; break;
		case 'n': spec.name = optarg; break;
		case 'd': spec.description = optarg; break;
		case 'r': spec.readonly = true; break;
		case 't':
			threads = strtol(optarg, &end, 10);
			if (*end || end == optarg || threads < 1 || threads > 256) {
				fprintf(stderr, "uringnbd: --threads \"%s\": expected 1 to 256\n", optarg);
				return 1;
			}
			break;
		case 'P':
			pool = parse_size(optarg);
			if (pool < (long long)EXPORT_MAX_REQUEST_BYTES) {
				fprintf(stderr, "uringnbd: --pool-size \"%s\": expected a size of at least 32M\n",
					optarg);
				return 1;
			}
			break;
		case 'F': pid_file = optarg; break;
		case 'v': log_max_level = LOG_DEBUG; break;
		case 'V': printf("uringnbd " URINGNBD_VERSION "\n"); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 1;
		}
	}
	if (optind < argc - 1 || (optind == argc && nspecs == 0)) {
		fprintf(stderr, "uringnbd: expected one FILE to export, or --export\n");
		usage(stderr);
		return 1;
	}
	/* The positional FILE is the first export, named by --name. */
	if (optind == argc - 1) {
		struct export_spec *p = realloc(specs, (nspecs + 1) * sizeof(*specs));

		if (!p)
			return 1;
		specs = p;
		memmove(specs + 1, specs, nspecs * sizeof(*specs));
		spec.path = argv[optind];
		specs[0] = spec;
		nspecs++;
	}
	for (j = 0; j < nspecs; j++) {
		if (strlen(specs[j].name) > PROTO_NAME_MAX ||
		    strlen(specs[j].description) > PROTO_NAME_MAX) {
			fprintf(stderr, "uringnbd: export \"%.64s\": name and description are limited "
				"to %d bytes\n", specs[j].name, PROTO_NAME_MAX);
			return 1;
		}
		for (k = 0; k < j; k++)
			if (strcmp(specs[j].name, specs[k].name) == 0) {
				fprintf(stderr, "uringnbd: export name \"%s\" given twice\n",
					specs[j].name);
				return 1;
			}
	}
	if (threads == 0) {
		threads = sysconf(_SC_NPROCESSORS_ONLN);
		if (threads < 1)
			threads = 1;
	}
	signal(SIGPIPE, SIG_IGN);

	srv.exports = calloc(nspecs, sizeof(*srv.exports));
	if (!srv.exports)
		return 1;
	for (j = 0; j < nspecs; j++) {
		if (export_open(&srv.exports[j], &specs[j], srv.exports, j) < 0)
			goto out_listeners;
		srv.nexports++;
	}
	srv.pool_bytes = (size_t)pool;
	srv.loop = ev_default_loop(EVFLAG_AUTO);

	inherited = listen_inherited(&srv);
	if (inherited < 0)
		goto out_listeners;
	if (unix_path && listen_unix(&srv, unix_path) < 0)
		goto out_listeners;
	if ((bind_addr || port || (!unix_path && !inherited)) &&
	    listen_tcp(&srv, bind_addr ? bind_addr : "localhost", port ? port : DEFAULT_PORT) < 0)
		goto out_listeners;

	srv.nworkers = (unsigned)threads;
	srv.workers = calloc(srv.nworkers, sizeof(*srv.workers));
	if (!srv.workers)
		goto out_listeners;
	for (started = 0; started < srv.nworkers; started++)
		if (worker_start(&srv.workers[started], &srv, (int)started) < 0)
			goto out_workers;

	listen_start(&srv);
	if (pid_file && write_pid_file(pid_file) < 0)
		goto out_workers;
	for (j = 0; j < srv.nexports; j++)
		log_info("export \"%s\": \"%s\", %" PRIu64 " bytes, direct-I/O alignment %u, %s",
			 srv.exports[j].name, srv.exports[j].path, srv.exports[j].size_bytes,
			 srv.exports[j].align_bytes,
			 srv.exports[j].readonly ? "read-only" : "read-write");
	log_info("%u worker%s", srv.nworkers, srv.nworkers == 1 ? "" : "s");

	ev_signal_init(&sigint_w, on_stop_signal, SIGINT);
	ev_signal_start(srv.loop, &sigint_w);
	ev_signal_init(&sigterm_w, on_stop_signal, SIGTERM);
	ev_signal_start(srv.loop, &sigterm_w);
	ev_signal_init(&sigusr1_w, on_usr1, SIGUSR1);
	ev_signal_start(srv.loop, &sigusr1_w);
	ev_run(srv.loop, 0);
	status = 0;

out_workers:
	/* Stop accepting first, then let every worker finish its connections. */
	srv.shutting_down = true;
	listen_close(&srv);
	for (i = 0; i < started; i++)
		worker_stop(&srv.workers[i]);
	for (i = 0; i < started; i++)
		worker_join(&srv.workers[i]);
	/* Every acknowledged write is on stable storage before exit. */
	for (j = 0; j < srv.nexports; j++)
		if (!srv.exports[j].readonly && fdatasync(srv.exports[j].fd) < 0)
			log_error("flush \"%s\": %s", srv.exports[j].path, strerror(errno));
	if (status == 0)
		log_stats();
	free(srv.workers);
	if (pid_file && status == 0)
		unlink(pid_file);
out_listeners:
	listen_close(&srv);
	for (i = 0; i < srv.nexports; i++)
		export_release(&srv.exports[i]);
	free(srv.exports);
	for (j = 0; j < nspecs; j++)
		free(specs[j].storage);
	free(specs);
	return status;
}
