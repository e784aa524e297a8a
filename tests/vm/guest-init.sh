#!/bin/sh
# SPDX-License-Identifier: BSD-3-Clause
# /init of the test guest (busybox sh; real tools by full path). Attaches
# /dev/nbd0 from uringnbd over 4 virtio-serial connections, puts ext4 on it,
# checks it, then exercises discard; then /dev/nbd1 over TLS on a fifth.
# Prints GUEST PASS or GUEST FAIL: why; or, stuck past the watchdog
# (uringnbd.watchdog=N on the command line), GUEST STUCK and what it saw.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
fail() { echo "GUEST FAIL: $*"; poweroff -f; sleep 10; }
step() { echo "guest: $*"; echo "$*" >/tmp/step; }
echo "booting" >/tmp/step

for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci \
         virtio_console nbd; do
    insmod /lib/modules/$m.ko || fail "insmod $m"
done
# The ports appear asynchronously; their names say which are ours.
for i in $(seq 1 200); do
    [ "$(ls /sys/class/virtio-ports 2>/dev/null | wc -l)" -ge 5 ] && break
    sleep 0.05
done
: >/tmp/ports
for p in /sys/class/virtio-ports/*; do
    case "$(cat "$p/name")" in uringnbd*) echo "$(basename "$p")" >>/tmp/ports ;; esac
done
[ "$(wc -l </tmp/ports)" -eq 5 ] || fail "expected 5 ports, found: $(cat /tmp/ports)"
for p in $(cat /tmp/ports); do
    for i in $(seq 1 100); do [ -e /dev/$p ] && break; sleep 0.05; done
done

# The kernel's side of every request: nbd_header_sent and nbd_header_received
# carry its handle. The trace goes to the console, where the host matches
# it to the daemon's time-stamped log.
TR=/sys/kernel/tracing
mount -t tracefs nodev $TR 2>/dev/null
if [ -d $TR/events/nbd ]; then
    echo 8192 >$TR/buffer_size_kb
    echo global >$TR/trace_clock  # one clock for all CPUs: the trace's order is the order of events
    echo 1 >$TR/events/nbd/nbd_header_sent/enable
    echo 1 >$TR/events/nbd/nbd_header_received/enable
fi
# A guest stuck past its watchdog says at which step, with the receive
# works, blocked tasks and the nbd trace so far, and powers off: the host
# matches that trace to the daemon's log (a request the daemon never
# answered, or a reply held on the way), where qemu's timeout said nothing.
wd=$(sed -n 's/.*uringnbd\.watchdog=\([0-9]*\).*/\1/p' /proc/cmdline)
if [ -n "$wd" ]; then
    (
        sleep "$wd"
        # The trace first: the host's report of a failed guest shows the console's last lines.
        [ -r $TR/trace ] && grep 'nbd_header' $TR/trace | sed 's/^/STUCK TRACE /'
        echo w >/proc/sysrq-trigger 2>/dev/null
        dmesg | tail -n 40 | sed 's/^/STUCK /'
        echo "STUCK receive works: $(cat /proc/[0-9]*/comm 2>/dev/null | grep 'recv$' | tr '\n' ' ')"
        echo "GUEST STUCK: after $wd s, at: $(cat /tmp/step)"
        poweroff -f
    ) &
fi
# A control run (another server on the host's side): no TLS part.
CONTROL=
grep -q uringnbd.control /proc/cmdline && CONTROL=1

# Each connection nbd-client makes to this socket goes to its own port:
# pick-port runs on the accepted socket itself (nofork), so one socat
# relays between the kernel's socket and the port.
/usr/bin/socat UNIX-LISTEN:/tmp/nbd.sock,fork EXEC:/bin/pick-port,nofork &
for i in $(seq 1 100); do [ -S /tmp/nbd.sock ] && break; sleep 0.05; done

step "attaching /dev/nbd0 with 4 connections"
/usr/sbin/nbd-client -unix /tmp/nbd.sock /dev/nbd0 -N disk0 -C 4 || fail "nbd-client"
for i in $(seq 1 200); do
    [ "$(cat /sys/block/nbd0/size 2>/dev/null)" -gt 0 ] 2>/dev/null && break
    sleep 0.05
done
[ "$(cat /sys/block/nbd0/size)" -gt 0 ] || fail "/dev/nbd0 has no size"
step "/dev/nbd0: $(cat /sys/block/nbd0/size) sectors"
# All 4 receive works must run, or a Linux nbd bug leaves replies unread
# (recv-works says how): then this guest cannot test the daemon. It says
# so before any I/O of its own, and the host runs it again.
works=$(/bin/recv-works nbd0 4) || { echo "GUEST RERUN: $works"; poweroff -f; sleep 10; }
step "nbd0's $works receive works run"

/usr/sbin/mke2fs -q -F -t ext4 /dev/nbd0 || fail "mkfs.ext4"
mount -t ext4 /dev/nbd0 /mnt || fail "mount"
for i in 1 2 3 4 5 6 7 8; do
    dd if=/dev/urandom of=/mnt/file$i bs=1000 count=$((i * 37)) 2>/dev/null || fail "write file$i"
done
mkdir /mnt/dir && echo "hello from the guest" >/mnt/dir/hello
dd if=/dev/urandom of=/mnt/random bs=1M count=16 2>/dev/null || fail "write 16 MiB"
(cd /mnt && sha256sum file* random dir/hello) >/tmp/sums
sync
umount /mnt || fail "umount"
echo 3 >/proc/sys/vm/drop_caches
/usr/sbin/e2fsck -fn /dev/nbd0 >/tmp/fsck.log 2>&1 || { cat /tmp/fsck.log; fail "e2fsck"; }
mount -t ext4 /dev/nbd0 /mnt || fail "remount"
(cd /mnt && sha256sum -c /tmp/sums >/dev/null) || fail "checksums differ after remount"
sed 's/^/SUM /' /tmp/sums
umount /mnt

step "discard: 64 MiB written, deleted, fstrim"
mount -t ext4 -o discard /dev/nbd0 /mnt || fail "mount -o discard"
dd if=/dev/urandom of=/mnt/big bs=1M count=64 2>/dev/null || fail "write 64 MiB"
sync
rm /mnt/big
sync
fstrim -v /mnt || fail "fstrim"
umount /mnt || fail "umount after fstrim"
/usr/sbin/nbd-client -d /dev/nbd0 || fail "nbd-client -d"

[ -n "$CONTROL" ] || {
step "attaching /dev/nbd1 over TLS"
/usr/sbin/nbd-client -unix /tmp/nbd.sock /dev/nbd1 -N secure -cacertfile /etc/tls/ca-cert.pem \
    -certfile /etc/tls/client-cert.pem -keyfile /etc/tls/client-key.pem -tlshostname localhost ||
    fail "nbd-client over TLS"
for i in $(seq 1 200); do
    [ "$(cat /sys/block/nbd1/size 2>/dev/null)" -gt 0 ] 2>/dev/null && break
    sleep 0.05
done
mount -t ext4 /dev/nbd1 /mnt || fail "mount over TLS"
(cd /mnt && sha256sum -c /tmp/sums >/dev/null) || fail "checksums differ over TLS"
echo "written over TLS" >/mnt/over-tls
dd if=/dev/urandom of=/mnt/tls-random bs=1M count=8 2>/dev/null || fail "write 8 MiB over TLS"
sync
umount /mnt || fail "umount over TLS"
/usr/sbin/e2fsck -fn /dev/nbd1 >/tmp/fsck.log 2>&1 || { cat /tmp/fsck.log; fail "e2fsck over TLS"; }
step "over TLS: checksums match, 8 MiB written, e2fsck clean"
/usr/sbin/nbd-client -d /dev/nbd1 || fail "nbd-client -d /dev/nbd1"
}
# The trace, and the kernel's lines on any request it timed out: the host
# test matches them to the daemon's log.
[ -r $TR/trace ] && grep 'nbd_header' $TR/trace | sed 's/^/TRACE /'
dmesg | grep -qi 'nbd.*\(timed out\|unexpected\)' && dmesg | grep -i 'nbd' | sed 's/^/DMESG /'
echo "GUEST PASS"
poweroff -f
