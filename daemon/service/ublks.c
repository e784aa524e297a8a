// SPDX-License-Identifier: BSD-3-Clause
/*
 * The exports served as local block devices: which export has which
 * /dev/ublkbN. The devices themselves are conn/ublk.c's; this is the table
 * the command line (--ublk), the configuration file (ublk = yes) and the
 * control socket (ublk-add, ublk-remove) change. Calls block while the
 * kernel starts or stops a device, so they run at start-up, at exit, or on
 * a control job thread, under ublk_lock.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service.h"

static ssize_t ublk_index(struct server *s, const char *name)
{
	for (size_t i = 0; i < s->nublks; i++)
		if (!strcmp(s->ublks[i].name, name))
			return (ssize_t)i;
	return -1;
}

int server_ublk_add(struct server *s, const char *name, char *msg, size_t len)
{
	struct server_ublk *grown;
	struct export *e;
	struct ublk_dev *d;
	char *copy;
	int id;

	pthread_mutex_lock(&s->ublk_lock);
	if (ublk_index(s, name) >= 0) {
		snprintf(msg, len, "export \"%s\" is /dev/ublkb%d already", name,
			 ublk_dev_id(s->ublks[ublk_index(s, name)].dev));
		pthread_mutex_unlock(&s->ublk_lock);
		return -EEXIST;
	}
	e = server_find_export(s, name);
	if (!e) {
		snprintf(msg, len, "no export \"%s\"", name);
		pthread_mutex_unlock(&s->ublk_lock);
		return -ENOENT;
	}
	copy = strdup(name);
	grown = realloc(s->ublks, (s->nublks + 1) * sizeof(*s->ublks));
	if (!copy || !grown) {
		free(copy);
		if (grown)
			s->ublks = grown;
		export_put(e);
		snprintf(msg, len, "out of memory");
		pthread_mutex_unlock(&s->ublk_lock);
		return -ENOMEM;
	}
	s->ublks = grown;
	d = ublk_attach(e, s->workers, s->nworkers, msg, len);
	export_put(e);
	if (!d) {
		free(copy);
		pthread_mutex_unlock(&s->ublk_lock);
		return -EIO;
	}
	s->ublks[s->nublks].name = copy;
	s->ublks[s->nublks].dev = d;
	s->nublks++;
	id = ublk_dev_id(d);
	log_info("export \"%s\": /dev/ublkb%d (%u queue%s)%s", name, id, ublk_dev_queues(d),
		 ublk_dev_queues(d) == 1 ? "" : "s",
		 ublk_dev_recovered(d) ? ", taken over from the previous process" : "");
	pthread_mutex_unlock(&s->ublk_lock);
	return id;
}

int server_ublk_remove(struct server *s, const char *name, bool force, char *msg, size_t len)
{
	ssize_t i;
	int ret;

	pthread_mutex_lock(&s->ublk_lock);
	i = ublk_index(s, name);
	if (i < 0) {
		snprintf(msg, len, "export \"%s\" has no ublk device", name);
		pthread_mutex_unlock(&s->ublk_lock);
		return -ENOENT;
	}
	ret = ublk_detach(s->ublks[i].dev, force, msg, len);
	if (ret == 0) {
		free(s->ublks[i].name);
		s->ublks[i] = s->ublks[--s->nublks];
	}
	pthread_mutex_unlock(&s->ublk_lock);
	return ret;
}

int server_ublk_of(struct server *s, const char *name)
{
	ssize_t i;
	int id = -1;

	pthread_mutex_lock(&s->ublk_lock);
	i = ublk_index(s, name);
	if (i >= 0)
		id = ublk_dev_id(s->ublks[i].dev);
	pthread_mutex_unlock(&s->ublk_lock);
	return id;
}

void server_ublk_close_all(struct server *s, bool keep)
{
	char msg[256];

	pthread_mutex_lock(&s->ublk_lock);
	while (s->nublks) {
		struct server_ublk *u = &s->ublks[--s->nublks];

		int ret = keep ? -EBUSY : ublk_detach(u->dev, !ublk_dev_recoverable(u->dev), msg,
						      sizeof(msg));

		if (ret == -EBUSY) {
			/* A restart; or mounted: kept rather than pulled from under its filesystem. */
			if (keep)
				log_info("export \"%s\": /dev/ublkb%d left to the next process",
					 u->name, ublk_dev_id(u->dev));
			else
				log_warn("export \"%s\": /dev/ublkb%d is in use (mounted): left for the "
					 "next start, which takes it over; its I/O waits until then",
					 u->name, ublk_dev_id(u->dev));
			ublk_release(u->dev);
		} else if (ret < 0) {
			log_error("export \"%s\": %s", u->name, msg);
		}
		free(u->name);
	}
	free(s->ublks);
	s->ublks = NULL;
	pthread_mutex_unlock(&s->ublk_lock);
}
