/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * ops: what operators use: the control socket (control.h has its
 * commands' side, ctlproto.h its wire format) and the metrics endpoint
 * (metrics.h has the figures).
 */
#ifndef URINGNBD_OPS_H
#define URINGNBD_OPS_H

#include "../service/service.h"

/* ---- control.c: the control socket (control.h has its commands' side) ---- */
/* Listens on path (0600; root and this uid) on srv's loop. Returns 0 or -errno (logged). */
int control_start(struct server *srv, const char *path);
/* Stops listening and closes the clients (main thread, the loop still there). */
void control_close(void);
/* After the workers are joined: frees the queries they never answered. */
void control_free(void);

/* ---- http.c: the metrics endpoint (metrics.h has the figures) ---- */
/* Serves /metrics on "ADDR:PORT" or "unix:PATH" from a thread of its own. 0 or -errno (logged). */
int http_start(struct server *srv, const char *spec);
/* Stops it (before the workers go: it reads their counters). */
void http_stop(void);

#endif
