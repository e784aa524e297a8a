#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# test-timeout: 600
# vsock: uringnbd listening with -b vsock:PORT inside a qemu guest (software
# emulation, no network) whose kernel has vsock_loopback, reached by
# libnbd's real clients at nbd+vsock://1:PORT (CID 1: the guest itself):
# the size by nbdinfo, 4 MiB written by nbdcopy, read back the same and
# found in the image on the host (the guest's virtio disk),
# TLS with a PSK (nbds+vsock, tls-allow), an export whose deny = vsock:1
# refuses the guest, allow = anyvsock, and a second listener from the
# configuration file's listen = vsock:PORT. On this host (a guest transport
# only, no loopback), a vsock client gets a clear error, not a hang.
. "$(dirname "$0")/../interop/lib.bash"
VM=${VM_DIR:-build/vm}
HERE=$(cd "$(dirname "$0")" && pwd)
need qemu-system-x86_64 cpio gzip nbdinfo nbdcopy psktool
[ -x /bin/busybox ] || skip "busybox-static is not installed"
mkdir -p "$VM"
. "$HERE/kernel.sh"
. "$HERE/guest-failed.sh"
vm_kernel

# The initramfs: busybox, uringnbd, nbdinfo, nbdcopy and their libraries.
R="$T/initramfs"
mkdir -p "$R"/{bin,proc,sys,dev,tmp,etc,lib/modules}
cp /bin/busybox "$R/bin/busybox"
for a in $(/bin/busybox --list); do
    [ "$a" = busybox ] || ln -sf busybox "$R/bin/$a"
done
for t in "$URINGNBD" "$(command -v nbdinfo)" "$(command -v nbdcopy)"; do
    cp "$t" "$R/bin/"
    for lib in $(ldd "$t" | grep -o '/[^ ]*'); do
        mkdir -p "$R$(dirname "$lib")" && cp -L "$lib" "$R$lib"
    done
done
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk \
         vsock vmw_vsock_virtio_transport_common vsock_loopback; do
    f=$(find "$K/root/lib/modules/$kver" -name "$m.ko*" | head -n 1)
    [ -n "$f" ] || skip "the guest kernel ($pkg) has no $m module"
    case "$f" in
    *.xz) xz -dc "$f" >"$R/lib/modules/$m.ko" ;;
    *.zst) zstd -qdc "$f" >"$R/lib/modules/$m.ko" ;;
    *) cp "$f" "$R/lib/modules/$m.ko" ;;
    esac
done
psktool -u alice -p "$R/etc/keys.psk" >/dev/null 2>&1 || fail "psktool"
cat >"$R/etc/uringnbd.conf" <<'EOF'
[global]
listen = vsock:10810
tls = on
tls-psk = /etc/keys.psk
[export disk]
path = /dev/vda
allow = anyvsock
[export secret]
path = /dev/vda
deny = vsock:1
[export pskonly]
path = /dev/vda
tls-allow = alice
EOF
cat >"$R/init" <<'EOF'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
fail() { echo "GUEST FAIL: $*"; sed 's/^/DAEMON /' /tmp/daemon.log; poweroff -f; sleep 10; }
step() { echo "guest: $*"; }
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk \
         vsock vmw_vsock_virtio_transport_common vsock_loopback; do
    insmod /lib/modules/$m.ko || fail "insmod $m"
done
# The export: the host's image as a virtio disk (the initramfs has no O_DIRECT).
for i in $(seq 1 100); do [ -b /dev/vda ] && break; sleep 0.05; done
[ -b /dev/vda ] || fail "no /dev/vda"
uringnbd -c /etc/uringnbd.conf -b vsock:10809 -t 1 --pool-size 32M --cache-size 8M -v \
    --pid-file /tmp/pid 2>/tmp/daemon.log &
daemon=$!
for i in $(seq 1 600); do
    [ -s /tmp/pid ] && break
    kill -0 $daemon 2>/dev/null || break
    sleep 0.1
done
[ -s /tmp/pid ] || fail "uringnbd did not start"
step "uringnbd listening"
size=$(nbdinfo --size nbd+vsock://1:10809/disk) || fail "nbdinfo --size over vsock"
[ "$size" = 67108864 ] || fail "nbdinfo says $size bytes, expected 67108864"
step "nbdinfo over vsock: $size bytes"
dd if=/dev/urandom of=/tmp/random bs=1M count=4 2>/dev/null
nbdcopy /tmp/random nbd+vsock://1:10809/disk || fail "nbdcopy into the export"
nbdcopy nbd+vsock://1:10809/disk - | head -c 4194304 >/tmp/back
cmp /tmp/random /tmp/back || fail "what nbdcopy read back differs from what it wrote"
echo "SUM $(sha256sum </tmp/random | cut -d' ' -f1)"
step "4 MiB written and read back over vsock"
nbdinfo --size "nbds+vsock://alice@1:10809/pskonly?tls-psk-file=/etc/keys.psk" >/tmp/tls.out 2>&1 ||
    fail "TLS (PSK) over vsock: $(cat /tmp/tls.out)"
step "TLS over vsock: $(cat /tmp/tls.out) bytes"
if nbdinfo --size nbd+vsock://1:10809/pskonly >/tmp/plain.out 2>&1; then
    fail "pskonly served without TLS"
fi
if nbdinfo --size nbd+vsock://1:10809/secret >/tmp/deny.out 2>&1; then
    fail "deny = vsock:1 let the guest in"
fi
grep -qi "not permitted\|refused\|denied\|permission\|policy" /tmp/deny.out || fail "deny: $(cat /tmp/deny.out)"
step "deny = vsock:1 refused: $(head -n 1 /tmp/deny.out)"
size=$(nbdinfo --size nbd+vsock://1:10810/disk) || fail "nbdinfo on listen = vsock:10810"
step "listen = vsock:10810: $size bytes"
kill "$(cat /tmp/pid)"
for i in $(seq 1 100); do kill -0 "$(cat /tmp/pid)" 2>/dev/null || break; sleep 0.1; done
sed 's/^/DAEMON /' /tmp/daemon.log
echo "GUEST PASS"
poweroff -f
EOF
chmod 0755 "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1) >"$T/initrd.gz"

truncate -s 64M "$T/disk.img"
start=$(date +%s)
rc=0
timeout 300 qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 768 -nodefaults -display none \
    -no-reboot -serial "file:$T/console.log" -kernel "$vmlinuz" -initrd "$T/initrd.gz" \
    -drive "file=$T/disk.img,format=raw,if=virtio,cache=none" \
    -append "console=ttyS0 panic=-1 quiet" >"$T/qemu.log" 2>&1 || rc=$?
echo "guest ran $(($(date +%s) - start)) s (qemu exit $rc)"
grep -q '^GUEST PASS' "$T/console.log" || guest_failed 80
tr -d '\r' <"$T/console.log" | grep '^guest:'
log=$(tr -d '\r' <"$T/console.log" | sed -n 's/^DAEMON //p')
echo "$log" | grep -q 'listening on vsock:10809' || fail "the daemon did not log its vsock listener"
echo "$log" | grep -q 'serving export "disk" to vsock cid 1 port [0-9]*' ||
    fail "the daemon's log does not name the vsock peer: $(echo "$log" | grep serving | head -n 3)"
echo "$log" | grep -q 'TLS identity alice' || fail "the TLS connection is not in the daemon's log"
want=$(tr -d '\r' <"$T/console.log" | awk '$1 == "SUM" {print $2}')
got=$(head -c 4194304 "$T/disk.img" | sha256sum | cut -d' ' -f1)
[ -n "$want" ] && [ "$want" = "$got" ] || fail "the image's first 4 MiB: $got; the guest wrote $want"

# Here: no loopback transport. A client fails at once with a clear error.
out=$(timeout 20 nbdinfo --size nbd+vsock://1:10809/ 2>&1) && fail "a vsock client on this host connected"
echo "on this host: $out"
echo "PASS vsock.sh"
