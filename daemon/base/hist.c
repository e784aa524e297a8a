// SPDX-License-Identifier: BSD-3-Clause
/*
 * Latency histograms (base.h): fixed buckets, one writer each.
 *
 * hist_observe() is on the request path: a binary search over 61 bounds
 * and two single-writer counter bumps.
 */
#include <stdint.h>

#include "base.h"

/* 10 us * 10^(k/10), k = 0..60, in nanoseconds, rounded. */
const uint64_t hist_bounds_ns[HIST_BUCKETS] = {
	10000, 12589, 15849, 19953, 25119, 31623, 39811, 50119, 63096, 79433, 100000, 125893,
	158489, 199526, 251189, 316228, 398107, 501187, 630957, 794328, 1000000, 1258925, 1584893,
	1995262, 2511886, 3162278, 3981072, 5011872, 6309573, 7943282, 10000000, 12589254,
	15848932, 19952623, 25118864, 31622777, 39810717, 50118723, 63095734, 79432823, 100000000,
	125892541, 158489319, 199526231, 251188643, 316227766, 398107171, 501187234, 630957344,
	794328235, 1000000000, 1258925412, 1584893192, 1995262315, 2511886432, 3162277660,
	3981071706, 5011872336, 6309573445, 7943282347, 10000000000,
};

void hist_observe(struct hist *h, uint64_t ns)
{
	unsigned lo = 0, hi = HIST_BUCKETS;

	/* The first bound >= ns (Prometheus's le), or +Inf. */
	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;

		if (hist_bounds_ns[mid] < ns)
			lo = mid + 1;
		else
			hi = mid;
	}
	stat_bump(&h->n[lo], 1);
	stat_bump(&h->sum_ns, ns);
}

void hist_add(struct hist *dst, const struct hist *src)
{
	unsigned i;

	for (i = 0; i <= HIST_BUCKETS; i++)
		stat_bump(&dst->n[i], atomic_load_explicit(&src->n[i], memory_order_relaxed));
	stat_bump(&dst->sum_ns, atomic_load_explicit(&src->sum_ns, memory_order_relaxed));
}

uint64_t hist_count(const struct hist *h)
{
	uint64_t n = 0;
	unsigned i;

	for (i = 0; i <= HIST_BUCKETS; i++)
		n += atomic_load_explicit(&h->n[i], memory_order_relaxed);
	return n;
}

double hist_quantile(const struct hist *h, double q)
{
	uint64_t total = hist_count(h), seen = 0;
	double rank = q * (double)total;
	unsigned i;

	if (!total)
		return 0;
	for (i = 0; i <= HIST_BUCKETS; i++) {
		uint64_t n = atomic_load_explicit(&h->n[i], memory_order_relaxed);

		if (n && (double)(seen + n) >= rank) {
			double lo = i ? (double)hist_bounds_ns[i - 1] : 0;
			double hi;

			if (i == HIST_BUCKETS)
				return lo / 1e9; /* past the last bound: its value */
			hi = (double)hist_bounds_ns[i];
			return (lo + (hi - lo) * (rank - (double)seen) / (double)n) / 1e9;
		}
		seen += n;
	}
	return (double)hist_bounds_ns[HIST_BUCKETS - 1] / 1e9;
}
