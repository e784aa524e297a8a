// SPDX-License-Identifier: BSD-3-Clause
/*
 * One lock manager per file across reloads: an export is removed by SIGHUP
 * while four clients stay connected to it, then added back by a second
 * SIGHUP; four new clients connect to the new one. All eight then write
 * interleaved 100-byte pieces that share sectors: no piece may lose its
 * last write. With a lock manager per export table (as before the backing
 * file registry) the old and new connections do not see each other's locks
 * and read-modify-writes overwrite each other.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define CONNS 8
#define PIECES 400
#define ROUNDS 4
#define BASE 4097

static struct daemon d;
static struct nbd_handle *h[CONNS];

static void *writer(void *arg)
{
	unsigned k = (unsigned)(uintptr_t)arg;

	harness_write_pieces(h[k], k, CONNS, PIECES, ROUNDS, BASE);
	return NULL;
}

static void write_config(const char *cfg, const char *shared, bool with_export)
{
	FILE *f = fopen(cfg, "w");

	CHECK(f, "config");
	if (with_export)
		fprintf(f, "[export shared]\npath = %s\n", shared);
	fclose(f);
}

/* SIGHUP, then waits for the daemon's word that the reload is done. */
static void reload(unsigned nth)
{
	char want[64];
	double end = harness_now() + 10;

	snprintf(want, sizeof(want), "reload: %u export", nth == 1 ? 1u : 2u);
	CHECK(kill(d.pid, SIGHUP) == 0, "SIGHUP");
	while (!harness_log_has(&d, want) && harness_now() < end)
		usleep(20 * 1000);
	CHECK(harness_log_has(&d, want), "reload %u not logged", nth);
}

int main(void)
{
	char cfg[2200], shared[2200];
	pthread_t t[CONNS];
	struct nbd_handle *check;
	unsigned k;
	FILE *f;

	harness_init("reload_shared", 120);
	harness_image(&d, 1 << 20); /* the positional export: another file */
	snprintf(shared, sizeof(shared), "%s/shared.img", d.dir);
	snprintf(cfg, sizeof(cfg), "%s/uringnbd.conf", d.dir);
	f = fopen(shared, "w");
	CHECK(f && ftruncate(fileno(f), 8 << 20) == 0, "shared image");
	fclose(f);
	write_config(cfg, shared, true);
	harness_start(&d, "-t", "2", "-c", cfg, NULL);

	for (k = 0; k < CONNS / 2; k++)
		h[k] = harness_connect_export(&d, "shared");
	write_config(cfg, shared, false);
	reload(1); /* removed: its clients carry on */
	write_config(cfg, shared, true);
	reload(2); /* added back: a new export of the same file */
	for (; k < CONNS; k++)
		h[k] = harness_connect_export(&d, "shared");

	for (k = 0; k < CONNS; k++)
		pthread_create(&t[k], NULL, writer, (void *)(uintptr_t)k);
	for (k = 0; k < CONNS; k++)
		pthread_join(t[k], NULL);
	check = harness_connect_export(&d, "shared");
	harness_check_pieces(check, CONNS, PIECES, ROUNDS, BASE);
	printf("%u writers across a remove and re-add of the export: no piece lost\n", CONNS);
	nbd_close(check);
	for (k = 0; k < CONNS; k++)
		nbd_close(h[k]);
	harness_stop(&d);
	return 0;
}
