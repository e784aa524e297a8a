#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Two overlays over one ext4 base, in use at once: each overlay export is
# exposed by nbdfuse, made a block device by losetup and mounted; each
# gets different files; both check clean (e2fsck -fn) and show only their
# own files; the base is untouched. After a restart the overlays still
# hold what was written.
. "$(dirname "$0")/lib.bash"
need nbdfuse losetup mkfs.ext4 e2fsck mount fusermount3 sha256sum
[ "$(id -u)" = 0 ] || skip "needs root for losetup and mount"
[ -e /dev/fuse ] || skip "no /dev/fuse"
[ "$(losetup -f 2>/dev/null)" ] || skip "no free loop device"
T=$(cd "$T" && pwd)

truncate -s 128M "$T/base.img"
mkfs.ext4 -q -F "$T/base.img" || fail "mkfs.ext4 of the base"
# Some content in the base, written through a loop device of its own.
mkdir -p "$T/mnt0"
mount -o loop "$T/base.img" "$T/mnt0" || fail "mount the base"
head -c 3000000 /dev/urandom >"$T/mnt0/shared"
umount "$T/mnt0"
sum_base=$(sha256sum <"$T/base.img")
cat >"$T/conf" <<EOF
[export vm1]
path = $T/base.img
overlay = $T/vm1.ovl
[export vm2]
path = $T/base.img
overlay = $T/vm2.ovl
cache = auto
EOF
rm -f "$T/pid"
"$URINGNBD" -U "$SOCK" --pid-file "$T/pid" -c "$T/conf" 2>>"$T/daemon.log" &
DAEMON_PID=$!
for _ in $(seq 1 1000); do [ -s "$T/pid" ] && break; sleep 0.01; done

attach() { # NAME: nbdfuse + loop + mount at $T/mnt-NAME; the loop device in $LOOP
    mkdir -p "$T/fuse-$1" "$T/mnt-$1"
    nbdfuse "$T/fuse-$1/disk" "nbd+unix:///$1?socket=$SOCK" >/dev/null 2>>"$T/nbdfuse.log" &
    CLEANUP+=("fusermount3 -u '$T/fuse-$1' 2>/dev/null; kill $! 2>/dev/null")
    for _ in $(seq 1 500); do [ -e "$T/fuse-$1/disk" ] && break; sleep 0.01; done
    [ -e "$T/fuse-$1/disk" ] || fail "nbdfuse did not expose $1"
    LOOP=$(losetup -f --show "$T/fuse-$1/disk") || fail "losetup $1"
    CLEANUP+=("umount '$T/mnt-$1' 2>/dev/null; losetup -d $LOOP 2>/dev/null")
    mount "$LOOP" "$T/mnt-$1" || fail "mount $1"
}
detach() { # NAME LOOP
    umount "$T/mnt-$1" || fail "umount $1"
    timeout 60 e2fsck -fn "$2" >"$T/fsck-$1" 2>&1 || { cat "$T/fsck-$1"; fail "e2fsck $1 not clean"; }
    losetup -d "$2"
    fusermount3 -u "$T/fuse-$1"
}

attach vm1; L1=$LOOP
attach vm2; L2=$LOOP
for i in 1 2 3 4 5; do head -c $((i * 200000)) /dev/urandom >"$T/mnt-vm1/one$i"; done
mkdir "$T/mnt-vm2/two" && for i in 1 2 3; do head -c $((i * 300000)) /dev/urandom >"$T/mnt-vm2/two/f$i"; done
rm "$T/mnt-vm2/shared"
(cd "$T/mnt-vm1" && sha256sum one* shared) >"$T/sums1"
(cd "$T/mnt-vm2" && sha256sum two/*) >"$T/sums2"
[ ! -e "$T/mnt-vm1/two" ] && [ ! -e "$T/mnt-vm2/one1" ] && [ -e "$T/mnt-vm1/shared" ] ||
    fail "an overlay shows the other's files, or lost the base's"
detach vm1 "$L1"
detach vm2 "$L2"
kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID" || fail "daemon exit status"
DAEMON_PID=
[ "$(sha256sum <"$T/base.img")" = "$sum_base" ] || fail "the base image changed"

# Restarted: both overlays still hold their files.
rm -f "$T/pid"
"$URINGNBD" -U "$SOCK" --pid-file "$T/pid" -c "$T/conf" 2>>"$T/daemon.log" &
DAEMON_PID=$!
for _ in $(seq 1 1000); do [ -s "$T/pid" ] && break; sleep 0.01; done
attach vm1; L1=$LOOP
attach vm2; L2=$LOOP
(cd "$T/mnt-vm1" && sha256sum -c --quiet "$T/sums1") || fail "vm1's files after a restart"
(cd "$T/mnt-vm2" && sha256sum -c --quiet "$T/sums2") || fail "vm2's files after a restart"
[ ! -e "$T/mnt-vm2/shared" ] || fail "vm2's deletion did not persist"
detach vm1 "$L1"
detach vm2 "$L2"
stop_daemon
[ "$(sha256sum <"$T/base.img")" = "$sum_base" ] || fail "the base image changed"
echo "two ext4 overlays over one base: separate files, e2fsck clean, base untouched, persistent"
