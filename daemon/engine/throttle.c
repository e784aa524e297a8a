// SPDX-License-Identifier: BSD-3-Clause
/*
 * Leaky-bucket rate limits (throttle.h says what they promise).
 */
#include <stdio.h>
#include <string.h>

#include "throttle.h"

#define NS_PER_S 1e9
#define THROTTLE_SLICE 10.0 /* a bucket with no burst holds 1/10 s at its rate */

static const char *const kind_names[THROTTLE_KINDS] = {
	"iops-total", "iops-read", "iops-write", "bps-total", "bps-read", "bps-write",
};

static const char *const key_names[THROTTLE_KEYS] = {
	"iops-total", "iops-total-max", "iops-total-max-length",
	"iops-read", "iops-read-max", "iops-read-max-length",
	"iops-write", "iops-write-max", "iops-write-max-length",
	"bps-total", "bps-total-max", "bps-total-max-length",
	"bps-read", "bps-read-max", "bps-read-max-length",
	"bps-write", "bps-write-max", "bps-write-max-length",
	"iops-size",
};

const char *throttle_key_name(unsigned key)
{
	return key < THROTTLE_KEYS ? key_names[key] : NULL;
}

int throttle_key_find(const char *name)
{
	unsigned k;

	for (k = 0; k < THROTTLE_KEYS; k++)
		if (!strcmp(throttle_key_name(k), name))
			return (int)k;
	return -1;
}

uint64_t throttle_key_get(const struct throttle_limits *lim, unsigned key)
{
	if (key == THROTTLE_KEYS - 1)
		return lim->iops_size;
	switch (key % 3) {
	case 0: return lim->avg[key / 3];
	case 1: return lim->max[key / 3];
	default: return lim->max_length_s[key / 3];
	}
}

void throttle_key_set(struct throttle_limits *lim, unsigned key, uint64_t value)
{
	if (key == THROTTLE_KEYS - 1) {
		lim->iops_size = value;
		return;
	}
	switch (key % 3) {
	case 0: lim->avg[key / 3] = value; break;
	case 1: lim->max[key / 3] = value; break;
	default: lim->max_length_s[key / 3] = value; break;
	}
}

bool throttle_limits_any(const struct throttle_limits *lim)
{
	unsigned k;

	for (k = 0; k < THROTTLE_KINDS; k++)
		if (lim->avg[k])
			return true;
	return false;
}

int throttle_limits_check(const struct throttle_limits *lim, char *err, size_t errlen)
{
	unsigned k;

	for (k = 0; k < THROTTLE_KINDS; k++) {
		if (lim->max[k] && !lim->avg[k]) {
			snprintf(err, errlen, "%s-max needs %s (the rate a burst rises above)",
				 kind_names[k], kind_names[k]);
			return -1;
		}
		if (lim->max[k] && lim->max[k] <= lim->avg[k]) {
			snprintf(err, errlen, "%s-max must be above %s", kind_names[k], kind_names[k]);
			return -1;
		}
		if (lim->max_length_s[k] && !lim->max[k]) {
			snprintf(err, errlen, "%s-max-length needs %s-max", kind_names[k],
				 kind_names[k]);
			return -1;
		}
	}
	if ((lim->avg[THROTTLE_IOPS_TOTAL] && (lim->avg[THROTTLE_IOPS_READ] ||
					       lim->avg[THROTTLE_IOPS_WRITE])) ||
	    (lim->avg[THROTTLE_BPS_TOTAL] && (lim->avg[THROTTLE_BPS_READ] ||
					      lim->avg[THROTTLE_BPS_WRITE]))) {
		/* qemu refuses the same: which of the two would a reader expect to hold? */
		snprintf(err, errlen, "a total limit cannot be set with a read or write one of "
			 "the same unit");
		return -1;
	}
	return 0;
}

void throttle_init(struct throttle *t)
{
	memset(t, 0, sizeof(*t));
	pthread_mutex_init(&t->lock, NULL);
}

void throttle_release(struct throttle *t)
{
	pthread_mutex_destroy(&t->lock);
}

/* What kind k's bucket holds before a request waits (see throttle.h). */
static double bucket_size(const struct throttle_limits *lim, unsigned k)
{
	double avg = (double)lim->avg[k], max = (double)lim->max[k];

	if (!lim->max[k])
		return avg / THROTTLE_SLICE;
	return (max - avg) * (double)(lim->max_length_s[k] ? lim->max_length_s[k] : 1);
}

/*
 * A level under a bucket of old size, for one of new size: the part
 * within the bucket keeps its share of it (a client that used a third of
 * its allowance still has used a third), what is owed beyond it stays.
 */
static double rescale(double level, double old_size, double new_size)
{
	double within = level < old_size ? level : old_size;

	if (old_size <= 0)
		return level;
	return within * new_size / old_size + (level - within);
}

void throttle_set(struct throttle *t, const struct throttle_limits *lim)
{
	unsigned k;

	pthread_mutex_lock(&t->lock);
	for (k = 0; k < THROTTLE_KINDS; k++) {
		if (!lim->avg[k])
			t->level[k] = 0;
		else if (t->lim.avg[k])
			t->level[k] = rescale(t->level[k], bucket_size(&t->lim, k),
					      bucket_size(lim, k));
		if (!lim->max[k])
			t->burst[k] = 0;
		else if (t->lim.max[k])
			t->burst[k] = rescale(t->burst[k], (double)t->lim.max[k] / THROTTLE_SLICE,
					      (double)lim->max[k] / THROTTLE_SLICE);
	}
	t->lim = *lim;
	atomic_store(&t->on, throttle_limits_any(lim));
	atomic_fetch_add(&t->gen, 1);
	pthread_mutex_unlock(&t->lock);
}

void throttle_get(struct throttle *t, struct throttle_limits *lim)
{
	pthread_mutex_lock(&t->lock);
	*lim = t->lim;
	pthread_mutex_unlock(&t->lock);
}

/* Whether kind k applies to a read or a write. */
static bool kind_applies(unsigned k, bool write)
{
	switch (k) {
	case THROTTLE_IOPS_READ: case THROTTLE_BPS_READ: return !write;
	case THROTTLE_IOPS_WRITE: case THROTTLE_BPS_WRITE: return write;
	default: return true;
	}
}

uint64_t throttle_charge(struct throttle *t, bool write, uint64_t bytes, uint64_t now_ns)
{
	double wait_s = 0, dt, ops;
	unsigned k;

	if (!throttle_on(t))
		return 0;
	pthread_mutex_lock(&t->lock);
	/* Workers' clocks are one clock read at different moments: never run backwards. */
	dt = now_ns > t->last_ns ? (double)(now_ns - t->last_ns) / NS_PER_S : 0;
	if (now_ns > t->last_ns)
		t->last_ns = now_ns;
	ops = t->lim.iops_size && bytes > t->lim.iops_size ?
	      (double)bytes / (double)t->lim.iops_size : 1.0;
	for (k = 0; k < THROTTLE_KINDS; k++) {
		double avg = (double)t->lim.avg[k], max = (double)t->lim.max[k], size, w;
		double cost = k < THROTTLE_BPS_TOTAL ? ops : (double)bytes;

		if (!t->lim.avg[k])
			continue;
		t->level[k] -= avg * dt;
		if (t->level[k] < 0)
			t->level[k] = 0;
		if (max) {
			t->burst[k] -= max * dt;
			if (t->burst[k] < 0)
				t->burst[k] = 0;
		}
		if (!kind_applies(k, write))
			continue;
		size = bucket_size(&t->lim, k);
		if (t->level[k] > size) {
			w = (t->level[k] - size) / avg;
			if (w > wait_s)
				wait_s = w;
		}
		t->level[k] += cost;
		if (max) {
			size = max / THROTTLE_SLICE;
			if (t->burst[k] > size) {
				w = (t->burst[k] - size) / max;
				if (w > wait_s)
					wait_s = w;
			}
			t->burst[k] += cost;
		}
	}
	pthread_mutex_unlock(&t->lock);
	return (uint64_t)(wait_s * NS_PER_S);
}
