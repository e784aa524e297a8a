// SPDX-License-Identifier: BSD-3-Clause
/*
 * Exports as local block devices, /dev/ublkbN (Linux's ublk driver).
 *
 * The device's control commands (add, parameters, start, stop, delete,
 * recovery) go to /dev/ublk-control as URING_CMDs on a small ring of the
 * calling thread's: the main thread at start-up, a control job for
 * ublk-add and ublk-remove. They block, so never on a worker.
 *
 * The requests are served by the workers. Queue q of the device is a
 * struct conn (c->uq) on worker q % nworkers: it keeps one FETCH_REQ
 * URING_CMD per tag in the worker's own ring; a tag's completion is a
 * request, whose descriptor (mapped from /dev/ublkcN) becomes an NBD
 * request (ublk_int.h) and runs the path a network client's does: rate
 * limits, plan, buffers, range lock, cache or direct I/O, overlay, dirty
 * bitmaps. Each tag has a buffer of its own (UBLK_MAX_IO_BYTES, mapped,
 * touched only as requests use it): the kernel copies a WRITE's data into
 * it before the tag's fetch completes, and a READ's data out of it when the
 * result goes back (COMMIT_AND_FETCH_REQ, which re-arms the tag). A request
 * whose file I/O starts where its data does (an aligned one: all of them,
 * on a device whose logical block is the export's alignment) does its I/O
 * in that buffer; one planned wider (an overlay's granule) takes pool
 * chunks and its data is copied. Requests are taken in the order they
 * completed (uq->fifo), and one waiting for buffers or its limits holds
 * those behind it, as a socket's would.
 *
 * The device outlives a restart where the kernel has UBLK_F_USER_RECOVERY:
 * the next process (exec after SIGUSR2, or a service manager's restart)
 * finds it by the tag the kernel keeps in ublksrv_flags, and takes it over
 * with START/END_USER_RECOVERY. Meanwhile its I/O waits in the kernel; a
 * request the old process had taken and not answered is issued again
 * (UBLK_F_USER_RECOVERY_REISSUE).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <liburing.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "conn_int.h"
#include "ublk_int.h"

#define UBLK_CONTROL "/dev/ublk-control"
#define UBLK_DEPTH 128             /* tags per queue: one request slot each (CONN_MAX_REQS) */
#define UBLK_MAX_IO_BYTES (512u << 10) /* the largest request, and each tag's buffer */
#define UBLK_MAX_ZERO_BYTES (16u << 20) /* TRIM and WRITE_ZEROES: within one segment too */
#define UBLK_CTRL_TIMEOUT_S 30     /* START_DEV waits for every queue's fetches */
#define UBLK_RECOVER_WAIT_S 10     /* the previous process's queues end */

struct ublk_tag {
	struct conn_op op;         /* its FETCH_REQ or COMMIT_AND_FETCH_REQ in the ring */
};

struct ublk_queue {
	struct ublk_dev *d;
	uint16_t q_id;
	struct worker *w;
	struct conn *c;            /* serves it; NULL before its start and once closed */
	struct op start_op;        /* posted to w: start serving */
	struct ublk_io_desc *descs; /* mapped read-only from /dev/ublkcN */
	uint8_t *bufs;             /* depth * UBLK_MAX_IO_BYTES: each tag's data */
	unsigned armed;            /* fetches in the kernel */
	uint16_t fifo[UBLK_DEPTH]; /* tags fetched, not taken yet, in completion order */
	unsigned fifo_head, fifo_n;
	bool releasing;            /* left to the next process: take no more requests */
	struct op release_op;      /* posted to w: ...from now on */
	struct ublk_tag tags[UBLK_DEPTH];
};

struct ublk_dev {
	int id;                    /* N of /dev/ublkbN */
	int cdev;                  /* /dev/ublkcN */
	struct export *exp;        /* a reference */
	unsigned nq, depth;
	uint64_t flags;            /* UBLK_F_* in force */
	bool recovered;            /* taken over from a previous process */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned queues_open;      /* queue conns not yet freed, or started (under lock) */
	unsigned queues_idle;      /* releasing, with no request in hand (under lock) */
	struct ublk_dev *next_released; /* ublk_release's list */
	struct ublk_queue *q;      /* nq */
};

/* ---- control commands ---- */

static int ublk_ctrl(unsigned op, struct ublk_ctrl_cmd *cmd, unsigned timeout_s)
{
	struct io_uring ring;
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	struct __kernel_timespec ts = { .tv_sec = timeout_s };
	int fd, ret;

	fd = open(UBLK_CONTROL, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ret = io_uring_queue_init(4, &ring, IORING_SETUP_SQE128);
	if (ret < 0) {
		close(fd);
		return ret;
	}
	{
		/* A 128-byte SQE (IORING_SETUP_SQE128): the command in its last 80 bytes. */
		struct io_uring_sqe big[2];

		memset(big, 0, sizeof(big));
		big[0].opcode = IORING_OP_URING_CMD;
		big[0].fd = fd;
		big[0].cmd_op = op;
		memcpy((uint8_t *)big + offsetof(struct io_uring_sqe, addr3), cmd, sizeof(*cmd));
		sqe = io_uring_get_sqe(&ring);
		memcpy((void *)(uintptr_t)sqe, big, sizeof(big));
	}
	ret = io_uring_submit(&ring);
	if (ret >= 0)
		ret = io_uring_wait_cqe_timeout(&ring, &cqe, timeout_s ? &ts : NULL);
	if (ret == 0) {
		ret = cqe->res;
		io_uring_cqe_seen(&ring, cqe);
	} else if (ret == -ETIME) {
		ret = -ETIMEDOUT;
	}
	io_uring_queue_exit(&ring);
	close(fd);
	return ret;
}

static int ublk_ctrl_dev(unsigned op, int id, void *buf, size_t len, uint64_t data,
			 unsigned timeout_s)
{
	struct ublk_ctrl_cmd cmd = {
		.dev_id = (uint32_t)id,
		.queue_id = (uint16_t)-1,
		.len = (uint16_t)len,
		.addr = (uint64_t)(uintptr_t)buf,
		.data = { data },
	};

	return ublk_ctrl(op, &cmd, timeout_s);
}

int ublk_probe(char *why, size_t len)
{
	uint64_t features = 0;
	int ret;

	if (access(UBLK_CONTROL, F_OK) < 0) {
		snprintf(why, len, "--ublk needs a kernel with ublk_drv (no %s: modprobe ublk_drv)",
			 UBLK_CONTROL);
		return -ENODEV;
	}
	ret = ublk_ctrl_dev(UBLK_U_CMD_GET_FEATURES, -1, &features, sizeof(features), 0, 5);
	if (ret < 0) {
		snprintf(why, len, "ublk: %s does not answer GET_FEATURES (%s): the kernel's "
			 "ublk_drv is older than Linux 6.5", UBLK_CONTROL, strerror(-ret));
		return ret;
	}
	return (int)(features & 0x7fffffff);
}

/* ---- a queue, on its worker ---- */

static void ublk_fetched(struct conn_op *o, int res);

/* A releasing queue has nothing in hand: its device may be left. */
static void ublk_queue_idle(struct ublk_queue *uq)
{
	struct ublk_dev *d = uq->d;

	pthread_mutex_lock(&d->lock);
	d->queues_idle++;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
}

static inline uint8_t *ublk_tag_buf(const struct ublk_queue *uq, uint16_t tag)
{
	return uq->bufs + (size_t)tag * UBLK_MAX_IO_BYTES;
}

bool ublk_buffers(struct req *q)
{
	const struct plan *p = &q->plan;
	uint8_t *buf = ublk_tag_buf(q->c->uq, q->ublk_tag);
	unsigned n = 0;

	if (p->data_off || p->bounce || !p->io_len || p->io_len > UBLK_MAX_IO_BYTES ||
	    p->chunks > REQ_INLINE_CHUNKS)
		return false;
	for (uint64_t off = 0; off < p->io_len; off += POOL_CHUNK_BYTES, n++) {
		q->iov_inline[n].iov_base = buf + off;
		q->iov_inline[n].iov_len = p->io_len - off < POOL_CHUNK_BYTES ?
					   (size_t)(p->io_len - off) : POOL_CHUNK_BYTES;
	}
	q->iov = q->iov_inline;
	q->io_iov = q->io_iov_inline;
	q->niov = n;
	q->ublk_buf = true;
	return true;
}

static void ublk_prep_cmd(struct ublk_queue *uq, uint16_t tag, unsigned op, int32_t result)
{
	struct ublk_tag *t = &uq->tags[tag];
	struct io_uring_sqe *sqe;
	struct ublk_io_cmd *cmd;

	conn_op_init(&t->op, uq->c, ublk_fetched);
	sqe = conn_sqe(&t->op);
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = uq->d->cdev;
	sqe->flags = 0;
	sqe->ioprio = 0;
	sqe->off = 0;
	sqe->cmd_op = op;
	sqe->addr = 0;
	sqe->len = 0;
	sqe->rw_flags = 0;
	sqe->buf_index = 0;
	sqe->personality = 0;
	sqe->file_index = 0;
	cmd = (struct ublk_io_cmd *)(void *)sqe->cmd;
	cmd->q_id = uq->q_id;
	cmd->tag = tag;
	cmd->result = result;
	cmd->addr = (uint64_t)(uintptr_t)ublk_tag_buf(uq, tag);
	uq->armed++;
}

/* Nothing left in the kernel nor in hand: the queue's conn goes. */
static void ublk_maybe_close(struct ublk_queue *uq)
{
	struct conn *c = uq->c;

	if (!uq->armed && !c->live_reqs && c->state != CONN_CLOSING)
		conn_close(c, "ublk device stopped");
}

static int ublk_take(struct ublk_queue *uq, uint16_t tag)
{
	struct conn *c = uq->c;
	struct req *q = req_take(c);
	uint32_t err;

	q->ublk_tag = tag;
	if (ublk_map_request(&uq->descs[tag], tag, &q->r) < 0) {
		log_debug("conn %" PRIu64 ": ublk op %u refused", c->id,
			  uq->descs[tag].op_flags & 0xff);
		q->nbd_error = NBD_ENOTSUP;
		reply_queue(q);
		return 0;
	}
	log_debug("conn %" PRIu64 ": ublk tag %u: %s flags 0x%x offset %" PRIu64 " length %" PRIu64,
		  c->id, tag, proto_cmd_name(q->r.type), q->r.flags, q->r.offset, q->r.len_bytes);
	err = proto_validate_request(&c->sess, &q->r, UBLK_MAX_IO_BYTES);
	if (err != NBD_SUCCESS) {
		q->nbd_error = err;
		reply_queue(q);
		return 0;
	}
	return rx_take_request(q) ? 0 : -EAGAIN;
}

void ublk_intake(struct conn *c)
{
	struct ublk_queue *uq = c->uq;

	while (uq->fifo_n && c->rx == RX_IDLE && !uq->releasing &&
	       (c->state == CONN_TRANSMIT || c->state == CONN_STOPPING)) {
		uint16_t tag = uq->fifo[uq->fifo_head];

		uq->fifo_head = (uq->fifo_head + 1) % UBLK_DEPTH;
		uq->fifo_n--;
		if (ublk_take(uq, tag) < 0)
			return;
	}
}

static void ublk_fetched(struct conn_op *o, int res)
{
	struct ublk_tag *t = container_of(o, struct ublk_tag, op);
	struct conn *c = o->c;
	struct ublk_queue *uq = c->uq;
	uint16_t tag = (uint16_t)(t - uq->tags);

	uq->armed--;
	if (res != UBLK_IO_RES_OK) {
		if (res != UBLK_IO_RES_ABORT)
			log_warn("ublk%d: queue %u tag %u: %s", uq->d->id, uq->q_id, tag,
				 strerror(-res));
		ublk_maybe_close(uq);
		return;
	}
	if (c->state == CONN_CLOSING)
		return;
	uq->fifo[(uq->fifo_head + uq->fifo_n) % UBLK_DEPTH] = tag;
	uq->fifo_n++;
	c->last_active_ns = worker_now(c->w);
	if (uq->fifo_n == 1)
		ublk_intake(c);
}

void ublk_payload(struct req *q)
{
	/* In the tag's buffer already; planned wider, it goes to its place in the chunks. */
	if (!q->ublk_buf)
		iov_copy_in(q->iov, q->niov, q->plan.data_off, ublk_tag_buf(q->c->uq, q->ublk_tag),
			    (size_t)q->r.len_bytes);
}

static void ublk_commit(struct req *q, int32_t result)
{
	struct conn *c = q->c;
	struct ublk_queue *uq = c->uq;
	uint16_t tag = q->ublk_tag;

	hist_observe(&c->exp->ctr->slot[c->w->id].duration[export_stat_op(q->r.type)],
		     now_ns() - q->start_ns);
	req_recycle(q);
	if (c->state == CONN_CLOSING)
		return;
	ublk_prep_cmd(uq, tag, UBLK_U_IO_COMMIT_AND_FETCH_REQ, result);
	if (uq->releasing && !c->live_reqs)
		ublk_queue_idle(uq);
}

void ublk_reply(struct req *q)
{
	uint8_t *dst = ublk_tag_buf(q->c->uq, q->ublk_tag);
	struct iovec part[REQ_INLINE_CHUNKS];
	unsigned n;

	if (q->r.type == NBD_CMD_READ && q->nbd_error == NBD_SUCCESS && !q->ublk_buf) {
		/* Read into pool chunks (planned wider): the data goes to the tag's buffer. */
		n = iov_slice(q->iov, q->niov, q->plan.data_off, (size_t)q->r.len_bytes, part);
		for (unsigned i = 0; i < n; dst += part[i].iov_len, i++)
			memcpy(dst, part[i].iov_base, part[i].iov_len);
	}
	ublk_commit(q, ublk_result(q->nbd_error, &q->r));
}

/* A queue's conn is gone, or could not be made: the device stops waiting for it. */
static void ublk_queue_gone(struct ublk_dev *d)
{
	pthread_mutex_lock(&d->lock);
	d->queues_open--;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
}

/* On the worker: the queue's conn, and a fetch for every tag. */
static void ublk_queue_start(struct op *op, int res)
{
	struct ublk_queue *uq = container_of(op, struct ublk_queue, start_op);
	struct ublk_dev *d = uq->d;
	struct conn *c;

	(void)res;
	export_get(d->exp);
	c = conn_attach(uq->w, d->exp, TRANSPORT_UBLK);
	if (!c) {
		log_error("ublk%d: queue %u: out of memory", d->id, uq->q_id);
		ublk_queue_gone(d);
		return;
	}
	c->uq = uq;
	uq->c = c;
	for (unsigned tag = 0; tag < d->depth; tag++)
		ublk_prep_cmd(uq, (uint16_t)tag, UBLK_U_IO_FETCH_REQ, 0);
	log_debug("ublk%d: queue %u served by worker %d (conn %" PRIu64 ")", d->id, uq->q_id,
		  uq->w->id, c->id);
}

void ublk_queue_name(const struct conn *c, char *buf, size_t len)
{
	snprintf(buf, len, "/dev/ublkb%d queue %u", c->uq->d->id, c->uq->q_id);
}

void ublk_queue_closed(struct conn *c)
{
	struct ublk_queue *uq = c->uq;
	struct ublk_dev *d = uq->d;

	uq->c = NULL;
	ublk_queue_gone(d);
}

/* ---- the device, from a thread that may block ---- */

static void ublk_unmap(struct ublk_dev *d)
{
	for (unsigned i = 0; d->q && i < d->nq; i++) {
		if (d->q[i].descs)
			munmap(d->q[i].descs, ublk_descs_len(d->depth));
		if (d->q[i].bufs)
			munmap(d->q[i].bufs, (size_t)d->depth * UBLK_MAX_IO_BYTES);
		d->q[i].descs = NULL;
		d->q[i].bufs = NULL;
	}
	if (d->cdev >= 0)
		close(d->cdev);
	d->cdev = -1;
}

static void ublk_free(struct ublk_dev *d)
{
	ublk_unmap(d);
	free(d->q);
	if (d->exp)
		export_put(d->exp);
	pthread_mutex_destroy(&d->lock);
	pthread_cond_destroy(&d->cond);
	free(d);
}

/* Waits until every queue's conn is gone (or timeout_s passed): 0, or -ETIMEDOUT. */
static int ublk_wait_queues(struct ublk_dev *d, unsigned timeout_s)
{
	struct timespec until;
	int ret = 0;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += timeout_s;
	pthread_mutex_lock(&d->lock);
	while (d->queues_open && ret == 0)
		ret = pthread_cond_timedwait(&d->cond, &d->lock, &until);
	pthread_mutex_unlock(&d->lock);
	return d->queues_open ? -ETIMEDOUT : 0;
}

/* Opens /dev/ublkcN (devtmpfs makes it a moment after ADD_DEV) and maps each queue's descriptors. */
static int ublk_open_queues(struct ublk_dev *d, char *msg, size_t len)
{
	char path[64];

	snprintf(path, sizeof(path), "/dev/ublkc%d", d->id);
	for (int i = 0; i < 200; i++) {
		d->cdev = open(path, O_RDWR | O_CLOEXEC);
		if (d->cdev >= 0 || errno != ENOENT)
			break;
		usleep(10000);
	}
	if (d->cdev < 0) {
		snprintf(msg, len, "%s: %s", path, strerror(errno));
		return -1;
	}
	for (unsigned i = 0; i < d->nq; i++) {
		void *m = mmap(NULL, ublk_descs_len(d->depth), PROT_READ, MAP_SHARED | MAP_POPULATE,
			       d->cdev, (off_t)ublk_descs_pos((uint16_t)i));

		if (m == MAP_FAILED) {
			snprintf(msg, len, "%s: mapping queue %u's descriptors: %s", path, i,
				 strerror(errno));
			return -1;
		}
		d->q[i].descs = m;
		m = mmap(NULL, (size_t)d->depth * UBLK_MAX_IO_BYTES, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (m == MAP_FAILED) {
			snprintf(msg, len, "queue %u's buffers: %s", i, strerror(errno));
			return -1;
		}
		d->q[i].bufs = m;
	}
	return 0;
}

static void ublk_start_queues(struct ublk_dev *d, struct worker *ws, unsigned nw)
{
	d->queues_open = d->nq;
	for (unsigned i = 0; i < d->nq; i++) {
		struct ublk_queue *uq = &d->q[i];

		uq->d = d;
		uq->q_id = (uint16_t)i;
		uq->w = &ws[i % nw];
		uq->start_op.done = ublk_queue_start;
		worker_post(uq->w, &uq->start_op, 0);
	}
}

static struct ublk_dev *ublk_new(struct export *e, unsigned nq, unsigned depth)
{
	struct ublk_dev *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	d->q = calloc(nq, sizeof(*d->q));
	if (!d->q) {
		free(d);
		return NULL;
	}
	d->cdev = -1;
	d->id = -1;
	d->nq = nq;
	d->depth = depth;
	pthread_mutex_init(&d->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&d->cond, &ca);
	pthread_condattr_destroy(&ca);
	export_get(e);
	d->exp = e;
	return d;
}

static unsigned ublk_shift(uint32_t v)
{
	unsigned s = 0;

	while ((1u << (s + 1)) <= v)
		s++;
	return s;
}

static int ublk_set_params(struct ublk_dev *d)
{
	const struct export *e = d->exp;
	uint32_t lbs = e->align_bytes > 512 ? e->align_bytes : 512;
	uint32_t pbs = lbs > 4096 ? lbs : 4096;
	struct ublk_params p = {
		.len = sizeof(p),
		.types = UBLK_PARAM_TYPE_BASIC,
		.basic = {
			.attrs = UBLK_ATTR_VOLATILE_CACHE | UBLK_ATTR_FUA,
			.logical_bs_shift = (uint8_t)ublk_shift(lbs),
			.physical_bs_shift = (uint8_t)ublk_shift(pbs),
			.io_min_shift = (uint8_t)ublk_shift(pbs),
			.io_opt_shift = (uint8_t)ublk_shift(pbs),
			.max_sectors = UBLK_MAX_IO_BYTES >> 9,
			.dev_sectors = e->size_bytes / lbs * lbs >> 9,
		},
	};

	if (e->rotational)
		p.basic.attrs |= UBLK_ATTR_ROTATIONAL;
	if (e->readonly) {
		p.basic.attrs |= UBLK_ATTR_READ_ONLY;
	} else {
		p.types |= UBLK_PARAM_TYPE_DISCARD;
		p.discard.discard_granularity = pbs;
		p.discard.max_discard_sectors = UBLK_MAX_ZERO_BYTES >> 9;
		p.discard.max_write_zeroes_sectors = UBLK_MAX_ZERO_BYTES >> 9;
		p.discard.max_discard_segments = 1;
	}
	return ublk_ctrl_dev(UBLK_U_CMD_SET_PARAMS, d->id, &p, sizeof(p), 0, 5);
}

/* A device of a previous process's for export name: its id, or -1. */
static int ublk_find(const char *name, struct ublk_dev_info *info)
{
	uint64_t tag = ublk_export_tag(name);
	DIR *dir = opendir("/dev");
	struct dirent *de;
	int found = -1;

	if (!dir)
		return -1;
	while (found < 0 && (de = readdir(dir))) {
		char *end;
		long id;

		if (strncmp(de->d_name, "ublkc", 5))
			continue;
		id = strtol(de->d_name + 5, &end, 10);
		if (*end || end == de->d_name + 5 || id < 0 || id > INT32_MAX)
			continue;
		memset(info, 0, sizeof(*info));
		if (ublk_ctrl_dev(UBLK_U_CMD_GET_DEV_INFO, (int)id, info, sizeof(*info), 0, 5) < 0)
			continue;
		if (info->ublksrv_flags == tag)
			found = (int)id;
	}
	closedir(dir);
	return found;
}

static int ublk_delete(int id)
{
	int ret = ublk_ctrl_dev(UBLK_U_CMD_STOP_DEV, id, NULL, 0, 0, UBLK_CTRL_TIMEOUT_S);

	if (ret < 0 && ret != -ENODEV)
		log_warn("ublk%d: STOP_DEV: %s", id, strerror(-ret));
	return ublk_ctrl_dev(UBLK_U_CMD_DEL_DEV, id, NULL, 0, 0, UBLK_CTRL_TIMEOUT_S);
}

/* Takes over a previous process's device d->id (UBLK_F_USER_RECOVERY). */
static int ublk_recover(struct ublk_dev *d, struct worker *ws, unsigned nw, char *msg,
			size_t len)
{
	int ret = -EBUSY;

	/* The old queues end as its rings go: the device is quiesced a moment later. */
	for (int i = 0; i < UBLK_RECOVER_WAIT_S * 20 && (ret == -EBUSY || ret == -EINVAL); i++) {
		ret = ublk_ctrl_dev(UBLK_U_CMD_START_USER_RECOVERY, d->id, NULL, 0, 0, 5);
		if (ret == -EBUSY || ret == -EINVAL)
			usleep(50000);
	}
	if (ret < 0) {
		snprintf(msg, len, "ublk%d: START_USER_RECOVERY: %s", d->id, strerror(-ret));
		return ret;
	}
	if (ublk_open_queues(d, msg, len) < 0)
		return -EIO;
	ublk_start_queues(d, ws, nw);
	ret = ublk_ctrl_dev(UBLK_U_CMD_END_USER_RECOVERY, d->id, NULL, 0, (uint64_t)getpid(),
			    UBLK_CTRL_TIMEOUT_S);
	if (ret < 0) {
		snprintf(msg, len, "ublk%d: END_USER_RECOVERY: %s", d->id, strerror(-ret));
		return ret;
	}
	d->recovered = true;
	return 0;
}

struct ublk_dev *ublk_attach(struct export *e, struct worker *ws, unsigned nw, char *msg,
			     size_t len)
{
	struct ublk_dev_info info;
	struct ublk_dev *d;
	long ncpu = sysconf(_SC_NPROCESSORS_CONF);
	unsigned nq = nw;
	int features, old, ret;

	features = ublk_probe(msg, len);
	if (features < 0)
		return NULL;
	if (e->size_bytes < 512) {
		snprintf(msg, len, "export \"%s\" is smaller than a sector", e->name);
		return NULL;
	}
	/* A previous process's device of this export: taken over if it can be, else replaced. */
	old = ublk_find(e->name, &info);
	if (old >= 0 && info.state == UBLK_S_DEV_LIVE && info.ublksrv_pid > 0 &&
	    info.ublksrv_pid != getpid() && kill(info.ublksrv_pid, 0) == 0) {
		snprintf(msg, len, "/dev/ublkb%d, of an export named \"%s\", is served by process %d "
			 "(another uringnbd?)", old, e->name, (int)info.ublksrv_pid);
		return NULL;
	}
	if (old >= 0 && (info.flags & UBLK_F_USER_RECOVERY) && !(info.flags & UBLK_F_USER_COPY) &&
	    info.nr_hw_queues >= 1 && info.queue_depth <= UBLK_DEPTH &&
	    info.max_io_buf_bytes <= UBLK_MAX_IO_BYTES) {
		d = ublk_new(e, info.nr_hw_queues, info.queue_depth);
		if (!d) {
			snprintf(msg, len, "out of memory");
			return NULL;
		}
		d->id = old;
		d->flags = info.flags;
		ret = ublk_recover(d, ws, nw, msg, len);
		if (ret == 0)
			return d;
		log_warn("export \"%s\": %s; deleting /dev/ublkb%d and adding it afresh", e->name, msg,
			 old);
		if (d->queues_open) {
			ublk_ctrl_dev(UBLK_U_CMD_STOP_DEV, d->id, NULL, 0, 0, 5);
			ublk_wait_queues(d, 10);
		}
		ublk_unmap(d);
		ublk_delete(old);
		ublk_free(d);
	} else if (old >= 0) {
		log_warn("export \"%s\": deleting /dev/ublkb%d, left by a previous process", e->name,
			 old);
		ublk_delete(old);
	}

	/* The kernel allows at most one queue per CPU. */
	if (ncpu > 0 && nq > (unsigned)ncpu)
		nq = (unsigned)ncpu;
	d = ublk_new(e, nq, UBLK_DEPTH);
	if (!d) {
		snprintf(msg, len, "out of memory");
		return NULL;
	}
	memset(&info, 0, sizeof(info));
	info.nr_hw_queues = (uint16_t)nq;
	info.queue_depth = UBLK_DEPTH;
	info.max_io_buf_bytes = UBLK_MAX_IO_BYTES;
	info.dev_id = (uint32_t)-1;
	info.flags = 0;
	if (features & UBLK_F_USER_RECOVERY)
		info.flags |= UBLK_F_USER_RECOVERY;
	if (features & UBLK_F_USER_RECOVERY_REISSUE)
		info.flags |= UBLK_F_USER_RECOVERY_REISSUE;
	info.ublksrv_flags = ublk_export_tag(e->name);
	ret = ublk_ctrl_dev(UBLK_U_CMD_ADD_DEV, -1, &info, sizeof(info), 0, UBLK_CTRL_TIMEOUT_S);
	if (ret < 0) {
		snprintf(msg, len, "ublk: ADD_DEV: %s", strerror(-ret));
		ublk_free(d);
		return NULL;
	}
	d->id = (int)info.dev_id;
	d->flags = info.flags;
	ret = ublk_set_params(d);
	if (ret < 0) {
		snprintf(msg, len, "ublk%d: SET_PARAMS: %s", d->id, strerror(-ret));
		goto out_del;
	}
	if (ublk_open_queues(d, msg, len) < 0)
		goto out_del;
	ublk_start_queues(d, ws, nw);
	/* Returns once every tag has its fetch; the partition scan is served meanwhile. */
	ret = ublk_ctrl_dev(UBLK_U_CMD_START_DEV, d->id, NULL, 0, (uint64_t)getpid(),
			    UBLK_CTRL_TIMEOUT_S);
	if (ret < 0) {
		snprintf(msg, len, "ublk%d: START_DEV: %s", d->id, strerror(-ret));
		goto out_stop;
	}
	return d;

out_stop:
	ublk_ctrl_dev(UBLK_U_CMD_STOP_DEV, d->id, NULL, 0, 0, 5);
	ublk_wait_queues(d, 10);
out_del:
	ublk_unmap(d);
	ublk_ctrl_dev(UBLK_U_CMD_DEL_DEV, d->id, NULL, 0, 0, 5);
	ublk_free(d);
	return NULL;
}

int ublk_detach(struct ublk_dev *d, bool force, char *msg, size_t len)
{
	char path[64];
	int fd, ret;

	snprintf(path, sizeof(path), "/dev/ublkb%d", d->id);
	/* Mounted, or held by another exclusive opener: refused unless forced. */
	fd = open(path, O_RDONLY | O_EXCL | O_CLOEXEC);
	if (fd >= 0) {
		close(fd);
	} else if (errno == EBUSY) {
		if (!force) {
			snprintf(msg, len, "%s is in use (mounted, or open exclusively): unmount it "
				 "first, or remove it by force", path);
			return -EBUSY;
		}
		log_warn("%s: removed while in use: its users get I/O errors from now on", path);
	}
	ret = ublk_ctrl_dev(UBLK_U_CMD_STOP_DEV, d->id, NULL, 0, 0, UBLK_CTRL_TIMEOUT_S);
	if (ret < 0 && ret != -ENODEV) {
		snprintf(msg, len, "ublk%d: STOP_DEV: %s", d->id, strerror(-ret));
		return ret;
	}
	if (ublk_wait_queues(d, UBLK_CTRL_TIMEOUT_S) < 0) {
		snprintf(msg, len, "ublk%d: its queues did not end", d->id);
		return -ETIMEDOUT;
	}
	/* DEL_DEV waits until /dev/ublkcN is closed, and our mappings hold it open. */
	ublk_unmap(d);
	ret = ublk_ctrl_dev(UBLK_U_CMD_DEL_DEV, d->id, NULL, 0, 0, UBLK_CTRL_TIMEOUT_S);
	if (ret < 0)
		log_warn("ublk%d: DEL_DEV: %s", d->id, strerror(-ret));
	log_info("export \"%s\": %s removed", d->exp->name, path);
	ublk_free(d);
	return 0;
}

/* On the worker: the queue takes no more requests; those in hand finish. */
static void ublk_queue_release(struct op *op, int res)
{
	struct ublk_queue *uq = container_of(op, struct ublk_queue, release_op);

	(void)res;
	uq->releasing = true;
	if (!uq->c || !uq->c->live_reqs)
		ublk_queue_idle(uq);
}

static struct ublk_dev *released; /* left to the next process: freed after the workers */

void ublk_release(struct ublk_dev *d)
{
	struct timespec until;
	int ret = 0;

	/*
	 * Nothing is stopped: the queues end with the rings and the next process
	 * takes the device over. Requests fetched from now on are issued to it
	 * again (UBLK_F_USER_RECOVERY_REISSUE); those in hand finish here first,
	 * so that no lock or buffer of theirs outlives the workers.
	 */
	for (unsigned i = 0; i < d->nq; i++) {
		d->q[i].release_op.done = ublk_queue_release;
		worker_post(d->q[i].w, &d->q[i].release_op, 0);
	}
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += UBLK_CTRL_TIMEOUT_S;
	pthread_mutex_lock(&d->lock);
	while (d->queues_idle < d->nq && ret == 0)
		ret = pthread_cond_timedwait(&d->cond, &d->lock, &until);
	pthread_mutex_unlock(&d->lock);
	if (d->queues_idle < d->nq)
		log_warn("ublk%d: requests still in hand after %d s", d->id, UBLK_CTRL_TIMEOUT_S);
	d->next_released = released;
	released = d;
}

void ublk_released_free(void)
{
	struct ublk_dev *d;

	while ((d = released)) {
		released = d->next_released;
		/* A queue with requests in hand (a timeout above) keeps its memory. */
		if (d->queues_idle == d->nq)
			for (unsigned i = 0; i < d->nq; i++)
				if (d->q[i].c)
					conn_forget(d->q[i].c);
		/* The fd and the mappings go with the process: the kernel may still read them. */
		d->cdev = -1;
		for (unsigned i = 0; i < d->nq; i++)
			d->q[i].descs = NULL, d->q[i].bufs = NULL;
		ublk_free(d);
	}
}

int ublk_dev_id(const struct ublk_dev *d)
{
	return d->id;
}

bool ublk_dev_recovered(const struct ublk_dev *d)
{
	return d->recovered;
}

bool ublk_dev_recoverable(const struct ublk_dev *d)
{
	return d->flags & UBLK_F_USER_RECOVERY;
}

unsigned ublk_dev_queues(const struct ublk_dev *d)
{
	return d->nq;
}
