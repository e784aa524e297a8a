// SPDX-License-Identifier: BSD-3-Clause
/*
 * Nothing acknowledged is lost when the daemon is killed: on a direct, an
 * always and an auto export of one image, one client keeps 64 FUA writes in
 * flight and another 64 plain writes with a FLUSH after every 64, each write
 * to a block of its own; the daemon is killed with SIGKILL in the middle.
 * Then every FUA write that was acknowledged, and every plain write
 * acknowledged before an acknowledged FLUSH, must be in the image file.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define BLOCK 4096
#define WRITERS 6                 /* 3 exports x (FUA, plain + flush) */
#define BLOCKS_PER_WRITER 2048
#define SIZE ((uint64_t)WRITERS * BLOCKS_PER_WRITER * BLOCK)

static struct daemon d;
static const char *const exports[] = { "direct", "always", "auto" };

struct writer {
	unsigned k;
	struct nbd_handle *h;
	uint8_t (*buf)[BLOCK];
	bool acked[BLOCKS_PER_WRITER];    /* the write was acknowledged */
	unsigned cover[BLOCKS_PER_WRITER]; /* plain writes: the first FLUSH sent after that */
	bool flush_ok[BLOCKS_PER_WRITER / 64 + 2]; /* FLUSH number g was acknowledged */
	unsigned flushes;
	unsigned issued;
	pthread_mutex_t lock;
};

static struct writer w[WRITERS];
static volatile int killed;

struct done {
	struct writer *wr;
	unsigned n;                     /* the block, or the FLUSH's number */
	bool flush;
};

static int on_done(void *user, int *error)
{
	struct done *dn = user;
	struct writer *wr = dn->wr;

	pthread_mutex_lock(&wr->lock);
	if (!*error) {
		if (dn->flush)
			wr->flush_ok[dn->n] = true;
		else
			wr->acked[dn->n] = true;
	}
	pthread_mutex_unlock(&wr->lock);
	free(dn);
	return 1;
}

/* A FLUSH covers the plain writes acknowledged before it is sent. */
static void send_flush(struct writer *wr)
{
	struct done *fl = calloc(1, sizeof(*fl));
	unsigned i;

	pthread_mutex_lock(&wr->lock);
	fl->wr = wr;
	fl->flush = true;
	fl->n = ++wr->flushes;
	for (i = 0; i < wr->issued; i++)
		if (wr->acked[i] && !wr->cover[i])
			wr->cover[i] = fl->n;
	pthread_mutex_unlock(&wr->lock);
	if (nbd_aio_flush(wr->h, (nbd_completion_callback){ .callback = on_done, .user_data = fl },
			  0) == -1)
		free(fl);
}

static void *run(void *arg)
{
	struct writer *wr = arg;
	bool fua = wr->k % 2 == 0;

	while (!killed && wr->issued < BLOCKS_PER_WRITER) {
		unsigned n = wr->issued;
		struct done *dn = calloc(1, sizeof(*dn));
		uint64_t off = ((uint64_t)wr->k * BLOCKS_PER_WRITER + n) * BLOCK;

		dn->wr = wr;
		dn->n = n;
		harness_fill(wr->buf[n], BLOCK, off + 1);
		pthread_mutex_lock(&wr->lock);
		wr->issued++;
		pthread_mutex_unlock(&wr->lock);
		if (nbd_aio_pwrite(wr->h, wr->buf[n], BLOCK, off,
				   (nbd_completion_callback){ .callback = on_done, .user_data = dn },
				   fua ? LIBNBD_CMD_FLAG_FUA : 0) == -1) {
			free(dn);
			break;
		}
		if (!fua && n % 64 == 63)
			send_flush(wr);
		while (nbd_aio_in_flight(wr->h) >= 64 && !killed)
			if (nbd_poll(wr->h, 100) == -1)
				return NULL;
	}
	while (!killed && nbd_aio_in_flight(wr->h) > 0)
		if (nbd_poll(wr->h, 100) == -1)
			break;
	return NULL;
}

int main(void)
{
	char always[2200], autoe[2200];
	pthread_t t[WRITERS];
	uint8_t *img = harness_alloc(SIZE), want[BLOCK];
	unsigned k, n, fua = 0, flushed = 0;

	harness_init("sigkill_durable", 120);
	harness_image(&d, SIZE);
	snprintf(always, sizeof(always), "always=%s,cache=always", d.img);
	snprintf(autoe, sizeof(autoe), "auto=%s,cache=auto", d.img);
	harness_start(&d, "-t", "2", "-n", "direct", "-e", always, "-e", autoe, NULL);
	for (k = 0; k < WRITERS; k++) {
		w[k].k = k;
		w[k].buf = calloc(BLOCKS_PER_WRITER, BLOCK);
		pthread_mutex_init(&w[k].lock, NULL);
		w[k].h = harness_connect_export(&d, exports[k / 2]);
	}
	for (k = 0; k < WRITERS; k++)
		pthread_create(&t[k], NULL, run, &w[k]);
	usleep(300 * 1000);
	harness_kill(&d);
	killed = 1;
	for (k = 0; k < WRITERS; k++)
		pthread_join(t[k], NULL);

	harness_read_image(&d, img, SIZE, 0);
	for (k = 0; k < WRITERS; k++) {
		pthread_mutex_lock(&w[k].lock);
		for (n = 0; n < BLOCKS_PER_WRITER; n++) {
			uint64_t off = ((uint64_t)k * BLOCKS_PER_WRITER + n) * BLOCK;

			bool is_fua = k % 2 == 0;
			bool durable = w[k].acked[n] &&
				       (is_fua || (w[k].cover[n] && w[k].flush_ok[w[k].cover[n]]));

			if (!durable)
				continue;
			harness_fill(want, BLOCK, off + 1);
			CHECK(memcmp(img + off, want, BLOCK) == 0,
			      "export \"%s\": an acknowledged %s write at %llu is lost", exports[k / 2],
			      is_fua ? "FUA" : "flushed", (unsigned long long)off);
			if (is_fua)
				fua++;
			else
				flushed++;
		}
		pthread_mutex_unlock(&w[k].lock);
	}
	printf("SIGKILL with writes in flight on direct, always and auto exports: %u FUA and %u "
	       "flushed writes acknowledged, all in the image\n", fua, flushed);
	CHECK(fua > 0 && flushed > 0, "too few writes were acknowledged before the kill");
	for (k = 0; k < WRITERS; k++)
		nbd_close(w[k].h);
	return 0;
}
