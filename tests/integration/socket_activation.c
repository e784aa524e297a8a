// SPDX-License-Identifier: BSD-3-Clause
/*
 * Socket activation: libnbd starts uringnbd with a listening socket passed
 * as LISTEN_FDS (systemd's protocol), and serves through it.
 */
#include <stdlib.h>
#include <string.h>

#include "harness.h"

int main(void)
{
	uint8_t *w = harness_alloc(65536), *r = harness_alloc(65536);
	struct daemon d;
	struct nbd_handle *h;
	const char *bin = getenv("URINGNBD");
	char *argv[] = { (char *)(bin ? bin : "build/uringnbd"), d.img, NULL };

	harness_init("socket_activation", 60);
	harness_image(&d, 1 << 20);
	argv[1] = d.img;
	h = nbd_create();
	CHECK(h, "nbd_create");
	NBD_OK(nbd_connect_systemd_socket_activation(h, argv));
	CHECK(nbd_get_size(h) == 1 << 20, "size");
	harness_fill(w, 65536, 5);
	NBD_OK(nbd_pwrite(h, w, 65536, 65536, 0));
	NBD_OK(nbd_pread(h, r, 65536, 65536, 0));
	CHECK(memcmp(w, r, 65536) == 0, "read back differs");
	NBD_OK(nbd_shutdown(h, 0));
	nbd_close(h);
	return 0;
}
