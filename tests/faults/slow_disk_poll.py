#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Polling by default on a slow disk. The daemon runs in a blkio cgroup
whose throttle lets it read 3000 times a second from its disk (the
kernel's own throttle: completions come late and in bursts, as from a slow
or busy disk), and fio reads 4 KiB blocks at queue depth 32 through one
connection. Waits at that depth are long, and a worker that sleeps
through them pays an idle CPU's wake-up each time, so the default must
keep polling: at least 1% of its completions must be found by polling
(3-4% here; the previous binary, whose adaptive window fell to 0 after
one long wait, found 0.4%). Polling stays paid by the work: the time spent
polling is at most about twice the CPU the daemon spent on everything else
(3x and 0.1 s of room: credit is earned by the time between waits, CPU is
counted in ticks). This throttle's bursts leave few waits to poll through,
so that bound is a guard here, not a measure of the credit."""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from testlib import S, URINGNBDCTL, Daemon, check, image, need, skip  # noqa: E402

need("fio")
IOPS = 3000
CG = "/sys/fs/cgroup/blkio/uringnbd-slow-disk"
if not os.path.isdir("/sys/fs/cgroup/blkio"):
    skip("no cgroup v1 blkio controller to throttle the disk with")
if subprocess.run(["fio", "--enghelp=nbd"], capture_output=True).returncode != 0:
    skip("this fio has no nbd engine")

img = image("slow.img", 256 << 20)
with open(img, "r+b") as f:              # on the disk, so that reads go to it
    for i in range(256):
        f.write(os.urandom(1 << 20))
    os.fsync(f.fileno())
st = os.stat(img)
dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
if os.path.exists(f"/sys/dev/block/{dev}/partition"):
    dev = open(f"/sys/dev/block/{dev}/../dev").read().strip()
if not os.path.exists(f"/sys/dev/block/{dev}/queue"):
    skip(f"the test directory is not on a block device ({dev})")
os.makedirs(CG, exist_ok=True)
try:
    with open(f"{CG}/blkio.throttle.read_iops_device", "w") as f:
        f.write(f"{dev} {IOPS}\n")
except OSError as e:
    skip(f"cannot throttle {dev}: {e}")

CTL = os.path.join(S, "ctl")
d = None
try:
    d = Daemon(["--control", CTL, img])
    with open(f"{CG}/cgroup.procs", "w") as f:
        f.write(str(d.proc.pid))
    while not os.path.exists(CTL):
        time.sleep(0.01)

    def cpu_s():
        total = 0
        for tid in os.listdir(f"/proc/{d.proc.pid}/task"):
            f = open(f"/proc/{d.proc.pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        return total / os.sysconf("SC_CLK_TCK")

    def counters():
        w = json.loads(subprocess.run([URINGNBDCTL, "-c", CTL, "--json", "stats"],
                                      capture_output=True, text=True,
                                      check=True).stdout)["per-worker"]
        return (sum(x["poll-hits"] for x in w), sum(x["poll-ns"] for x in w) / 1e9,
                sum(x["completions"] for x in w), sum(x.get("ring-waits", 0) for x in w))

    h0, p0, n0, s0 = counters()
    c0 = cpu_s()
    r = subprocess.run(["fio", "--name=slow", "--rw=randread", "--bs=4k", "--iodepth=32",
                        "--runtime=4", "--time_based", "--ioengine=nbd", f"--uri={d.uri()}",
                        "--output-format=json"], capture_output=True, text=True, timeout=60)
    check(r.returncode == 0, f"fio failed: {r.stderr}{r.stdout[:500]}")
    c1 = cpu_s()
    h1, p1, n1, s1 = counters()
    iops = json.loads(r.stdout[r.stdout.index("{"):])["jobs"][0]["read"]["iops"]
    hits, poll_s, done, sleeps, cpu = h1 - h0, p1 - p0, n1 - n0, s1 - s0, c1 - c0
    work = max(cpu - poll_s, 0)
    print(f"{iops:.0f} reads a second (throttle {IOPS}); {done} completions, {hits} found by "
          f"polling, {sleeps} waits slept; {poll_s:.3f} s polled, {work:.3f} s of other CPU")
    check(iops > IOPS / 3, f"only {iops:.0f} reads a second through a {IOPS} IOPS throttle")
    check(hits * 100 >= done, f"the default found {hits} of {done} completions at depth 32 by "
          "polling: it gave up polling on a slow disk")
    check(poll_s <= 3 * work + 0.1,
          f"polled {poll_s:.3f} s against {work:.3f} s of other CPU: more than its work paid for")
    d.stop()
finally:
    # The cgroup can go once empty.
    if d and d.proc.poll() is None:
        d.proc.kill()
        d.proc.wait()
    for _ in range(100):
        try:
            os.rmdir(CG)
            break
        except OSError:
            time.sleep(0.05)
print("on a slow disk the default polls at depth, within the credit its work earns")
