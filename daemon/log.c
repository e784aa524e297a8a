// SPDX-License-Identifier: BSD-3-Clause
/*
 * Logging to stderr (journald collects it): one line per message, a level
 * prefix, lowercase text with the subject quoted. Safe from any thread.
 */
#include <stdarg.h>
#include <stdio.h>

#include "daemon.h"

enum log_level log_max_level = LOG_INFO;

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
	/* One fputs per line keeps lines from different threads whole. */
	fprintf(stderr, "%s\n", line);
}
