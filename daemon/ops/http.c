// SPDX-License-Identifier: BSD-3-Clause
/*
 * The metrics endpoint (--metrics ADDR:PORT | unix:PATH): GET /metrics in
 * the Prometheus text format, served by libmicrohttpd on a thread of its
 * own. That thread only takes a metrics snapshot (metrics.c), so a scrape
 * never touches a worker or the main loop; NBD clients do not notice it.
 *
 * Bounded: at most HTTP_MAX_CONNS connections (more are closed by
 * libmicrohttpd at once), HTTP_TIMEOUT_S of silence closes one, request
 * headers are limited by libmicrohttpd's per-connection memory, and a body
 * (which no request here needs) is read and dropped. Anything but GET or
 * HEAD gets 405, any path but /metrics 404, malformed HTTP 400.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "metrics.h"
#include "ops.h"

#define HTTP_MAX_CONNS 16
#define HTTP_TIMEOUT_S 10
#define HTTP_BACKLOG 16

static struct MHD_Daemon *mhd;
static struct server *http_srv;
static char *http_unix_path;

static void http_log(void *cls, const char *fmt, va_list ap)
{
	char line[512];

	(void)cls;
	vsnprintf(line, sizeof(line), fmt, ap);
	line[strcspn(line, "\n")] = '\0';
	log_debug("metrics: %s", line);
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *text)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), (void *)text,
								 MHD_RESPMEM_PERSISTENT);
	enum MHD_Result ret;

	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, "Content-Type", "text/plain; charset=utf-8");
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(r, "Allow", "GET, HEAD");
	ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version,
				  const char *upload_data, size_t *upload_data_size, void **state)
{
	static int started;
	struct MHD_Response *r;
	enum MHD_Result ret;
	struct metrics m;
	char *text;
	size_t len;

	(void)cls;
	(void)version;
	(void)upload_data;
	if (!*state) {
		/* First call: headers only. The body, if any, comes next. */
		*state = &started;
		return MHD_YES;
	}
	if (*upload_data_size) {
		*upload_data_size = 0; /* dropped */
		return MHD_YES;
	}
	if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
		return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD\n");
	if (strcmp(url, "/metrics"))
		return reply(conn, MHD_HTTP_NOT_FOUND, "uringnbd serves /metrics only\n");
	if (metrics_collect(http_srv, &m) < 0 || !(text = metrics_prometheus(&m, &len))) {
		metrics_release(&m);
		return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
	}
	metrics_release(&m);
	r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(text);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
	ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
	MHD_destroy_response(r);
	return ret;
}

/* A listening TCP socket on host:port (the first address that binds). */
static int http_listen_tcp(const char *spec)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *res, *ai;
	char host[256];
	const char *colon = strrchr(spec, ':');
	int fd = -1, one = 1, err;
	size_t hlen;

	if (!colon || colon == spec || !colon[1]) {
		log_error("metrics \"%s\": expected ADDRESS:PORT or unix:PATH", spec);
		return -EINVAL;
	}
	hlen = (size_t)(colon - spec);
	if (spec[0] == '[' && hlen >= 2 && spec[hlen - 1] == ']') {
		spec++;
		hlen -= 2;
	}
	if (hlen >= sizeof(host)) {
		log_error("metrics \"%s\": address too long", spec);
		return -EINVAL;
	}
	memcpy(host, spec, hlen);
	host[hlen] = '\0';
	err = getaddrinfo(host, colon + 1, &hints, &res);
	if (err) {
		log_error("metrics \"%s\": %s", spec, gai_strerror(err));
		return -EINVAL;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, HTTP_BACKLOG) == 0) {
			if (!listen_is_loopback(ai->ai_addr))
				log_warn("metrics on %s: not a loopback address, anyone who reaches "
					 "it can read the figures (export names included)", spec);
			break;
		}
		err = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		log_error("metrics: listen on %s: %s", spec, strerror(err ? err : EADDRNOTAVAIL));
	return fd < 0 ? -EADDRNOTAVAIL : fd;
}

int http_start(struct server *srv, const char *spec)
{
	int fd;

	http_srv = srv;
	if (!strncmp(spec, "unix:", 5)) {
		fd = listen_unix_socket(spec + 5, 0660);
		if (fd >= 0)
			http_unix_path = strdup(spec + 5);
	} else {
		fd = http_listen_tcp(spec);
	}
	if (fd < 0)
		return fd;
	mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG,
			       0, NULL, NULL, on_request, NULL,
			       MHD_OPTION_LISTEN_SOCKET, fd,
			       MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_MAX_CONNS,
			       MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_TIMEOUT_S,
			       MHD_OPTION_EXTERNAL_LOGGER, http_log, NULL,
			       MHD_OPTION_END);
	if (!mhd) {
		log_error("metrics \"%s\": the HTTP server did not start", spec);
		close(fd);
		return -EINVAL;
	}
	log_info("metrics on http://%s/metrics", spec);
	return 0;
}

void http_stop(void)
{
	if (!mhd)
		return;
	MHD_stop_daemon(mhd);
	mhd = NULL;
	if (http_unix_path)
		unlink(http_unix_path);
	free(http_unix_path);
	http_unix_path = NULL;
}
