// SPDX-License-Identifier: BSD-3-Clause
/*
 * Logging to stderr (journald collects it): one line per message, a level
 * prefix, lowercase text with the subject quoted. Safe from any thread.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "base.h"

enum log_level log_max_level = LOG_INFO;

/* This thread's capture of error lines (log_capture), or NULL. */
static __thread char *capture_buf;
static __thread size_t capture_len;

void log_capture(char *buf, size_t len)
{
	capture_buf = buf;
	capture_len = len;
	if (buf && len)
		buf[0] = '\0';
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	static const char *const prefix[] = { "error", "warning", "info", "debug" };
	char line[1024];
	va_list ap;
	int n;

	if (level > log_max_level)
		return;
	n = snprintf(line, sizeof(line), "uringnbd: %s: ", prefix[level]);
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	if (capture_buf && level == LOG_ERROR && !capture_buf[0])
		snprintf(capture_buf, capture_len, "%s", line + n);
	/* One fputs per line keeps lines from different threads whole. */
	fprintf(stderr, "%s\n", line);
}

void log_msg_limited(struct log_limit *l, enum log_level level, const char *fmt, ...)
{
	struct timespec ts;
	uint64_t now, next;
	unsigned dropped;
	char line[900];
	va_list ap;

	if (level > log_max_level)
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	next = atomic_load_explicit(&l->next_ns, memory_order_relaxed);
	/* One line per interval; whoever moves next_ns on gets to write it. */
	if (now < next || !atomic_compare_exchange_strong(&l->next_ns, &next,
							  now + (uint64_t)LOG_LIMIT_INTERVAL_S * 1000000000u)) {
		atomic_fetch_add_explicit(&l->suppressed, 1, memory_order_relaxed);
		return;
	}
	dropped = atomic_exchange_explicit(&l->suppressed, 0, memory_order_relaxed);
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (dropped)
		log_msg(level, "%s (and %u more like it in the last %u s)", line, dropped,
			LOG_LIMIT_INTERVAL_S);
	else
		log_msg(level, "%s", line);
}

const char *log_escape(const void *s, size_t len, char *buf, size_t bufsz)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = s;
	size_t i, o = 0;

	for (i = 0; i < len; i++) {
		unsigned char ch = p[i];
		bool plain = ch >= 0x20 && ch < 0x7f && ch != '\\' && ch != '"';

		/* Room for this byte (up to 4) and "...", and the NUL. */
		if (o + (plain ? 1 : 4) + 4 > bufsz) {
			memcpy(buf + o, "...", 3);
			o += 3;
			break;
		}
		if (plain) {
			buf[o++] = (char)ch;
		} else {
			buf[o++] = '\\';
			buf[o++] = 'x';
			buf[o++] = hex[ch >> 4];
			buf[o++] = hex[ch & 15];
		}
	}
	buf[o] = '\0';
	return buf;
}
