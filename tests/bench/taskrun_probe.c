// SPDX-License-Identifier: BSD-3-Clause
/*
 * What the kernel does with deferred task work (IORING_SETUP_DEFER_TASKRUN)
 * when one io_uring_enter(GETEVENTS) cannot run it all: 64 receives are
 * armed, data arrives on all 64 sockets, and the ring is entered once per
 * round. Printed per round: completions made, IORING_SQ_TASKRUN after it,
 * and whether the registered eventfd announced the work still waiting.
 * On Linux 6.18 one enter runs 20 (IO_LOCAL_TW_DEFAULT_MAX, from 6.13),
 * keeps SQ_TASKRUN set for the rest, and (after the second and third
 * enters, with 44 and 24 items still waiting) the eventfd stays silent
 * about them: a loop that sleeps in epoll on that eventfd strands them. This is
 * why a worker waits in its ring (daemon/engine/worker.c). `make
 * probe-taskrun`; measures, asserts nothing.
 */
#define _GNU_SOURCE
#include <liburing.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define N 64

int main(void)
{
	static char buf[N][64];
	struct io_uring_params p;
	struct io_uring ring;
	int sv[N][2], efd, i, round;
	uint64_t v;

	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
		  IORING_SETUP_TASKRUN_FLAG;
	if (io_uring_queue_init_params(256, &ring, &p) < 0) {
		printf("no IORING_SETUP_DEFER_TASKRUN here\n");
		return 0;
	}
	efd = eventfd(0, EFD_NONBLOCK);
	if (efd < 0 || io_uring_register_eventfd(&ring, efd) < 0) {
		perror("eventfd");
		return 1;
	}
	for (i = 0; i < N; i++) {
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv[i]) < 0) {
			perror("socketpair");
			return 1;
		}
		io_uring_prep_recv(io_uring_get_sqe(&ring), sv[i][0], buf[i], sizeof(buf[i]), 0);
	}
	io_uring_submit(&ring);
	for (i = 0; i < N; i++)
		if (write(sv[i][1], "x", 1) != 1)
			return 1;
	usleep(10000);
	while (read(efd, &v, sizeof(v)) == (ssize_t)sizeof(v))
		; /* the signal that work was queued */
	printf("%d receives completed by the kernel, their task work deferred\n", N);
	for (round = 0; round < 8; round++) {
		struct pollfd pf = { .fd = efd, .events = POLLIN };
		unsigned got;

		io_uring_get_events(&ring);
		got = io_uring_cq_ready(&ring);
		io_uring_cq_advance(&ring, got); /* not peek: it would enter the ring again */
		while (read(efd, &v, sizeof(v)) == (ssize_t)sizeof(v))
			; /* what the completions just posted signalled */
		printf("enter %d: %u completions; SQ_TASKRUN %s; eventfd signalled for the rest "
		       "within 200 ms: %s\n", round + 1, got,
		       (*ring.sq.kflags & IORING_SQ_TASKRUN) ? "set" : "clear",
		       poll(&pf, 1, 200) == 1 ? "yes" : "no");
		if (!got)
			break;
	}
	io_uring_queue_exit(&ring);
	return 0;
}
