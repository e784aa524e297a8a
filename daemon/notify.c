// SPDX-License-Identifier: BSD-3-Clause
/*
 * systemd's notification protocol (sd_notify(3)), written out: one datagram
 * to the unix socket named by $NOTIFY_SOCKET ('@' means the abstract
 * namespace). Without $NOTIFY_SOCKET it does nothing.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon.h"

void notify_send(const char *fmt, ...)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	char msg[1024];
	socklen_t len;
	va_list ap;
	int fd, n;

	if (!path || !path[0] || strlen(path) >= sizeof(sun.sun_path))
		return;
	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(msg))
		n = sizeof(msg) - 1;
	memcpy(sun.sun_path, path, strlen(path));
	if (sun.sun_path[0] == '@')
		sun.sun_path[0] = '\0';
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (sendto(fd, msg, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&sun, len) < 0)
		log_warn("notify \"%s\": %m", path);
	close(fd);
}
