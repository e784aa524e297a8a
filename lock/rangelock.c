// SPDX-License-Identifier: BSD-3-Clause
/*
 * The range lock manager: an interval tree of every held and waiting lock.
 * See rangelock.h for the model and the guarantees.
 *
 * The tree is a treap ordered by (first, seq) with random priorities (a
 * max-heap), each node augmented with the largest `last` in its subtree, so
 * an overlap query skips every subtree that ends before the range. Nodes
 * are the callers' struct rl_lock; nothing is allocated per lock.
 */
#include <assert.h>
#include <pthread.h>
#include <stdlib.h>

#include "rangelock.h"

struct rl_manager {
	pthread_mutex_t mutex;
	struct rl_lock *root;
	uint64_t seq;          /* last sequence number handed out */
	uint64_t rng;          /* xorshift state for treap priorities */
	struct rl_stats stats;
};

struct rl_manager *rl_manager_new(void)
{
	struct rl_manager *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	pthread_mutex_init(&m->mutex, NULL);
	m->rng = 0x2545f4914f6cdd1dull;
	return m;
}

void rl_manager_free(struct rl_manager *m)
{
	if (!m)
		return;
	assert(!m->root);
	pthread_mutex_destroy(&m->mutex);
	free(m);
}

static uint32_t next_prio(struct rl_manager *m)
{
	m->rng ^= m->rng << 13;
	m->rng ^= m->rng >> 7;
	m->rng ^= m->rng << 17;
	return (uint32_t)(m->rng >> 32);
}

static bool key_less(const struct rl_lock *a, const struct rl_lock *b)
{
	return a->first < b->first || (a->first == b->first && a->seq < b->seq);
}

static bool conflicts(const struct rl_lock *a, const struct rl_lock *b)
{
	return (a->exclusive || b->exclusive) && a->first <= b->last && b->first <= a->last;
}

static void update(struct rl_lock *t)
{
	uint64_t v = t->last;

	if (t->left && t->left->subtree_last > v)
		v = t->left->subtree_last;
	if (t->right && t->right->subtree_last > v)
		v = t->right->subtree_last;
	t->subtree_last = v;
}

static struct rl_lock *rotate_right(struct rl_lock *t)
{
	struct rl_lock *l = t->left;

	t->left = l->right;
	l->right = t;
	update(t);
	update(l);
	return l;
}

static struct rl_lock *rotate_left(struct rl_lock *t)
{
	struct rl_lock *r = t->right;

	t->right = r->left;
	r->left = t;
	update(t);
	update(r);
	return r;
}

static struct rl_lock *tree_insert(struct rl_lock *t, struct rl_lock *n)
{
	if (!t)
		return n;
	if (key_less(n, t)) {
		t->left = tree_insert(t->left, n);
		if (t->left->prio > t->prio)
			return rotate_right(t);
	} else {
		t->right = tree_insert(t->right, n);
		if (t->right->prio > t->prio)
			return rotate_left(t);
	}
	update(t);
	return t;
}

/* Joins two treaps where every key of a is below every key of b. */
static struct rl_lock *tree_merge(struct rl_lock *a, struct rl_lock *b)
{
	if (!a)
		return b;
	if (!b)
		return a;
	if (a->prio > b->prio) {
		a->right = tree_merge(a->right, b);
		update(a);
		return a;
	}
	b->left = tree_merge(a, b->left);
	update(b);
	return b;
}

static struct rl_lock *tree_remove(struct rl_lock *t, struct rl_lock *n)
{
	assert(t);
	if (t == n)
		return tree_merge(t->left, t->right);
	if (key_less(n, t))
		t->left = tree_remove(t->left, n);
	else
		t->right = tree_remove(t->right, n);
	update(t);
	return t;
}

/* Counts the locks in t that conflict with n. */
static uint32_t count_conflicts(const struct rl_lock *t, const struct rl_lock *n)
{
	uint32_t c = 0;

	while (t && t->subtree_last >= n->first) {
		c += count_conflicts(t->left, n);
		if (t->first > n->last)
			break; /* t and everything right of it start after n */
		if (conflicts(t, n))
			c++;
		t = t->right;
	}
	return c;
}

/* Unblocks the later locks in t that conflicted with the released lock r. */
static void unblock(struct rl_lock *t, const struct rl_lock *r, struct rl_lock **granted)
{
	while (t && t->subtree_last >= r->first) {
		unblock(t->left, r, granted);
		if (t->first > r->last)
			break;
		if (t->seq > r->seq && conflicts(t, r)) {
			assert(!t->granted && t->blockers > 0);
			if (--t->blockers == 0) {
				t->granted = true;
				t->next_granted = *granted;
				*granted = t;
			}
		}
		t = t->right;
	}
}

bool rl_acquire(struct rl_manager *m, struct rl_lock *lock, uint64_t first, uint64_t last,
		bool exclusive, rl_grant_fn grant, void *arg)
{
	bool granted;

	assert(first <= last);
	lock->first = first;
	lock->last = last;
	lock->exclusive = exclusive;
	lock->subtree_last = last;
	lock->left = lock->right = NULL;
	lock->next_granted = NULL;
	lock->grant = grant;
	lock->arg = arg;

	pthread_mutex_lock(&m->mutex);
	lock->seq = ++m->seq;
	lock->prio = next_prio(m);
	lock->blockers = count_conflicts(m->root, lock);
	granted = lock->blockers == 0;
	lock->granted = granted;
	m->root = tree_insert(m->root, lock);
	m->stats.acquired++;
	m->stats.in_tree++;
	if (!granted)
		m->stats.waited++;
	pthread_mutex_unlock(&m->mutex);
	return granted;
}

void rl_release(struct rl_manager *m, struct rl_lock *lock)
{
	struct rl_lock *granted = NULL, *next;

	assert(lock->granted);
	pthread_mutex_lock(&m->mutex);
	m->root = tree_remove(m->root, lock);
	unblock(m->root, lock, &granted);
	m->stats.in_tree--;
	pthread_mutex_unlock(&m->mutex);

	/* Outside the mutex: a callback may hand the grant to another thread. */
	for (; granted; granted = next) {
		next = granted->next_granted;
		granted->next_granted = NULL;
		granted->grant(granted, granted->arg);
	}
}

void rl_get_stats(struct rl_manager *m, struct rl_stats *out)
{
	pthread_mutex_lock(&m->mutex);
	*out = m->stats;
	pthread_mutex_unlock(&m->mutex);
}
