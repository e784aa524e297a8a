// SPDX-License-Identifier: BSD-3-Clause
/*
 * TRIM, WRITE_ZEROES (NO_HOLE, FAST_ZERO, FUA, unaligned), CACHE and
 * BLOCK_STATUS with base:allocation, checked through libnbd and against
 * the image file's holes; meta-context listing; several named exports,
 * two of them on one file, one read-only.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define SIZE (16u << 20)
#define MB (1u << 20)

struct extents {
	uint64_t len[64];
	uint32_t flags[64];
	size_t n;
};

static int extent_cb(void *user, const char *ctx, uint64_t offset, uint32_t *entries,
		     size_t nr, int *error)
{
	struct extents *x = user;
	size_t i;

	(void)offset;
	(void)error;
	CHECK(strcmp(ctx, "base:allocation") == 0, "context %s", ctx);
	for (i = 0; i + 1 < nr && x->n < 64; i += 2, x->n++) {
		x->len[x->n] = entries[i];
		x->flags[x->n] = entries[i + 1];
	}
	return 0;
}

static struct extents status(struct nbd_handle *h, uint64_t off, uint64_t len, uint32_t flags)
{
	struct extents x = { .n = 0 };

	NBD_OK(nbd_block_status(h, len, off,
				(nbd_extent_callback){ .callback = extent_cb, .user_data = &x },
				flags));
	return x;
}

/* Is byte off of the image in a hole (per the filesystem)? */
static bool image_hole(struct daemon *d, uint64_t off)
{
	int fd = open(d->img, O_RDONLY);
	off_t data = lseek(fd, (off_t)off, SEEK_DATA);

	close(fd);
	return data < 0 || (uint64_t)data > off;
}

static int ctx_cb(void *user, const char *name)
{
	(*(int *)user)++;
	CHECK(strcmp(name, "base:allocation") == 0, "listed context %s", name);
	return 0;
}

static int list_cb(void *user, const char *name, const char *desc)
{
	(void)desc;
	(*(int *)user) += strcmp(name, "main") == 0 || strcmp(name, "alias") == 0 ||
			  strcmp(name, "ro") == 0;
	return 0;
}

int main(void)
{
	uint8_t *buf = harness_alloc(4 * MB), *zero = harness_alloc(4 * MB);
	char alias[3000], ro[3000];
	struct daemon d;
	struct nbd_handle *h, *a;
	struct extents x;
	int n = 0;

	harness_init("protocol_ops", 60);
	harness_image(&d, SIZE);
	snprintf(alias, sizeof(alias), "alias=%s,description=same file", d.img);
	snprintf(ro, sizeof(ro), "ro=%s,readonly", d.img);
	harness_start(&d, "-n", "main", "-e", alias, "-e", ro, NULL);

	h = nbd_create();
	NBD_OK(nbd_set_export_name(h, "main"));
	NBD_OK(nbd_add_meta_context(h, "base:allocation"));
	NBD_OK(nbd_connect_unix(h, d.sock));
	CHECK(nbd_can_meta_context(h, "base:allocation") == 1, "base:allocation not negotiated");
	CHECK(nbd_can_trim(h) == 1 && nbd_can_zero(h) == 1 && nbd_can_fast_zero(h) == 1 &&
	      nbd_can_cache(h) == 1, "trim/zero/fast-zero/cache not advertised");

	/* Block status of an empty image: one hole. */
	x = status(h, 0, SIZE, 0);
	CHECK(x.n >= 1 && x.flags[0] == (LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO),
	      "empty image not a hole (%zu extents, flags %u)", x.n, x.flags[0]);
	/* Data in the middle: hole, data, hole. */
	harness_fill(buf, 2 * MB, 1);
	NBD_OK(nbd_pwrite(h, buf, 2 * MB, 4 * MB, 0));
	x = status(h, 0, SIZE, 0);
	CHECK(x.n == 3, "%zu extents, expected 3", x.n);
	CHECK(x.len[0] == 4 * MB && x.flags[0] == 3, "extent 0: %" PRIu64 " flags %u", x.len[0],
	      x.flags[0]);
	CHECK(x.len[1] == 2 * MB && x.flags[1] == 0, "extent 1: %" PRIu64 " flags %u", x.len[1],
	      x.flags[1]);
	CHECK(x.len[2] == SIZE - 6 * MB && x.flags[2] == 3, "extent 2");
	x = status(h, 5 * MB, 3 * MB, LIBNBD_CMD_FLAG_REQ_ONE);
	CHECK(x.n == 1 && x.len[0] == MB && x.flags[0] == 0, "REQ_ONE: %zu extents", x.n);
	x = status(h, 4 * MB + 1, 7, 0);
	CHECK(x.n == 1 && x.len[0] == 7 && x.flags[0] == 0, "unaligned block status");

	/* TRIM punches a hole; reads then see zeroes. */
	NBD_OK(nbd_trim(h, MB, 4 * MB, 0));
	CHECK(image_hole(&d, 4 * MB) && !image_hole(&d, 5 * MB), "TRIM did not punch a hole");
	NBD_OK(nbd_pread(h, buf, MB, 4 * MB, 0));
	CHECK(memcmp(buf, zero, MB) == 0, "trimmed range not zero");
	NBD_OK(nbd_trim(h, MB, 5 * MB, LIBNBD_CMD_FLAG_FUA));

	/* WRITE_ZEROES: a hole by default, allocated zeroes with NO_HOLE. */
	harness_fill(buf, 4 * MB, 2);
	NBD_OK(nbd_pwrite(h, buf, 4 * MB, 8 * MB, 0));
	NBD_OK(nbd_zero(h, MB, 8 * MB, 0));
	CHECK(image_hole(&d, 8 * MB), "WRITE_ZEROES did not punch a hole");
	NBD_OK(nbd_zero(h, MB, 9 * MB, LIBNBD_CMD_FLAG_NO_HOLE | LIBNBD_CMD_FLAG_FUA));
	NBD_OK(nbd_zero(h, 4096, 10 * MB, LIBNBD_CMD_FLAG_FAST_ZERO));
	NBD_OK(nbd_pread(h, buf, 2 * MB, 8 * MB, 0));
	CHECK(memcmp(buf, zero, 2 * MB) == 0, "zeroed ranges not zero");
	/* Unaligned: exactly the bytes asked for. */
	harness_fill(buf, 4 * MB, 2);
	NBD_OK(nbd_zero(h, 1000, 11 * MB + 3, 0));
	NBD_OK(nbd_zero(h, 17, 11 * MB + 5000, LIBNBD_CMD_FLAG_NO_HOLE));
	memset(buf + 3 * MB + 3, 0, 1000);
	memset(buf + 3 * MB + 5000, 0, 17);
	NBD_OK(nbd_pread(h, zero, MB, 11 * MB, 0));
	CHECK(memcmp(buf + 3 * MB, zero, MB) == 0, "unaligned zeroing changed the wrong bytes");
	memset(zero, 0, 4 * MB);

	/* CACHE: accepted; past the end refused. */
	NBD_OK(nbd_cache(h, MB, 0, 0));
	NBD_OK(nbd_set_strict_mode(h, 0));
	CHECK(nbd_cache(h, MB, SIZE, 0) == -1 && nbd_get_errno() == EINVAL, "CACHE past the end");
	CHECK(nbd_trim(h, MB, SIZE, 0) == -1 && nbd_get_errno() == EINVAL, "TRIM past the end");
	CHECK(nbd_zero(h, MB, SIZE, 0) == -1 && nbd_get_errno() == ENOSPC, "ZERO past the end");

	/* The alias export is the same file: it sees main's data. */
	a = nbd_create();
	NBD_OK(nbd_set_export_name(a, "alias"));
	NBD_OK(nbd_connect_unix(a, d.sock));
	harness_fill(buf, MB, 3);
	NBD_OK(nbd_pwrite(h, buf, MB, 12 * MB + 7, 0));
	NBD_OK(nbd_pread(a, zero, MB, 12 * MB + 7, 0));
	CHECK(memcmp(buf, zero, MB) == 0, "alias export does not see main's write");
	memset(zero, 0, 4 * MB);
	nbd_close(a);

	/* Read-only export of the same file: EPERM for every write-type command. */
	a = nbd_create();
	NBD_OK(nbd_set_export_name(a, "ro"));
	NBD_OK(nbd_connect_unix(a, d.sock));
	NBD_OK(nbd_set_strict_mode(a, 0));
	CHECK(nbd_is_read_only(a) == 1 && nbd_can_trim(a) == 0 && nbd_can_zero(a) == 0,
	      "read-only export advertises writes");
	CHECK(nbd_pwrite(a, buf, 512, 0, 0) == -1 && nbd_get_errno() == EPERM, "write: EPERM");
	CHECK(nbd_trim(a, 512, 0, 0) == -1 && nbd_get_errno() == EPERM, "trim: EPERM");
	CHECK(nbd_zero(a, 512, 0, 0) == -1 && nbd_get_errno() == EPERM, "zero: EPERM");
	NBD_OK(nbd_pread(a, zero, MB, 12 * MB + 7, 0));
	CHECK(memcmp(buf, zero, MB) == 0, "read-only export reads wrong data");
	nbd_close(a);
	nbd_close(h);

	/* Listing: exports and meta contexts; BLOCK_STATUS without a context. */
	h = nbd_create();
	NBD_OK(nbd_set_opt_mode(h, true));
	NBD_OK(nbd_connect_unix(h, d.sock));
	NBD_OK(nbd_opt_list(h, (nbd_list_callback){ .callback = list_cb, .user_data = &n }));
	CHECK(n == 3, "listed %d of the 3 exports", n);
	n = 0;
	NBD_OK(nbd_set_export_name(h, "alias"));
	NBD_OK(nbd_opt_list_meta_context(h, (nbd_context_callback){ .callback = ctx_cb,
								    .user_data = &n }));
	CHECK(n == 1, "listed %d contexts", n);
	NBD_OK(nbd_opt_go(h));
	NBD_OK(nbd_set_strict_mode(h, 0));
	CHECK(nbd_block_status(h, 512, 0, (nbd_extent_callback){ .callback = extent_cb,
								 .user_data = &x }, 0) == -1,
	      "BLOCK_STATUS without a negotiated context succeeded");
	nbd_close(h);
	harness_stop(&d);
	return 0;
}
