// SPDX-License-Identifier: BSD-3-Clause
/*
 * Negotiation floods and hostile names: a client that sends option after
 * option is cut off after 256 of them (the daemon serves others meanwhile);
 * an export name full of newlines and escape sequences is logged escaped,
 * never raw.
 */
#include <stdio.h>
#include <string.h>

#include "../../proto/proto.h"
#include "harness.h"

int main(void)
{
	static const char evil[] = "x\n\x1b[31mFAKE: error: forged line\r\\\"";
	struct daemon d;
	struct nbd_handle *h;
	int fd, i;

	harness_init("negotiation_limits", 60);
	harness_image(&d, 1 << 20);
	harness_start(&d, "-t", "1", NULL);

	/* 256 options are answered; the next one ends the connection. */
	fd = raw_hello(&d, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	for (i = 0; i < 256; i++) {
		raw_option(fd, NBD_IHAVEOPT, NBD_OPT_LIST, NULL, 0);
		while (raw_option_reply(fd, NBD_OPT_LIST) == NBD_REP_SERVER)
			;
	}
	raw_option(fd, NBD_IHAVEOPT, NBD_OPT_LIST, NULL, 0);
	raw_expect_closed(fd, "the 257th option");
	CHECK(harness_log_has(&d, "more than 256 options in one negotiation"),
	      "no log line about the option flood");

	/* A refused EXPORT_NAME with control characters. */
	fd = raw_hello(&d, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	raw_option(fd, NBD_IHAVEOPT, NBD_OPT_EXPORT_NAME, evil, sizeof(evil) - 1);
	raw_expect_closed(fd, "EXPORT_NAME of an unknown export");
	h = harness_connect(&d, true); /* others are served all along */
	nbd_close(h);
	harness_stop(&d);
	CHECK(!harness_log_has(&d, "\nFAKE"), "a client-chosen name forged a log line");
	CHECK(!harness_log_has(&d, "\x1b"), "an escape sequence reached the log");
	CHECK(harness_log_has(&d, "refused NBD_OPT_EXPORT_NAME \"x\\x0a\\x1b[31mFAKE: error: "
				  "forged line\\x0d\\x5c\\x22\""),
	      "the refused name was not logged escaped");
	printf("256 options answered, the 257th cut off; the hostile name logged escaped\n");
	return 0;
}
