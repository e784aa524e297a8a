#!/bin/sh
# SPDX-License-Identifier: BSD-3-Clause
# Runs inside the systemd guest (tests/vm/systemd.sh) as vmtest.service,
# after boot: installs the package from `make deb` with dpkg -i, upgrades
# it to a second build under an attached client, purges it at the end. Prints
# "guest: ..." steps and GUEST PASS or GUEST FAIL: why on the serial
# console, then powers the guest off.
fail() {
    echo "GUEST FAIL: $*"
    journalctl -b --no-pager -o short-monotonic >/root/journal.txt 2>&1; dmesg >/root/dmesg.txt; sync
    journalctl -b --no-pager -n 60 -u 'uringnbd*' 2>&1 | sed 's/^/journal: /'
    systemctl poweroff --no-block
    exit 1
}
step() { echo "guest: $(cut -d' ' -f1 /proc/uptime)s $*"; }
step "booted; systemd $(systemctl --version | head -n 1 | cut -d' ' -f2)"

step "dpkg -i $(basename /root/debs/first/uringnbd_*.deb)"
dpkg -i /root/debs/first/uringnbd_*.deb >/tmp/dpkg.log 2>&1 || fail "dpkg -i: $(tail -n 5 /tmp/dpkg.log)"
getent group uringnbd >/dev/null || fail "the package's postinst did not create group uringnbd"
systemctl is-enabled -q uringnbd.socket || fail "the package did not enable uringnbd.socket"
systemctl is-active -q uringnbd.socket || fail "the package did not start uringnbd.socket"
systemctl is-enabled -q uringnbd.service && fail "uringnbd.service is enabled (the socket starts it)"
dpkg-query -W -f='${Conffiles}\n' uringnbd | grep -q ' /etc/uringnbd/uringnbd.conf ' ||
    fail "/etc/uringnbd/uringnbd.conf is not a conffile"
# The debug lines below are many: journald keeps them all.
mkdir -p /etc/systemd/system/uringnbd.service.d
printf '[Service]\nLogRateLimitIntervalSec=0\n' >/etc/systemd/system/uringnbd.service.d/log.conf
systemctl daemon-reload
mkdir -p /srv/nbd
truncate -s 256M /srv/nbd/disk0.img
chmod 0600 /srv/nbd/disk0.img
# Every request's cookie in the journal until the restarts (log-level is put
# back to info before them), to match against the kernel's nbd tracepoints.
cat >/etc/uringnbd/uringnbd.conf <<EOF
[global]
log-level = debug
[export disk0]
path = /srv/nbd/disk0.img
description = the VM test's disk
EOF

[ "$(stat -c '%a %G' /run/uringnbd.sock)" = "660 uringnbd" ] ||
    fail "socket mode/group: $(stat -c '%a %G' /run/uringnbd.sock)"
systemctl is-active -q uringnbd.service && fail "the service runs before any connection"
modprobe nbd || fail "modprobe nbd"
# The kernel's side of every request: nbd_header_sent and nbd_header_received
# carry its handle, which is the NBD cookie the daemon logs.
T=/sys/kernel/tracing
[ -d $T/events ] || mount -t tracefs nodev $T 2>/dev/null
if [ -d $T/events/nbd ]; then
    echo 16384 >$T/buffer_size_kb
    echo global >$T/trace_clock  # one clock for all CPUs: the trace's order is the order of events
    echo 1 >$T/events/nbd/nbd_header_sent/enable
    echo 1 >$T/events/nbd/nbd_header_received/enable
fi
# answered: every request the kernel has sent so far, matched to the
# daemon's record of its cookie (intake, reply queued, send completed) by
# handles.awk; the summary or what went unanswered is in /tmp/answered.
answered() {
    [ -r $T/trace ] || { echo "(no nbd tracepoints)" >/tmp/answered; return 0; }
    for i in 1 2 3 4 5 6 7 8 9 10; do
        grep 'nbd_header\|tracing_mark_write: vmtest-' $T/trace >/tmp/trace
        journalctl --sync 2>/dev/null
        journalctl -b --no-pager -u uringnbd.service -o short-unix >/tmp/daemon.log
        awk -f /usr/local/share/vmtest/handles.awk /tmp/trace /tmp/daemon.log >/tmp/answered &&
            return 0
        sleep 1  # a reply in flight, or the journal has not stored the last lines yet
    done
    return 1
}
step "nbd-client attaches /dev/nbd0 (socket activation)"
nbd-client -unix /run/uringnbd.sock /dev/nbd0 -N disk0 || fail "nbd-client"
systemctl is-active -q uringnbd.service || fail "the first connection did not start the service"
# journald may take a moment to store the line (a loaded host: seconds).
for _ in $(seq 1 50); do
    journalctl -b --no-pager -u uringnbd.service | grep -q 'listening on socket-activated fd 3 (nbd)' &&
        break
    sleep 0.2
done
journalctl -b --no-pager -u uringnbd.service | grep -q 'listening on socket-activated fd 3 (nbd)' ||
    fail "the daemon did not get the socket named by FileDescriptorName=nbd"
[ "$(cat /sys/block/nbd0/size)" -gt 0 ] || fail "/dev/nbd0 has no size"
step "uringnbdctl on the unit's control socket"
[ "$(stat -c '%a %U' /run/uringnbd/control)" = "600 root" ] ||
    fail "control socket: $(stat -c '%a %U' /run/uringnbd/control)"
uringnbdctl exports >/tmp/ctl || fail "uringnbdctl exports: $(cat /tmp/ctl)"
grep -q '^disk0 ' /tmp/ctl || fail "uringnbdctl exports: $(cat /tmp/ctl)"
uringnbdctl --json connections disk0 >/tmp/ctl || fail "uringnbdctl connections"
[ "$(grep -c '"export":"disk0"' /tmp/ctl)" = 1 ] || fail "one connection expected: $(cat /tmp/ctl)"
# Which way the rings run task work on this kernel (deferred from Linux 6.12 on).
step "$(uname -r): $(journalctl -q -u uringnbd.service -o cat | grep -o 'deferred task work\|task work as it comes[^,]*' | head -n 1)"

step "/dev/nbd1 over TCP with 4 connections; ext4 on both; fio with verify=crc32c"
truncate -s 256M /srv/nbd/disk2.img
cat >>/etc/uringnbd/uringnbd.conf <<EOF
[global]
bind = 127.0.0.1
port = 10809
[export disk2]
path = /srv/nbd/disk2.img
EOF
# A restart picks up the TCP listener; the unix connection is kept.
systemctl restart uringnbd.service || fail "restart to listen on TCP"
# All 4 of nbd1's receive works must run, or a Linux nbd bug leaves
# replies unread (recv-works says how). Then nbd1 is detached (the works
# run as their sockets shut, reading what waits) and attached again, at
# most four times (two in a row were seen on a loaded host).
# The requests sent while it was stuck (udev probes a new
# device) are marked in the trace (handles.awk still wants the daemon to
# have answered them, but for any sent after the detach was asked for), and the driver's lines about them and the detach
# are not errors: those counted start at a mark in the kernel log, written
# once udev has done with the device attached last.
reattached=
for attempt in 1 2 3 4 5; do
    [ -w $T/trace_marker ] && echo vmtest-attach >$T/trace_marker
    nbd-client 127.0.0.1 10809 /dev/nbd1 -N disk2 -C 4 || fail "nbd-client over TCP"
    works=$(/usr/local/bin/recv-works nbd1 4) && break
    [ "$attempt" -lt 5 ] || fail "nbd1: $works, 5 attaches in a row"
    step "NOTE: $works: attaching again"
    [ -w $T/trace_marker ] && echo vmtest-detaching >$T/trace_marker
    nbd-client -d /dev/nbd1 || fail "nbd-client -d /dev/nbd1 (re-attach)"
    for i in $(seq 1 100); do [ "$(cat /sys/block/nbd1/size)" = 0 ] && break; sleep 0.1; done
    [ -w $T/trace_marker ] && echo vmtest-detach >$T/trace_marker
    reattached=1
done
udevadm settle -t 30
echo "vmtest: nbd1 attached" >/dev/kmsg
for i in $(seq 1 50); do  # a re-attach's old connections may still be closing
    uringnbdctl --json connections >/tmp/ctl || fail "uringnbdctl connections"
    [ "$(grep -c '"export":"disk' /tmp/ctl)" = 5 ] && break
    sleep 0.1
done
[ "$(grep -c '"export":"disk' /tmp/ctl)" = 5 ] || fail "five connections expected: $(cat /tmp/ctl)"
for d in 0 1; do
    mkfs.ext4 -q -F /dev/nbd$d || fail "mkfs.ext4 /dev/nbd$d"
    mkdir -p /mnt$d && mount /dev/nbd$d /mnt$d || fail "mount /dev/nbd$d"
done
# What the kernel's nbd driver has reported so far (nbd_faults: not counting
# detaches); after a re-attach, from the mark on.
since_attach() { if [ -n "$reattached" ]; then sed -n '/vmtest: nbd1 attached/,$p'; else cat; fi; }
nbd_errors() { dmesg | since_attach | grep -i 'nbd' | grep -ic 'error\|timed out\|dead\|reconnect\|disconnect'; }
nbd_faults() { dmesg | since_attach | grep -ic 'nbd.*\(error\|timed out\|dead\)'; }
# Every request answered: each one the kernel sent must be matched to the
# daemon's reply and its sending (nothing lies between them here: a reply
# held anywhere fails too), and the driver must have reported no error.
setup_errors=$(nbd_errors)
setup_faults=$(nbd_faults)
answered ||
    fail "requests went unanswered: $(tr '\n' ';' </tmp/answered) $(dmesg | grep -i 'nbd' | tr '\n' ';')"
[ "$setup_errors" = 0 ] ||
    fail "the kernel's nbd driver reported errors: $(dmesg | grep -i 'nbd' | tr '\n' ';')"
step "every request answered: $(tail -n 1 /tmp/answered)"
uringnbdctl --json connections >/tmp/ctl || fail "uringnbdctl connections"
conns=$(grep -c '"export":"disk' /tmp/ctl)
[ "$conns" = 5 ] || fail "only $conns connections are left before the restarts: $(cat /tmp/ctl)"
# The restarts under fio log at info (every request in the journal would slow the guest).
sed -i '/^log-level = debug$/d' /etc/uringnbd/uringnbd.conf
uringnbdctl log-level info >/dev/null || fail "uringnbdctl log-level info"
# Writes verified as they go (verify_backlog), until the five restarts are done
# (SIGINT ends fio with its report and status; 600 s bounds it).
fio --rw=randwrite --bs=16k --size=12M --time_based --runtime=600 --ioengine=psync \
    --direct=1 --verify=crc32c --verify_backlog=128 --verify_fatal=1 \
    --name=unix --directory=/mnt0 --name=tcp --directory=/mnt1 \
    --output=/tmp/fio.out >/dev/null 2>&1 &
fio_pid=$!
old=$(uringnbd --version)
n=0
for what in restart restart upgrade restart restart; do
    sleep 3
    kill -0 $fio_pid 2>/dev/null || fail "fio ended before restart $((n + 1)): $(tail -n 20 /tmp/fio.out)"
    before=$(journalctl -b --no-pager -u uringnbd.service | grep -c "restarted with $conns connections adopted")
    if [ $what = upgrade ]; then
        step "restart $((n + 1)) under fio: upgrade, dpkg -i $(basename /root/debs/second/uringnbd_*.deb)"
        dpkg -i --force-confold /root/debs/second/uringnbd_*.deb >/tmp/dpkg.log 2>&1 ||
            fail "dpkg -i (upgrade): $(tail -n 5 /tmp/dpkg.log)"
    else
        step "restart $((n + 1)) under fio: systemctl restart uringnbd"
        systemctl restart uringnbd.service || fail "systemctl restart"
    fi
    n=$((n + 1))
    # The new process's log line reaches the journal a moment after the restart.
    for i in $(seq 40); do
        after=$(journalctl -b --no-pager -u uringnbd.service | grep -c "restarted with $conns connections adopted")
        [ "$after" -gt "$before" ] && break
        sleep 0.5
    done
    [ "$after" -gt "$before" ] || fail "restart $n did not adopt the $conns connections: $(journalctl -b --no-pager -u uringnbd.service | grep 'restarted with\|handed to' | tail -n 3)"
done
new=$(uringnbd --version)
[ "$new" != "$old" ] || fail "the upgrade did not change the binary ($old)"
[ "uringnbd $(uringnbdctl version | cut -d' ' -f2)" = "$new" ] ||
    fail "the upgrade did not restart the daemon on the new binary"
uringnbdctl --json version | tr -d ' \n' | grep -q "\"adopted\":$conns" ||
    fail "uringnbdctl does not report $conns connections adopted: $(uringnbdctl --json version)"
# Writes go on to the last restart's process a while, then fio stops: it
# exits 128 when a signal ended its jobs, having written its report.
sleep 3
kill -INT $fio_pid 2>/dev/null || fail "fio ended before the restarts were done: $(tail -n 20 /tmp/fio.out)"
wait $fio_pid
rc=$?
[ $rc = 128 ] || fail "fio exited $rc across the restarts: $(tail -n 30 /tmp/fio.out)"
[ "$(grep -c 'err= 0' /tmp/fio.out)" = 2 ] && grep -q '^Run status group' /tmp/fio.out ||
    fail "fio reported errors: $(grep 'err=' /tmp/fio.out | tr '\n' ';') $(tail -n 30 /tmp/fio.out)"
[ "$(nbd_errors)" = "$setup_errors" ] ||
    fail "the kernel's nbd driver reported errors during the restarts"
for d in 0 1; do
    umount /mnt$d || fail "umount /mnt$d"
    e2fsck -fn /dev/nbd$d >/tmp/fsck$d 2>&1 || fail "e2fsck /dev/nbd$d: $(tail -n 5 /tmp/fsck$d)"
done
nbd-client -d /dev/nbd1 || fail "nbd-client -d /dev/nbd1"
step "fio write latency across the restarts: $(grep '  clat (' /tmp/fio.out | tr -s ' ' | tr '\n' ';')"
step "5 restarts under fio (one to $new) kept all $conns connections: fio verified, no nbd error, e2fsck clean"
journalctl -b --no-pager -u uringnbd.service | grep 'restarted with\|handed to the service' |
    sed 's/^/journal: /' | tail -n 4
mkfs.ext4 -q -F /dev/nbd0 || fail "mkfs.ext4"
mkdir -p /mnt && mount /dev/nbd0 /mnt || fail "mount"
for i in 1 2 3 4 5 6; do
    head -c $((i * 150000)) /dev/urandom >/mnt/file$i || fail "write file$i"
done
echo "hello from systemd" >/mnt/hello
(cd /mnt && sha256sum file* hello) >/tmp/sums
umount /mnt || fail "umount"
mount /dev/nbd0 /mnt && (cd /mnt && sha256sum -c --quiet /tmp/sums) || fail "checksums after remount"
umount /mnt
sed 's/^/SUM /' /tmp/sums
nbd-client -d /dev/nbd0 || fail "nbd-client -d"
step "ext4 made, written, checked and detached"
[ "$(nbd_faults)" = "$setup_faults" ] || fail "the kernel's nbd driver reported errors: $(dmesg | grep -i nbd | tail -n 5)"

status=$(systemctl show -p StatusText --value uringnbd.service)
step "STATUS=$status"
case "$status" in "serving 2 exports"*) ;; *) fail "no STATUS= line from the daemon: '$status'" ;; esac

step "systemctl reload adds an export"
truncate -s 64M /srv/nbd/disk1.img
printf '[export disk1]\npath = /srv/nbd/disk1.img\n' >>/etc/uringnbd/uringnbd.conf
systemctl reload uringnbd.service || fail "systemctl reload"
# The reload is a signal: the new table is in place a moment later.
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
    nbd-client -l -unix /run/uringnbd.sock >/tmp/list 2>&1 || fail "nbd-client -l: $(cat /tmp/list)"
    grep -q '^disk1' /tmp/list && break
    sleep 0.1
done
grep -q '^disk1' /tmp/list || fail "the reloaded export is not listed: $(cat /tmp/list)"
systemctl is-active -q uringnbd.service || fail "the service is not active after reload"

step "systemctl stop"
t0=$(cut -d' ' -f1 /proc/uptime)
systemctl stop uringnbd.service uringnbd.socket || fail "systemctl stop"
t1=$(cut -d' ' -f1 /proc/uptime)
step "stopped in $(echo "$t0 $t1" | awk '{printf "%.2f", $2 - $1}') s"
[ "$(systemctl show -p Result --value uringnbd.service)" = success ] ||
    fail "stop result: $(systemctl show -p Result --value uringnbd.service)"
journalctl -b --no-pager -u uringnbd.service >/tmp/journal
grep -q 'shutting down' /tmp/journal || fail "no clean shutdown in the journal"
grep -q 'SIGKILL\|Killing process' /tmp/journal && fail "the stop timed out and killed the daemon"

step "uringnbd@inst.service with its own configuration"
cat >/etc/uringnbd/inst.conf <<EOF
[global]
unix = /run/uringnbd/inst.sock
[export x]
path = /srv/nbd/disk1.img
EOF
systemctl start uringnbd@inst.service || fail "start uringnbd@inst"
nbd-client -l -unix /run/uringnbd/inst.sock 2>&1 | grep -q '^x' || fail "uringnbd@inst does not serve x"
systemctl stop uringnbd@inst.service || fail "stop uringnbd@inst"

step "a block device through a drop-in"
[ -b /dev/vdb ] || fail "no /dev/vdb"
cat >/etc/uringnbd/blk.conf <<EOF
[global]
unix = /run/uringnbd/blk.sock
[export b]
path = /dev/vdb
EOF
# Without the drop-in the device cannot be opened: the unit says so.
systemctl start uringnbd@blk.service && fail "a block device was served without DeviceAllow="
mkdir -p /etc/systemd/system/uringnbd@blk.service.d
printf '[Service]\nPrivateDevices=no\nDeviceAllow=/dev/vdb rw\n' \
    >/etc/systemd/system/uringnbd@blk.service.d/device.conf
systemctl daemon-reload
systemctl reset-failed uringnbd@blk.service
systemctl start uringnbd@blk.service || fail "start uringnbd@blk with the drop-in"
nbd-client -unix /run/uringnbd/blk.sock /dev/nbd1 -N b || fail "nbd-client on the block device"
echo "written through the device export" | dd of=/dev/nbd1 bs=4096 conv=sync,fsync 2>/dev/null ||
    fail "write to /dev/nbd1"
nbd-client -d /dev/nbd1
systemctl stop uringnbd@blk.service || fail "stop uringnbd@blk"

step "apt-get purge uringnbd (with the service running)"
systemctl start uringnbd.socket uringnbd.service || fail "start before purge"
apt-get purge -y uringnbd >/tmp/purge.log 2>&1 || fail "apt-get purge: $(tail -n 5 /tmp/purge.log)"
for f in /lib/systemd/system/uringnbd.service /lib/systemd/system/uringnbd.socket \
         /usr/sbin/uringnbd /usr/sbin/uringnbdctl /etc/uringnbd/uringnbd.conf; do
    [ -e "$f" ] && fail "$f is still there after purge"
done
systemctl list-unit-files 'uringnbd*' | grep -q uringnbd && fail "units still known after purge"
[ -e /run/uringnbd.sock ] && fail "the socket is still there after purge"
pidof uringnbd >/dev/null && fail "uringnbd still runs after purge"
# Debian keeps system users and groups on purge (files may still belong to them).
getent group uringnbd >/dev/null || fail "purge removed group uringnbd"
[ -s /srv/nbd/disk0.img ] || fail "purge touched the images"
step "purged: units, binaries and conffile gone; group and images kept"
step "all steps done"
echo "GUEST PASS"
systemctl poweroff --no-block
