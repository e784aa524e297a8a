#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdcopy 64 MiB of random data in and out, compared with cmp, and the
# image itself compared with what went in.
. "$(dirname "$0")/lib.bash"
need nbdcopy cmp
truncate -s 128M "$T/disk.img"
head -c 64M /dev/urandom >"$T/in.bin"
start_daemon "$T/disk.img"
timeout 60 nbdcopy "$T/in.bin" "$URI" || fail "nbdcopy in"
timeout 60 nbdcopy "$URI" "$T/out.bin" || fail "nbdcopy out"
cmp -n $((64 << 20)) "$T/in.bin" "$T/out.bin" || fail "data read back differs"
cmp -n $((64 << 20)) "$T/in.bin" "$T/disk.img" || fail "image differs from the data written"
# Several connections at once (nbdcopy uses multi-conn when offered).
timeout 60 nbdcopy --connections=4 --requests=32 "$URI" "$T/out4.bin" || fail "nbdcopy -C 4"
cmp -n $((64 << 20)) "$T/in.bin" "$T/out4.bin" || fail "multi-conn read differs"
stop_daemon
