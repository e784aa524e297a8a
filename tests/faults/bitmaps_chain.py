#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Incremental backup through dirty bitmaps and checkpoints, on XFS and
btrfs (loop-mounted, reflinks): a full backup read from a first
checkpoint's export, then three rounds of writes from four connections
(unaligned, FUA and not, zeroes, trims), each ended by a checkpoint and a
backup of only the granules its frozen bitmap marks, read from the
checkpoint's export while a writer keeps writing to the live export.
Restoring the full backup and the incrementals in order must give the
image byte for byte; every granule that changed between two checkpoints
must be marked, and the incrementals read no more than what is marked."""
import os
import random
import shutil
import subprocess
import sys
import threading

import nbd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faultlib import Fault, dirty_ranges, granules_of, differing_granules  # noqa: E402

t = Fault("bitmaps_chain.py")
t.need_root("mkfs.xfs", "xfs_repair", "mkfs.btrfs", "btrfs", "nbdcopy")
seed = int(os.environ.get("CHAIN_SEED", random.randrange(1 << 30)))
print(f"seed {seed} (CHAIN_SEED={seed} repeats it)")
rng = random.Random(seed)
SIZE = 64 << 20
GRAN = 64 << 10


def writer(uri, r, ops, stop=None):
    """ops random requests on one connection (or until stop is set)."""
    h = nbd.NBD()
    h.connect_uri(uri)
    n = 0
    while (stop is None and n < ops) or (stop is not None and not stop.is_set()):
        off = r.randrange(SIZE - 1)
        ln = 1 + r.randrange(min(SIZE - off, 1 << r.choice((9, 12, 16, 18))))
        k = r.random()
        if k < 0.55:
            h.pwrite(r.randbytes(ln), off)
        elif k < 0.7:
            h.pwrite(r.randbytes(ln), off, nbd.CMD_FLAG_FUA)
        elif k < 0.85:
            h.zero(ln, off, r.choice((0, nbd.CMD_FLAG_NO_HOLE)))
        else:
            h.trim(ln, off)
        n += 1
    h.flush()
    h.shutdown()


def backup_dirty(uri, ranges, out_path):
    """Reads the marked ranges from the checkpoint's export: [(offset, bytes)], bytes read."""
    h = nbd.NBD()
    h.connect_uri(uri)
    parts, total = [], 0
    for a, b in ranges:
        for off in range(a, b, 8 << 20):
            n = min(b, off + (8 << 20)) - off
            parts.append((off, h.pread(n, off)))
            total += n
    h.shutdown()
    with open(out_path, "wb") as f:
        for off, data in parts:
            f.write(off.to_bytes(8, "little") + len(data).to_bytes(8, "little") + data)
    return total


def restore(full, incrementals, out):
    shutil.copyfile(full, out)
    with open(out, "r+b") as img:
        for inc in incrementals:
            with open(inc, "rb") as f:
                while hdr := f.read(16):
                    off = int.from_bytes(hdr[:8], "little")
                    n = int.from_bytes(hdr[8:], "little")
                    img.seek(off)
                    img.write(f.read(n))


for fstype, fs_size, mkfs, fsck in (
        ("xfs", 400 << 20, ["-f", "-q", "-m", "reflink=1"], ["xfs_repair", "-n"]),
        ("btrfs", 320 << 20, ["-f", "-q"], ["btrfs", "check"])):
    dev, mnt = t.mount_fs(fstype, fs_size, *mkfs)
    img = os.path.join(mnt, "vm.img")
    with open(img, "wb") as f:
        f.write(rng.randbytes(24 << 20))
        f.truncate(SIZE)
    bdir = os.path.join(t.dir, fstype + ".backup")
    os.makedirs(bdir)
    t.start("--control", t.ctl_sock, "-e", f"vm={img},bitmap=nightly")

    # The full backup: everything, from the first checkpoint.
    t.ctl("checkpoint", "vm", "nightly", "c0")
    full = os.path.join(bdir, "full.raw")
    if subprocess.run(["nbdcopy", t.uri("vm@c0"), full]).returncode != 0:
        t.fail(f"{fstype}: nbdcopy of vm@c0")
    prev_snap = img + "@c0"
    incs, report = [], []
    for rnd in range(1, 4):
        threads = [threading.Thread(target=writer, args=(t.uri("vm"), random.Random(rng.random()), 60))
                   for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        name = f"c{rnd}"
        reply = t.ctl("checkpoint", "vm", "nightly", name)
        ck = [c for c in reply["checkpoints"] if c["name"] == name][0]
        if ck["export"] != f"vm@{name}" or ck["snapshot"] != f"{img}@{name}":
            t.fail(f"{fstype}: checkpoint reply {ck}")
        live = [b for b in reply["bitmaps"] if b["name"] == "nightly"][0]
        if live["dirty-granules"] != 0:
            t.fail(f"{fstype}: the live bitmap kept {live['dirty-granules']} granules")
        # Meanwhile the VM goes on writing; the backup reads the checkpoint.
        stop = threading.Event()
        bg = threading.Thread(target=writer, args=(t.uri("vm"), random.Random(rnd), 0, stop))
        bg.start()
        ranges = dirty_ranges(t.uri(f"vm@{name}"), "nightly", SIZE)
        marked = granules_of(ranges, GRAN)
        if len(marked) != ck["dirty-granules"]:
            t.fail(f"{fstype}: BLOCK_STATUS shows {len(marked)} granules, the control socket "
                   f"{ck['dirty-granules']}")
        changed = differing_granules(prev_snap, f"{img}@{name}", GRAN)
        if changed - marked:
            t.fail(f"{fstype}: round {rnd}: granules {sorted(changed - marked)[:10]} changed "
                   "but are not marked")
        inc = os.path.join(bdir, f"{name}.inc")
        read = backup_dirty(t.uri(f"vm@{name}"), ranges, inc)
        stop.set()
        bg.join()
        if read > len(marked) * GRAN:
            t.fail(f"{fstype}: round {rnd}: read {read} bytes for {len(marked)} granules")
        incs.append(inc)
        report.append(f"{len(marked)}/{SIZE // GRAN} granules marked ({len(changed)} changed), "
                      f"{read >> 10} KiB read")
        prev_snap = f"{img}@{name}"
    # Restore: full + incrementals is the last checkpoint, byte for byte.
    restored = os.path.join(bdir, "restored.raw")
    restore(full, incs, restored)
    if open(restored, "rb").read() != open(img + "@c3", "rb").read():
        t.fail(f"{fstype}: full + 3 incrementals differ from checkpoint c3")
    # And from the image itself, once the last writer's changes are undone by c4.
    t.ctl("checkpoint", "vm", "nightly", "c4")
    ranges = dirty_ranges(t.uri("vm@c4"), "nightly", SIZE)
    inc4 = os.path.join(bdir, "c4.inc")
    backup_dirty(t.uri("vm@c4"), ranges, inc4)
    t.stop()
    restore(full, incs + [inc4], restored)
    if open(restored, "rb").read() != open(img, "rb").read():
        t.fail(f"{fstype}: full + 4 incrementals differ from the image")
    # A checkpoint removed takes its copy with it.
    t.start("--control", t.ctl_sock, "-e", f"vm={img},bitmap=nightly")
    t.ctl("checkpoint-remove", "vm", "c0")
    if os.path.exists(img + "@c0"):
        t.fail(f"{fstype}: checkpoint-remove left {img}@c0")
    listed = [c["name"] for c in t.ctl("bitmaps", "vm")["checkpoints"]]
    if listed != ["c1", "c2", "c3", "c4"]:
        t.fail(f"{fstype}: after a restart and a removal the checkpoints are {listed}")
    t.stop()
    t.umount(mnt)
    r = subprocess.run([*fsck, dev], capture_output=True, text=True)
    if r.returncode != 0:
        t.fail(f"{fstype}: {' '.join(fsck)}: {(r.stdout + r.stderr)[-400:]}")
    print(f"{fstype}: full + 4 incrementals restore the image byte for byte; "
          + "; ".join(f"c{i + 1}: {x}" for i, x in enumerate(report)))
t.cleanup()
