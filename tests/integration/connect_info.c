// SPDX-License-Identifier: BSD-3-Clause
/* Connect and negotiate: size, block sizes, flags, listing, refused names. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static int list_cb(void *user, const char *name, const char *desc)
{
	int *n = user;

	(void)desc;
	CHECK(strcmp(name, "") == 0, "listed unexpected export \"%s\"", name);
	(*n)++;
	return 0;
}

int main(void)
{
	struct daemon d;
	struct nbd_handle *h;
	int n = 0;

	harness_init("connect_info", 60);
	harness_image(&d, 64 << 20);
	harness_start(&d, "-t", "2", NULL);

	h = harness_connect(&d, true);
	CHECK(nbd_get_size(h) == 64 << 20, "size %lld", (long long)nbd_get_size(h));
	/* Any offset and length is served: unaligned edges by read-modify-write. */
	CHECK(nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM) == 1,
	      "minimum block size %lld", (long long)nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM));
	CHECK(nbd_get_block_size(h, LIBNBD_SIZE_PREFERRED) == 4096, "preferred block size");
	CHECK(nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM) == 32 << 20, "maximum block size");
	CHECK(nbd_can_flush(h) == 1, "can_flush");
	CHECK(nbd_can_fua(h) == 1, "can_fua");
	CHECK(nbd_can_multi_conn(h) == 1, "can_multi_conn");
	CHECK(nbd_can_df(h) == 1, "can_df with structured replies");
	CHECK(nbd_is_read_only(h) == 0, "is_read_only");
	CHECK(nbd_get_structured_replies_negotiated(h) == 1, "structured replies");
	NBD_OK(nbd_shutdown(h, 0));
	nbd_close(h);

	/* Without structured replies there is no DF. */
	h = harness_connect(&d, false);
	CHECK(nbd_can_df(h) == 0, "can_df without structured replies");
	nbd_close(h);

	/* NBD_OPT_LIST. */
	h = nbd_create();
	NBD_OK(nbd_set_opt_mode(h, true));
	NBD_OK(nbd_connect_unix(h, d.sock));
	CHECK(nbd_opt_list(h, (nbd_list_callback){ .callback = list_cb, .user_data = &n }) == 1,
	      "nbd_opt_list: %s", nbd_get_error());
	CHECK(n == 1, "listed %d exports", n);
	/* NBD_OPT_INFO with an unknown name fails; the connection stays usable. */
	NBD_OK(nbd_set_export_name(h, "nope"));
	CHECK(nbd_opt_info(h) == -1, "NBD_OPT_INFO of an unknown export succeeded");
	NBD_OK(nbd_set_export_name(h, ""));
	NBD_OK(nbd_opt_go(h));
	CHECK(nbd_get_size(h) == 64 << 20, "size after GO");
	nbd_close(h);

	/* NBD_OPT_GO with an unknown name is refused, never mapped to another export. */
	h = nbd_create();
	NBD_OK(nbd_set_export_name(h, "other"));
	CHECK(nbd_connect_unix(h, d.sock) == -1, "GO to an unknown export succeeded");
	nbd_close(h);

	harness_stop(&d);
	return 0;
}
