#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
# test-timeout: 300
"""Restarts and moves of an rbd: export, two daemons and one cluster:
- restarts that keep connections (SIGUSR2) under load: a client keeps 32
  requests in flight (writes of a block's generation, reads checked against
  the last completed write) through 3 restarts; nothing fails, and each new
  process takes the image's exclusive lock from the one before;
- the man page's walk-through for moving a VM's disk between two hosts, as
  written: host B cannot take the image while host A serves it; A removes
  its export (its clients disconnected), B adds it, and the client that
  reconnects to B reads every block A acknowledged.
"""
import os
import signal
import subprocess
import sys
import time

import nbd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from testlib import S, T, URINGNBDCTL, check, fail, skip, Daemon, Loaded, block_data  # noqa: E402
from ceph import Cluster  # noqa: E402

BLOCK = 4096
NBLOCKS = 4096                        # 16 MiB
cl = Cluster(os.path.join(S, "ceph"), skip=skip)
conf = cl.conf
cl.rbd("create", "rbd/vm", "--size", "16M")
CTL_A, CTL_B = os.path.join(S, "ctl-a"), os.path.join(S, "ctl-b")
a = Daemon(["--control", CTL_A, "-e", f"vm=rbd:rbd/vm,ceph-conf={conf}"],
           sock=os.path.join(S, "a.sock"), log="a.log")
# Host B serves other disks already (a daemon has at least one export).
other = os.path.join(T, "other.img")
with open(other, "wb") as f:
    f.truncate(1 << 20)
b = Daemon(["--control", CTL_B, "-e", f"other={other}"], sock=os.path.join(S, "b.sock"),
           log="b.log")


def ctl(path, *args, expect=0):
    p = subprocess.run([URINGNBDCTL, "-c", path] + list(args), capture_output=True, text=True,
                       timeout=120)
    check(p.returncode == expect, f"uringnbdctl {' '.join(args)}: exit {p.returncode}, "
          f"expected {expect}: {p.stderr}")
    return p


# ---- restarts under load ----
t_start = time.monotonic()
load = Loaded(a.uri("vm"), NBLOCKS, depth=32, seed=3)
errors, counts, model = load.errors, load.counts, load.model
time.sleep(1)
for n in range(3):
    before = a.log().count("restarted with ")
    os.kill(a.proc.pid, signal.SIGUSR2)
    deadline = time.monotonic() + 30
    while a.log().count("restarted with ") <= before:
        check(a.proc.poll() is None, f"the daemon exited ({a.proc.returncode}) on SIGUSR2")
        check(time.monotonic() < deadline, "no restart within 30 s of SIGUSR2")
        check(not errors, f"during restart {n + 1}: {errors[:3]}")
        time.sleep(0.02)
    w0 = counts["writes"]
    deadline = time.monotonic() + 20
    while counts["writes"] < w0 + 50:
        check(not errors, f"after restart {n + 1}: {errors[:3]}")
        check(time.monotonic() < deadline, f"writes stalled after restart {n + 1}")
        time.sleep(0.02)
check(load.stop() and not errors, f"the loaded client: {errors[:5]}")
check("in use by another client" not in a.log(), "a new process was refused the image")
print(f"3 restarts under load in {time.monotonic() - t_start:.1f} s: {counts['writes']} "
      f"writes, {counts['reads']} reads, every read as last written")

# ---- the walk-through: move the disk from host A to host B ----
# (man/uringnbd.8, "Moving a disk between hosts")
vm = nbd.NBD()
vm.connect_uri(a.uri("vm"))
# 1. B cannot serve it while A does.
t0 = time.monotonic()
p = ctl(CTL_B, "export-add", "vm", "rbd:rbd/vm", f"ceph-conf={conf}", expect=1)
check("in use by another client" in p.stderr, f"B took the image A serves: {p.stderr}")
refused_s = time.monotonic() - t0
# 2. On A: stop serving it (the VM is stopped first; --force cuts whoever is left).
vm.shutdown()
ctl(CTL_A, "export-remove", "vm", "--force")
# 3. On B: serve it.
deadline = time.monotonic() + 30
while True:
    p = subprocess.run([URINGNBDCTL, "-c", CTL_B, "export-add", "vm", "rbd:rbd/vm",
                        f"ceph-conf={conf}"], capture_output=True, text=True, timeout=120)
    if p.returncode == 0:
        break
    check(time.monotonic() < deadline, f"B could not take the image in 30 s: {p.stderr}")
    time.sleep(0.5)
moved_s = time.monotonic() - t0 - refused_s
# 4. The VM starts on B and reads what it wrote on A.
vm = nbd.NBD()
vm.connect_uri(b.uri("vm"))
for blk in range(NBLOCKS):
    if vm.pread(BLOCK, blk * BLOCK) != load.want(blk):
        fail(f"on host B, block {blk} is not what host A acknowledged")
vm.pwrite(block_data(0, 999), 0, nbd.CMD_FLAG_FUA)
vm.shutdown()
p = ctl(CTL_A, "export-add", "vm", "rbd:rbd/vm", f"ceph-conf={conf}", expect=1)
check("in use by another client" in p.stderr, f"A took the image back while B serves it: {p.stderr}")
print(f"moved from A to B: B refused while A served (in {refused_s:.1f} s); after A let "
      f"go, B served it {moved_s:.1f} s later, every block as A acknowledged")
a.stop()
b.stop()
cl.stop()
print("ok")
