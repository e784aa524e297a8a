#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Runs as init in the guest of tests/vm/ublk.sh (Debian 12's 6.12 kernel,
# which has ublk_drv): every step prints "guest: ..."; "GUEST PASS" at the
# end, "GUEST FAIL: why" (and the daemon's log) otherwise. /dev/vdb is the
# host's image; /srv/base.img is a file of this root filesystem.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
ln -sf /proc/self/fd /dev/fd
mkdir -p /mnt/a /mnt/b
CTL="uringnbdctl -c /run/ctl.sock"
fail() {
    echo "GUEST FAIL: $*"
    sed 's/^/DAEMON /' /tmp/daemon.log 2>/dev/null | tail -n 80
    # Not poweroff: a device left waiting for its daemon would hold the shutdown.
    sync &
    sleep 1
    echo b >/proc/sysrq-trigger
    sleep 10
}
step() { echo "guest: $*"; }
# The daemon's pid, once it wrote it (and its log says it is ready).
start_daemon() {
    rm -f /run/uringnbd.pid
    uringnbd -c /etc/uringnbd.conf "$@" >>/tmp/daemon.log 2>&1 &
    for i in $(seq 1 300); do
        [ -s /run/uringnbd.pid ] && break
        sleep 0.1
    done
    [ -s /run/uringnbd.pid ] || fail "uringnbd did not start"
}
# SIGTERM to the daemon; fails with "the daemon did not exit $1" unless it
# exits within 10 s.
stop_daemon() {
    local pid
    pid=$(cat /run/uringnbd.pid)
    kill "$pid"
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && fail "the daemon did not exit $1"
    return 0
}
# How many takeovers of a previous process's device the log has.
takeovers() { grep -c 'taken over from the previous process' /tmp/daemon.log; }
# Waits up to $2 tenths of a second for the log to count $1 takeovers, else fails with $3.
wait_takeovers() {
    for i in $(seq 1 "$2"); do
        [ "$(takeovers)" -ge "$1" ] && return 0
        sleep 0.1
    done
    fail "$3"
}
# /dev/ublkbN of export $1, from the control socket.
ublk_of() {
    $CTL --json exports "$1" | grep -o '"ublk": *"[^"]*"' | sed 's|.*"\(/dev/[^"]*\)"|\1|'
}

for m in ublk_drv nbd loop vsock_loopback; do
    modprobe $m || fail "modprobe $m"
done
[ -c /dev/ublk-control ] || fail "no /dev/ublk-control after modprobe ublk_drv"
step "kernel $(uname -r), ublk_drv loaded"

cat >/etc/uringnbd.conf <<'EOF'
[global]
unix = /run/uringnbd.sock
control = /run/ctl.sock
pid-file = /run/uringnbd.pid
listen = vsock:10810
threads = 2
pool-size = 32M
cache-size = 8M
[export disk]
path = /dev/vdb
ublk = yes
[export ovl]
path = /srv/base.img
overlay = /srv/base.ovl
[export cached]
path = /srv/cached.img
cache = always
bitmaps = b0
ublk = yes
EOF
start_daemon -v
dev=$(ublk_of disk)
[ -n "$dev" ] && [ -b "$dev" ] || fail "export disk has no ublk device ($dev)"
size=$(blockdev --getsize64 "$dev")
[ "$size" = "$(blockdev --getsize64 /dev/vdb)" ] || fail "$dev is $size bytes, the export is not"
lbs=$(blockdev --getss "$dev")
queues=$(ls /sys/block/${dev#/dev/}/mq | wc -l)
step "$dev: $size bytes, logical block $lbs, $queues queues, $(cat /sys/block/${dev#/dev/}/queue/max_sectors_kb) KiB max request"
grep -q "export \"disk\": $dev" /tmp/daemon.log || fail "the log does not name $dev"

# The same export through the kernel's NBD client: each sees the other's writes.
nbd-client -unix /run/uringnbd.sock /dev/nbd0 -N disk >/dev/null 2>&1 || fail "nbd-client"
head -c 1048576 /dev/urandom >/tmp/r1
head -c 1048576 /dev/urandom >/tmp/r2
dd if=/tmp/r1 of="$dev" bs=1M seek=100 oflag=direct status=none || fail "dd to $dev"
dd if=/dev/nbd0 bs=1M skip=100 count=1 iflag=direct status=none | cmp - /tmp/r1 ||
    fail "/dev/nbd0 does not read what $dev wrote"
dd if=/tmp/r2 of=/dev/nbd0 bs=1M seek=101 oflag=direct status=none || fail "dd to /dev/nbd0"
dd if="$dev" bs=1M skip=101 count=1 iflag=direct status=none | cmp - /tmp/r2 ||
    fail "$dev does not read what /dev/nbd0 wrote"
# Unaligned neighbours: 512-byte writes from both sides into one 4 KiB block.
for i in 0 1 2 3 4 5 6 7; do
    if [ $((i % 2)) = 0 ]; then d="$dev"; else d=/dev/nbd0; fi
    printf '%0512d' $i | dd of="$d" bs=512 seek=$((102 * 2048 + i)) oflag=direct status=none ||
        fail "512-byte write $i"
done
for i in 0 1 2 3 4 5 6 7; do printf '%0512d' $i; done >/tmp/want
dd if="$dev" bs=4096 skip=$((102 * 256)) count=1 iflag=direct status=none | cmp - /tmp/want ||
    fail "interleaved 512-byte writes: a neighbour's bytes were lost"
nbd-client -d /dev/nbd0 >/dev/null 2>&1
step "$dev and /dev/nbd0 on one export: each reads the other's 1 MiB; 8 interleaved 512-byte writes all kept"

# A cached export with a dirty bitmap: ublk and NBD see each other's writes
# through the daemon's cache, and ublk's writes are in the bitmap.
cdev=$(ublk_of cached)
[ -b "$cdev" ] || fail "export cached has no device ($cdev)"
nbd-client -unix /run/uringnbd.sock /dev/nbd1 -N cached >/dev/null 2>&1 || fail "nbd-client cached"
before=$($CTL --json bitmaps cached | grep -o '"dirty-bytes": *[0-9]*' | grep -o '[0-9]*$')
for i in 1 2 3; do
    # Each side reads first (the cache fills), then the other writes, then it reads again.
    dd if="$cdev" of=/dev/null bs=64k skip=$i count=1 iflag=direct status=none
    dd if=/dev/nbd1 of=/dev/null bs=64k skip=$((i + 8)) count=1 iflag=direct status=none
    head -c 65536 /dev/urandom >/tmp/c$i
    dd if=/tmp/c$i of=/dev/nbd1 bs=64k seek=$i oflag=direct status=none || fail "dd to /dev/nbd1"
    dd if="$cdev" bs=64k skip=$i count=1 iflag=direct status=none | cmp - /tmp/c$i ||
        fail "$cdev read stale data from the cache after /dev/nbd1 wrote"
    dd if=/tmp/c$i of="$cdev" bs=64k seek=$((i + 8)) oflag=direct status=none || fail "dd to $cdev"
    dd if=/dev/nbd1 bs=64k skip=$((i + 8)) count=1 iflag=direct status=none | cmp - /tmp/c$i ||
        fail "/dev/nbd1 read stale data from the cache after $cdev wrote"
done
# A 512-byte read through the cache: its page is read whole, the sector copied out.
dd if=/tmp/c1 bs=512 skip=3 count=1 status=none >/tmp/want512
dd if="$cdev" bs=512 skip=$((65536 / 512 + 3)) count=1 iflag=direct status=none | cmp - /tmp/want512 ||
    fail "a 512-byte read through the cache differs"
nbd-client -d /dev/nbd1 >/dev/null 2>&1
after=$($CTL --json bitmaps cached | grep -o '"dirty-bytes": *[0-9]*' | grep -o '[0-9]*$')
[ -n "$after" ] && [ "$after" -ge $((${before:-0} + 6 * 65536)) ] ||
    fail "bitmap b0: $before dirty bytes before, $after after 6 writes of 64 KiB"
step "cache=always with bitmap b0: $cdev and /dev/nbd1 read each other's writes through the cache, a 512-byte read too; b0 dirty $before -> $after bytes"

# An overlay export as a device: writes go to the overlay, the base stays.
base=$(sha256sum </srv/base.img)
$CTL ublk-add ovl >/tmp/add.out 2>&1 || fail "ublk-add ovl: $(cat /tmp/add.out)"
odev=$(ublk_of ovl)
[ -b "$odev" ] || fail "ovl has no device ($odev)"
dd if=/tmp/r1 of="$odev" bs=1M seek=3 oflag=direct status=none || fail "dd to $odev"
dd if="$odev" bs=1M skip=3 count=1 iflag=direct status=none | cmp - /tmp/r1 ||
    fail "$odev does not read back its write"
head -c 1048576 /srv/base.img >/tmp/base1
dd if="$odev" bs=1M count=1 iflag=direct status=none | cmp - /tmp/base1 ||
    fail "$odev's unwritten part is not the base's"
# 4 KiB inside a 32 KiB granule of the base: the overlay copies the granule up around it.
head -c 4096 /dev/urandom >/tmp/r4k
dd if=/srv/base.img bs=32k skip=160 count=1 status=none >/tmp/gran
dd if=/tmp/r4k of=/tmp/gran bs=4k seek=3 conv=notrunc status=none
dd if=/tmp/r4k of="$odev" bs=4k seek=$((160 * 8 + 3)) oflag=direct status=none || fail "4 KiB to $odev"
dd if="$odev" bs=32k skip=160 count=1 iflag=direct status=none | cmp - /tmp/gran ||
    fail "$odev: the granule around a 4 KiB write is not the base's with the write in it"
[ "$(sha256sum </srv/base.img)" = "$base" ] || fail "the overlay's write reached the base"
step "overlay export as $odev (ublk-add): 1 MiB and a 4 KiB write in a granule read back, the base unchanged"

# A 4K-sector device as an export (export-add at run time): its ublk device has 4K sectors too.
truncate -s 64M /srv/four.img
four=$(losetup --sector-size 4096 --direct-io=on --show -f /srv/four.img) || fail "losetup --sector-size 4096"
$CTL export-add four "$four" >/dev/null || fail "export-add four"
$CTL ublk-add four >/tmp/add.out 2>&1 || fail "ublk-add four: $(cat /tmp/add.out)"
fdev=$(ublk_of four)
[ "$(blockdev --getss "$fdev")" = 4096 ] || fail "$fdev: logical block $(blockdev --getss "$fdev"), expected 4096"
head -c 8192 /dev/urandom >/tmp/r8k
dd if=/tmp/r8k of="$fdev" bs=4096 seek=5 oflag=direct status=none || fail "dd to $fdev"
dd if="$four" bs=4096 skip=5 count=2 iflag=direct status=none | cmp - /tmp/r8k ||
    fail "$four does not hold what $fdev wrote"
dd if="$fdev" bs=512 seek=1 count=1 oflag=direct status=none </dev/zero 2>/dev/null &&
    fail "a 512-byte write to a 4K-sector device succeeded"
out=$($CTL export-remove four 2>&1) && fail "export-remove of an export with a device succeeded"
echo "$out" | grep -q "ublk-remove it first" || fail "export-remove four: $out"
$CTL ublk-remove four >/dev/null || fail "ublk-remove four"
$CTL export-remove four >/dev/null || fail "export-remove four after ublk-remove"
losetup -d "$four"
step "a 4K-sector export ($four): $fdev has 4096-byte sectors, 8 KiB written reach the device; export-remove waits for ublk-remove"

# A reload (SIGHUP) makes the device that `ublk = yes` asks for; a device
# the file no longer asks for stays, as connections do, until ublk-remove.
truncate -s 32M /srv/late.img
cp /etc/uringnbd.conf /tmp/conf.orig
printf '[export late]\npath = /srv/late.img\nublk = yes\n' >>/etc/uringnbd.conf
kill -HUP "$(cat /run/uringnbd.pid)"
for i in $(seq 1 100); do
    grep -q 'reload: export "late" made /dev/ublkb' /tmp/daemon.log && break
    sleep 0.1
done
ldev=$(ublk_of late)
[ -n "$ldev" ] && [ -b "$ldev" ] ||
    fail "the reload made no device for export late: $(grep 'reload' /tmp/daemon.log | tail -n 3)"
[ "$(blockdev --getsize64 "$ldev")" = 33554432 ] || fail "$ldev: $(blockdev --getsize64 "$ldev") bytes"
head -c 65536 /dev/urandom >/tmp/r64k
dd if=/tmp/r64k of="$ldev" bs=64k oflag=direct status=none || fail "dd to $ldev"
head -c 65536 /srv/late.img | cmp - /tmp/r64k || fail "/srv/late.img does not hold what $ldev wrote"
cp /tmp/conf.orig /etc/uringnbd.conf
kill -HUP "$(cat /run/uringnbd.pid)"
for i in $(seq 1 100); do
    grep -q "reload: export \"late\" keeps $ldev" /tmp/daemon.log && break
    sleep 0.1
done
grep -q "reload: export \"late\" keeps $ldev, which the configuration does not ask for (nor the export)" \
    /tmp/daemon.log || fail "the second reload did not say $ldev stays: $(grep 'reload' /tmp/daemon.log | tail -n 3)"
dd if="$ldev" bs=64k count=1 iflag=direct status=none | cmp - /tmp/r64k || fail "$ldev after the reload"
$CTL ublk-remove late >/dev/null || fail "ublk-remove late (no longer an export)"
for i in $(seq 1 100); do [ -e "$ldev" ] || break; sleep 0.1; done
[ -e "$ldev" ] && fail "$ldev still there after ublk-remove"
step "a reload made $ldev for a new export with ublk = yes; the next, without it, kept the device until ublk-remove"

# The export's rate limits hold for its device as for its NBD clients.
$CTL export-set disk iops-total=200 >/dev/null || fail "export-set disk iops-total=200"
fio --name=limit --filename="$dev" --direct=1 --rw=randread --bs=4k --iodepth=8 --ioengine=libaio \
    --time_based --runtime=3 --output-format=terse --terse-version=3 >/tmp/limit.out 2>&1 ||
    fail "fio under the limit: $(tail -n 5 /tmp/limit.out)"
iops=$(awk -F';' '{printf "%d", $8}' /tmp/limit.out)
[ "$iops" -ge 150 ] && [ "$iops" -le 260 ] || fail "iops-total=200 on $dev: fio saw $iops IOPS"
$CTL export-set disk iops-total=0 >/dev/null || fail "export-set disk iops-total=0"
step "export-set disk iops-total=200: $dev ran at $iops IOPS (4k QD8 reads, 3 s)"

# Restarts under fio: SIGUSR2 execs the daemon, which takes the device over.
fio --name=restart --filename="$dev" --direct=1 --rw=randrw --bs=4k --iodepth=16 --ioengine=libaio \
    --offset=64M --size=64M --time_based --runtime=600 --verify=crc32c --verify_fatal=1 \
    >/tmp/fio.out 2>&1 &
fio_pid=$!
sleep 3
for n in 1 2 3; do
    kill -USR2 "$(cat /run/uringnbd.pid)"
    # Three devices (disk, cached, ovl) are taken over at each restart.
    wait_takeovers $((3 * n)) 200 "restart $n: the devices were not all taken over"
    sleep 2
    kill -0 $fio_pid 2>/dev/null || fail "fio ended at restart $n: $(tail -n 20 /tmp/fio.out)"
done
# This process has no NBD client, only the devices' queues: its workers
# poll for them as for connections (fio holds 8 requests per queue).
polled=$($CTL stats | sed -n 's/.*found polling, \([0-9.]*\) s polled.*/\1/p' | awk '{ s += $1 } END { print s + 0 }')
awk -v p="$polled" 'BEGIN { exit !(p > 0) }' ||
    fail "the workers never polled for the devices' requests: $($CTL stats | grep '^worker [0-9]' | tr '\n' ' ')"
kill -INT $fio_pid
wait $fio_pid
rc=$?
grep -q "err= 0" /tmp/fio.out && ! grep -q "verify: bad" /tmp/fio.out ||
    fail "fio across the restarts: $(grep -E 'err=|bad' /tmp/fio.out | head -n 5) $(tail -n 20 /tmp/fio.out)"
step "3 restarts (SIGUSR2) under fio randrw QD16 with verify: $(grep -o 'err= 0' /tmp/fio.out | head -n 1), $(grep -E '^ *(read|write):' /tmp/fio.out | tr -s ' ' | tr '\n' ';') the workers polled $polled s for the devices alone"
[ -b "$dev" ] || fail "$dev gone after the restarts"
[ "$(ublk_of ovl)" = "$odev" ] || fail "ovl's $odev (ublk-add, not in the configuration) was not taken over: $(ublk_of ovl)"
dd if="$odev" bs=1M skip=3 count=1 iflag=direct status=none | cmp - /tmp/r1 ||
    fail "$odev after the restarts does not read its write"
$CTL ublk-remove ovl >/dev/null || fail "ublk-remove ovl"
[ -e "$odev" ] && fail "$odev still there after ublk-remove"

# A service manager's restart (systemctl restart with --keep-connections):
# SIGTERM leaves the devices, the next start takes them over, fio goes on.
# socat stands in for systemd's notification socket (its fd store is not
# needed: the devices are found by the kernel's tag).
socat -u UNIX-RECV:/run/notify OPEN:/dev/null &
notify=$!
stop_daemon "in 10 s on SIGTERM"
NOTIFY_SOCKET=/run/notify start_daemon --keep-connections
fio --name=svc --filename="$dev" --direct=1 --rw=randrw --bs=4k --iodepth=16 --ioengine=libaio \
    --offset=128M --size=64M --time_based --runtime=600 --verify=crc32c --verify_fatal=1 \
    >/tmp/fio-svc.out 2>&1 &
fio_pid=$!
sleep 3
taken=$(takeovers)
stop_daemon "on SIGTERM with --keep-connections"
grep -q "/dev/ublkb[0-9]* left to the next process" /tmp/daemon.log ||
    fail "SIGTERM with --keep-connections under a service manager did not leave the devices"
[ -b "$dev" ] || fail "$dev went with the daemon"
sleep 1
NOTIFY_SOCKET=/run/notify start_daemon --keep-connections
wait_takeovers $((taken + 2)) 100 "the start after the service manager's stop did not take disk and cached over"
sleep 2
kill -0 $fio_pid 2>/dev/null || fail "fio ended at the service restart: $(tail -n 20 /tmp/fio-svc.out)"
kill -INT $fio_pid
wait $fio_pid || true
grep -q "err= 0" /tmp/fio-svc.out && ! grep -q "verify: bad" /tmp/fio-svc.out ||
    fail "fio across the service restart: $(grep -E 'err=|bad' /tmp/fio-svc.out | head -n 5)"
# Back to a daemon of its own (no service manager): the devices are taken over once more.
taken=$(takeovers)
stop_daemon "in 10 s on SIGTERM"
kill $notify 2>/dev/null
start_daemon
wait_takeovers $((taken + 2)) 100 "a plain start did not take the devices over"
step "a service manager's restart (SIGTERM with --keep-connections, then a start) under fio with verify: $(grep -o 'err= 0' /tmp/fio-svc.out | head -n 1); the devices waited and were taken over"

# vsock: the guest reaches a listener of the same daemon at CID 1 (vsock_loopback).
size=$(nbdinfo --size nbd+vsock://1:10810/disk 2>/tmp/vsock.out) || fail "nbdinfo over vsock: $(cat /tmp/vsock.out)"
[ "$size" = "$(blockdev --getsize64 /dev/vdb)" ] || fail "nbdinfo over vsock says $size bytes"
step "nbdinfo nbd+vsock://1:10810/disk: $size bytes, while $dev serves the same export"

# A filesystem through the device: made, filled, checked.
mkfs.ext4 -q -F "$dev" || fail "mkfs.ext4 on $dev"
mount "$dev" /mnt/a || fail "mount $dev"
cp -a /usr/lib/x86_64-linux-gnu /mnt/a/lib || fail "copying a tree into the filesystem"
(cd /usr/lib/x86_64-linux-gnu && find . -type f -print0 | sort -z | xargs -0 sha256sum) >/tmp/tree.sum
fio --name=fs --directory=/mnt/a --rw=randrw --bs=4k-64k --size=16M --numjobs=2 \
    --ioengine=psync --verify=crc32c --do_verify=1 --fsync=32 >/tmp/fio-fs.out 2>&1 ||
    fail "fio on the filesystem: $(tail -n 20 /tmp/fio-fs.out)"
grep -q "err= 0" /tmp/fio-fs.out || fail "fio on the filesystem: $(grep err= /tmp/fio-fs.out)"
echo "written through ublk" >/mnt/a/hello
echo "SUM $(sha256sum </mnt/a/hello | cut -d' ' -f1) hello"
umount /mnt/a || fail "umount"
e2fsck -fn "$dev" >/tmp/fsck.out 2>&1 || fail "e2fsck: $(cat /tmp/fsck.out)"
mount -o ro "$dev" /mnt/a || fail "mount again"
(cd /mnt/a/lib && sha256sum -c --quiet /tmp/tree.sum) >/tmp/sum.out 2>&1 ||
    fail "the tree read back differs: $(head -n 5 /tmp/sum.out)"
umount /mnt/a
mount "$dev" /mnt/a || fail "mount rw"
step "ext4 on $dev: a $(du -sh /mnt/a/lib | cut -f1) tree, fio verify=crc32c (2 jobs), e2fsck clean, tree read back the same"

# Removal while mounted is refused, clearly; unmounted, it goes.
out=$($CTL ublk-remove disk 2>&1) && fail "ublk-remove of a mounted device succeeded"
echo "$out" | grep -q "in use" || fail "ublk-remove while mounted: $out"
step "ublk-remove while mounted: $out"
# A stop while it is mounted keeps the device (its I/O waits); the next start takes it over.
stop_daemon "in 10 s with $dev mounted"
[ -b "$dev" ] || fail "$dev went with the daemon while mounted"
grep -q "is in use (mounted): left for the next start" /tmp/daemon.log || fail "the stop did not say it kept $dev"
# Written, and synced (which waits for the device) while no daemon serves it.
(echo "written while the daemon was away" >/mnt/a/away && sync -f /mnt/a/away) &
writer=$!
sleep 1
kill -0 $writer 2>/dev/null || fail "the sync did not wait for the device while no daemon served it"
taken=$(takeovers)
start_daemon
wait_takeovers $((taken + 1)) 100 "the next start did not take $dev over"
wait $writer || fail "the write and sync while the daemon was away failed"
[ "$(cat /mnt/a/away)" = "written while the daemon was away" ] || fail "/mnt/a/away"
dmesg | grep -i "ext4.*error\|I/O error.*ublkb" && fail "errors in dmesg"
step "stopped with $dev mounted: the device stayed, the next start took it over, the filesystem went on"
umount /mnt/a
$CTL ublk-remove disk >/tmp/rm.out 2>&1 || fail "ublk-remove: $(cat /tmp/rm.out)"
[ -e "$dev" ] && fail "$dev still there after ublk-remove"
[ -z "$(ublk_of disk)" ] || fail "exports still names a device"
$CTL ublk-add disk >/tmp/add.out 2>&1 || fail "ublk-add: $(cat /tmp/add.out)"
dev=$(ublk_of disk)
[ -b "$dev" ] || fail "no device after ublk-add ($dev)"
mount -o ro "$dev" /mnt/a || fail "mount after ublk-add"
[ "$(cat /mnt/a/hello)" = "written through ublk" ] || fail "/hello differs after ublk-add"
umount /mnt/a
step "unmounted: removed; ublk-add made $dev again, its filesystem intact"

# A second daemon with an export of the same name does not take a live device.
uringnbd -e disk=/dev/vdb --ublk disk -U /run/y.sock >/tmp/second.out 2>&1 &&
    fail "a second daemon took over a live device"
grep -q "is served by process $(cat /run/uringnbd.pid)" /tmp/second.out ||
    fail "a second daemon: $(cat /tmp/second.out)"
[ -b "$dev" ] && [ "$(ublk_of disk)" = "$dev" ] || fail "the second daemon disturbed $dev"
step "a second daemon for export disk: $(grep -o 'export.*' /tmp/second.out | head -n 1)"

# A stop removes the device.
stop_daemon "in 10 s"
for i in $(seq 1 100); do [ -e "$dev" ] || break; sleep 0.1; done
[ -e "$dev" ] && fail "$dev still there after the daemon stopped"
step "the daemon stopped: $dev removed"
# A sanitizer build (make check SANITIZE=1) says here what it found, exec after exec.
if grep -q "ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:" /tmp/daemon.log; then
    fail "the sanitizers: $(grep -m 3 -A 12 'Sanitizer\|runtime error:' /tmp/daemon.log)"
fi

# A daemon on a device that no longer has ublk_drv: a clear error.
rmmod ublk_drv 2>/tmp/rmmod.out || fail "rmmod ublk_drv: $(cat /tmp/rmmod.out) $(ls /dev/ublk* 2>&1)"
uringnbd -e x=/dev/vdb --ublk x -U /run/x.sock >/tmp/noublk.out 2>&1 && fail "--ublk without ublk_drv started"
grep -q "needs a kernel with ublk_drv" /tmp/noublk.out || fail "--ublk without ublk_drv: $(cat /tmp/noublk.out)"
step "without ublk_drv: $(grep -o 'export.*' /tmp/noublk.out | head -n 1)"
sync
echo "GUEST PASS"
poweroff -f
