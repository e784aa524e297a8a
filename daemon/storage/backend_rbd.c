// SPDX-License-Identifier: BSD-3-Clause
/*
 * Exports on Ceph RBD images: rbd:POOL/IMAGE, or rbd:POOL/IMAGE@SNAP (a
 * snapshot, read-only), with ceph-conf= and ceph-id= per export (else
 * librados's own defaults: $CEPH_CONF, /etc/ceph/ceph.conf, client.admin).
 *
 * librbd and librados are loaded (dlopen) when the first rbd: export opens:
 * the daemon runs without Ceph installed, and a missing library fails that
 * export alone, saying so.
 *
 * One image handle per image, shared by every export of it (a reload, a
 * resize's reopen) and every worker: two handles in one process would pass
 * RBD's exclusive lock back and forth on every write. Requests go through
 * librbd's async calls (any offset and length: RADOS objects take bytes, so
 * nothing is read-modify-written here). Their completions come back through
 * the worker's ring: the image has an eventfd (rbd_set_image_notification),
 * and while calls are in flight exactly one worker has a read of it in its
 * ring. That read's end takes every finished call off the image
 * (rbd_poll_io_events) and posts each to the worker that issued it: its
 * own with no thread hop, another worker's with one post.
 *
 * A writable export takes the image's exclusive lock at open and keeps it
 * (rbd_lock_acquire): a second server (or rbd-nbd, or a VM's librbd) asked
 * to write the image is refused, until the first closes it. A hand-over
 * (SIGUSR2) releases it just before the exec; the next process takes it.
 *
 * The size follows `rbd resize`: librbd's header watch tells, and the
 * export reports itself changed, so new connections get the new size.
 * FUA is a flush after the write (librbd may cache writes); FLUSH waits
 * for every write acknowledged before it. base:allocation comes from the
 * image's allocation (rbd_diff_iterate2, on an offload thread).
 *
 * Checkpoints are snapshots of the image (backend_rbd_checkpoint.c).
 *
 * Open is blocking (connecting to the cluster): the main thread, or a
 * control job. Close is too; dropped on a worker (the last connection of
 * a removed export), it goes to a thread of its own.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include "rbd_int.h"

#define RBD_POLL_BATCH 64
#define RBD_MOUNT_TIMEOUT "30" /* librados's client_mount_timeout, where no conf sets it */

/* ---- the libraries, loaded at the first rbd: export (rbd_int.h) ---- */
struct rbd_lib rbd_lib;
static pthread_mutex_t lib_lock = PTHREAD_MUTEX_INITIALIZER;
static int lib_state;          /* 0: not tried; 1: loaded; -1: failed (lib_why says why) */
static char lib_why[512];

/* Loads librbd and librados once; 0, or -1 with lib_why saying why. */
static int rbd_lib_load(void)
{
	void *h[2] = { NULL, NULL };
	static const char *const names[2] = { "librados.so.2", "librbd.so.1" };
	int i, ret;

	pthread_mutex_lock(&lib_lock);
	if (lib_state) {
		ret = lib_state > 0 ? 0 : -1;
		pthread_mutex_unlock(&lib_lock);
		return ret;
	}
	for (i = 0; i < 2; i++) {
		h[i] = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
		if (!h[i]) {
			snprintf(lib_why, sizeof(lib_why), "Ceph's %s is not installed (%s): "
				 "install librbd1 to serve rbd: images", names[i], dlerror());
			goto fail;
		}
	}
#define RBD_LIB_SYM(l, f)                                                                     \
	if (!(*(void **)&rbd_lib.f = dlsym(h[!strcmp(#l, "rbd")], #f))) {                           \
		snprintf(lib_why, sizeof(lib_why), "%s has no %s: librbd of Ceph 15 or later "   \
			 "is needed", names[!strcmp(#l, "rbd")], #f);                             \
		goto fail;                                                                         \
	}
	RBD_LIB_FNS(RBD_LIB_SYM)
#undef RBD_LIB_SYM
	lib_state = 1;
	pthread_mutex_unlock(&lib_lock);
	return 0;
fail:
	/* Left loaded, if loaded: librados's static state does not unload cleanly. */
	lib_state = -1;
	pthread_mutex_unlock(&lib_lock);
	return -1;
}

/* ---- images: one per pool/image@snap and cluster, shared (rbd_int.h) ---- */
/* One call in flight: what its completion's arg points at. */
struct rbd_call {
	struct worker *w;
	struct op *op;
	struct rbd_image *img;
	int len;                  /* a write: the bytes a success moved */
	bool read;                /* a read: librbd says how many it read */
	struct rbd_call *next;    /* finished, to be posted */
};

pthread_mutex_t rbd_open_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t closed_cond = PTHREAD_COND_INITIALIZER;
static struct rbd_image *registry;
static unsigned closing;      /* images being closed on threads of their own */

static void rbd_image_destroy(struct rbd_image *img)
{
	if (img->watching)
		rbd_lib.rbd_update_unwatch(img->image, img->watch_handle);
	if (img->image) {
		if (img->locked)
			rbd_lib.rbd_lock_release(img->image);
		rbd_lib.rbd_close(img->image);
	}
	if (img->ioctx)
		rbd_lib.rados_ioctx_destroy(img->ioctx);
	if (img->cluster)
		rbd_lib.rados_shutdown(img->cluster);
	if (img->efd >= 0)
		close(img->efd);
	backing_put(img->backing);
	free(img->dirty);
	free(img->key);
	free(img->name);
	free(img);
}

static void *rbd_close_thread(void *arg)
{
	rbd_image_destroy(arg);
	pthread_mutex_lock(&registry_lock);
	closing--;
	pthread_cond_broadcast(&closed_cond);
	pthread_mutex_unlock(&registry_lock);
	return NULL;
}

static void rbd_image_put(struct rbd_image *img)
{
	struct rbd_image **pp;
	pthread_attr_t attr;
	pthread_t t;

	pthread_mutex_lock(&registry_lock);
	if (--img->refs) {
		pthread_mutex_unlock(&registry_lock);
		return;
	}
	for (pp = &registry; *pp != img; pp = &(*pp)->next)
		;
	*pp = img->next;
	if (!worker_self()) {
		pthread_mutex_unlock(&registry_lock);
		rbd_image_destroy(img);
		return;
	}
	/* A worker never waits for the cluster: the close goes to a thread of its own. */
	closing++;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, rbd_close_thread, img) != 0) {
		closing--;
		pthread_mutex_unlock(&registry_lock);
		pthread_attr_destroy(&attr);
		log_warn("%s: no thread to close it on: closing it on worker %d", img->name,
			 worker_self()->id);
		rbd_image_destroy(img);
		return;
	}
	pthread_attr_destroy(&attr);
	pthread_mutex_unlock(&registry_lock);
}

void backend_rbd_quiesce(void)
{
	pthread_mutex_lock(&registry_lock);
	while (closing)
		pthread_cond_wait(&closed_cond, &registry_lock);
	pthread_mutex_unlock(&registry_lock);
}

/* librbd's header watch (its own thread): the image may have been resized. */
static void rbd_header_changed(void *arg)
{
	struct rbd_image *img = arg;
	uint64_t size, old;

	if (rbd_lib.rbd_get_size(img->image, &size) < 0)
		return;
	old = atomic_exchange(&img->size, size);
	if (old != size)
		log_info("%s: resized, %" PRIu64 " -> %" PRIu64 " bytes", img->name, old, size);
}

/*
 * Splits rbd:POOL/IMAGE[@SNAP] into buf: 0, or -1 with why. The names are
 * RBD's: no '/' or '@' inside them.
 */
static int rbd_parse(const char *path, char *buf, size_t len, const char **pool,
		     const char **image, const char **snap)
{
	char *slash, *at;

	if (strncmp(path, "rbd:", 4) || strlen(path + 4) >= len)
		return -1;
	strcpy(buf, path + 4);
	slash = strchr(buf, '/');
	if (!slash || slash == buf || !slash[1] || strchr(slash + 1, '/'))
		return -1;
	*slash = '\0';
	*pool = buf;
	*image = slash + 1;
	at = strchr(slash + 1, '@');
	*snap = NULL;
	if (at) {
		if (at == slash + 1 || !at[1] || strchr(at + 1, '@'))
			return -1;
		*at = '\0';
		*snap = at + 1;
	}
	return 0;
}

static void rbd_events_done(struct op *op, int res);

/* Connects and opens; the image is in the registry once this returns it. NULL: logged. */
static struct rbd_image *rbd_image_open(const struct export_spec *spec, const char *key)
{
	const char *pool, *image, *snap;
	char names[1024], val[32];
	struct rbd_image *img;
	uint64_t features = 0;
	int r;

	if (rbd_parse(spec->path, names, sizeof(names), &pool, &image, &snap) < 0) {
		log_error("export \"%s\": expected rbd:POOL/IMAGE or rbd:POOL/IMAGE@SNAP",
			  spec->path);
		return NULL;
	}
	img = calloc(1, sizeof(*img));
	if (!img || !(img->key = strdup(key)) || !(img->name = strdup(spec->path))) {
		log_error("export \"%s\": out of memory", spec->path);
		if (img)
			free(img->key);
		free(img);
		return NULL;
	}
	img->efd = -1;
	img->snap = snap != NULL;
	img->read_op.done = rbd_events_done;
	r = rbd_lib.rados_create(&img->cluster, spec->ceph_id);
	if (r < 0) {
		log_error("export \"%s\": rados_create: %s", spec->path, strerror(-r));
		goto fail;
	}
	r = rbd_lib.rados_conf_read_file(img->cluster, spec->ceph_conf);
	if (r < 0 && (spec->ceph_conf || r != -ENOENT)) {
		log_error("export \"%s\": reading %s: %s", spec->path,
			  spec->ceph_conf ? spec->ceph_conf : "the Ceph configuration", strerror(-r));
		goto fail;
	}
	rbd_lib.rados_conf_parse_env(img->cluster, NULL); /* CEPH_ARGS */
	/* An unreachable cluster fails the open in 30 s, not librados's 300. */
	if (rbd_lib.rados_conf_get(img->cluster, "client_mount_timeout", val, sizeof(val)) == 0 &&
	    atof(val) == 300.0)
		rbd_lib.rados_conf_set(img->cluster, "client_mount_timeout", RBD_MOUNT_TIMEOUT);
	/*
	 * librbd's cache writes through until the first flush, for guests that
	 * never flush. An NBD client knows that only FLUSH and FUA promise
	 * durability (and they stay honest: FUA is write-then-flush), so the
	 * cache may take writes from the first one on: at QD1, 1.2K writes/s
	 * through to the OSD became about 8K here. A configuration that turns
	 * the cache off (rbd_cache = false) still does.
	 */
	rbd_lib.rados_conf_set(img->cluster, "rbd_cache_writethrough_until_flush", "false");
	r = rbd_lib.rados_connect(img->cluster);
	if (r < 0) {
		log_error("export \"%s\": connecting to the cluster%s%s: %s", spec->path,
			  spec->ceph_conf ? " of " : "", spec->ceph_conf ? spec->ceph_conf : "",
			  strerror(-r));
		goto fail;
	}
	r = rbd_lib.rados_ioctx_create(img->cluster, pool, &img->ioctx);
	if (r < 0) {
		log_error("export \"%s\": pool \"%s\": %s", spec->path, pool, strerror(-r));
		goto fail;
	}
	if (snap || spec->readonly)
		r = rbd_lib.rbd_open_read_only(img->ioctx, image, &img->image, snap);
	else
		r = rbd_lib.rbd_open(img->ioctx, image, &img->image, NULL);
	if (r < 0) {
		img->image = NULL;
		log_error("export \"%s\": opening image \"%s\"%s%s: %s", spec->path, image,
			  snap ? " at snapshot " : "", snap ? snap : "", strerror(-r));
		goto fail;
	}
	if (!snap && !spec->readonly) {
		/* One writer: a second server asked to write it is refused (see the top). */
		if (rbd_lib.rbd_get_features(img->image, &features) == 0 &&
		    (features & RBD_FEATURE_EXCLUSIVE_LOCK)) {
			r = rbd_lib.rbd_lock_acquire(img->image, RBD_LOCK_MODE_EXCLUSIVE);
			if (r < 0) {
				log_error("export \"%s\": the image is in use by another client%s%s%s: "
					  "serve it from one place at a time", spec->path,
					  r == -EROFS || r == -EBUSY ? ", which holds its exclusive lock" : " (",
					  r == -EROFS || r == -EBUSY ? "" : strerror(-r),
					  r == -EROFS || r == -EBUSY ? "" : ")");
				goto fail;
			}
			img->locked = true;
		} else {
			log_warn("export \"%s\": the image has no exclusive-lock feature: nothing "
				 "stops another client writing it at the same time", spec->path);
		}
	}
	r = rbd_lib.rbd_get_size(img->image, &features);
	if (r < 0) {
		log_error("export \"%s\": size: %s", spec->path, strerror(-r));
		goto fail;
	}
	atomic_init(&img->size, features);
	img->efd = eventfd(0, EFD_CLOEXEC);
	if (img->efd < 0) {
		log_error("export \"%s\": eventfd: %s", spec->path, strerror(errno));
		goto fail;
	}
	r = rbd_lib.rbd_set_image_notification(img->image, img->efd, EVENT_TYPE_EVENTFD);
	if (r < 0) {
		log_error("export \"%s\": completions by eventfd: %s", spec->path, strerror(-r));
		goto fail;
	}
	if (!snap) {
		r = rbd_lib.rbd_update_watch(img->image, &img->watch_handle, rbd_header_changed, img);
		if (r < 0)
			log_warn("export \"%s\": no header watch (%s): a resize is not followed",
				 spec->path, strerror(-r));
		img->watching = r >= 0;
	}
	img->backing = backing_get_named(key);
	if (!img->backing) {
		log_error("export \"%s\": out of memory", spec->path);
		goto fail;
	}
	return img;

fail:
	rbd_image_destroy(img);
	return NULL;
}

static bool rbd_be_claims(const struct export_spec *spec, const struct stat *st)
{
	(void)st;
	return !strncmp(spec->path, "rbd:", 4);
}

static int rbd_be_open(struct export *e, const struct export_spec *spec, struct stat *st)
{
	struct rbd_image *img;
	char key[2048];

	(void)st;
	if (spec->overlay || spec->bitmap_file || spec->bitmap_granularity) {
		log_error("export \"%s\": %s on an rbd: image is not supported (RBD has its own "
			  "snapshots and clones; its checkpoints are snapshots)", spec->path,
			  spec->overlay ? "overlay" : spec->bitmap_file ? "bitmap-file" :
			  "bitmap-granularity");
		return -1;
	}
	if (rbd_lib_load() < 0) {
		log_error("export \"%s\": %s", spec->path, lib_why);
		return -1;
	}
	snprintf(key, sizeof(key), "%s%s%s%s%s%s", spec->path, spec->ceph_conf ? " conf=" : "",
		 spec->ceph_conf ? spec->ceph_conf : "", spec->ceph_id ? " id=" : "",
		 spec->ceph_id ? spec->ceph_id : "", spec->readonly ? " ro" : "");
	/* Opened already (a reload, a resize's reopen, another export): shared. */
	pthread_mutex_lock(&rbd_open_lock);
	pthread_mutex_lock(&registry_lock);
	for (img = registry; img && strcmp(img->key, key); img = img->next)
		;
	if (img)
		img->refs++;
	pthread_mutex_unlock(&registry_lock);
	if (!img) {
		img = rbd_image_open(spec, key);
		if (!img) {
			pthread_mutex_unlock(&rbd_open_lock);
			return -1;
		}
		img->refs = 1;
		pthread_mutex_lock(&registry_lock);
		img->next = registry;
		registry = img;
		pthread_mutex_unlock(&registry_lock);
	}
	pthread_mutex_unlock(&rbd_open_lock);
	e->ceph_conf = spec->ceph_conf ? strdup(spec->ceph_conf) : NULL;
	e->ceph_id = spec->ceph_id ? strdup(spec->ceph_id) : NULL;
	/* Bitmaps are names here: each checkpoint of one is a snapshot (see below). */
	e->bitmaps_src = spec->bitmaps ? strdup(spec->bitmaps) : NULL;
	if ((spec->ceph_conf && !e->ceph_conf) || (spec->ceph_id && !e->ceph_id) ||
	    (spec->bitmaps && !e->bitmaps_src)) {
		log_error("export \"%s\": out of memory", spec->path);
		free(e->ceph_conf);
		free(e->ceph_id);
		free(e->bitmaps_src);
		e->ceph_conf = e->ceph_id = e->bitmaps_src = NULL;
		rbd_image_put(img);
		return -1;
	}
	e->priv = img;
	e->readonly = img->snap;
	e->size_bytes = atomic_load(&img->size);
	e->align_bytes = 1;       /* any offset and length, as RADOS takes them */
	e->direct_end = e->size_bytes;
	e->backing = img->backing;
	e->locks = img->backing->locks;
	e->zeroes_fast = true;
	e->rotational = false;
	atomic_init(&e->may_have_holes, false); /* reads do not ask for holes: a query costs */
	return 0;
}

static void rbd_be_close(struct export *e)
{
	rbd_image_put(e->priv);
	e->priv = NULL;
}

static bool rbd_be_changed(const struct export *e, char *why, size_t len)
{
	const struct rbd_image *img = e->priv;
	uint64_t size = atomic_load(&img->size);

	if (size == e->size_bytes)
		return false;
	if (why)
		snprintf(why, len, "size %" PRIu64 " -> %" PRIu64 " bytes", e->size_bytes, size);
	return true;
}

static int rbd_be_sync(const struct export *e, const char **what)
{
	const struct rbd_image *img = e->priv;

	*what = img->name;
	return rbd_lib.rbd_flush(img->image);
}

/* Before a hand-over's exec: all written, and the lock free for the next process. */
static int rbd_be_persist(const struct export *e)
{
	struct rbd_image *img = e->priv;
	int r = rbd_lib.rbd_flush(img->image);

	if (img->locked) {
		int rl = rbd_lib.rbd_lock_release(img->image);

		if (rl < 0)
			log_warn("%s: releasing its lock for the next process: %s", img->name,
				 strerror(-rl));
		/* If the exec fails, librbd takes the lock again as writes come. */
		img->locked = false;
	}
	return r;
}

/* ---- completions: the image's eventfd, read in the ring of one worker ---- */
static void rbd_events_done(struct op *op, int res);

static void rbd_arm(struct rbd_image *img, struct worker *w)
{
	img->reader = w;
	io_uring_prep_read(worker_sqe(w, &img->read_op), img->efd, &img->efd_count,
			   sizeof(img->efd_count), 0);
}

static void rbd_events_done(struct op *op, int res)
{
	struct rbd_image *img = container_of(op, struct rbd_image, read_op);
	struct worker *w = img->reader;
	rbd_completion_t comps[RBD_POLL_BATCH];
	struct rbd_call *done = NULL, **tail = &done;
	uint64_t n = 0, s;
	int k, i;

	(void)res; /* whatever the read says, the image is asked what finished */
	while ((k = rbd_lib.rbd_poll_io_events(img->image, comps, RBD_POLL_BATCH)) > 0) {
		for (i = 0; i < k; i++) {
			struct rbd_call *call = rbd_lib.rbd_aio_get_arg(comps[i]);
			ssize_t r = rbd_lib.rbd_aio_get_return_value(comps[i]);

			rbd_lib.rbd_aio_release(comps[i]);
			if (r < 0 || call->read)
				call->len = (int)r;
			call->next = NULL;
			*tail = call;
			tail = &call->next;
			n++;
		}
		if (k < RBD_POLL_BATCH)
			break;
	}
	/* Done with img before the posts: a post may end the export's last request. */
	s = atomic_fetch_sub(&img->state, n * RBD_CALL) - n * RBD_CALL;
	for (;;) {
		if (s >> 1) {
			rbd_arm(img, w);
			break;
		}
		if (atomic_compare_exchange_weak(&img->state, &s, 0))
			break;
	}
	while (done) {
		struct rbd_call *call = done;

		done = call->next;
		worker_post(call->w, call->op, call->len);
		free(call);
	}
}

/* The rbd callback runs on a librbd thread: the eventfd tells the ring instead. */
static void rbd_call_finished(rbd_completion_t c, void *arg)
{
	(void)c;
	(void)arg;
}

/*
 * A call to queue: counted in flight (and a read armed if none is) before
 * librbd may finish it. NULL (io->op posted with -ENOMEM) if out of memory.
 */
static struct rbd_call *rbd_call_new(struct backend_io *io, rbd_completion_t *c, int len,
				     bool read)
{
	struct rbd_image *img = io->e->priv;
	struct rbd_call *call = malloc(sizeof(*call));
	uint64_t s;

	if (!call || rbd_lib.rbd_aio_create_completion(call, rbd_call_finished, c) < 0) {
		free(call);
		worker_post(io->w, io->op, -ENOMEM);
		return NULL;
	}
	call->w = io->w;
	call->op = io->op;
	call->img = img;
	call->len = len;
	call->read = read;
	s = atomic_fetch_add(&img->state, RBD_CALL);
	if (!(s & RBD_ARMED) && !(atomic_fetch_or(&img->state, RBD_ARMED) & RBD_ARMED))
		rbd_arm(img, io->w);
	return call;
}

/* librbd refused the call at once: it fails, and the read is told to look. */
static void rbd_call_refused(struct backend_io *io, struct rbd_call *call, rbd_completion_t c,
			     int r)
{
	struct rbd_image *img = call->img;

	rbd_lib.rbd_aio_release(c);
	free(call);
	atomic_fetch_sub(&img->state, RBD_CALL);
	/* The armed read (maybe armed for this call alone) ends and sees nothing left. */
	if (eventfd_write(img->efd, 1) < 0)
		log_warn("%s: eventfd: %s", img->name, strerror(errno));
	worker_post(io->w, io->op, r);
}

static int rbd_iov_len(const struct backend_io *io)
{
	size_t len = 0;
	unsigned i;

	for (i = 0; i < io->niov; i++)
		len += io->iov[i].iov_len;
	return (int)len;
}

enum rbd_call_kind { RBD_READ, RBD_WRITE, RBD_FLUSH, RBD_TRIM, RBD_ZERO };

/* Queues io as librbd's async call of that kind. */
static void rbd_issue(struct backend_io *io, enum rbd_call_kind kind)
{
	const struct rbd_image *img = io->e->priv;
	bool data = kind == RBD_READ || kind == RBD_WRITE;
	rbd_completion_t c;
	struct rbd_call *call = rbd_call_new(io, &c, data ? rbd_iov_len(io) : 0,
					     kind == RBD_READ);
	int r;

	if (!call)
		return;
	switch (kind) {
	case RBD_READ:
		r = rbd_lib.rbd_aio_readv(img->image, io->iov, (int)io->niov, io->off, c);
		break;
	case RBD_WRITE:
		r = rbd_lib.rbd_aio_writev(img->image, io->iov, (int)io->niov, io->off, c);
		break;
	case RBD_FLUSH:
		r = rbd_lib.rbd_aio_flush(img->image, c);
		break;
	case RBD_TRIM:
		r = rbd_lib.rbd_aio_discard(img->image, io->off, io->len, c);
		break;
	default:
		r = rbd_lib.rbd_aio_write_zeroes(img->image, io->off, io->len, c, 0, 0);
		break;
	}
	if (r < 0)
		rbd_call_refused(io, call, c, r);
}

static void rbd_be_read(struct backend_io *io)
{
	rbd_issue(io, RBD_READ);
}

static void rbd_be_write(struct backend_io *io)
{
	rbd_issue(io, RBD_WRITE);
}

static void rbd_be_flush_io(struct backend_io *io)
{
	rbd_issue(io, RBD_FLUSH);
}

static void rbd_be_trim(struct backend_io *io)
{
	rbd_issue(io, RBD_TRIM);
}

/*
 * WRITE_ZEROES: librbd's write_zeroes deallocates what it can. With
 * NO_HOLE (mode ZERO_RANGE) the caller writes zeroes instead.
 */
static void rbd_be_zero(struct backend_io *io)
{
	if (!(io->mode & FALLOC_FL_PUNCH_HOLE))
		worker_post(io->w, io->op, -EOPNOTSUPP);
	else
		rbd_issue(io, RBD_ZERO);
}

/* ---- base:allocation from the image's allocation ---- */
struct rbd_extents {
	uint64_t pos, end;
	struct proto_extent *ext;
	size_t n, max;
};

static void rbd_extent_add(struct rbd_extents *x, uint64_t upto, uint32_t flags)
{
	if (upto <= x->pos || x->n >= x->max)
		return;
	if (x->n && x->ext[x->n - 1].flags == flags)
		x->ext[x->n - 1].len_bytes += upto - x->pos;
	else
		x->ext[x->n++] = (struct proto_extent){ .len_bytes = upto - x->pos, .flags = flags };
	x->pos = upto;
}

/* rbd_diff_iterate2's callback: [off, off + len) holds data (exists) or not. */
static int rbd_extent_seen(uint64_t off, size_t len, int exists, void *arg)
{
	struct rbd_extents *x = arg;
	uint64_t end = off + len < x->end ? off + len : x->end;

	if (off < x->pos)
		off = x->pos;
	rbd_extent_add(x, off, NBD_STATE_HOLE | NBD_STATE_ZERO);
	rbd_extent_add(x, end, exists ? 0 : NBD_STATE_HOLE | NBD_STATE_ZERO);
	/* Full: stop the walk (its return is ignored below). */
	return x->n >= x->max ? -ECANCELED : 0;
}

static size_t rbd_be_extents(const struct export *e, uint64_t off, uint64_t len, bool one,
			  struct proto_extent *ext, size_t max)
{
	const struct rbd_image *img = e->priv;
	struct rbd_extents x = { .pos = off, .end = off + len, .ext = ext, .max = one ? 1 : max };
	int r;

	r = rbd_lib.rbd_diff_iterate2(img->image, NULL, off, len, 1, 0, rbd_extent_seen, &x);
	if (r < 0 && r != -ECANCELED) {
		/* Not known: all of it data (never a hole that is not one). */
		ext[0] = (struct proto_extent){ .len_bytes = len, .flags = 0 };
		return 1;
	}
	rbd_extent_add(&x, x.end, NBD_STATE_HOLE | NBD_STATE_ZERO);
	return x.n;
}

const struct backend_ops backend_rbd = {
	.kind = "rbd",
	.claims = rbd_be_claims,
	.open = rbd_be_open,
	.close = rbd_be_close,
	.changed = rbd_be_changed,
	.sync = rbd_be_sync,
	.persist = rbd_be_persist,
	.read = rbd_be_read,
	.write = rbd_be_write,
	.flush = rbd_be_flush_io,
	.trim = rbd_be_trim,
	.zero = rbd_be_zero,
	.fua_by_flush = true,
	.writes_cached = true,
	.no_poll = true,
	.extents = rbd_be_extents,
	.checkpoint = rbd_be_checkpoint,
	.checkpoint_remove = rbd_be_checkpoint_remove,
	.checkpoints = rbd_be_checkpoints,
	.checkpoint_open = rbd_be_checkpoint_open,
	.dirty_extents = rbd_be_dirty_extents,
};
