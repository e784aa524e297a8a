// SPDX-License-Identifier: BSD-3-Clause
/*
 * Unit tests of a ublk request's mapping (daemon/conn/ublk_int.h), with no
 * kernel: each descriptor's NBD request, each NBD error's result, where a
 * tag's data and a queue's descriptors are in /dev/ublkcN, and the kernel
 * ABI the project spells out itself (ublk_uapi.h): sizes, offsets and the
 * ioctl-encoded opcodes as Linux 6.12 defines them.
 */
#include <check.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "../../daemon/conn/ublk_int.h"

static struct ublk_io_desc desc(unsigned op, unsigned flags, uint64_t sector, uint32_t sectors)
{
	return (struct ublk_io_desc){ .op_flags = op | flags, .nr_sectors = sectors,
				      .start_sector = sector };
}

START_TEST(test_map_ops)
{
	struct proto_request r;
	struct ublk_io_desc d;

	d = desc(UBLK_IO_OP_READ, 0, 8, 16);
	ck_assert_int_eq(ublk_map_request(&d, 7, &r), 0);
	ck_assert_uint_eq(r.type, NBD_CMD_READ);
	ck_assert_uint_eq(r.offset, 4096);
	ck_assert_uint_eq(r.len_bytes, 8192);
	ck_assert_uint_eq(r.flags, 0);
	ck_assert_uint_eq(r.cookie, 7);

	d = desc(UBLK_IO_OP_WRITE, UBLK_IO_F_FUA, 1, 1);
	ck_assert_int_eq(ublk_map_request(&d, 0, &r), 0);
	ck_assert_uint_eq(r.type, NBD_CMD_WRITE);
	ck_assert_uint_eq(r.flags, NBD_CMD_FLAG_FUA);
	ck_assert_uint_eq(r.offset, 512);
	ck_assert_uint_eq(r.len_bytes, 512);

	/* A flush has no range, whatever the descriptor holds. */
	d = desc(UBLK_IO_OP_FLUSH, 0, 99, 5);
	ck_assert_int_eq(ublk_map_request(&d, 0, &r), 0);
	ck_assert_uint_eq(r.type, NBD_CMD_FLUSH);
	ck_assert_uint_eq(r.offset, 0);
	ck_assert_uint_eq(r.len_bytes, 0);

	d = desc(UBLK_IO_OP_DISCARD, 0, 2048, 2048);
	ck_assert_int_eq(ublk_map_request(&d, 0, &r), 0);
	ck_assert_uint_eq(r.type, NBD_CMD_TRIM);
	ck_assert_uint_eq(r.offset, 1 << 20);
	ck_assert_uint_eq(r.len_bytes, 1 << 20);

	/* Zeroes may punch a hole, unless the kernel says NOUNMAP. */
	d = desc(UBLK_IO_OP_WRITE_ZEROES, 0, 0, 8);
	ck_assert_int_eq(ublk_map_request(&d, 0, &r), 0);
	ck_assert_uint_eq(r.type, NBD_CMD_WRITE_ZEROES);
	ck_assert_uint_eq(r.flags, 0);
	d = desc(UBLK_IO_OP_WRITE_ZEROES, UBLK_IO_F_NOUNMAP | UBLK_IO_F_FUA, 0, 8);
	ck_assert_int_eq(ublk_map_request(&d, 0, &r), 0);
	ck_assert_uint_eq(r.flags, NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FUA);

	/* What has no NBD counterpart is refused. */
	d = desc(UBLK_IO_OP_WRITE_SAME, 0, 0, 8);
	ck_assert_int_eq(ublk_map_request(&d, 0, &r), -EOPNOTSUPP);
	d = desc(13 /* ZONE_APPEND */, 0, 0, 8);
	ck_assert_int_eq(ublk_map_request(&d, 0, &r), -EOPNOTSUPP);

	/* The largest request the kernel can send: 2^32 - 1 sectors, no overflow. */
	d = desc(UBLK_IO_OP_READ, 0, UINT64_C(1) << 40, UINT32_MAX);
	ck_assert_int_eq(ublk_map_request(&d, 0, &r), 0);
	ck_assert_uint_eq(r.len_bytes, (uint64_t)UINT32_MAX << 9);
	ck_assert_uint_eq(r.offset, UINT64_C(1) << 49);
}
END_TEST

START_TEST(test_results)
{
	struct proto_request rd = { .type = NBD_CMD_READ, .len_bytes = 4096 };
	struct proto_request wr = { .type = NBD_CMD_WRITE, .len_bytes = 1 << 20 };
	struct proto_request tr = { .type = NBD_CMD_TRIM, .len_bytes = 1 << 20 };
	struct proto_request fl = { .type = NBD_CMD_FLUSH };

	ck_assert_int_eq(ublk_result(NBD_SUCCESS, &rd), 4096);
	ck_assert_int_eq(ublk_result(NBD_SUCCESS, &wr), 1 << 20);
	ck_assert_int_eq(ublk_result(NBD_SUCCESS, &tr), 0);
	ck_assert_int_eq(ublk_result(NBD_SUCCESS, &fl), 0);
	ck_assert_int_eq(ublk_result(NBD_EIO, &rd), -EIO);
	ck_assert_int_eq(ublk_result(NBD_ENOSPC, &wr), -ENOSPC);
	ck_assert_int_eq(ublk_result(NBD_EPERM, &wr), -EPERM);
	ck_assert_int_eq(ublk_result(NBD_EINVAL, &rd), -EINVAL);
	ck_assert_int_eq(ublk_result(NBD_ENOTSUP, &tr), -EOPNOTSUPP);
	ck_assert_int_eq(ublk_result(NBD_ESHUTDOWN, &rd), -ESHUTDOWN);
	ck_assert_int_eq(ublk_result(NBD_ENOMEM, &rd), -ENOMEM);
	ck_assert_int_eq(ublk_result(NBD_EOVERFLOW, &rd), -EOVERFLOW);
	ck_assert_int_eq(ublk_result(12345, &rd), -EIO);
}
END_TEST

START_TEST(test_positions)
{
	ck_assert_uint_eq(ublk_data_pos(0, 0), 0x80000000ull);
	ck_assert_uint_eq(ublk_data_pos(1, 2), 0x80000000ull + (1ull << 41) + (2ull << 25));
	ck_assert_uint_eq(ublk_data_pos(4095, 4095),
			  0x80000000ull + (4095ull << 41) + (4095ull << 25));
	/* A queue's descriptors: 4096 tags' worth apart, its own depth's worth long, in pages. */
	ck_assert_uint_eq(ublk_descs_pos(0), 0);
	ck_assert_uint_eq(ublk_descs_pos(1), 4096 * 24);
	ck_assert_uint_eq(ublk_descs_pos(3), 3 * 4096 * 24);
	ck_assert_uint_eq(ublk_descs_len(128), 4096);
	ck_assert_uint_eq(ublk_descs_len(171), 8192);
	ck_assert_uint_eq(ublk_descs_len(4096), 4096 * 24);
}
END_TEST

START_TEST(test_export_tag)
{
	uint64_t a = ublk_export_tag("disk"), b = ublk_export_tag("disk2");

	ck_assert_uint_eq(a, ublk_export_tag("disk"));
	ck_assert_uint_ne(a, b);
	ck_assert_uint_ne(ublk_export_tag(""), 0);
	ck_assert_uint_ne(ublk_export_tag(""), a);
}
END_TEST

/* The kernel's ABI (include/uapi/linux/ublk_cmd.h, Linux 6.12). */
START_TEST(test_abi)
{
	ck_assert_uint_eq(sizeof(struct ublk_ctrl_cmd), 32);
	ck_assert_uint_eq(offsetof(struct ublk_ctrl_cmd, addr), 8);
	ck_assert_uint_eq(offsetof(struct ublk_ctrl_cmd, data), 16);
	ck_assert_uint_eq(sizeof(struct ublk_dev_info), 64);
	ck_assert_uint_eq(offsetof(struct ublk_dev_info, flags), 24);
	ck_assert_uint_eq(offsetof(struct ublk_dev_info, ublksrv_flags), 32);
	ck_assert_uint_eq(sizeof(struct ublk_io_cmd), 16);
	ck_assert_uint_eq(sizeof(struct ublk_io_desc), 24);
	ck_assert_uint_eq(sizeof(struct ublk_param_basic), 32);
	ck_assert_uint_eq(sizeof(struct ublk_param_discard), 20);
	ck_assert_uint_eq(offsetof(struct ublk_params, basic), 8);
	ck_assert_uint_eq(offsetof(struct ublk_params, discard), 40);
	ck_assert_uint_eq(UBLK_U_IO_FETCH_REQ, 0xc0107520u);
	ck_assert_uint_eq(UBLK_U_IO_COMMIT_AND_FETCH_REQ, 0xc0107521u);
	ck_assert_uint_eq(UBLK_U_CMD_ADD_DEV, 0xc0207504u);
	ck_assert_uint_eq(UBLK_U_CMD_GET_DEV_INFO, 0x80207502u);
	ck_assert_uint_eq(UBLK_U_CMD_GET_FEATURES, 0x80207513u);
	ck_assert_uint_eq(UBLK_U_CMD_START_USER_RECOVERY, 0xc0207510u);
}
END_TEST

static Suite *ublk_suite(void)
{
	Suite *s = suite_create("ublk");
	TCase *tc = tcase_create("mapping");

	tcase_add_test(tc, test_map_ops);
	tcase_add_test(tc, test_results);
	tcase_add_test(tc, test_positions);
	tcase_add_test(tc, test_export_tag);
	tcase_add_test(tc, test_abi);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(ublk_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
