#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Dirty bitmaps survive SIGKILL with no bit missing. Twenty times: a
checkpoint (its reflink copy is the reference), writers with 32 requests
in flight on two connections, SIGKILL at a random moment, a restart; then
every granule in which the image differs from the checkpoint's copy must
be dirty in the bitmap. Then the same against the test build whose bits
reach the sidecar lazily, after the data (URINGNBD_TEST_BITMAP_LATE_MS):
this test must catch that within a few kills, or it proves nothing."""
import os
import random
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faultlib import Fault, dirty_ranges, granules_of, differing_granules  # noqa: E402

t = Fault("bitmaps_crash.py")
t.need_root("mkfs.xfs")
HOOKS = os.environ.get("URINGNBD_TEST_HOOKS_BIN", "build/uringnbd-test-hooks")
seed = int(os.environ.get("CRASH_SEED", random.randrange(1 << 30)))
print(f"seed {seed} (CRASH_SEED={seed} repeats it)")
rng = random.Random(seed)
SIZE = 64 << 20
GRAN = 64 << 10
KILLS = int(os.environ.get("CRASH_KILLS", "20"))

WRITER = r"""
import nbd, random, sys
r = random.Random(int(sys.argv[2]))
h = nbd.NBD()
h.connect_uri(sys.argv[1])
size = h.get_size()
def done(err):
    return 1
ready = False
while True:
    while h.aio_in_flight() < 32:
        off = r.randrange(size - 1)
        n = 1 + r.randrange(min(size - off, r.choice((4096, 65536, 1 << 20))))
        k = r.random()
        if k < 0.8:
            h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(r.randbytes(n))), off,
                         completion=done)
        elif k < 0.9:
            h.aio_zero(n, off, completion=done)
        else:
            h.aio_trim(n, off, completion=done)
    h.poll(-1)
    if not ready:
        ready = True
        print("writing", flush=True)
"""


def crash_round(i, binary, env):
    """One checkpoint, writes, SIGKILL, restart. Returns granules changed but not marked."""
    t.start("--control", t.ctl_sock, "-e", f"vm={img},bitmap=b", binary=binary, env=env)
    name = f"k{i}"
    t.ctl("checkpoint", "vm", "b", name)
    for c in t.ctl("bitmaps", "vm")["checkpoints"]:
        if c["name"] != name:
            t.ctl("checkpoint-remove", "vm", c["name"])  # one copy at a time
    writers = [subprocess.Popen(["/usr/bin/python3", "-c", WRITER, t.uri("vm"), str(rng.randrange(1 << 30))],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
               for _ in range(2)]
    for w in writers:
        if w.stdout.readline() != b"writing\n":
            t.fail(f"kill {i + 1}: a writer did not start")
    time.sleep(0.05 + rng.random() * 0.5)
    t.proc.send_signal(signal.SIGKILL)
    t.proc.wait()
    for w in writers:
        w.kill()
        w.wait()
    t.start("--control", t.ctl_sock, "-e", f"vm={img},bitmap=b", binary=binary, env=env)
    marked = granules_of(dirty_ranges(t.uri("vm"), "b", SIZE), GRAN)
    changed = differing_granules(f"{img}@{name}", img, GRAN)
    t.proc.send_signal(signal.SIGKILL)  # the next round starts it again
    t.proc.wait()
    if not changed:
        t.fail(f"kill {i + 1}: the writers changed nothing before the kill")
    return changed - marked, len(changed), len(marked)


dev, mnt = t.mount_fs("xfs", 400 << 20, "-f", "-q", "-m", "reflink=1")
img = os.path.join(mnt, "vm.img")
with open(img, "wb") as f:
    f.truncate(SIZE)
worst = []
for i in range(KILLS):
    missing, nchanged, nmarked = crash_round(i, None, None)
    if missing:
        t.fail(f"kill {i + 1}: granules {sorted(missing)[:10]} differ from the checkpoint "
               f"but are not dirty ({len(missing)} of {nchanged})")
    worst.append((nchanged, nmarked))
print(f"{KILLS} SIGKILLs during writes: every changed granule was dirty after the restart "
      f"(changed/marked per kill: {', '.join(f'{c}/{m}' for c, m in worst)})")

# The foil: bits written after the data must be caught.
if not os.path.exists(HOOKS):
    t.fail(f"{HOOKS} is not built")
os.unlink(img + ".bitmaps")
for n in os.listdir(mnt):
    if "@" in n:
        os.unlink(os.path.join(mnt, n))
env = dict(os.environ, URINGNBD_TEST_BITMAP_LATE_MS="300")
for i in range(8):
    missing, nchanged, _ = crash_round(100 + i, HOOKS, env)
    if missing:
        print(f"the lazy-bitmap build is caught at kill {i + 1}: {len(missing)} of "
              f"{nchanged} changed granules not dirty")
        break
else:
    t.fail("bits written after their data went unnoticed in 8 kills: this test cannot "
           "tell a safe bitmap from an unsafe one")
t.cleanup()
