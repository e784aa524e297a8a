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
#include <errno.h>
#include <unistd.h>

#include "service.h"

/* The notification socket's address, or -ENOENT if there is none. */
static int notify_addr(struct sockaddr_un *sun, socklen_t *len)
{
	const char *path = getenv("NOTIFY_SOCKET");

	if (!path || !path[0] || strlen(path) >= sizeof(sun->sun_path))
		return -ENOENT;
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	memcpy(sun->sun_path, path, strlen(path));
	if (sun->sun_path[0] == '@')
		sun->sun_path[0] = '\0';
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
	return 0;
}

int notify_send_fds(const int *fds, size_t n, const char *fmt, ...)
{
	struct sockaddr_un sun;
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int) * NOTIFY_MAX_FDS)];
	} ctl;
	struct msghdr m = { 0 };
	struct iovec iov;
	struct cmsghdr *c;
	char msg[1024];
	socklen_t len;
	va_list ap;
	int fd, ret, k;

	if (n > NOTIFY_MAX_FDS)
		return -EINVAL;
	ret = notify_addr(&sun, &len);
	if (ret < 0)
		return ret;
	va_start(ap, fmt);
	k = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (k < 0 || (size_t)k >= sizeof(msg))
		return -EINVAL;
	iov.iov_base = msg;
	iov.iov_len = (size_t)k;
	m.msg_name = &sun;
	m.msg_namelen = len;
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	if (n) {
		memset(&ctl, 0, sizeof(ctl));
		m.msg_control = ctl.buf;
		m.msg_controllen = CMSG_SPACE(sizeof(int) * n);
		c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * n);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
	}
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	ret = sendmsg(fd, &m, MSG_NOSIGNAL) < 0 ? -errno : 0;
	close(fd);
	return ret;
}

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
