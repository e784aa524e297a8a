/*
 * Workers: one thread, one libev loop, one io_uring, one buffer pool each.
 *
 * libev owns waiting. The ring signals an eventfd on every completion; an
 * ev_io on it drains the completion queue through the dispatch table. SQEs
 * queued by handlers are submitted once per loop iteration from an
 * ev_prepare watcher (or early, if the submission queue fills). Handlers
 * only change state and queue SQEs: they never wait and never recurse.
 *
 * user_data = object pointer | op code; objects are at least 16-byte
 * aligned, which the tag asserts.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "daemon.h"

#define RING_ENTRIES 1024
#define RING_CQ_ENTRIES 8192

typedef void (*conn_done_fn)(struct conn *c, int res);
typedef void (*req_done_fn)(struct req *q, int res);
typedef void (*slot_done_fn)(struct cache_slot *s, int res);

/* The one place a completion finds its handler. */
static const struct {
	conn_done_fn conn;
	req_done_fn req;
	slot_done_fn slot;
} dispatch[OP_MAX] = {
	[OP_CONN_HS] = { .conn = conn_hs_done },
	[OP_CONN_RX] = { .conn = conn_rx_done },
	[OP_CONN_RX_SKIP] = { .conn = conn_rx_skip_done },
	[OP_CONN_SEND] = { .conn = conn_send_done },
	[OP_REQ_RX_DATA] = { .req = req_rx_data_done },
	[OP_REQ_FILE] = { .req = req_file_done },
	[OP_REQ_RMW] = { .req = req_rmw_done },
	[OP_CACHE_FILL] = { .slot = cache_slot_fill_done },
};

/* The worker whose loop runs on this thread (NULL on the main thread). */
static __thread struct worker *tls_worker;

struct io_uring_sqe *ring_get_sqe(struct conn *c, void *obj, enum op op)
{
	struct worker *w = c->w;
	struct io_uring_sqe *sqe;

	while (!(sqe = io_uring_get_sqe(&w->ring))) {
		int ret = io_uring_submit(&w->ring);

		if (ret < 0 && ret != -EAGAIN && ret != -EBUSY && ret != -EINTR) {
			log_error("worker %d: io_uring_submit: %s", w->id, strerror(-ret));
			abort();
		}
	}
	assert(((uintptr_t)obj & OP_MASK) == 0);
	assert(op > OP_NONE && op < OP_MAX);
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)obj | op);
	c->sqes++;
	return sqe;
}

static void worker_dispatch(struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	enum op op = (enum op)(ud & OP_MASK);
	void *obj = (void *)(uintptr_t)(ud & ~(uint64_t)OP_MASK);
	struct conn *c;

	assert(op > OP_NONE && op < OP_MAX);
	if (dispatch[op].conn) {
		c = obj;
		c->sqes--;
		dispatch[op].conn(c, cqe->res);
	} else if (dispatch[op].slot) {
		struct cache_slot *s = obj;

		c = s->q->c;
		c->sqes--;
		dispatch[op].slot(s, cqe->res);
	} else {
		struct req *q = obj;

		c = q->c;
		c->sqes--;
		dispatch[op].req(q, cqe->res);
	}
	conn_put(c);
}

void worker_post_grant(struct req *q)
{
	struct worker *w = q->c->w;

	if (w == tls_worker) {
		q->next = w->grants_local;
		w->grants_local = q;
		return;
	}
	pthread_mutex_lock(&w->inbox_lock);
	q->next = w->grants_remote;
	w->grants_remote = q;
	pthread_mutex_unlock(&w->inbox_lock);
	ev_async_send(w->loop, &w->wake);
}

void worker_post_slot(struct cache_slot *s)
{
	struct worker *w = s->q->c->w;

	if (w == tls_worker) {
		s->next = w->slots_local;
		w->slots_local = s;
		return;
	}
	pthread_mutex_lock(&w->inbox_lock);
	s->next = w->slots_remote;
	w->slots_remote = s;
	pthread_mutex_unlock(&w->inbox_lock);
	ev_async_send(w->loop, &w->wake);
}

/* Resumes cache slots whose wait ended; each counted as pending. */
static bool worker_run_slots(struct worker *w)
{
	struct cache_slot *s = w->slots_local;

	w->slots_local = NULL;
	if (!s) {
		pthread_mutex_lock(&w->inbox_lock);
		s = w->slots_remote;
		w->slots_remote = NULL;
		pthread_mutex_unlock(&w->inbox_lock);
	}
	if (!s)
		return false;
	while (s) {
		struct cache_slot *next = s->next;
		struct conn *c = s->q->c;

		s->next = NULL;
		c->sqes--;
		cache_slot_resume(s);
		conn_put(c);
		s = next;
	}
	return true;
}

/* Resumes requests whose range lock was granted; they count as pending ops. */
static void worker_run_grants(struct worker *w)
{
	for (;;) {
		struct req *q = w->grants_local;

		if (!q) {
			pthread_mutex_lock(&w->inbox_lock);
			q = w->grants_remote;
			w->grants_remote = NULL;
			pthread_mutex_unlock(&w->inbox_lock);
			if (!q) {
				if (worker_run_slots(w))
					continue;
				return;
			}
		} else {
			w->grants_local = NULL;
		}
		while (q) {
			struct req *next = q->next;
			struct conn *c = q->c;

			q->next = NULL;
			c->sqes--;
			req_lock_granted(q);
			conn_put(c);
			q = next;
		}
	}
}

void worker_stats_add(const struct worker *w, struct worker_stats *sum)
{
	sum->lock_acquired += w->stats.lock_acquired;
	sum->lock_waited += w->stats.lock_waited;
	sum->lock_wait_ns += w->stats.lock_wait_ns;
	sum->rmw_writes += w->stats.rmw_writes;
	sum->buffered_ios += w->stats.buffered_ios;
}

static void worker_cq_cb(struct ev_loop *loop, ev_io *watcher, int revents)
{
	struct worker *w = watcher->data;
	struct io_uring_cqe *cqe;
	eventfd_t v;

	(void)loop;
	(void)revents;
	(void)eventfd_read(w->efd, &v);
	while (io_uring_peek_cqe(&w->ring, &cqe) == 0) {
		struct io_uring_cqe copy = *cqe;

		/* Free the CQ slot first: the handler may queue (and submit) more. */
		io_uring_cqe_seen(&w->ring, cqe);
		worker_dispatch(&copy);
	}
	worker_run_grants(w);
}

static void worker_submit_cb(struct ev_loop *loop, ev_prepare *watcher, int revents)
{
	struct worker *w = watcher->data;
	int ret;

	(void)loop;
	(void)revents;
	worker_run_grants(w);
	if (!io_uring_sq_ready(&w->ring))
		return;
	ret = io_uring_submit(&w->ring);
	if (ret < 0 && ret != -EAGAIN && ret != -EBUSY && ret != -EINTR)
		log_error("worker %d: io_uring_submit: %s", w->id, strerror(-ret));
	/* Completions that arrived during submit signal the eventfd. */
}

static void worker_wake_cb(struct ev_loop *loop, ev_async *watcher, int revents)
{
	struct worker *w = watcher->data;
	int fds[64];
	size_t n, i;
	bool stop;

	(void)revents;
	worker_run_grants(w);
	do {
		pthread_mutex_lock(&w->inbox_lock);
		n = w->inbox_len < 64 ? w->inbox_len : 64;
		if (n) {
			memcpy(fds, w->inbox, n * sizeof(int));
			memmove(w->inbox, w->inbox + n, (w->inbox_len - n) * sizeof(int));
			w->inbox_len -= n;
		}
		stop = w->stop;
		pthread_mutex_unlock(&w->inbox_lock);
		for (i = 0; i < n; i++) {
			if (stop) {
				close(fds[i]);
				server_conn_gone(w->srv);
			} else
				conn_new(w, fds[i]);
		}
	} while (n == 64);

	if (stop && !w->stopping) {
		struct conn *c, *next;

		/*
		 * Graceful: negotiations get ERR_SHUTDOWN on their next option;
		 * connections finish their requests (new ones get ESHUTDOWN) and
		 * close when idle; the grace timer closes the rest.
		 */
		w->stopping = true;
		ev_timer_start(loop, &w->grace);
		for (c = w->conns; c; c = next) {
			next = c->next;
			if (c->state == CONN_TRANSMIT && c->live_reqs) {
				c->close_when_idle = true;
			} else if (c->state == CONN_TRANSMIT) {
				conn_close(c, "server shutting down");
				conn_put(c);
			}
		}
	}
	if (w->stopping && w->nconns == 0)
		ev_break(loop, EVBREAK_ALL);
}

static void worker_grace_cb(struct ev_loop *loop, ev_timer *watcher, int revents)
{
	struct worker *w = watcher->data;
	struct conn *c, *next;

	(void)loop;
	(void)revents;
	for (c = w->conns; c; c = next) {
		next = c->next;
		conn_close(c, "server shut down: grace period over");
		conn_put(c);
	}
}

void worker_pool_wait(struct worker *w, struct conn *c)
{
	assert(!c->in_pool_wait);
	c->in_pool_wait = true;
	c->pool_next = NULL;
	if (w->pool_waiters_tail)
		w->pool_waiters_tail->pool_next = c;
	else
		w->pool_waiters_head = c;
	w->pool_waiters_tail = c;
}

void worker_pool_unwait(struct worker *w, struct conn *c)
{
	struct conn **pp, *prev = NULL;

	if (!c->in_pool_wait)
		return;
	for (pp = &w->pool_waiters_head; *pp; prev = *pp, pp = &(*pp)->pool_next) {
		if (*pp == c) {
			*pp = c->pool_next;
			if (w->pool_waiters_tail == c)
				w->pool_waiters_tail = prev;
			break;
		}
	}
	c->in_pool_wait = false;
}

void worker_pool_kick(struct worker *w)
{
	struct conn *c;

	/* Oldest first; stop at the first one that still does not fit. */
	while ((c = w->pool_waiters_head)) {
		uint32_t need = c->rx_req ? c->rx_req->chunks_needed : 0;

		if (need > w->pool.nfree)
			break;
		worker_pool_unwait(w, c);
		conn_pool_ready(c);
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	tls_worker = w;
	ev_run(w->loop, 0);
	return NULL;
}

int worker_start(struct worker *w, struct server *srv, int id)
{
	struct io_uring_params params;
	int ret;

	memset(w, 0, sizeof(*w));
	w->id = id;
	w->srv = srv;
	pthread_mutex_init(&w->inbox_lock, NULL);

	w->zeroes = mmap(NULL, WORKER_ZEROES_BYTES, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (w->zeroes == MAP_FAILED) {
		ret = -errno;
		log_error("worker %d: %s", id, strerror(-ret));
		return ret;
	}
	ret = pool_init(&w->pool, srv->pool_bytes);
	if (ret < 0) {
		log_error("worker %d: buffer pool of %zu bytes: %s", id, srv->pool_bytes,
			  strerror(-ret));
		munmap(w->zeroes, WORKER_ZEROES_BYTES);
		return ret;
	}
	memset(&params, 0, sizeof(params));
	params.flags = IORING_SETUP_CQSIZE;
	params.cq_entries = RING_CQ_ENTRIES;
	ret = io_uring_queue_init_params(RING_ENTRIES, &w->ring, &params);
	if (ret < 0) {
		log_error("worker %d: io_uring_queue_init: %s", id, strerror(-ret));
		goto out_pool;
	}
	w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->efd < 0) {
		ret = -errno;
		log_error("worker %d: eventfd: %s", id, strerror(-ret));
		goto out_ring;
	}
	ret = io_uring_register_eventfd(&w->ring, w->efd);
	if (ret < 0) {
		log_error("worker %d: io_uring_register_eventfd: %s", id, strerror(-ret));
		goto out_efd;
	}
	w->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
	if (!w->loop) {
		ret = -ENOMEM;
		log_error("worker %d: cannot create an event loop", id);
		goto out_efd;
	}
	ev_io_init(&w->efd_watcher, worker_cq_cb, w->efd, EV_READ);
	w->efd_watcher.data = w;
	ev_io_start(w->loop, &w->efd_watcher);
	ev_prepare_init(&w->submit_watcher, worker_submit_cb);
	w->submit_watcher.data = w;
	ev_prepare_start(w->loop, &w->submit_watcher);
	ev_timer_init(&w->grace, worker_grace_cb, WORKER_STOP_GRACE_S, 0.);
	w->grace.data = w;
	ev_async_init(&w->wake, worker_wake_cb);
	w->wake.data = w;
	ev_async_start(w->loop, &w->wake);

	ret = -pthread_create(&w->thread, NULL, worker_main, w);
	if (ret < 0) {
		log_error("worker %d: pthread_create: %s", id, strerror(-ret));
		goto out_loop;
	}
	return 0;

out_loop:
	ev_loop_destroy(w->loop);
out_efd:
	close(w->efd);
out_ring:
	io_uring_queue_exit(&w->ring);
out_pool:
	pool_release(&w->pool);
	munmap(w->zeroes, WORKER_ZEROES_BYTES);
	return ret;
}

void worker_adopt(struct worker *w, int fd)
{
	pthread_mutex_lock(&w->inbox_lock);
	if (w->inbox_len == w->inbox_cap) {
		size_t cap = w->inbox_cap ? w->inbox_cap * 2 : 16;
		int *p = realloc(w->inbox, cap * sizeof(int));

		if (!p) {
			pthread_mutex_unlock(&w->inbox_lock);
			log_error("worker %d: out of memory adopting a connection", w->id);
			close(fd);
			server_conn_gone(w->srv);
			return;
		}
		w->inbox = p;
		w->inbox_cap = cap;
	}
	w->inbox[w->inbox_len++] = fd;
	pthread_mutex_unlock(&w->inbox_lock);
	ev_async_send(w->loop, &w->wake);
}

void worker_stop(struct worker *w)
{
	pthread_mutex_lock(&w->inbox_lock);
	w->stop = true;
	pthread_mutex_unlock(&w->inbox_lock);
	ev_async_send(w->loop, &w->wake);
}

void worker_join(struct worker *w)
{
	pthread_join(w->thread, NULL);
	ev_loop_destroy(w->loop);
	close(w->efd);
	io_uring_queue_exit(&w->ring);
	pool_release(&w->pool);
	munmap(w->zeroes, WORKER_ZEROES_BYTES);
	free(w->inbox);
	pthread_mutex_destroy(&w->inbox_lock);
}
