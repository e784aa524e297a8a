#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
# test-timeout: 300
"""Incremental backup of an rbd: export, the walk of the file tests
(tests/faults/bitmaps_chain.py) on a cluster: a checkpoint is an RBD
snapshot served as EXPORT@NAME, its qemu:dirty-bitmap:b what changed since
the checkpoint before (from the cluster). A full backup from the first
checkpoint, then three rounds of writes from four connections (unaligned,
FUA and not, zeroes, trims), each ended by a checkpoint and a backup of
only the extents its bitmap marks, read while a writer keeps writing to
the live export. Each backup must equal `rbd export` of its snapshot,
every byte that changed between two checkpoints must be marked, and the
incrementals read no more than is marked. Then the daemon is killed
(SIGKILL) and started again: its checkpoints are served as before, and a
further round goes on from the last; checkpoint-remove deletes the
snapshot; bad requests get clear errors."""
import json
import os
import random
import signal
import subprocess
import sys
import threading

import nbd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from testlib import T, S, URINGNBDCTL, check, fail, need, skip, Daemon  # noqa: E402
from ceph import Cluster  # noqa: E402

need("nbdcopy")
SIZE = 64 << 20
seed = int(os.environ.get("CHAIN_SEED", random.randrange(1 << 30)))
print(f"seed {seed} (CHAIN_SEED={seed} repeats it)")
rng = random.Random(seed)
cl = Cluster(os.path.join(S, "ceph"), skip=skip)
conf = cl.conf
cl.rbd("create", "rbd/img", "--size", "64M")
CTL = os.path.join(S, "ctl")
ARGS = ["--control", CTL, "-e", f"vm=rbd:rbd/img,ceph-conf={conf},bitmap=b"]
d = Daemon(ARGS)


def ctl(*args, ok=True):
    r = subprocess.run([URINGNBDCTL, "-c", CTL, "--json", *args], capture_output=True,
                       text=True, timeout=120)
    if ok:
        check(r.returncode == 0, f"uringnbdctl {' '.join(args)}: {r.stdout}{r.stderr}")
        return json.loads(r.stdout)
    check(r.returncode != 0, f"uringnbdctl {' '.join(args)} succeeded: {r.stdout}")
    return r.stderr


def client(name, ctx=None):
    h = nbd.NBD()
    if ctx:
        h.add_meta_context(ctx)
    h.connect_uri(d.uri(name))
    return h


def scribble(h, n, r):
    for _ in range(n):
        off = r.randrange(0, SIZE - 300000)
        k = r.random()
        ln = r.choice([1, 511, 4096, 65536 + 3, 262144])
        if k < 0.7:
            h.pwrite(r.randbytes(ln), off, nbd.CMD_FLAG_FUA if r.random() < 0.3 else 0)
        elif k < 0.85:
            h.zero(ln, off)
        else:
            h.trim(ln, off)


def snapshot_bytes(name):
    path = os.path.join(T, f"snap-{name}.img")
    if os.path.exists(path):
        os.unlink(path)
    cl.rbd("export", f"rbd/img@{name}", path)
    return open(path, "rb").read()


def dirty_extents(h):
    out, pos = [], 0

    def cb(meta, off, entries, err):
        nonlocal pos
        p = off
        for i in range(0, len(entries), 2):
            if entries[i + 1] & 1:
                out.append((p, p + entries[i]))
            p += entries[i]
        pos = p
    while pos < SIZE:
        h.block_status(min(SIZE - pos, 32 << 20), pos, cb)
    return out


live = [client("vm") for _ in range(4)]
scribble(live[0], 300, rng)
live[0].flush()

# ---- the first checkpoint: a full backup ----
ctl("checkpoint", "vm", "b", "ck1")
backup = bytearray(SIZE)
full = client("vm@ck1")
check(full.is_read_only(), "a checkpoint's export is writable")
for off in range(0, SIZE, 4 << 20):
    backup[off:off + (4 << 20)] = full.pread(4 << 20, off)
full.shutdown()
prev = snapshot_bytes("ck1")
check(bytes(backup) == prev, "the full backup differs from rbd export of ck1")
print("ck1: full backup equals the snapshot")


def round_(n):
    global prev
    r = random.Random(seed + n)
    threads = [threading.Thread(target=scribble, args=(h, 80, random.Random(seed * 7 + n + i)))
               for i, h in enumerate(live)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    name = f"ck{n}"
    ctl("checkpoint", "vm", "b", name)
    # A writer keeps writing to the live export while the backup reads.
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            scribble(live[0], 5, r)
    w = threading.Thread(target=writer)
    w.start()
    h = client(f"vm@{name}", "qemu:dirty-bitmap:b")
    ext = dirty_extents(h)
    moved = 0
    for a, b in ext:
        for off in range(a, b, 4 << 20):
            ln = min(4 << 20, b - off)
            backup[off:off + ln] = h.pread(ln, off)
            moved += ln
    h.shutdown()
    stop.set()
    w.join()
    now = snapshot_bytes(name)
    check(bytes(backup) == now, f"{name}: the incremental backup differs from rbd export")
    # Every byte that changed is marked.
    marked = bytearray(SIZE)
    for a, b in ext:
        marked[a:b] = b"\x01" * (b - a)
    for off in range(0, SIZE, 4096):
        if prev[off:off + 4096] != now[off:off + 4096]:
            for i in range(off, off + 4096):
                if prev[i] != now[i] and not marked[i]:
                    fail(f"{name}: byte {i} changed since the checkpoint before, unmarked")
    changed = sum(1 for off in range(0, SIZE, 4096) if prev[off:off + 4096] != now[off:off + 4096])
    prev = now
    print(f"{name}: {len(ext)} dirty extents, {moved >> 10} KiB read "
          f"({changed * 4} KiB of 4 KiB blocks changed); the backup equals the snapshot")


for n in (2, 3, 4):
    round_(n)
bm = ctl("bitmaps", "vm")
check([c["name"] for c in bm["checkpoints"]] == ["ck1", "ck2", "ck3", "ck4"],
      f"bitmaps lists {bm['checkpoints']}")

# ---- bad requests ----
err = ctl("checkpoint", "vm", "nosuch", "ck9", ok=False)
check("no bitmap" in err, f"an unknown bitmap: {err}")
err = ctl("checkpoint", "vm", "b", "ck2", ok=False)
check("exists" in err, f"a checkpoint name used twice: {err}")
err = ctl("checkpoint", "vm", "b", "ck9", "--bitmap-only", ok=False)
check("snapshot" in err, f"bitmap-only: {err}")
err = ctl("bitmap-clear", "vm", "b", ok=False)
check("snapshots" in err, f"bitmap-clear: {err}")
err = ctl("checkpoint-remove", "vm", "nosuch", ok=False)
check("no checkpoint" in err, f"removing an unknown checkpoint: {err}")

# ---- SIGKILL, start again: the checkpoints are the cluster's ----
for h in live:
    h.shutdown()
d.proc.send_signal(signal.SIGKILL)
d.proc.wait()
d = Daemon(ARGS, log="daemon2.log")
for n in (1, 2, 3, 4):
    h = client(f"vm@ck{n}")
    h.shutdown()
live = [client("vm") for _ in range(4)]
round_(5)
print("after SIGKILL and a start: ck1-ck4 served again; ck5 from ck4 as before")

# ---- checkpoint-remove ----
ctl("checkpoint-remove", "vm", "ck1")
check("ck1" not in cl.rbd("snap", "ls", "rbd/img"), "the snapshot ck1 is still there")
try:
    client("vm@ck1")
    fail("vm@ck1 is still served after checkpoint-remove")
except nbd.Error:
    pass
print("checkpoint-remove: the snapshot and its export are gone")
for h in live:
    h.shutdown()
d.stop()
cl.stop()
print("ok")
