/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * ublk_uapi.h: the part of the kernel's ublk interface (linux/ublk_cmd.h)
 * that ublk.c uses, as Linux 6.12 has it. Debian 12's own header is 6.1's:
 * its ublksrv_ctrl_cmd differs (the same 32 bytes), and it lacks the
 * ioctl-encoded opcodes and the feature bits past 4, so they are spelt out
 * here. Every value is the kernel's ABI, stable since it was added.
 */
#ifndef URINGNBD_UBLK_UAPI_H
#define URINGNBD_UBLK_UAPI_H

#include <errno.h>
#include <linux/ioctl.h>
#include <stdint.h>

/* Sent in the 80 command bytes of a 128-byte SQE to /dev/ublk-control. */
struct ublk_ctrl_cmd {
	uint32_t dev_id;          /* the device; (uint32_t)-1 asks ADD_DEV for any */
	uint16_t queue_id;        /* (uint16_t)-1 unless the command is a queue's */
	uint16_t len;             /* of the buffer at addr */
	uint64_t addr;
	uint64_t data[1];         /* START_DEV, END_USER_RECOVERY: the server's pid */
	uint16_t dev_path_len;
	uint16_t pad;
	uint32_t reserved;
};

struct ublk_dev_info {
	uint16_t nr_hw_queues;
	uint16_t queue_depth;
	uint16_t state;           /* UBLK_S_DEV_* */
	uint16_t pad0;
	uint32_t max_io_buf_bytes;
	uint32_t dev_id;
	int32_t ublksrv_pid;
	uint32_t pad1;
	uint64_t flags;           /* UBLK_F_* */
	uint64_t ublksrv_flags;   /* the server's own: uringnbd's tag for the export */
	uint32_t owner_uid;
	uint32_t owner_gid;
	uint64_t reserved1;
	uint64_t reserved2;
};

/* Sent in the 16 command bytes of a 64-byte SQE to /dev/ublkcN. */
struct ublk_io_cmd {
	uint16_t q_id;
	uint16_t tag;
	int32_t result;           /* COMMIT_AND_FETCH: bytes done, or -errno */
	uint64_t addr;            /* 0 with UBLK_F_USER_COPY */
};

/* One request, in the queue's descriptor array (mapped from /dev/ublkcN). */
struct ublk_io_desc {
	uint32_t op_flags;        /* op: bits 0-7; UBLK_IO_F_*: bits 8-31 */
	uint32_t nr_sectors;
	uint64_t start_sector;
	uint64_t addr;
};

struct ublk_param_basic {
	uint32_t attrs;
	uint8_t logical_bs_shift;
	uint8_t physical_bs_shift;
	uint8_t io_opt_shift;
	uint8_t io_min_shift;
	uint32_t max_sectors;
	uint32_t chunk_sectors;
	uint64_t dev_sectors;
	uint64_t virt_boundary_mask;
};

struct ublk_param_discard {
	uint32_t discard_alignment;
	uint32_t discard_granularity;
	uint32_t max_discard_sectors;
	uint32_t max_write_zeroes_sectors;
	uint16_t max_discard_segments;
	uint16_t reserved0;
};

/* The leading part every kernel since 6.0 takes (len says how much is here). */
struct ublk_params {
	uint32_t len;
	uint32_t types;
	struct ublk_param_basic basic;
	struct ublk_param_discard discard;
};

#define UBLK_U_CMD_GET_DEV_INFO _IOR('u', 0x02, struct ublk_ctrl_cmd)
#define UBLK_U_CMD_ADD_DEV _IOWR('u', 0x04, struct ublk_ctrl_cmd)
#define UBLK_U_CMD_DEL_DEV _IOWR('u', 0x05, struct ublk_ctrl_cmd)
#define UBLK_U_CMD_START_DEV _IOWR('u', 0x06, struct ublk_ctrl_cmd)
#define UBLK_U_CMD_STOP_DEV _IOWR('u', 0x07, struct ublk_ctrl_cmd)
#define UBLK_U_CMD_SET_PARAMS _IOWR('u', 0x08, struct ublk_ctrl_cmd)
#define UBLK_U_CMD_GET_PARAMS _IOR('u', 0x09, struct ublk_ctrl_cmd)
#define UBLK_U_CMD_START_USER_RECOVERY _IOWR('u', 0x10, struct ublk_ctrl_cmd)
#define UBLK_U_CMD_END_USER_RECOVERY _IOWR('u', 0x11, struct ublk_ctrl_cmd)
#define UBLK_U_CMD_GET_FEATURES _IOR('u', 0x13, struct ublk_ctrl_cmd)

#define UBLK_U_IO_FETCH_REQ _IOWR('u', 0x20, struct ublk_io_cmd)
#define UBLK_U_IO_COMMIT_AND_FETCH_REQ _IOWR('u', 0x21, struct ublk_io_cmd)

#define UBLK_IO_RES_OK 0
#define UBLK_IO_RES_ABORT (-ENODEV) /* the device stops: no more requests on this tag */

#define UBLKSRV_CMD_BUF_OFFSET 0
#define UBLKSRV_IO_BUF_OFFSET 0x80000000ull
#define UBLK_MAX_QUEUE_DEPTH 4096
#define UBLK_TAG_OFF 25
#define UBLK_QID_OFF 41

#define UBLK_F_USER_RECOVERY (1ull << 3)
#define UBLK_F_USER_RECOVERY_REISSUE (1ull << 4)
#define UBLK_F_UNPRIVILEGED_DEV (1ull << 5)
#define UBLK_F_CMD_IOCTL_ENCODE (1ull << 6)
#define UBLK_F_USER_COPY (1ull << 7)

#define UBLK_S_DEV_DEAD 0
#define UBLK_S_DEV_LIVE 1
#define UBLK_S_DEV_QUIESCED 2

#define UBLK_IO_OP_READ 0
#define UBLK_IO_OP_WRITE 1
#define UBLK_IO_OP_FLUSH 2
#define UBLK_IO_OP_DISCARD 3
#define UBLK_IO_OP_WRITE_SAME 4
#define UBLK_IO_OP_WRITE_ZEROES 5
#define UBLK_IO_F_FUA (1u << 13)
#define UBLK_IO_F_NOUNMAP (1u << 15)

#define UBLK_ATTR_READ_ONLY (1u << 0)
#define UBLK_ATTR_ROTATIONAL (1u << 1)
#define UBLK_ATTR_VOLATILE_CACHE (1u << 2)
#define UBLK_ATTR_FUA (1u << 3)
#define UBLK_PARAM_TYPE_BASIC (1u << 0)
#define UBLK_PARAM_TYPE_DISCARD (1u << 1)

#endif
