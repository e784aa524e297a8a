#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Sparse images through real tools: nbdinfo --map and qemu-img map report
# the holes (base:allocation from SEEK_DATA/SEEK_HOLE), nbdcopy (which
# uses block status and WRITE_ZEROES) copies a sparse image into the
# export and it stays sparse: data that was there before becomes holes.
. "$(dirname "$0")/lib.bash"
need nbdinfo nbdcopy qemu-img du
truncate -s 64M "$T/disk.img"
dd if=/dev/urandom of="$T/disk.img" bs=1M count=2 seek=8 conv=notrunc status=none
start_daemon "$T/disk.img" -n disk -e "second=$T/disk.img,readonly"

map=$(timeout 30 nbdinfo --map "nbd+unix:///disk?socket=$SOCK")
echo "$map"
[ "$(echo "$map" | awk '{print $1, $2, $3}' | tr '\n' ';')" = "0 8388608 3;8388608 2097152 0;10485760 56623104 3;" ] ||
    fail "nbdinfo --map does not match the image's holes"
qmap=$(timeout 30 qemu-img map --output=json -f raw "nbd+unix:///second?socket=$SOCK")
echo "$qmap"
[ "$(grep -c '"data": true' <<<"$qmap")" = 1 ] || fail "qemu-img map: expected one data extent"
grep -q '"start": 8388608, "length": 2097152, .*"data": true' <<<"$qmap" || fail "qemu-img map: data extent"
list=$(timeout 30 nbdinfo --list "$URI")
grep -q 'export="disk"' <<<"$list" && grep -q 'export="second"' <<<"$list" || fail "nbdinfo --list"

# A sparse source, 1 MiB of data in 64 MiB, copied over the whole export.
truncate -s 64M "$T/src.img"
dd if=/dev/urandom of="$T/src.img" bs=1M count=1 seek=30 conv=notrunc status=none
timeout 60 nbdcopy "$T/src.img" "nbd+unix:///disk?socket=$SOCK" || fail "nbdcopy into the export"
cmp "$T/src.img" "$T/disk.img" || fail "image differs from the source after nbdcopy"
used=$(du -k "$T/disk.img" | cut -f1)
echo "image uses $used KiB after copying a 64 MiB image with 1 MiB of data"
# The 2 MiB that were data before must have been zeroed as holes, not written.
[ "$used" -le 4096 ] || fail "image not sparse after nbdcopy: $used KiB used"
map=$(timeout 30 nbdinfo --map "nbd+unix:///disk?socket=$SOCK")
[ "$(echo "$map" | awk '$3 == 0 {print $1, $2}')" = "31457280 1048576" ] || fail "map after copy: $map"
stop_daemon
