// SPDX-License-Identifier: BSD-3-Clause
/*
 * Listeners: TCP, unix sockets, and sockets passed by systemd (LISTEN_FDS).
 * They live on the main thread's loop; each accepted socket goes to a worker.
 */
#define _GNU_SOURCE
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

#include "daemon.h"

#define LISTEN_BACKLOG 128
#define SD_LISTEN_FDS_START 3

static void listener_accept_cb(struct ev_loop *loop, ev_io *watcher, int revents)
{
	struct listener *l = watcher->data;
	int fd, one = 1;

	(void)loop;
	(void)revents;
	for (;;) {
		if (server_at_capacity(l->srv)) {
			listen_pause(l->srv);
			return;
		}
		fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				log_warn("accept on %s: %s", l->desc, strerror(errno));
			return;
		}
		/* Replies are whole messages: send them at once. Fails harmlessly on unix. */
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		server_accept(l->srv, fd);
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
		n++;
	}
	freeaddrinfo(res);
	if (!n) {
		log_error("address \"%s\" port \"%s\": no usable address", addr, port);
		return -EINVAL;
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

int listen_unix(struct server *srv, const char *path)
{
	struct sockaddr_un sun;
	struct stat st;
	char desc[sizeof(sun.sun_path) + 8];
	int fd, ret;

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
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
	    listen(fd, LISTEN_BACKLOG) < 0) {
		ret = -errno;
		log_error("listen on unix socket \"%s\": %s", path, strerror(errno));
		close(fd);
		return ret;
	}
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
	int ret = 0;

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
		fcntl(fd, F_SETFD, FD_CLOEXEC);
		snprintf(desc, sizeof(desc), "socket-activated fd %d (%.200s)", fd,
			 name && *name ? name : "unnamed");
		name = next;
		ret = listener_add(srv, fd, desc, NULL);
	}
	free(names);
	return ret < 0 ? ret : (int)n;
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
}

void listen_pause(struct server *srv)
{
	size_t i;

	if (atomic_load(&srv->accept_paused))
		return;
	for (i = 0; i < srv->nlisteners; i++)
		ev_io_stop(srv->loop, &srv->listeners[i].watcher);
	atomic_store(&srv->accept_paused, true);
	log_warn("%u connection%s, the limit: new clients wait until one ends", srv->max_conns,
		 srv->max_conns == 1 ? "" : "s");
	/* A connection that ended before the flag was set sent no wakeup. */
	if (!server_at_capacity(srv))
		listen_resume(srv);
}

void listen_resume(struct server *srv)
{
	size_t i;

	if (!atomic_load(&srv->accept_paused) || server_shutting_down(srv) ||
	    server_at_capacity(srv))
		return;
	atomic_store(&srv->accept_paused, false);
	for (i = 0; i < srv->nlisteners; i++)
		ev_io_start(srv->loop, &srv->listeners[i].watcher);
	log_info("accepting again");
}

void listen_close(struct server *srv)
{
	size_t i;

	for (i = 0; i < srv->nlisteners; i++) {
		struct listener *l = &srv->listeners[i];

		if (srv->loop && ev_is_active(&l->watcher))
			ev_io_stop(srv->loop, &l->watcher);
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
