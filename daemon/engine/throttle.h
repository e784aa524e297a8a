/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * throttle: rate limits in qemu's terms (iops-total, bps-read, their
 * bursts, iops-size), as leaky buckets a request charges on arrival.
 *
 * Each limited kind (iops or bps; total, read or write) is a bucket whose
 * level drains at the average rate. A request may run once every bucket it
 * charges is at or below its size; it is charged at once, before it runs,
 * so the next arrival sees it and waits behind it: arrivals run in the
 * order they came, and a caller that sends one request at a time per
 * client gets round-robin among clients (conn/rx.c stops a client's
 * intake while its request waits).
 *
 * Bucket sizes: with no burst, a tenth of a second at the average rate.
 * With a burst (KIND-max, KIND-max-length) the bucket holds what running at
 * the burst rate for max-length seconds adds over the average, so a client
 * idle long enough runs at the burst rate for exactly that long (qemu's
 * bucket is max * length, which lets a burst run somewhat longer); a second
 * bucket of a tenth of a second at the burst rate caps the rate itself.
 *
 * Pure code and one mutex: no ring, no clock of its own (callers pass the
 * CLOCK_MONOTONIC time their worker read). Any thread may charge a
 * throttle; throttle_set may run on any thread while others charge.
 */
#ifndef URINGNBD_THROTTLE_H
#define URINGNBD_THROTTLE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

enum throttle_kind {
	THROTTLE_IOPS_TOTAL,
	THROTTLE_IOPS_READ,
	THROTTLE_IOPS_WRITE,
	THROTTLE_BPS_TOTAL,
	THROTTLE_BPS_READ,
	THROTTLE_BPS_WRITE,
	THROTTLE_KINDS
};

struct throttle_limits {
	uint64_t avg[THROTTLE_KINDS];        /* ops or bytes per second; 0: no limit */
	uint64_t max[THROTTLE_KINDS];        /* burst rate (> avg); 0: no burst */
	uint64_t max_length_s[THROTTLE_KINDS]; /* how long a burst lasts; 0: 1 s */
	uint64_t iops_size;                  /* a request of n * this counts as n ops; 0: one */
};

/*
 * The keys, in order: for each kind "KIND", "KIND-max", "KIND-max-length",
 * then "iops-size"; THROTTLE_KEYS of them.
 */
#define THROTTLE_KEYS (THROTTLE_KINDS * 3 + 1)
const char *throttle_key_name(unsigned key);
/* The key's index, or -1 if name is none of them. */
int throttle_key_find(const char *name);
uint64_t throttle_key_get(const struct throttle_limits *lim, unsigned key);
void throttle_key_set(struct throttle_limits *lim, unsigned key, uint64_t value);
/* Whether any limit is set. */
bool throttle_limits_any(const struct throttle_limits *lim);
/* 0, or -1 with err saying which key is inconsistent (a burst without its rate...). */
int throttle_limits_check(const struct throttle_limits *lim, char *err, size_t errlen);

struct throttle {
	pthread_mutex_t lock;
	atomic_bool on;                 /* any limit set: charging can skip the lock otherwise */
	atomic_uint gen;                /* bumped by every throttle_set */
	struct throttle_limits lim;     /* under lock, as the rest below */
	uint64_t last_ns;               /* when the levels were last drained */
	double level[THROTTLE_KINDS];   /* owed at the average rate */
	double burst[THROTTLE_KINDS];   /* owed at the burst rate */
	/* Counters, any thread (the callers keep them, see throttle_wait_*). */
	atomic_uint_fast64_t waiting;   /* requests waiting now */
	atomic_uint_fast64_t delayed;   /* requests that had to wait */
	atomic_uint_fast64_t delayed_ns; /* the time they waited, in total */
};

void throttle_init(struct throttle *t);
void throttle_release(struct throttle *t);
/* New limits; what is owed stays (a kind no longer limited forgets it). */
void throttle_set(struct throttle *t, const struct throttle_limits *lim);
void throttle_get(struct throttle *t, struct throttle_limits *lim);

static inline bool throttle_on(struct throttle *t)
{
	return t && atomic_load_explicit(&t->on, memory_order_relaxed);
}

/*
 * Charges a request of bytes (a write if write) at now_ns. Returns how
 * long it must wait before it runs, in nanoseconds (0: at once).
 */
uint64_t throttle_charge(struct throttle *t, bool write, uint64_t bytes, uint64_t now_ns);

/* A request starts or stops waiting on t's account (t may be NULL). */
static inline void throttle_wait_begin(struct throttle *t)
{
	if (t)
		atomic_fetch_add_explicit(&t->waiting, 1, memory_order_relaxed);
}

static inline void throttle_wait_end(struct throttle *t, uint64_t waited_ns)
{
	if (!t)
		return;
	atomic_fetch_sub_explicit(&t->waiting, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&t->delayed, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&t->delayed_ns, waited_ns, memory_order_relaxed);
}

#endif
