/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * lock: a range lock manager for one backing file.
 *
 * Requests lock the byte range they touch instead of the whole file, so
 * non-overlapping requests run in parallel and conflicting ones are
 * serialised in arrival order.
 *
 * Model (after the kernel range-lock proposals):
 *  - A range is closed, [first, last] in bytes. A lock is shared (reads) or
 *    exclusive (writes, trims, read-modify-write). Two locks conflict when
 *    their ranges overlap and at least one is exclusive.
 *  - Every held and waiting lock lives in one interval tree, augmented with
 *    the largest `last` of each subtree. Each lock gets a sequence number
 *    at arrival. A new lock counts the locks already in the tree that
 *    conflict with it (all of them arrived earlier); it is granted when
 *    that count is zero. Releasing a lock decrements the count of every
 *    later conflicting lock that overlaps it and grants those that reach
 *    zero.
 *  - So grants are FIFO among conflicting locks: a waiting writer blocks
 *    readers that arrive after it (no writer starvation), and locks on
 *    disjoint ranges never wait for each other.
 *
 * Cost: acquire and release are O(log n + k) expected, for n locks in the
 * tree and k of them overlapping the range (the tree is a treap). No
 * allocation: struct rl_lock is embedded in the caller's object.
 *
 * Threads: every call may come from any thread; the manager has a mutex.
 * Acquire never blocks. A lock not granted at once is granted later by the
 * thread that releases its last blocker: that thread calls the lock's
 * grant callback after dropping the manager's mutex, so the callback may
 * take its own locks, but must not block and must not call back into this
 * manager for the same lock.
 *
 * Ownership: the caller owns each struct rl_lock; between rl_acquire() and
 * rl_release() it belongs to the manager and must not be moved or freed.
 * A waiting lock must be granted before it can be released.
 */
#ifndef URINGNBD_RANGELOCK_H
#define URINGNBD_RANGELOCK_H

#include <stdbool.h>
#include <stdint.h>

struct rl_manager; /* opaque */
struct rl_lock;

/* Runs once when a lock that had to wait is granted. */
typedef void (*rl_grant_fn)(struct rl_lock *lock, void *arg);

struct rl_lock {
	/* Set by rl_acquire(); read-only for the caller. */
	uint64_t first, last;      /* the range, inclusive */
	bool exclusive;
	bool granted;
	/* Private to the manager. */
	uint64_t seq;              /* arrival order */
	uint64_t subtree_last;     /* max `last` in this subtree */
	uint32_t prio;             /* treap priority */
	uint32_t blockers;         /* earlier conflicting locks still in the tree */
	struct rl_lock *left, *right;
	struct rl_lock *next_granted; /* grant list built during release */
	rl_grant_fn grant;
	void *arg;
};

/* Counters since the manager was created. */
struct rl_stats {
	uint64_t acquired;         /* rl_acquire() calls */
	uint64_t waited;           /* of which were not granted at once */
	uint64_t in_tree;          /* locks held or waiting now */
};

struct rl_manager *rl_manager_new(void);
/* The manager must be empty. */
void rl_manager_free(struct rl_manager *m);

/*
 * Asks for [first, last] (first <= last). Returns true if granted now (the
 * callback will not run); false if it waits, in which case grant(lock, arg)
 * runs exactly once, on the thread that releases its last blocker.
 */
bool rl_acquire(struct rl_manager *m, struct rl_lock *lock, uint64_t first, uint64_t last,
		bool exclusive, rl_grant_fn grant, void *arg);

/* Releases a granted lock and grants the waiters it was the last blocker of. */
void rl_release(struct rl_manager *m, struct rl_lock *lock);

void rl_get_stats(struct rl_manager *m, struct rl_stats *out);

#endif
