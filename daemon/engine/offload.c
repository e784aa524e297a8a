// SPDX-License-Identifier: BSD-3-Clause
/*
 * Offload: a few threads that run blocking calls the ring cannot do (the
 * SEEK_DATA/SEEK_HOLE walk of a BLOCK_STATUS), so that a slow backing store
 * stalls only the request that asked, never a worker's loop. A job runs
 * its function on an offload thread and then posts its op back to the
 * worker that queued it; the worker layer knows nothing of what it did.
 *
 * The threads start with the first job and live until exit; jobs are taken
 * oldest first.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>

#include "engine.h"

#define OFFLOAD_THREADS 2

static pthread_mutex_t offload_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t offload_cond = PTHREAD_COND_INITIALIZER;
static struct offload_job *head, *tail;  /* queued, oldest first */
static bool started;

static void *offload_main(void *arg)
{
	(void)arg;
	for (;;) {
		struct offload_job *j;

		pthread_mutex_lock(&offload_lock);
		while (!head)
			pthread_cond_wait(&offload_cond, &offload_lock);
		j = head;
		head = j->next;
		if (!head)
			tail = NULL;
		pthread_mutex_unlock(&offload_lock);
		j->next = NULL;
		j->fn(j);
		worker_post(j->w, j->op, j->res);
	}
	return NULL;
}

/* Starts the threads once; false if none could be started. */
static bool offload_start(void)
{
	pthread_attr_t attr;
	unsigned i, n = 0;

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	for (i = 0; i < OFFLOAD_THREADS; i++) {
		pthread_t t;

		if (pthread_create(&t, &attr, offload_main, NULL) == 0)
			n++;
	}
	pthread_attr_destroy(&attr);
	return n > 0;
}

void offload_queue(struct offload_job *j)
{
	pthread_mutex_lock(&offload_lock);
	if (!started)
		started = offload_start();
	if (!started) {
		/* No thread to be had: do it here, still finishing through the loop. */
		pthread_mutex_unlock(&offload_lock);
		j->fn(j);
		worker_post(j->w, j->op, j->res);
		return;
	}
	j->next = NULL;
	if (tail)
		tail->next = j;
	else
		head = j;
	tail = j;
	pthread_cond_signal(&offload_cond);
	pthread_mutex_unlock(&offload_lock);
}
