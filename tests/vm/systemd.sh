#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The shipped units under a real systemd: a Debian 12 root filesystem built
# by mmdebstrap from Debian's packages (cached in build/vm, so later runs
# need no package registry) boots under qemu with Debian's cloud kernel and
# systemd as PID 1; uringnbd is installed into it from the package `make
# deb` builds, as a user would (and upgraded to a second build with a higher
# version, then purged). tests/vm/systemd-guest.sh then runs as a
# unit: socket activation, nbd-client attaching /dev/nbd0, ext4 written and
# checked, five restarts (one an upgrade to a new binary) under fio on two
# attached devices with nothing failed, STATUS=, reload, stop within the
# timeout with a clean shutdown
# in the journal, uringnbd@.service, and a block device through a drop-in.
# The host checks the image afterwards (e2fsck -fn and the checksums).
# test-timeout: 480
. "$(dirname "$0")/../interop/lib.bash"
VM=${VM_DIR:-build/vm}
HERE=$(cd "$(dirname "$0")" && pwd)
need qemu-system-x86_64 cpio gzip e2fsck debugfs mkfs.ext4 tar
[ -x /bin/busybox ] || skip "busybox-static is not installed"
[ "$(id -u)" = 0 ] || skip "needs root to unpack a root filesystem"
mkdir -p "$VM"
. "$HERE/kernel.sh"
. "$HERE/guest-failed.sh"
vm_kernel

. "$HERE/rootfs.sh"
R="$T/root"
vm_rootfs "$R"
# A machine id of its own: without one systemd's first boot would enable every
# unit by preset, uringnbd.service included, and this test wants to do that itself.
head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$R/etc/machine-id"
echo >>"$R/etc/machine-id"
# The packages users install, and a second build with a higher version to upgrade to.
need dpkg-buildpackage dh
env -u MAKEFLAGS -u MAKELEVEL make -s deb SANITIZE= >"$T/deb.log" 2>&1 || { cat "$T/deb.log"; fail "make deb"; }
mkdir -p "$R/root/debs/first" "$R/root/debs/second"
cp build/deb/uringnbd_*.deb "$R/root/debs/first/"
cp -a build/deb/src/uringnbd "$T/src2"
ver=$(dpkg-parsechangelog -l "$T/src2/debian/changelog" -S Version)
{ printf 'uringnbd (%s+vmtest1) unstable; urgency=medium\n\n  * A second build, to test upgrades.\n\n' "$ver"
  printf ' -- uringnbd developers <uringnbd@packages.invalid>  %s\n\n' "$(date -R)"
  cat "$T/src2/debian/changelog"; } >"$T/changelog" && mv "$T/changelog" "$T/src2/debian/changelog"
(cd "$T/src2" && rm -rf build && env -u MAKEFLAGS -u MAKELEVEL dpkg-buildpackage -us -uc -b \
    >"$T/deb2.log" 2>&1) ||
    { tail -n 30 "$T/deb2.log"; fail "the second build"; }
cp "$T"/uringnbd_*+vmtest1_*.deb "$R/root/debs/second/"
install -m 0755 "$HERE/systemd-guest.sh" "$R/usr/local/sbin/vmtest"
install -D -m 0644 "$HERE/handles.awk" "$R/usr/local/share/vmtest/handles.awk"
install -D -m 0755 "$HERE/recv-works.sh" "$R/usr/local/bin/recv-works"
cat >"$R/etc/systemd/system/vmtest.service" <<'EOF'
[Unit]
Description=uringnbd VM test
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/vmtest
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
EOF
mkdir -p "$R/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/vmtest.service "$R/etc/systemd/system/multi-user.target.wants/"
# No login prompts or waits on the console; the test is the only job.
ln -sf /dev/null "$R/etc/systemd/system/serial-getty@ttyS0.service"
ln -sf /dev/null "$R/etc/systemd/system/getty@tty1.service"
echo uringnbd-vm >"$R/etc/hostname"
mkfs.ext4 -q -F -d "$R" "$T/root.img" 1536M || fail "mkfs.ext4 -d of the root filesystem"
rm -rf "$R"
truncate -s 64M "$T/blk.img"

# The initramfs: busybox mounts the root disk and hands over to systemd.
vm_rootfs_initrd "$T/initrd.gz" /lib/systemd/systemd

# The guest stops 30 s before the test would be, so a slow or stuck guest
# still shows its console and steps (guest_failed).
start=$(date +%s)
up=$(cut -d. -f1 /proc/uptime)  # TEST_DEADLINE's clock (run-tests.sh)
budget=$((${TEST_DEADLINE:-$((up + 600))} - up - 30))
[ "$budget" -ge 120 ] || fail "only $budget s left for the guest"
rc=0
timeout "$budget" qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 1024 -nodefaults -display none \
    -no-reboot -serial "file:$T/console.log" -kernel "$vmlinuz" -initrd "$T/initrd.gz" \
    -append "console=ttyS0 panic=-1 quiet systemd.show_status=false" \
    -drive "file=$T/root.img,if=virtio,format=raw" -drive "file=$T/blk.img,if=virtio,format=raw" \
    >"$T/qemu.log" 2>&1 || rc=$?
echo "guest ran $(($(date +%s) - start)) s (qemu exit $rc)"
[ "$rc" != 124 ] || echo "the guest was stopped: it ran out of its $budget s"
if ! grep -q '^GUEST PASS' "$T/console.log"; then
    guest_failed 80
fi
grep '^guest:' "$T/console.log" | tr -d '\r'

# The host's view of what the guest wrote through uringnbd.
debugfs -R "dump /srv/nbd/disk0.img $T/disk0.img" "$T/root.img" >/dev/null 2>&1 ||
    fail "debugfs could not take the export's image out of the guest's disk"
timeout 60 e2fsck -fn "$T/disk0.img" >"$T/fsck.log" 2>&1 || { cat "$T/fsck.log"; fail "e2fsck of the image"; }
want=$(tr -d '\r' <"$T/console.log" | awk '$1 == "SUM" && $3 == "hello" {print $2}')
got=$(debugfs -R "cat /hello" "$T/disk0.img" 2>/dev/null | sha256sum | cut -d' ' -f1)
[ -n "$want" ] && [ "$want" = "$got" ] || fail "debugfs reads /hello as $got, the guest wrote $want"
head -c 64 "$T/blk.img" | grep -q "written through the device export" ||
    fail "the block device export's write is not on the device"
echo "systemd: socket activation, nbd-client, restarts under fio keeping connections, reload, STATUS=, stop, instance and device units"
