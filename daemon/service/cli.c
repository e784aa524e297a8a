// SPDX-License-Identifier: BSD-3-Clause
/*
 * The command line: global options go through the configuration file's key
 * parser (config_set_global), so both accept and refuse the same values
 * with the same words; FILE and --export add exports.
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service.h"

/* Long options with no short form: values outside the character range. */
#define OPT_NO_DEFER_TASKRUN 0x100
#define OPT_THROTTLE_GROUP 0x101
#define OPT_UBLK 0x102

static void usage(FILE *f)
{
	fprintf(f,
		"usage: uringnbd [OPTIONS] [FILE]\n"
		"Export FILE (a regular file or block device) over NBD with O_DIRECT I/O;\n"
		"FILE may also be a Ceph RBD image, rbd:POOL/IMAGE or rbd:POOL/IMAGE@SNAP.\n\n"
		"  -c, --config PATH    read settings and exports from PATH (see uringnbd.conf(5))\n"
		"  -e, --export NAME=PATH[,readonly][,cache=MODE][,tls=require][,allow=LIST]\n"
		"                       [,deny=LIST][,tls-allow=LIST][,overlay=PATH][,bitmap=NAME]\n"
		"                       [,bitmap-file=PATH][,bitmap-granularity=SIZE][,ceph-conf=PATH]\n"
		"                       [,ceph-id=ID][,LIMIT=N][,conn-LIMIT=N][,throttle-group=G]\n"
		"                       [,ublk][,description=TEXT]\n"
		"                       one more export (repeatable); FILE is the export -n names;\n"
		"                       LIST items are separated by '+' here\n"
		"  -U, --unix PATH      listen on a unix socket (with only -U, no TCP)\n"
		"  -s, --single         serve one client on stdin/stdout (inetd, ssh), then exit\n"
		"  -b, --bind ADDR      TCP address to listen on (default localhost)\n"
		"  -p, --port PORT      TCP port (default " LISTEN_DEFAULT_PORT ")\n"
		"  -n, --name NAME      export name of FILE (default \"\")\n"
		"  -d, --description TEXT  description of FILE\n"
		"  -r, --read-only      FILE refuses writes\n"
		"      --cache MODE     FILE's reads: none (direct), always or auto (default none)\n"
		"      --cache-size SIZE  the page cache shared by cached exports (default 64M)\n"
		"      --overlay PATH   FILE is a read-only base; writes go to the overlay file PATH\n"
		"                       (made if missing; \"temporary\": unlinked, gone at exit)\n"
		"      --allow LIST     FILE's clients let in (addresses, CIDR, uid:, gid:, all)\n"
		"      --deny LIST      FILE's clients refused unless --allow lets them in\n"
		"      --tls-allow LIST FILE only over TLS, to these PSK users or certificate CNs\n"
		"      --tls MODE       off (default), on (STARTTLS offered) or require\n"
		"      --tls-certificates DIR  ca-cert.pem, server-cert.pem, server-key.pem\n"
		"      --tls-psk FILE   pre-shared keys in psktool's format\n"
		"      --tls-verify-peer  clients must present a certificate the CA signed\n"
		"      --list yes|no    answer NBD_OPT_LIST (default yes)\n"
		"      --ublk EXPORT    also serve EXPORT as a local block device, /dev/ublkbN\n"
		"                       (repeatable; needs ublk_drv, Linux 6.5 or later)\n"
		"  -t, --threads N      worker threads (default: online CPUs)\n"
		"      --pool-size SIZE buffer pool per worker, e.g. 64M (default 64M)\n"
		"      --throttle-group NAME:LIMIT=N[,LIMIT=N...]  rate limits shared by the exports\n"
		"                       naming it (throttle-group=NAME); LIMIT: iops-total,\n"
		"                       iops-read, iops-write, bps-total, bps-read, bps-write,\n"
		"                       each also as LIMIT-max and LIMIT-max-length (a burst),\n"
		"                       and iops-size (see uringnbd(8), RATE LIMITS)\n"
		"      --max-connections N  clients over N are refused (default 1024, 0: no limit)\n"
		"      --max-connections-per-client N  per address, or uid on a unix socket\n"
		"                       (default 0: no limit)\n"
		"      --handshake-timeout S  close negotiations longer than S seconds (default 10, 0: none)\n"
		"      --keepalive S    TCP keepalive after S idle seconds (default 60, 0: off)\n"
		"      --io-timeout S   close a connection whose reply or payload stalls S seconds,\n"
		"                       or whose request waits S seconds for its storage\n"
		"                       (default 60, 0: never)\n"
		"      --idle-timeout S close a connection idle for S seconds (default 0: never)\n"
		"      --poll-max US    longest poll for completions before a worker sleeps, on\n"
		"                       credit its work earns, at any depth (default: 300, only\n"
		"                       while a worker held 4 requests or more; 0: never poll)\n"
		"      --busy-poll US   poll a fixed US microseconds instead: lower latency at\n"
		"                       low queue depth for a busy core (default 0: --poll-max)\n"
		"      --no-defer-taskrun  run io_uring's task work as it comes, not in batches\n"
		"                       when a worker collects it (default: deferred, where\n"
		"                       the kernel can)\n"
		"      --keep-connections  SIGTERM under systemd hands the connections to its\n"
		"                       fd store (FileDescriptorStoreMax=): a restart keeps them\n"
		"      --pid-file PATH  write the pid here once listening\n"
		"      --control PATH   a control socket for uringnbdctl(8) (root and this uid)\n"
		"      --metrics ADDR:PORT|unix:PATH  serve Prometheus metrics on /metrics\n"
		"  -l, --log-level L    error, warning, info (default) or debug\n"
		"  -v, --verbose        the same as --log-level debug\n"
		"  -V, --version        print the version and exit\n"
		"  -h, --help           print this help and exit\n");
}

/* The access lists of an export given on the command line, checked now. */
static int cli_check_access(const char *what, const struct export_spec *spec)
{
	struct access_spec as = export_spec_access(spec);
	struct access a;
	char err[256];

	if (access_parse(&a, &as, err, sizeof(err)) < 0) {
		fprintf(stderr, "uringnbd: %s: %s\n", what, err);
		return -1;
	}
	access_free(&a);
	return 0;
}

/* KEY=... is a rate limit's key, a connection's (conn-KEY), or throttle-group. */
static bool is_limit_key(const char *kv)
{
	char k[64];
	size_t n = strcspn(kv, "=");

	if (n >= sizeof(k))
		return false;
	memcpy(k, kv, n);
	k[n] = '\0';
	return !strcmp(k, "throttle-group") ||
	       throttle_key_find(!strncmp(k, "conn-", 5) ? k + 5 : k) >= 0;
}

/*
 * --export NAME=PATH[,readonly][,description=TEXT]: fills *spec from a
 * copy of arg. description= takes the rest of the argument, commas included.
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
		} else if (strcmp(key, "ublk") == 0) {
			spec->ublk = true;
		} else if (strncmp(key, "cache=", 6) == 0 && cache_mode_parse(key + 6) >= 0) {
			spec->cache_mode = cache_mode_parse(key + 6);
		} else if (strcmp(key, "tls=require") == 0 || strcmp(key, "tls=on") == 0) {
			spec->tls_required = key[4] == 'r';
		} else if (strncmp(key, "allow=", 6) == 0) {
			spec->allow = key + 6;
		} else if (strncmp(key, "deny=", 5) == 0) {
			spec->deny = key + 5;
		} else if (strncmp(key, "tls-allow=", 10) == 0) {
			spec->tls_allow = key + 10;
		} else if (strncmp(key, "overlay=", 8) == 0 && key[8]) {
			spec->overlay = key + 8;
		} else if (strncmp(key, "bitmap=", 7) == 0 || strncmp(key, "bitmap-file=", 12) == 0 ||
			   strncmp(key, "bitmap-granularity=", 19) == 0 ||
			   strncmp(key, "ceph-conf=", 10) == 0 || strncmp(key, "ceph-id=", 8) == 0) {
			char *eqk = strchr(key, '='), err[512];

			*eqk = '\0';
			if (config_set_export(spec, !strcmp(key, "bitmap") ? "bitmaps" : key, eqk + 1,
					      err, sizeof(err)) < 0) {
				fprintf(stderr, "uringnbd: --export \"%s\": %s\n", arg, err);
				return -1;
			}
		} else if (strchr(key, '=') && is_limit_key(key)) {
			char *eqk = strchr(key, '='), err[512];

			*eqk = '\0';
			if (config_set_export(spec, key, eqk + 1, err, sizeof(err)) < 0) {
				fprintf(stderr, "uringnbd: --export \"%s\": %s\n", arg, err);
				return -1;
			}
		} else {
			fprintf(stderr, "uringnbd: --export \"%s\": unknown key \"%s\"\n", arg, key);
			return -1;
		}
	}
	return cli_check_access(arg, spec);
}

/* --throttle-group NAME:KEY=VALUE[,KEY=VALUE...]: a group as its config section says. */
static int parse_group(struct config *cli, const char *arg)
{
	char *s = strdup(arg), *colon, *kv, *next;
	struct config_group *g;
	int r = -1;

	if (!s)
		return -1;
	colon = strchr(s, ':');
	if (colon)
		*colon = '\0';
	if (!colon || !config_group_name_ok(s)) {
		fprintf(stderr, "uringnbd: --throttle-group \"%s\": expected NAME:KEY=VALUE[,...] "
			"(NAME of letters, digits, '-', '_', '.')\n", arg);
		goto out;
	}
	if (config_add_group(cli, s, &g) < 0) {
		fprintf(stderr, "uringnbd: --throttle-group \"%s\": given twice, or out of memory\n",
			s);
		goto out;
	}
	for (kv = colon + 1; kv && *kv; kv = next) {
		char *eq, err[300];

		next = strchr(kv, ',');
		if (next)
			*next++ = '\0';
		eq = strchr(kv, '=');
		if (!eq) {
			fprintf(stderr, "uringnbd: --throttle-group \"%s\": expected KEY=VALUE, not "
				"\"%s\"\n", arg, kv);
			goto out;
		}
		*eq = '\0';
		if (config_set_limit(&g->limits, kv, eq + 1, err, sizeof(err)) < 0) {
			fprintf(stderr, "uringnbd: --throttle-group \"%s\": %s\n", arg, err);
			goto out;
		}
	}
	r = 0;
out:
	free(s);
	return r;
}

/* A global option, checked as the config file's key of that name is. */
static int cli_global(struct config *cli, const char *key, const char *value)
{
	const char *why = NULL;

	if (config_set_global(cli, key, value, &why) == 0)
		return 0;
	fprintf(stderr, "uringnbd: --%s \"%s\": %s\n", key, value, why ? why : "out of memory");
	return -1;
}

int cli_parse(int argc, char **argv, struct config *cli, const char **config_path)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "export", required_argument, NULL, 'e' },
		{ "unix", required_argument, NULL, 'U' },
		{ "bind", required_argument, NULL, 'b' },
		{ "port", required_argument, NULL, 'p' },
		{ "name", required_argument, NULL, 'n' },
		{ "description", required_argument, NULL, 'd' },
		{ "read-only", no_argument, NULL, 'r' },
		{ "threads", required_argument, NULL, 't' },
		{ "pool-size", required_argument, NULL, 'P' },
		{ "max-connections", required_argument, NULL, 'M' },
		{ "handshake-timeout", required_argument, NULL, 'H' },
		{ "keepalive", required_argument, NULL, 'K' },
		{ "io-timeout", required_argument, NULL, 'I' },
		{ "max-connections-per-client", required_argument, NULL, 'Q' },
		{ "single", no_argument, NULL, 's' },
		{ "idle-timeout", required_argument, NULL, 'D' },
		{ "busy-poll", required_argument, NULL, 'B' },
		{ "poll-max", required_argument, NULL, 'N' },
		{ "cache", required_argument, NULL, 'C' },
		{ "cache-size", required_argument, NULL, 'S' },
		{ "pid-file", required_argument, NULL, 'F' },
		{ "control", required_argument, NULL, 'Z' },
		{ "metrics", required_argument, NULL, 'm' },
		{ "keep-connections", no_argument, NULL, 'G' },
		{ "no-defer-taskrun", no_argument, NULL, OPT_NO_DEFER_TASKRUN },
		{ "throttle-group", required_argument, NULL, OPT_THROTTLE_GROUP },
		{ "ublk", required_argument, NULL, OPT_UBLK },
		{ "allow", required_argument, NULL, 'A' },
		{ "overlay", required_argument, NULL, 'O' },
		{ "deny", required_argument, NULL, 'X' },
		{ "tls-allow", required_argument, NULL, 'W' },
		{ "tls", required_argument, NULL, 'T' },
		{ "tls-certificates", required_argument, NULL, 'R' },
		{ "tls-psk", required_argument, NULL, 'k' },
		{ "tls-verify-peer", no_argument, NULL, 'y' },
		{ "list", required_argument, NULL, 'L' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct export_spec file_spec = { .name = "", .description = "" }, spec;
	int opt;

	config_init(cli);
	while ((opt = getopt_long(argc, argv, "c:e:U:b:p:n:d:rst:l:vVh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c': *config_path = optarg; break;
		case 'e':
			if (parse_export(optarg, &spec) < 0 || config_add_export(cli, &spec) < 0) {
				free(spec.storage);
				return -1;
			}
			break;
		case 'U': if (cli_global(cli, "unix", optarg) < 0) return -1; break;
		case 'b': if (cli_global(cli, "bind", optarg) < 0) return -1; break;
		case 'p': if (cli_global(cli, "port", optarg) < 0) return -1; break;
		case 'n': file_spec.name = optarg; break;
		case 'd': file_spec.description = optarg; break;
		case 'r': file_spec.readonly = true; break;
		case 't': if (cli_global(cli, "threads", optarg) < 0) return -1; break;
		case 'P': if (cli_global(cli, "pool-size", optarg) < 0) return -1; break;
		case 'M': if (cli_global(cli, "max-connections", optarg) < 0) return -1; break;
		case 'H': if (cli_global(cli, "handshake-timeout", optarg) < 0) return -1; break;
		case 'K': if (cli_global(cli, "keepalive", optarg) < 0) return -1; break;
		case 'I': if (cli_global(cli, "io-timeout", optarg) < 0) return -1; break;
		case 'Q':
			if (cli_global(cli, "max-connections-per-client", optarg) < 0)
				return -1;
			break;
		case 's': cli->single = true; break;
		case 'D': if (cli_global(cli, "idle-timeout", optarg) < 0) return -1; break;
		case 'B': if (cli_global(cli, "busy-poll", optarg) < 0) return -1; break;
		case 'N': if (cli_global(cli, "poll-max", optarg) < 0) return -1; break;
		case 'G': cli->keep_conns = 1; break;
		case OPT_NO_DEFER_TASKRUN: cli->defer_taskrun = 0; break;
		case OPT_THROTTLE_GROUP: if (parse_group(cli, optarg) < 0) return -1; break;
		case OPT_UBLK: {
			char **grown = realloc(cli->ublk, (cli->nublk + 1) * sizeof(*grown));

			if (!grown || !(grown[cli->nublk] = strdup(optarg))) {
				if (grown)
					cli->ublk = grown;
				fprintf(stderr, "uringnbd: out of memory\n");
				return -1;
			}
			cli->ublk = grown;
			cli->nublk++;
			break;
		}
		case 'S': if (cli_global(cli, "cache-size", optarg) < 0) return -1; break;
		case 'F': if (cli_global(cli, "pid-file", optarg) < 0) return -1; break;
		case 'Z': if (cli_global(cli, "control", optarg) < 0) return -1; break;
		case 'm': if (cli_global(cli, "metrics", optarg) < 0) return -1; break;
		case 'A': file_spec.allow = optarg; break;
		case 'O': file_spec.overlay = optarg; break;
		case 'X': file_spec.deny = optarg; break;
		case 'W': file_spec.tls_allow = optarg; break;
		case 'T': if (cli_global(cli, "tls", optarg) < 0) return -1; break;
		case 'R': if (cli_global(cli, "tls-certificates", optarg) < 0) return -1; break;
		case 'k': if (cli_global(cli, "tls-psk", optarg) < 0) return -1; break;
		case 'y': if (cli_global(cli, "tls-verify-peer", "yes") < 0) return -1; break;
		case 'L': if (cli_global(cli, "list", optarg) < 0) return -1; break;
		case 'l': if (cli_global(cli, "log-level", optarg) < 0) return -1; break;
		case 'C':
			file_spec.cache_mode = cache_mode_parse(optarg);
			if (file_spec.cache_mode < 0) {
				fprintf(stderr, "uringnbd: --cache \"%s\": expected none, always or auto\n",
					optarg);
				return -1;
			}
			break;
		case 'v': cli->log_level = LOG_DEBUG; break;
		case 'V': printf("uringnbd " URINGNBD_VERSION "\n"); return 1;
		case 'h': usage(stdout); return 1;
		default: usage(stderr); return -1;
		}
	}
	if (optind < argc - 1 || (optind == argc && cli->nexports == 0 && !*config_path)) {
		fprintf(stderr, "uringnbd: expected one FILE to export, --export or --config\n");
		usage(stderr);
		return -1;
	}
	/* The positional FILE is an export too, named by --name. */
	if (optind == argc - 1) {
		file_spec.path = argv[optind];
		if (cli_check_access(file_spec.path, &file_spec) < 0)
			return -1;
		if (config_add_export(cli, &file_spec) < 0)
			return -1;
	} else if (file_spec.allow || file_spec.deny || file_spec.tls_allow || file_spec.overlay) {
		/* They describe FILE; silently serving without them would be worse. */
		fprintf(stderr, "uringnbd: --allow, --deny, --tls-allow and --overlay apply to FILE, "
				"and there is none (use allow=, deny=, tls-allow=, overlay= in --export)\n");
		return -1;
	}
	return 0;
}

