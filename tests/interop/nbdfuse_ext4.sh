#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# A filesystem through the whole stack: nbdfuse exposes the export as a
# file, losetup makes it a block device, ext4 is created, mounted and
# written, and e2fsck finds it clean through the export and in the image.
. "$(dirname "$0")/lib.bash"
need nbdfuse losetup mkfs.ext4 e2fsck mount fusermount3
[ "$(id -u)" = 0 ] || skip "needs root for losetup and mount"
[ -e /dev/fuse ] || skip "no /dev/fuse"
losetup -f >/dev/null 2>&1 || skip "no free loop device"
truncate -s 256M "$T/disk.img"
start_daemon "$T/disk.img"
mkdir -p "$T/fuse" "$T/mnt"
timeout 10 nbdfuse "$T/fuse/disk" "$URI" &
FUSE_PID=$!
CLEANUP+=("fusermount3 -u '$T/fuse' 2>/dev/null; kill $FUSE_PID 2>/dev/null")
for _ in $(seq 1 500); do [ -e "$T/fuse/disk" ] && break; sleep 0.01; done
[ -e "$T/fuse/disk" ] || fail "nbdfuse did not expose the export"
LOOP=$(losetup -f --show "$T/fuse/disk")
CLEANUP+=("losetup -d $LOOP")
timeout 60 mkfs.ext4 -q -F "$LOOP" || fail "mkfs.ext4"
mount "$LOOP" "$T/mnt"
CLEANUP+=("umount '$T/mnt' 2>/dev/null")
for i in $(seq 1 20); do head -c $((i * 37000)) /dev/urandom >"$T/mnt/file$i"; done
(cd "$T/mnt" && sha256sum file* >"$T/sums")
mkdir "$T/mnt/dir" && cp "$T/sums" "$T/mnt/dir/sums"
umount "$T/mnt"
timeout 60 e2fsck -fn "$LOOP" || fail "e2fsck through the export is not clean"
mount -o ro "$LOOP" "$T/mnt"
(cd "$T/mnt" && sha256sum -c --quiet "$T/sums") || fail "files differ after remount"
umount "$T/mnt"
losetup -d "$LOOP"
fusermount3 -u "$T/fuse"
wait $FUSE_PID || true
stop_daemon
timeout 60 e2fsck -fn "$T/disk.img" || fail "e2fsck of the image is not clean"
