#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
# test-timeout: 300
"""Faults of a real cluster under an rbd: export (bluestore, so an OSD that
is killed keeps what it acknowledged):
- the OSD frozen (SIGSTOP): a FUA write to the image waits (librbd's cache
  may acknowledge a plain write at once, as NBD allows); a file export of the
  same daemon and its control socket keep answering; the oldest-request
  warning names the waiting write; after SIGCONT it completes;
- with --io-timeout (a second daemon, its own image): the client whose
  request waits on the frozen OSD is cut, and the daemon goes on;
- the OSD killed and restarted, then the mon: every write acknowledged
  before (checked against a model) reads back, and writes go on.
"""
import os
import random
import subprocess
import sys
import threading
import time

import nbd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from testlib import T, S, check, fail, skip, Daemon, URINGNBDCTL  # noqa: E402
from ceph import Cluster  # noqa: E402

SIZE = 32 << 20
cl = Cluster(os.path.join(S, "ceph"), store="bluestore", skip=skip)
conf = cl.conf
cl.rbd("create", "rbd/img", "--size", "32M")
cl.rbd("create", "rbd/img2", "--size", "32M")
print(f"cluster (bluestore) up in {cl.started_s:.1f} s")
plain = os.path.join(T, "plain.img")
with open(plain, "wb") as f:
    f.write(b"P" * (1 << 20))
ctl_path = os.path.join(S, "ctl")
d = Daemon(["-t", "2", "--io-timeout", "0", "-e", f"vm=rbd:rbd/img,ceph-conf={conf}",
            "-e", f"plain={plain}", "--control", ctl_path])


def client(dmn, name):
    h = nbd.NBD()
    h.connect_uri(dmn.uri(name))
    return h


rng = random.Random(7)
model = bytearray(SIZE)
vm = client(d, "vm")


def write(h, off, n, fua=False):
    data = rng.randbytes(n)
    h.pwrite(data, off, nbd.CMD_FLAG_FUA if fua else 0)
    model[off:off + n] = data


def verify(h, what):
    for off in range(0, SIZE, 1 << 20):
        if h.pread(1 << 20, off) != model[off:off + (1 << 20)]:
            fail(f"{what}: bytes at {off} differ from what was acknowledged")


for i in range(200):
    write(vm, rng.randrange(0, SIZE - 70000), rng.choice([512, 4096, 65536 + 17]), i % 5 == 0)
vm.flush()

# ---- the OSD frozen ----
cl.osd_stop()
result = {}


def stuck_write():
    try:
        t0 = time.monotonic()
        write(vm, 5 << 20, 4096, fua=True)  # without FUA librbd's cache may take it
        result["secs"] = time.monotonic() - t0
    except nbd.Error as e:
        result["error"] = str(e)


th = threading.Thread(target=stuck_write)
th.start()
time.sleep(1)
check(th.is_alive(), f"a write finished while the OSD was frozen: {result}")
ph = client(d, "plain")
t0 = time.monotonic()
check(ph.pread(4096, 0) == b"P" * 4096, "the file export is not served while the OSD is frozen")
p = subprocess.run([URINGNBDCTL, "-c", ctl_path, "stats"], capture_output=True, text=True,
                   timeout=10)
check(p.returncode == 0, f"stats while the OSD is frozen: {p.stderr}")
answered = time.monotonic() - t0
check(answered < 1.0, f"the file export and the control socket took {answered:.2f} s")
deadline = time.monotonic() + 20
while "unanswered for" not in d.log():
    check(time.monotonic() < deadline, "no oldest-request warning after 20 s")
    time.sleep(0.2)
warn = [ln for ln in d.log().splitlines() if "unanswered for" in ln][0]
check("WRITE" in warn, f"the warning does not name the write: {warn}")
print(f"OSD frozen: the file export and stats answered in {answered:.2f} s; log: {warn}")

cl.osd_cont()
th.join(timeout=60)
check(not th.is_alive() and "secs" in result, f"the frozen write did not complete: {result}")
print(f"after SIGCONT the write completed ({result['secs']:.1f} s after it was sent)")
verify(vm, "after the freeze")

# ---- --io-timeout: the stuck client is cut, the daemon goes on ----
d2 = Daemon(["--io-timeout", "2", "-e", f"vm2=rbd:rbd/img2,ceph-conf={conf}",
             "-e", f"plain={plain}"], sock=os.path.join(S, "two.sock"), log="two.log")
v2 = client(d2, "vm2")
v2.pwrite(b"2" * 4096, 0)
cl.osd_stop()
t0 = time.monotonic()
try:
    v2.pwrite(b"3" * 4096, 4096, nbd.CMD_FLAG_FUA)
    fail("a write on a frozen OSD succeeded with --io-timeout 2")
except nbd.Error:
    cut = time.monotonic() - t0
check(2 <= cut < 6, f"the stuck client was cut after {cut:.1f} s, not 2-4 s")
p2 = client(d2, "plain")
check(p2.pread(4096, 0) == b"P" * 4096, "after the cut the daemon does not serve")
check("unanswered by its storage" in d2.log(), "the cut is not logged")
print(f"--io-timeout 2: the client was cut after {cut:.1f} s; the daemon serves on")
cl.osd_cont()
p2.shutdown()
d2.stop()

# ---- the OSD killed and restarted; the mon restarted ----
for i in range(100):
    write(vm, rng.randrange(0, SIZE - 70000), rng.choice([512, 4096, 65536 + 17]), i % 3 == 0)
vm.flush()
cl.osd_kill()
done = {}


def late_write():
    try:
        write(vm, 7 << 20, 8192)
        vm.flush()
        done["ok"] = True
    except nbd.Error as e:
        done["error"] = str(e)


th = threading.Thread(target=late_write)
th.start()
time.sleep(2)
check(th.is_alive(), "a write finished with the OSD dead")
cl.osd_start()
th.join(timeout=120)
check(done.get("ok"), f"the write during the OSD's restart did not complete: {done}")
verify(vm, "after the OSD was killed and restarted")
print("OSD killed and restarted: every acknowledged write is there, and the waiting one done")
cl.mon_restart()
for i in range(50):
    write(vm, rng.randrange(0, SIZE - 70000), 4096, i % 2 == 0)
vm.flush()
verify(vm, "after the mon restarted")
cl.rbd("export", "rbd/img", os.path.join(T, "final.img"))
check(open(os.path.join(T, "final.img"), "rb").read() == bytes(model),
      "rbd export differs from the model at the end")
print("mon restarted: nothing lost; rbd export equals the model")
vm.shutdown()
ph.shutdown()
d.stop()
cl.stop()
print("ok")
