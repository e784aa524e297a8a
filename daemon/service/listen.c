// SPDX-License-Identifier: BSD-3-Clause
/*
 * Listeners: TCP, unix sockets, vsock (guests of this host, or the host
 * of this guest), and sockets passed by systemd (LISTEN_FDS).
 * They live on the main thread's loop; each accepted socket goes to a worker.
 *
 * A client over max-connections is accepted and closed at once, so it
 * reports a closed connection instead of hanging in the backlog. Out of
 * descriptors, the listeners stop for a backoff (0.1 s doubling to 2 s)
 * rather than spin on EMFILE; repeated warnings are rate-limited. TCP
 * connections get keepalive and TCP_USER_TIMEOUT, so a peer that vanished
 * is found (keepalive seconds idle, then 6 probes 10 s apart). With
 * max-connections-per-client, a client (an address on TCP, a uid on a unix
 * socket) over its limit is refused the same way.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#include "service.h"

#define LISTEN_BACKLOG 128
#define LISTEN_ACCEPT_BATCH 64          /* accepts per wakeup, so signals are not starved */
#define LISTEN_BACKOFF_MIN_S 0.1
#define LISTEN_BACKOFF_MAX_S 2.0
#define LISTEN_KEEPALIVE_INTERVAL_S 10  /* between keepalive probes */
#define LISTEN_KEEPALIVE_PROBES 6       /* unanswered probes that end a connection */
#define SD_LISTEN_FDS_START 3

static struct log_limit accept_limit, full_limit, client_limit;

/* Who the peer is: its address and port on TCP, its credentials on a unix socket. */
void listen_identify(int fd, struct client *cl)
{
	struct sockaddr_storage sa;
	socklen_t salen = sizeof(sa);
	struct client_key *key = &cl->key;

	memset(key, 0, sizeof(*key));
	memset(&cl->peer, 0, sizeof(cl->peer));
	if (getpeername(fd, (struct sockaddr *)&sa, &salen) < 0)
		return;
	if (sa.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)&sa;

		key->family = AF_INET;
		memcpy(key->addr, &in->sin_addr, 4);
		cl->peer.port = ntohs(in->sin_port);
	} else if (sa.ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)&sa;

		key->family = AF_INET6;
		memcpy(key->addr, &in6->sin6_addr, 16);
		cl->peer.port = ntohs(in6->sin6_port);
	} else if (sa.ss_family == AF_VSOCK) {
		const struct sockaddr_vm *vm = (const struct sockaddr_vm *)(const void *)&sa;

		key->family = AF_VSOCK;
		key->cid = vm->svm_cid;
		cl->peer.port = (uint16_t)vm->svm_port; /* for log lines; vsock ports are 32 bits */
	} else if (sa.ss_family == AF_UNIX) {
		struct ucred cred;
		socklen_t len = sizeof(cred);

		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
			key->family = AF_UNIX;
			key->uid = cred.uid;
			cl->peer.cred = true;
			cl->peer.gid = cred.gid;
			cl->peer.pid = cred.pid;
		}
	}
}

static void listen_watch(struct server *srv, bool on)
{
	size_t i;

	for (i = 0; i < srv->nlisteners; i++) {
		if (on)
			ev_io_start(srv->loop, &srv->listeners[i].watcher);
		else
			ev_io_stop(srv->loop, &srv->listeners[i].watcher);
	}
}

static void listen_backoff_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct server *srv = t->data;

	(void)loop;
	(void)revents;
	if (!server_shutting_down(srv))
		listen_watch(srv, true);
}

/*
 * Out of descriptors (or memory): stop accepting for a while instead of
 * spinning on the same error; the wait doubles while it lasts.
 */
static void listen_backoff(struct server *srv, const struct listener *l, int err)
{
	srv->backoff_s = srv->backoff_s ? srv->backoff_s * 2 : LISTEN_BACKOFF_MIN_S;
	if (srv->backoff_s > LISTEN_BACKOFF_MAX_S)
		srv->backoff_s = LISTEN_BACKOFF_MAX_S;
	log_msg_limited(&accept_limit, LOG_WARN, "accept on %s: %s: not accepting for %.1f s",
			l->desc, strerror(err), srv->backoff_s);
	listen_watch(srv, false);
	ev_timer_set(&srv->accept_backoff, srv->backoff_s, 0.);
	/* From now, not from the loop's last wake-up (a reload may have run since). */
	ev_now_update(srv->loop);
	ev_timer_start(srv->loop, &srv->accept_backoff);
}

/* TCP only (fails harmlessly on unix sockets): a vanished peer is found. */
static void listen_tune(const struct server *srv, int fd)
{
	int one = 1, idle = (int)srv->keepalive_s, intvl = LISTEN_KEEPALIVE_INTERVAL_S;
	int cnt = LISTEN_KEEPALIVE_PROBES;
	unsigned user_timeout_ms = (srv->keepalive_s + LISTEN_KEEPALIVE_INTERVAL_S *
				    LISTEN_KEEPALIVE_PROBES) * 1000u;

	/* Replies are whole messages: send them at once. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (!srv->keepalive_s)
		return;
	(void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	/* Unacknowledged data for as long also ends the connection. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms,
			 sizeof(user_timeout_ms));
}

static void listener_accept_cb(struct ev_loop *loop, ev_io *watcher, int revents)
{
	struct listener *l = watcher->data;
	struct server *srv = l->srv;
	struct sockaddr_storage sa;
	struct client cl;
	socklen_t salen;
	char who[64];
	int fd, n;

	(void)loop;
	(void)revents;
	for (n = 0; n < LISTEN_ACCEPT_BATCH; n++) {
		salen = sizeof(sa);
		fd = accept4(l->fd, (struct sockaddr *)&sa, &salen, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
				listen_backoff(srv, l, errno);
			else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				log_msg_limited(&accept_limit, LOG_WARN, "accept on %s: %s", l->desc,
						strerror(errno));
			return;
		}
		srv->backoff_s = 0;
		if (server_at_capacity(srv)) {
			/* A clear end now beats a silent wait in the backlog. */
			log_msg_limited(&full_limit, LOG_WARN,
					"%u connection%s, the limit: refused a client on %s",
					srv->max_conns, srv->max_conns == 1 ? "" : "s", l->desc);
			stat_add(&srv->over_limit, 1);
			close(fd);
			continue;
		}
		listen_tune(srv, fd);
		cl = (struct client){ .fd = fd, .fd_out = fd };
		listen_identify(fd, &cl);
		if (server_accept(srv, &cl) == -EUSERS && (stat_add(&srv->over_limit, 1), true))
			log_msg_limited(&client_limit, LOG_WARN,
					"%s has %u connections, the per-client limit: refused it on %s",
					client_name(&cl.key, who, sizeof(who)),
					srv->max_conns_per_client, l->desc);
	}
}

/*
 * Adds a listener for fd (still the caller's to close on error).
 * -fanalyzer does not follow the strings into srv->listeners, which
 * listen_close() frees.
 */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpragmas"
#pragma GCC diagnostic ignored "-Wanalyzer-malloc-leak"
static int listener_add(struct server *srv, int fd, const char *desc, const char *unix_path)
{
	struct listener *ls, *l;
	char *d, *u = NULL;

	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
		return -errno;
	d = strdup(desc);
	if (unix_path)
		u = strdup(unix_path);
	ls = d && (u || !unix_path) ? realloc(srv->listeners, (srv->nlisteners + 1) * sizeof(*ls))
				    : NULL;
	if (!ls) {
		free(d);
		free(u);
		return -ENOMEM;
	}
	srv->listeners = ls;
	/* Watchers hold pointers into the array: only add before the loop runs. */
	l = &ls[srv->nlisteners++];
	memset(l, 0, sizeof(*l));
	l->fd = fd;
	l->srv = srv;
	l->desc = d;
	l->unix_path = u;
	return 0;
}
#pragma GCC diagnostic pop

int listen_adopt(struct server *srv, int fd, const char *desc, const char *unix_path)
{
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	return listener_add(srv, fd, desc, unix_path);
}

void listen_pause(struct server *srv, bool paused)
{
	if (paused && ev_is_active(&srv->accept_backoff))
		ev_timer_stop(srv->loop, &srv->accept_backoff);
	listen_watch(srv, !paused);
}

bool listen_is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)(const void *)sa)->sin_addr.s_addr) >> 24) ==
		       127;
	return sa->sa_family == AF_INET6 &&
	       IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr);
}

int listen_tcp(struct server *srv, const char *addr, const char *port)
{
	struct addrinfo hints, *res, *ai;
	char host[NI_MAXHOST], serv[NI_MAXSERV], desc[NI_MAXHOST + NI_MAXSERV + 4];
	int ret, fd, one = 1, n = 0;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	ret = getaddrinfo(addr, port, &hints, &res);
	if (ret) {
		log_error("address \"%s\" port \"%s\": %s", addr, port, gai_strerror(ret));
		return -EINVAL;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (ai->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof(host), serv, sizeof(serv),
			    NI_NUMERICHOST | NI_NUMERICSERV);
		snprintf(desc, sizeof(desc), ai->ai_family == AF_INET6 ? "[%s]:%s" : "%s:%s",
			 host, serv);
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
			log_error("listen on %s: %s", desc, strerror(errno));
			close(fd);
			freeaddrinfo(res);
			return -EADDRINUSE;
		}
		ret = listener_add(srv, fd, desc, NULL);
		if (ret < 0) {
			close(fd);
			freeaddrinfo(res);
			return ret;
		}
		if (srv->tls_mode != PROTO_TLS_REQUIRE && !listen_is_loopback(ai->ai_addr))
			log_warn("listening on %s without tls = require: anyone on the network who "
				 "reaches it can use every export that access rules do not refuse, "
				 "in plaintext", desc);
		n++;
	}
	freeaddrinfo(res);
	if (!n) {
		log_error("address \"%s\" port \"%s\": no usable address", addr, port);
		return -EINVAL;
	}
	return 0;
}

int listen_vsock(struct server *srv, const char *port)
{
	struct sockaddr_vm vm = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY };
	char desc[32], *end;
	unsigned long p;
	int fd, ret;

	errno = 0;
	p = strtoul(port, &end, 10);
	if (errno || *end || !*port || p > UINT32_MAX - 1 || !isdigit((unsigned char)*port)) {
		log_error("vsock port \"%s\": expected a number", port);
		return -EINVAL;
	}
	vm.svm_port = (unsigned)p;
	snprintf(desc, sizeof(desc), "vsock:%lu", p);
	fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		log_error("listen on %s: %s%s", desc, strerror(errno),
			  errno == EAFNOSUPPORT ? " (this kernel has no vsock: modprobe vsock)" : "");
		return -errno;
	}
	if (bind(fd, (struct sockaddr *)&vm, sizeof(vm)) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
		ret = -errno;
		/* No transport: no vhost_vsock (a host), virtio-vsock (a guest) or vsock_loopback. */
		log_error("listen on %s: %s%s", desc, strerror(-ret),
			  ret == -EADDRNOTAVAIL || ret == -ENODEV ?
			  " (no vsock transport: vhost_vsock on a host, virtio-vsock in a guest, "
			  "or vsock_loopback)" : "");
		close(fd);
		return ret;
	}
	ret = listener_add(srv, fd, desc, NULL);
	if (ret < 0) {
		close(fd);
		return ret;
	}
	return 0;
}

/* A unix socket that nobody answers on is stale and may be replaced. */
static bool unix_socket_live(const struct sockaddr_un *sun)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool live;

	if (fd < 0)
		return false;
	live = connect(fd, (const struct sockaddr *)sun, sizeof(*sun)) == 0;
	close(fd);
	return live;
}

int listen_unix_socket(const char *path, mode_t mode)
{
	struct sockaddr_un sun;
	struct stat st;
	mode_t umask_was;
	int fd, ret;
	bool tmp;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		log_error("unix socket \"%s\": path too long", path);
		return -ENAMETOOLONG;
	}
	strcpy(sun.sun_path, path);
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			log_error("unix socket \"%s\": exists and is not a socket", path);
			return -EEXIST;
		}
		if (unix_socket_live(&sun)) {
			log_error("unix socket \"%s\": in use by a running server", path);
			return -EADDRINUSE;
		}
		unlink(path);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		ret = -errno;
		log_error("unix socket \"%s\": %s", path, strerror(errno));
		return ret;
	}
	/*
	 * Bound under a temporary name and renamed once listening, so that the
	 * path, once it exists, accepts connections (a client that waits for
	 * the file was refused in between).
	 */
	tmp = snprintf(sun.sun_path, sizeof(sun.sun_path), "%s.%ld~", path, (long)getpid()) <
	      (int)sizeof(sun.sun_path);
	if (!tmp)
		strcpy(sun.sun_path, path);
	/* The socket is made with the mode the umask leaves: never wider than asked. */
	umask_was = umask(0777);
	umask(umask_was | ((mode_t)~mode & 0777));
	ret = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	umask(umask_was);
	if (ret < 0 || listen(fd, LISTEN_BACKLOG) < 0 || (tmp && rename(sun.sun_path, path) < 0)) {
		ret = -errno;
		log_error("listen on unix socket \"%s\": %s", path, strerror(errno));
		if (tmp)
			unlink(sun.sun_path);
		close(fd);
		return ret;
	}
	return fd;
}

int listen_unix(struct server *srv, const char *path)
{
	char desc[4200];
	int fd, ret;

	fd = listen_unix_socket(path, 0777);
	if (fd < 0)
		return fd;
	snprintf(desc, sizeof(desc), "unix:%s", path);
	ret = listener_add(srv, fd, desc, path);
	if (ret < 0)
		close(fd);
	return ret;
}

/* Sockets passed by systemd socket activation (sd_listen_fds protocol). */
int listen_inherited(struct server *srv)
{
	const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
	char *names = getenv("LISTEN_FDNAMES") ? strdup(getenv("LISTEN_FDNAMES")) : NULL;
	char *name = names, *next;
	char desc[300];
	long n, i;
	int ret = 0, listeners = 0;

	if (!pid || !fds || strtol(pid, NULL, 10) != (long)getpid()) {
		free(names);
		return 0;
	}
	n = strtol(fds, NULL, 10);
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	for (i = 0; i < n && ret >= 0; i++) {
		int fd = SD_LISTEN_FDS_START + (int)i;

		/* LISTEN_FDNAMES: one name per fd, colon-separated (the unit's FileDescriptorName=). */
		next = name ? strchr(name, ':') : NULL;
		if (next)
			*next++ = '\0';
		/* The fd store's: a previous process's connections and their state. */
		if (handover_stored(fd, name)) {
			name = next;
			continue;
		}
		fcntl(fd, F_SETFD, FD_CLOEXEC);
		snprintf(desc, sizeof(desc), "socket-activated fd %d (%.200s)", fd,
			 name && *name ? name : "unnamed");
		name = next;
		ret = listener_add(srv, fd, desc, NULL);
		listeners++;
	}
	free(names);
	return ret < 0 ? ret : listeners;
}

void listen_start(struct server *srv)
{
	size_t i;

	for (i = 0; i < srv->nlisteners; i++) {
		struct listener *l = &srv->listeners[i];

		ev_io_init(&l->watcher, listener_accept_cb, l->fd, EV_READ);
		l->watcher.data = l;
		ev_io_start(srv->loop, &l->watcher);
		log_info("listening on %s", l->desc);
	}
	ev_timer_init(&srv->accept_backoff, listen_backoff_cb, LISTEN_BACKOFF_MIN_S, 0.);
	srv->accept_backoff.data = srv;
}

void listen_close(struct server *srv)
{
	size_t i;

	for (i = 0; i < srv->nlisteners; i++) {
		struct listener *l = &srv->listeners[i];

		if (srv->loop && ev_is_active(&l->watcher))
			ev_io_stop(srv->loop, &l->watcher);
		if (srv->loop && ev_is_active(&srv->accept_backoff))
			ev_timer_stop(srv->loop, &srv->accept_backoff);
		close(l->fd);
		if (l->unix_path)
			unlink(l->unix_path);
		free(l->unix_path);
		free(l->desc);
	}
	free(srv->listeners);
	srv->listeners = NULL;
	srv->nlisteners = 0;
}
