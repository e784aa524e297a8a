// SPDX-License-Identifier: BSD-3-Clause
/*
 * The control socket (--control PATH): a unix stream socket on the main
 * thread's loop, for root and the daemon's own uid only (SO_PEERCRED; any
 * other peer is refused and logged). One JSON request per line, one reply
 * per request, in order (ctlproto.h); command.c runs the commands.
 *
 * Bounded whatever a client does: at most CTL_MAX_CLIENTS at a time; a
 * line over CTL_LINE_MAX gets an error and the connection closes; one
 * request is answered at a time per client, and reading stops while a
 * request is running or more than CTL_OUT_MAX of replies wait to be read;
 * a client that reads none of its replies for CTL_STALL_S is closed. All
 * I/O is non-blocking, so the main loop (which also accepts NBD clients)
 * never waits for a control client.
 *
 * Idle clients cannot keep the operator out. When every slot is taken, a
 * new client waits in a small waiting room (CTL_MAX_WAITING; nothing is read
 * from it there). Once it has sent a whole request line it asks for a slot
 * (one dribbling a line byte by byte does not, nor does it count as active
 * in a slot: only whole requests and answers do): the one
 * held by the client idle longest is freed for it, if that client has been
 * idle (no request, no reply moving) for CTL_IDLE_GRACE_S; a client with a
 * command running or a reply being written is never closed this way. A
 * full room closes its longest-waiting client that has sent nothing.
 *
 * Connections are reached through worker queries (control.h): a query op
 * per worker is posted to its inbox; the last worker to answer wakes the
 * main loop (an ev_async), which runs the command's done() and frees the
 * query. A query outlives a client that left before it was answered; those
 * still out at exit are freed by control_free() after the workers are gone.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "control.h"

#define CTL_MAX_CLIENTS 16
#define CTL_OUT_MAX (1u << 20)   /* reply bytes waiting before reading pauses */
#define CTL_STALL_S 10.0         /* replies unread this long: the client is closed */
#define CTL_CHECK_S 1.0
#define CTL_MAX_WAITING 64       /* clients waiting for a slot */
#define CTL_IDLE_GRACE_S 3.0     /* idle this long, a slot holder may be closed for another */
#define CTL_PEEK_S 0.1           /* a waiter with part of a line is looked at this often */

struct ctl_client {
	int fd;
	ev_io rio, wio;
	char in[CTL_LINE_MAX + 1];  /* a line and its newline */
	size_t in_len;
	char *out;                  /* replies not yet written: out[out_off, out_len) */
	size_t out_off, out_len, out_cap;
	double out_moved;           /* now_s() output last moved (or was queued) */
	struct ctl_call *call;      /* the request being answered, or NULL */
	bool eof;                   /* the peer sent all it will */
	bool closing;               /* close once the output is written */
	bool dead;                  /* the socket broke: free at the next client_reap() */
	bool dispatching;           /* client_process is running a line's command */
	unsigned uid;
	int pid;
	double active;              /* now_s() it last sent a request, or had one answered */
	struct ctl_client *prev, *next;
};

/* A client waiting for a slot: nothing read from it yet. */
struct ctl_waiter {
	int fd;
	ev_io rio;                  /* readable: it asks for a slot */
	bool asking;                /* it sent a whole line: it wants a slot */
	bool partial;               /* it sent part of one (the peek timer looks again) */
	unsigned uid;
	int pid;
	struct ctl_waiter *next;    /* oldest first */
};

struct ctl_call {
	struct ctl_client *cl;      /* NULL once the client has gone */
	struct ctl_request req;
};

struct ctl_query_part {
	struct op op;               /* posted to the worker's inbox */
	struct ctl_query *q;
	struct worker *w;
	struct ctl_worker_result r; /* written by the worker, read once pending is 0 */
};

struct ctl_query {
	struct ctl_call *call;
	enum ctl_query_kind kind;
	uint64_t id;
	char *export;
	ctl_query_done *done;
	atomic_uint pending;        /* workers yet to answer */
	struct ctl_query *next;     /* outstanding queries (main thread) */
	unsigned nparts;
	struct ctl_query_part parts[];
};

/* A command's blocking part, on a thread of its own (ctl_call_job). */
struct ctl_job {
	struct ctl_call *call;
	ctl_job_fn *fn;
	ctl_job_done *done;
	void *arg;
	pthread_t thread;
	atomic_bool finished;       /* fn returned: done() may run on the main loop */
	struct ctl_job *next;
};

static struct {
	struct server *srv;
	int fd;
	char *path;
	ev_io accept_w;
	ev_async answered;          /* a query's last worker answered */
	ev_timer check;
	struct ctl_client *clients;
	unsigned nclients;
	struct ctl_waiter *waiting; /* the waiting room, oldest first */
	unsigned nwaiting;
	ev_timer admit;             /* when a slot holder will have been idle long enough */
	ev_timer peek;              /* looks again at waiters that sent part of a line */
	bool closing_all;           /* control_close() */
	struct ctl_query *queries;
	struct ctl_job *jobs;       /* running or finished, not yet done() (main thread) */
} ctl = { .fd = -1 };

static struct log_limit refuse_limit;

static void client_process(struct ctl_client *cl);
static void client_reap(struct ctl_client *cl);
static void waiters_admit(void);

static void client_free(struct ctl_client *cl)
{
	struct ev_loop *loop = ctl.srv->loop;

	ev_io_stop(loop, &cl->rio);
	ev_io_stop(loop, &cl->wio);
	close(cl->fd);
	if (cl->call)
		cl->call->cl = NULL; /* answered into the void when its query is done */
	if (cl->prev)
		cl->prev->next = cl->next;
	else
		ctl.clients = cl->next;
	if (cl->next)
		cl->next->prev = cl->prev;
	ctl.nclients--;
	free(cl->out);
	free(cl);
	/* A slot is free: the longest-asking waiter, from the loop (not from inside cl's handler). */
	if (ctl.waiting && ctl.srv && !ctl.closing_all)
		ev_feed_event(ctl.srv->loop, &ctl.admit, EV_TIMER);
}

/* Writes what it can; a broken connection is marked dead (freed by client_reap). */
static void client_flush(struct ctl_client *cl)
{
	struct ev_loop *loop = ctl.srv->loop;

	while (!cl->dead && cl->out_off < cl->out_len) {
		ssize_t n = send(cl->fd, cl->out + cl->out_off, cl->out_len - cl->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			ev_io_start(loop, &cl->wio);
			return;
		}
		if (n <= 0)
			cl->dead = true;
		else
			cl->out_off += (size_t)n;
		cl->out_moved = now_s();
	}
	cl->out_off = cl->out_len = 0;
	cl->active = now_s();
	ev_io_stop(loop, &cl->wio);
}

/* Queues a reply line (heap, consumed) and writes what it can. */
static void client_queue(struct ctl_client *cl, char *line)
{
	size_t len;

	if (!line || cl->dead) {
		if (!line)
			log_error("control: out of memory for a reply: closing the client");
		free(line);
		cl->dead = true;
		return;
	}
	len = strlen(line);
	if (cl->out_len + len > cl->out_cap) {
		size_t cap = cl->out_cap ? cl->out_cap : 4096;
		char *p;

		while (cap < cl->out_len + len)
			cap *= 2;
		p = realloc(cl->out, cap);
		if (!p) {
			free(line);
			log_error("control: out of memory for a reply: closing the client");
			cl->dead = true;
			return;
		}
		cl->out = p;
		cl->out_cap = cap;
	}
	if (cl->out_off == cl->out_len)
		cl->out_moved = now_s();
	memcpy(cl->out + cl->out_len, line, len);
	cl->out_len += len;
	free(line);
	client_flush(cl);
}

static void call_finish(struct ctl_call *call, char *line)
{
	struct ctl_client *cl = call->cl;

	ctl_request_release(&call->req);
	free(call);
	if (!cl) {
		free(line);
		return;
	}
	cl->call = NULL;
	client_queue(cl, line);
	if (cl->dispatching)
		return; /* answered at once: client_process goes on with the next line */
	client_process(cl);
	client_reap(cl);
}

const struct ctl_request *ctl_call_request(const struct ctl_call *call)
{
	return &call->req;
}

struct server *ctl_call_server(const struct ctl_call *call)
{
	(void)call;
	return ctl.srv;
}

void ctl_call_return(struct ctl_call *call, json_object *ret)
{
	call_finish(call, ctl_reply_return(call->req.id, ret));
}

void ctl_call_error(struct ctl_call *call, const char *err_class, const char *fmt, ...)
{
	char desc[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(desc, sizeof(desc), fmt, ap);
	va_end(ap);
	call_finish(call, ctl_reply_error(call->req.id, err_class, desc));
}

/* On the worker's thread. */
static void query_part_run(struct op *op, int res)
{
	struct ctl_query_part *part = container_of(op, struct ctl_query_part, op);
	struct ctl_query *q = part->q;

	(void)res;
	if (q->kind == CTL_QUERY_LIST)
		part->r.n = conns_report(part->w, &part->r.info);
	else
		part->r.matched = conns_disconnect(part->w, q->id, q->export);
	if (atomic_fetch_sub(&q->pending, 1) == 1)
		ev_async_send(ctl.srv->loop, &ctl.answered);
}

static void query_free(struct ctl_query *q)
{
	unsigned i;
	int k;

	for (i = 0; i < q->nparts; i++) {
		struct ctl_worker_result *r = &q->parts[i].r;

		for (k = 0; k < r->n; k++) {
			export_put(r->info[k].exp);
			free(r->info[k].tls_identity);
		}
		free(r->info);
	}
	free(q->export);
	free(q);
}

void ctl_call_query(struct ctl_call *call, enum ctl_query_kind kind, uint64_t id,
		    const char *export, ctl_query_done *done)
{
	struct server *srv = ctl.srv;
	struct ctl_query *q;
	unsigned i;

	q = calloc(1, sizeof(*q) + srv->nworkers * sizeof(q->parts[0]));
	if (!q || (export && !(q->export = strdup(export)))) {
		free(q);
		ctl_call_error(call, CTL_ERR_GENERIC, "out of memory");
		return;
	}
	q->call = call;
	q->kind = kind;
	q->id = id;
	q->done = done;
	q->nparts = srv->nworkers;
	atomic_init(&q->pending, srv->nworkers);
	q->next = ctl.queries;
	ctl.queries = q;
	for (i = 0; i < srv->nworkers; i++) {
		struct ctl_query_part *part = &q->parts[i];

		part->q = q;
		part->w = &srv->workers[i];
		part->op.done = query_part_run;
		worker_post(part->w, &part->op, 0);
	}
}

static void *job_main(void *arg)
{
	struct ctl_job *j = arg;

	j->fn(j->arg);
	atomic_store(&j->finished, true);
	ev_async_send(ctl.srv->loop, &ctl.answered);
	return NULL;
}

void ctl_call_job(struct ctl_call *call, ctl_job_fn *fn, ctl_job_done *done, void *arg)
{
	struct ctl_job *j = calloc(1, sizeof(*j));
	int ret;

	if (!j) {
		done(call, arg, -ENOMEM);
		return;
	}
	j->call = call;
	j->fn = fn;
	j->done = done;
	j->arg = arg;
	ret = pthread_create(&j->thread, NULL, job_main, j);
	if (ret) {
		free(j);
		done(call, arg, -ret);
		return;
	}
	j->next = ctl.jobs;
	ctl.jobs = j;
}

/* Joins finished jobs (all of them if wait) and runs their done(). */
static void jobs_reap(bool wait)
{
	struct ctl_job **pj = &ctl.jobs, *j;

	while ((j = *pj)) {
		if (!wait && !atomic_load(&j->finished)) {
			pj = &j->next;
			continue;
		}
		*pj = j->next;
		pthread_join(j->thread, NULL);
		j->done(j->call, j->arg, 0);
		free(j);
	}
}

static void on_answered(struct ev_loop *loop, ev_async *w, int revents)
{
	struct ctl_query **pq = &ctl.queries, *q;
	struct ctl_worker_result *r;
	unsigned i;

	(void)loop;
	(void)w;
	(void)revents;
	jobs_reap(false);
	while ((q = *pq)) {
		if (atomic_load(&q->pending)) {
			pq = &q->next;
			continue;
		}
		*pq = q->next;
		r = calloc(q->nparts ? q->nparts : 1, sizeof(*r));
		if (!r) {
			ctl_call_error(q->call, CTL_ERR_GENERIC, "out of memory");
		} else {
			for (i = 0; i < q->nparts; i++)
				r[i] = q->parts[i].r;
			q->done(q->call, r, q->nparts);
			free(r);
		}
		query_free(q);
	}
}

/* One request line (without its newline). */
static void client_line(struct ctl_client *cl, const char *line, size_t len)
{
	struct ctl_call *call;
	const char *cls;
	char err[512];

	while (len && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
		len--;
	if (!len)
		return; /* blank lines are allowed, and answered by nothing */
	call = calloc(1, sizeof(*call));
	if (!call) {
		client_queue(cl, ctl_reply_error(NULL, CTL_ERR_GENERIC, "out of memory"));
		return;
	}
	call->cl = cl;
	cl->call = call;
	cl->active = now_s();
	if (ctl_request_parse(line, len, &call->req, &cls, err, sizeof(err)) < 0) {
		log_debug("control: uid %u pid %d: refused: %s", cl->uid, cl->pid, err);
		ctl_call_error(call, cls, "%s", err);
		return;
	}
	log_debug("control: uid %u pid %d: %s", cl->uid, cl->pid, call->req.cmd->name);
	command_run(call);
}

/*
 * Runs the buffered requests it may (one at a time: a command waiting for
 * the workers holds the rest back), then reads more if it may. Never frees
 * cl: the callers end with client_reap().
 */
static void client_process(struct ctl_client *cl)
{
	struct ev_loop *loop = ctl.srv->loop;
	char *nl;

	while (!cl->call && !cl->closing && !cl->dead && cl->out_len - cl->out_off < CTL_OUT_MAX &&
	       (nl = memchr(cl->in, '\n', cl->in_len))) {
		size_t len = (size_t)(nl - cl->in);

		cl->dispatching = true;
		client_line(cl, cl->in, len);
		cl->dispatching = false;
		memmove(cl->in, cl->in + len + 1, cl->in_len - len - 1);
		cl->in_len -= len + 1;
	}
	if (cl->closing || cl->dead)
		return;
	if (!cl->call && cl->in_len > CTL_LINE_MAX) {
		log_info("control: uid %u pid %d: a request line over %u bytes: closing", cl->uid,
			 cl->pid, CTL_LINE_MAX);
		cl->closing = true;
		cl->in_len = 0;
		client_queue(cl, ctl_reply_error(NULL, CTL_ERR_INVALID,
						 "request line longer than 65536 bytes"));
		return;
	}
	if (!cl->eof && !cl->call && cl->out_len - cl->out_off < CTL_OUT_MAX)
		ev_io_start(loop, &cl->rio);
	else
		ev_io_stop(loop, &cl->rio);
}

/* Frees cl if it is done: broken, or closing (or at its end) with all written. */
static void client_reap(struct ctl_client *cl)
{
	bool drained = cl->out_off == cl->out_len;

	if (cl->dead || (drained && cl->closing) ||
	    (drained && cl->eof && !cl->call && !memchr(cl->in, '\n', cl->in_len)))
		client_free(cl);
}

static void on_client_read(struct ev_loop *loop, ev_io *w, int revents)
{
	struct ctl_client *cl = w->data;
	ssize_t n;

	(void)loop;
	(void)revents;
	n = recv(cl->fd, cl->in + cl->in_len, sizeof(cl->in) - cl->in_len, MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n < 0) {
		cl->dead = true;
	} else if (n == 0) {
		cl->eof = true;
		ev_io_stop(ctl.srv->loop, &cl->rio);
	}
	if (n > 0)
		cl->in_len += (size_t)n;
	client_process(cl);
	client_reap(cl);
}

static void on_client_write(struct ev_loop *loop, ev_io *w, int revents)
{
	struct ctl_client *cl = w->data;

	(void)loop;
	(void)revents;
	client_flush(cl);
	client_process(cl);
	client_reap(cl);
}

static void on_check(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct ctl_client *cl, *next;

	(void)loop;
	(void)w;
	(void)revents;
	for (cl = ctl.clients; cl; cl = next) {
		next = cl->next;
		if (cl->out_off < cl->out_len && now_s() - cl->out_moved >= CTL_STALL_S) {
			log_info("control: uid %u pid %d read none of its replies for %.0f s: closing",
				 cl->uid, cl->pid, CTL_STALL_S);
			client_free(cl);
		}
	}
	/* Waiters whose holders were all busy when they asked: a holder may be idle by now. */
	if (ctl.waiting)
		waiters_admit();
}

static void client_add(int fd, unsigned uid, int pid);

/* The slot holder idle longest (see the top), or NULL; *since: when it went idle. */
static struct ctl_client *client_idlest(double *since)
{
	struct ctl_client *cl, *best = NULL;

	for (cl = ctl.clients; cl; cl = cl->next)
		if (!cl->call && cl->out_off == cl->out_len && !cl->dead &&
		    (!best || cl->active < best->active))
			best = cl;
	if (best)
		*since = best->active;
	return best;
}

/* Frees the slot of the client idle longest, if it has been idle for the grace period. */
static bool client_evict_idle(void)
{
	double since = 0, now = now_s();
	struct ctl_client *cl = client_idlest(&since);

	if (!cl || now - since < CTL_IDLE_GRACE_S)
		return false;
	log_msg_limited(&refuse_limit, LOG_INFO, "control: uid %u pid %d idle for %.0f s: "
			"closed for a client waiting for a slot", cl->uid, cl->pid, now - since);
	client_free(cl);
	return true;
}

static void waiter_free(struct ctl_waiter *wt)
{
	struct ctl_waiter **p;

	for (p = &ctl.waiting; *p != wt; p = &(*p)->next)
		;
	*p = wt->next;
	ctl.nwaiting--;
	ev_io_stop(ctl.srv->loop, &wt->rio);
	free(wt);
}

/* Slots for the waiters that asked, longest-waiting first; the timer for the rest. */
static void waiters_admit(void)
{
	struct ctl_waiter *wt, *next;
	double since = 0;

	for (wt = ctl.waiting; wt; wt = next) {
		next = wt->next;
		if (!wt->asking)
			continue;
		if (ctl.nclients >= CTL_MAX_CLIENTS && !client_evict_idle())
			break;
		client_add(wt->fd, wt->uid, wt->pid);
		waiter_free(wt);
	}
	ev_timer_stop(ctl.srv->loop, &ctl.admit);
	for (wt = ctl.waiting; wt && !wt->asking; wt = wt->next)
		;
	if (wt && client_idlest(&since)) {
		double after = since + CTL_IDLE_GRACE_S - now_s();

		ev_timer_set(&ctl.admit, after > 0.001 ? after : 0.001, 0);
		ev_timer_start(ctl.srv->loop, &ctl.admit);
	}
}

static void on_admit(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	waiters_admit();
}

/*
 * Whether the waiter has sent a whole request line (or 4 KiB of one, or
 * closed): then it asks for a slot. Looked at without reading it.
 */
static void waiter_peek(struct ctl_waiter *wt)
{
	char buf[4096];
	ssize_t n = recv(wt->fd, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);

	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n <= 0 || memchr(buf, '\n', (size_t)n) || n == (ssize_t)sizeof(buf))
		wt->asking = true;
	else
		wt->partial = true; /* looked at again by the peek timer, not by readiness */
	ev_io_stop(ctl.srv->loop, &wt->rio);
}

static void on_waiter_read(struct ev_loop *loop, ev_io *w, int revents)
{
	struct ctl_waiter *wt = w->data;

	(void)loop;
	(void)revents;
	waiter_peek(wt);
	if (wt->partial && !ev_is_active(&ctl.peek))
		ev_timer_again(ctl.srv->loop, &ctl.peek);
	if (wt->asking)
		waiters_admit();
}

/* Waiters with part of a line: has the rest come? */
static void on_peek(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct ctl_waiter *wt;
	bool partial = false, asking = false;

	(void)revents;
	for (wt = ctl.waiting; wt; wt = wt->next) {
		if (wt->partial && !wt->asking)
			waiter_peek(wt);
		partial |= wt->partial && !wt->asking;
		asking |= wt->asking;
	}
	if (!partial)
		ev_timer_stop(loop, w);
	if (asking)
		waiters_admit();
}

static void waiter_add(int fd, const struct ucred *cred)
{
	struct ctl_waiter *wt, **tail, *old;

	/* A full room: the longest-waiting client that has sent no whole line goes. */
	if (ctl.nwaiting >= CTL_MAX_WAITING) {
		for (old = ctl.waiting; old; old = old->next) {
			if (!old->asking)
				waiter_peek(old); /* its line may be there, not yet seen */
			if (!old->asking)
				break;
		}
		if (ctl.waiting && !ev_is_active(&ctl.admit) && !ev_is_pending(&ctl.admit))
			ev_feed_event(ctl.srv->loop, &ctl.admit, EV_TIMER);
		if (!old) {
			log_msg_limited(&refuse_limit, LOG_WARN, "control: refused pid %d: %u clients "
					"and %u waiting for a slot", (int)cred->pid, CTL_MAX_CLIENTS,
					CTL_MAX_WAITING);
			close(fd);
			return;
		}
		close(old->fd);
		waiter_free(old);
	}
	wt = calloc(1, sizeof(*wt));
	if (!wt) {
		close(fd);
		return;
	}
	wt->fd = fd;
	wt->uid = cred->uid;
	wt->pid = cred->pid;
	ev_io_init(&wt->rio, on_waiter_read, fd, EV_READ);
	wt->rio.data = wt;
	ev_io_start(ctl.srv->loop, &wt->rio);
	for (tail = &ctl.waiting; *tail; tail = &(*tail)->next)
		;
	*tail = wt;
	ctl.nwaiting++;
}

/* One pending connection taken; false once there is none. */
static bool accept_one(void)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	int fd;

	fd = accept4(ctl.fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0) {
		if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
			log_msg_limited(&refuse_limit, LOG_WARN, "control: accept: %s",
					strerror(errno));
		return false;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 ||
	    (cred.uid != 0 && cred.uid != geteuid())) {
		log_msg_limited(&refuse_limit, LOG_WARN, "control: refused uid %d pid %d: only root "
				"and uid %u may use the control socket",
				len == sizeof(cred) ? (int)cred.uid : -1,
				len == sizeof(cred) ? (int)cred.pid : -1, (unsigned)geteuid());
		close(fd);
		return true;
	}
	/* Full: it waits; only a waiter with a request may have an idle holder closed. */
	if (ctl.nclients >= CTL_MAX_CLIENTS)
		waiter_add(fd, &cred);
	else
		client_add(fd, cred.uid, cred.pid);
	return true;
}

/* A crowd connecting: a batch at a time, so the backlog an operator waits in stays short. */
static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
	unsigned i;

	(void)loop;
	(void)w;
	(void)revents;
	for (i = 0; i < 64 && accept_one(); i++)
		;
}

/* A client in a slot. */
static void client_add(int fd, unsigned uid, int pid)
{
	struct ev_loop *loop = ctl.srv->loop;
	struct ctl_client *cl = calloc(1, sizeof(*cl));

	if (!cl) {
		close(fd);
		return;
	}
	cl->fd = fd;
	cl->uid = uid;
	cl->pid = pid;
	cl->active = now_s();
	ev_io_init(&cl->rio, on_client_read, fd, EV_READ);
	ev_io_init(&cl->wio, on_client_write, fd, EV_WRITE);
	cl->rio.data = cl->wio.data = cl;
	cl->next = ctl.clients;
	if (ctl.clients)
		ctl.clients->prev = cl;
	ctl.clients = cl;
	ctl.nclients++;
	ev_io_start(loop, &cl->rio);
}

int control_start(struct server *srv, const char *path)
{
	ctl.srv = srv;
	ctl.fd = listen_unix_socket(path, 0600);
	if (ctl.fd < 0)
		return ctl.fd;
	ctl.path = strdup(path);
	fcntl(ctl.fd, F_SETFL, O_NONBLOCK);
	ev_io_init(&ctl.accept_w, on_accept, ctl.fd, EV_READ);
	ev_io_start(srv->loop, &ctl.accept_w);
	ev_async_init(&ctl.answered, on_answered);
	ev_async_start(srv->loop, &ctl.answered);
	ev_timer_init(&ctl.check, on_check, CTL_CHECK_S, CTL_CHECK_S);
	ev_timer_init(&ctl.admit, on_admit, 1, 0);
	ev_timer_init(&ctl.peek, on_peek, 0, CTL_PEEK_S);
	ev_now_update(srv->loop); /* start-up may have taken a while */
	ev_timer_start(srv->loop, &ctl.check);
	log_info("control socket on \"%s\" (root and uid %u)", path, (unsigned)geteuid());
	return 0;
}

void control_close(void)
{
	if (ctl.fd < 0)
		return;
	/* A checkpoint under way finishes (its lock waits for writes in flight only). */
	jobs_reap(true);
	ctl.closing_all = true;
	while (ctl.clients)
		client_free(ctl.clients);
	while (ctl.waiting) {
		close(ctl.waiting->fd);
		waiter_free(ctl.waiting);
	}
	ev_timer_stop(ctl.srv->loop, &ctl.admit);
	ev_timer_stop(ctl.srv->loop, &ctl.peek);
	ev_io_stop(ctl.srv->loop, &ctl.accept_w);
	ev_timer_stop(ctl.srv->loop, &ctl.check);
	close(ctl.fd);
	ctl.fd = -1;
	if (ctl.path)
		unlink(ctl.path);
	free(ctl.path);
	ctl.path = NULL;
}

void control_free(void)
{
	struct ctl_query *q;

	/* The workers are gone: whatever they did not answer never will be. */
	while ((q = ctl.queries)) {
		ctl.queries = q->next;
		ctl_request_release(&q->call->req);
		free(q->call);
		query_free(q);
	}
	if (ctl.srv)
		ev_async_stop(ctl.srv->loop, &ctl.answered);
}
