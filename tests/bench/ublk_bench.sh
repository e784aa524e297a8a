#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# make bench-ublk: one file, three block devices, side by side in one qemu
# guest (Debian 12's 6.12 kernel, which has ublk_drv; this host's kernel has
# no ublk, nbd or vhost): /dev/ublkb0 from uringnbd --ublk, /dev/nbd0 from
# the kernel's NBD client attached to the same daemon over its unix socket
# (2 connections, one per vCPU, as the device has 2 queues), and
# losetup --direct-io=on of the same file; and /dev/ublkb1 ("ublk solo"),
# the same file as a device of a second daemon that has no NBD client, so
# its workers serve nothing but the device. fio 4k random reads at QD32 and
# QD1 and random writes at QD32, O_DIRECT, in rounds that alternate the
# devices. The guest runs under TCG (software emulation), so only the
# ratios between devices mean something, not the figures themselves.
# BENCH_ROUNDS (default 3) and BENCH_SECS (default 5) size it.
. "$(dirname "$0")/../interop/lib.bash"
VM=${VM_DIR:-build/vm}
HERE=$(cd "$(dirname "$0")/../vm" && pwd)
ROUNDS=${BENCH_ROUNDS:-3}
SECS=${BENCH_SECS:-5}
need qemu-system-x86_64 cpio gzip mkfs.ext4 tar
[ -x /bin/busybox ] || skip "busybox-static is not installed"
[ "$(id -u)" = 0 ] || skip "needs root to unpack a root filesystem"
mkdir -p "$VM"
. "$HERE/kernel.sh"
. "$HERE/rootfs.sh"
VM_KERNEL=linux-image-6.12-cloud-amd64
vm_kernel

R="$T/root"
vm_rootfs "$R"
for t in "$URINGNBD"; do
    install -m 0755 "$t" "$R/usr/local/bin/$(basename "$t")"
    for lib in $(ldd "$t" | grep -o '/[^ ]*'); do
        [ -e "$R$lib" ] || { mkdir -p "$R$(dirname "$lib")" && cp -L "$lib" "$R$lib"; }
    done
done
cat >"$R/usr/local/sbin/ublkbench" <<EOS
#!/bin/bash
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t tmpfs tmp /tmp; mount -t tmpfs run /run
bad() { echo "BENCH FAIL: \$*"; tail -n 30 /tmp/daemon.log; poweroff -f; sleep 10; }
for m in ublk_drv nbd loop; do modprobe \$m || bad "modprobe \$m"; done
fallocate -l 1G /srv/bench.img || bad "fallocate"
dd if=/dev/urandom of=/srv/bench.img bs=1M count=1024 conv=notrunc status=none oflag=direct
uringnbd -e disk=/srv/bench.img,ublk -U /run/u.sock -t 2 --pid-file /run/pid >/tmp/daemon.log 2>&1 &
for i in \$(seq 1 300); do [ -s /run/pid ] && break; sleep 0.1; done
[ -b /dev/ublkb0 ] || bad "no /dev/ublkb0"
uringnbd -e solo=/srv/bench.img,ublk -U /run/u2.sock -t 2 --pid-file /run/pid2 >/tmp/daemon2.log 2>&1 &
for i in \$(seq 1 300); do [ -s /run/pid2 ] && break; sleep 0.1; done
[ -b /dev/ublkb1 ] || { cat /tmp/daemon2.log; bad "no /dev/ublkb1"; }
nbd-client -unix /run/u.sock /dev/nbd0 -N disk -C 2 >/dev/null 2>&1 || bad "nbd-client"
loop=\$(losetup --direct-io=on --show -f /srv/bench.img) || bad "losetup"
echo "BENCH devices ublk=/dev/ublkb0 nbd=/dev/nbd0 loop=\$loop solo=/dev/ublkb1"
for r in \$(seq 1 $ROUNDS); do
    for job in randread:32 randread:1 randwrite:32; do
        for d in ublk:/dev/ublkb0 nbd:/dev/nbd0 loop:\$loop solo:/dev/ublkb1; do
            dev=\${d#*:}
            fio --name=b --filename=\$dev --direct=1 --ioengine=libaio --rw=\${job%:*} --bs=4k \
                --iodepth=\${job#*:} --time_based --runtime=$SECS --size=1G --randrepeat=0 \
                --output-format=terse --terse-version=3 >/tmp/out 2>&1 || bad "fio \$dev \$job: \$(tail -n 5 /tmp/out)"
            echo "BENCH \$r \$job \${d%%:*} \$(awk -F';' '{print \$8 + \$49}' /tmp/out)"
        done
    done
done
nbd-client -d /dev/nbd0 >/dev/null 2>&1
losetup -d \$loop
kill \$(cat /run/pid) \$(cat /run/pid2); sleep 1
echo "BENCH DONE"
poweroff -f
EOS
chmod 0755 "$R/usr/local/sbin/ublkbench"
mkfs.ext4 -q -F -d "$R" "$T/root.img" 3G || fail "mkfs.ext4 -d of the root filesystem"
rm -rf "$R"
vm_rootfs_initrd "$T/initrd.gz" /usr/local/sbin/ublkbench
start=$(date +%s)
rc=0
timeout 3000 qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 2048 -nodefaults -display none \
    -no-reboot -serial "file:$T/console.log" -kernel "$vmlinuz" -initrd "$T/initrd.gz" \
    -append "console=ttyS0 panic=-1 quiet" \
    -drive "file=$T/root.img,if=virtio,format=raw,cache=none" >"$T/qemu.log" 2>&1 || rc=$?
echo "guest ran $(($(date +%s) - start)) s (qemu exit $rc)"
grep -q '^BENCH DONE' "$T/console.log" || { tail -n 40 "$T/console.log"; fail "the guest's benchmark did not finish"; }
tr -d '\r' <"$T/console.log" | python3 -c '
import statistics, sys
runs = {}
for line in sys.stdin:
    f = line.split()
    if len(f) == 5 and f[0] == "BENCH" and f[1].isdigit():
        runs.setdefault((f[2], f[3]), []).append(float(f[4]))
print("ublk vs nbd vs loop in one guest (TCG: ratios only); 4k O_DIRECT, IOPS, median [min-max] of %d rounds" % max(len(v) for v in runs.values()))
print("(ublk: the daemon nbd0 is attached to; ublk solo: a second daemon with the device alone)")
print("%-14s %22s %22s %22s %22s %9s %9s %9s" % ("job", "ublk", "nbd (2 conns)", "loop (direct-io)",
      "ublk solo", "ublk/nbd", "ublk/loop", "solo/loop"))
for job in ("randread:32", "randread:1", "randwrite:32"):
    cells = []
    med = {}
    for dev in ("ublk", "nbd", "loop", "solo"):
        v = runs.get((job, dev), [])
        if not v:
            sys.exit("no figures for %s on %s" % (job, dev))
        med[dev] = statistics.median(v)
        cells.append("%7.0f [%5.0f-%5.0f]" % (med[dev], min(v), max(v)))
    print("%-14s %22s %22s %22s %22s %8.2fx %8.2fx %8.2fx" % (job, *cells,
          med["ublk"] / med["nbd"], med["ublk"] / med["loop"], med["solo"] / med["loop"]))
' || fail "no figures"
