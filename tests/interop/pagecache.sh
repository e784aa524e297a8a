#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# No double caching: after 64 MiB written and read through the export, the
# image has (next to) nothing in the kernel page cache.
. "$(dirname "$0")/lib.bash"
need fincore nbdcopy dd
truncate -s 256M "$T/disk.img"
head -c 64M /dev/urandom >"$T/in.bin"
# Start with none of the image cached.
dd if="$T/disk.img" iflag=nocache count=0 status=none
start_daemon "$T/disk.img"
timeout 60 nbdcopy "$T/in.bin" "$URI" || fail "nbdcopy in"
timeout 60 nbdcopy "$URI" "$T/out.bin" || fail "nbdcopy out"
timeout 60 nbdcopy --connections=2 "$URI" "$T/out2.bin" || fail "nbdcopy out"
stop_daemon
pages=$(fincore --bytes --noheadings --output PAGES "$T/disk.img" | tr -d ' ')
bytes=$(fincore --bytes --noheadings --output RES "$T/disk.img" | tr -d ' ')
echo "image pages in the page cache after 192 MiB of I/O: $pages ($bytes bytes)"
# 1 MiB of slack for metadata; a buffered server leaves 64 MiB or more.
[ "$bytes" -le $((1 << 20)) ] || fail "$bytes bytes of the image are in the page cache"
