#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# test-timeout: 600
# ublk: exports as local block devices, in a qemu guest (software
# emulation) with Debian 12's 6.12 kernel, whose ublk_drv this host's kernel
# lacks. The guest (tests/vm/ublk-guest.sh, run as init from a Debian root
# filesystem) makes ext4 on /dev/ublkbN, fills it (a tree and fio with
# verify), checks it with e2fsck and reads the tree back; is refused
# ublk-remove while it is mounted and removes it once unmounted; writes
# through ublk and the kernel's NBD client on one export, each reading the
# other's data, and interleaves 512-byte writes from both into one block;
# attaches an overlay export and checks that its base is untouched; runs
# fio with verify across three SIGUSR2 restarts, each taking the device
# over (UBLK_F_USER_RECOVERY) with no error; reaches the daemon over
# vsock_loopback; stops, which removes the device; and without ublk_drv
# gets a clear error. The host then checks the image: e2fsck, and the
# file the guest wrote.
. "$(dirname "$0")/../interop/lib.bash"
VM=${VM_DIR:-build/vm}
HERE=$(cd "$(dirname "$0")" && pwd)
need qemu-system-x86_64 cpio gzip e2fsck debugfs mkfs.ext4 tar nbdinfo socat
[ -x /bin/busybox ] || skip "busybox-static is not installed"
[ "$(id -u)" = 0 ] || skip "needs root to unpack a root filesystem"
mkdir -p "$VM"
. "$HERE/kernel.sh"
. "$HERE/guest-failed.sh"
. "$HERE/rootfs.sh"
# The kernel with ublk_drv: Debian 12's 6.12 (its default cloud kernel, 6.1, has none).
VM_KERNEL=${UBLK_KERNEL:-linux-image-6.12-cloud-amd64}
vm_kernel
find "$K/root/lib/modules/$kver" -name 'ublk_drv.ko*' | grep -q . ||
    skip "the guest kernel ($pkg) has no ublk_drv"

R="$T/root"
vm_rootfs "$R"
# The daemon, its control tool and libnbd's nbdinfo, with whatever libraries the root lacks.
for t in "$URINGNBD" "$URINGNBDCTL" "$(command -v nbdinfo)" "$(command -v socat)"; do
    install -m 0755 "$t" "$R/usr/local/bin/$(basename "$t")"
    for lib in $(ldd "$t" | grep -o '/[^ ]*'); do
        [ -e "$R$lib" ] || { mkdir -p "$R$(dirname "$lib")" && cp -L "$lib" "$R$lib"; }
    done
done
install -m 0755 "$HERE/ublk-guest.sh" "$R/usr/local/sbin/ublktest"
mkdir -p "$R/srv"
head -c $((16 << 20)) /dev/urandom >"$R/srv/base.img"
head -c $((16 << 20)) /dev/urandom >"$R/srv/cached.img"
mkfs.ext4 -q -F -d "$R" "$T/root.img" 1536M || fail "mkfs.ext4 -d of the root filesystem"
rm -rf "$R"
truncate -s 512M "$T/blk.img"
vm_rootfs_initrd "$T/initrd.gz" /usr/local/sbin/ublktest

# A kernel that panics while it boots, before the test's first step, is
# booted once more: under TCG this kernel sometimes meets an int3 of its own
# code patching in early boot (sched_clock_cpu), nothing of the test's.
cp "$T/root.img" "$T/root.img.orig"
for attempt in 1 2; do
    start=$(date +%s)
    up=$(cut -d. -f1 /proc/uptime)  # TEST_DEADLINE's clock (run-tests.sh)
    budget=$((${TEST_DEADLINE:-$((up + 600))} - up - 30))
    [ "$budget" -ge 120 ] || fail "only $budget s left for the guest"
    rc=0
    timeout "$budget" qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 1024 -nodefaults -display none \
        -no-reboot -serial "file:$T/console.log" -kernel "$vmlinuz" -initrd "$T/initrd.gz" \
        -append "console=ttyS0 panic=-1 quiet" \
        -drive "file=$T/root.img,if=virtio,format=raw,cache=none" \
        -drive "file=$T/blk.img,if=virtio,format=raw,cache=none" >"$T/qemu.log" 2>&1 || rc=$?
    echo "guest ran $(($(date +%s) - start)) s (qemu exit $rc)"
    if [ $attempt = 1 ] && ! grep -q '^guest:' "$T/console.log" &&
       grep -q 'Kernel panic' "$T/console.log"; then
        echo "the guest's kernel panicked before the test began: $(grep -m 1 'RIP:' "$T/console.log" | tr -d '\r'); once more"
        cp "$T/root.img.orig" "$T/root.img"
        continue
    fi
    break
done
rm -f "$T/root.img.orig"
[ "$rc" != 124 ] || echo "the guest was stopped: it ran out of its $budget s"
grep -q '^GUEST PASS' "$T/console.log" || guest_failed 80
tr -d '\r' <"$T/console.log" | grep '^guest:'

# The host's view of the image the guest wrote through /dev/ublkbN.
timeout 60 e2fsck -fn "$T/blk.img" >"$T/fsck.log" 2>&1 || { cat "$T/fsck.log"; fail "e2fsck of the image"; }
want=$(tr -d '\r' <"$T/console.log" | awk '$1 == "SUM" && $3 == "hello" {print $2}')
got=$(debugfs -R "cat /hello" "$T/blk.img" 2>/dev/null | sha256sum | cut -d' ' -f1)
[ -n "$want" ] && [ "$want" = "$got" ] || fail "debugfs reads /hello as $got, the guest wrote $want"
echo "PASS ublk.sh"
