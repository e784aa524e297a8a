#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Images on XFS and btrfs (loop-mounted, made with their own mkfs): a
32 MiB round trip with nbdcopy, unaligned writes and zeroes against a
model, a flush; then the filesystem checks clean (xfs_repair -n,
btrfs check) and the image file holds what was written."""
import os
import random
import subprocess
import sys

import nbd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faultlib import Fault  # noqa: E402

t = Fault("filesystems.py")
t.need_root("mkfs.xfs", "xfs_repair", "mkfs.btrfs", "btrfs", "nbdcopy")
seed = int(os.environ.get("FS_SEED", random.randrange(1 << 30)))
print(f"seed {seed} (FS_SEED={seed} repeats it)")
rng = random.Random(seed)
SIZE = 64 << 20
src = os.path.join(t.dir, "src.bin")
with open(src, "wb") as f:
    f.write(rng.randbytes(32 << 20))

for fstype, fs_size, mkfs, check in (
        ("xfs", 320 << 20, ["-f", "-q"], ["xfs_repair", "-n"]),
        ("btrfs", 256 << 20, ["-f", "-q"], ["btrfs", "check"])):
    dev, mnt = t.mount_fs(fstype, fs_size, *mkfs)
    img = os.path.join(mnt, "disk.img")
    with open(img, "wb") as f:
        f.truncate(SIZE)
    t.start(img)
    if subprocess.run(["nbdcopy", src, t.uri()]).returncode != 0:
        t.fail(f"{fstype}: nbdcopy into the export")
    model = bytearray(open(src, "rb").read() + bytes(SIZE - (32 << 20)))
    h = nbd.NBD()
    h.connect_uri(t.uri())
    for _ in range(200):
        off = rng.randrange(SIZE - 1)
        n = 1 + rng.randrange(min(SIZE - off, 1 << rng.choice((9, 12, 17))))
        if rng.random() < 0.8:
            data = rng.randbytes(n)
            h.pwrite(data, off)
        else:
            data = bytes(n)
            h.zero(n, off, rng.choice((0, nbd.CMD_FLAG_NO_HOLE)))
        model[off:off + n] = data
    h.flush()
    for off in range(0, SIZE, 16 << 20):
        if h.pread(16 << 20, off) != model[off:off + (16 << 20)]:
            t.fail(f"{fstype}: the export does not read back what was written at {off}")
    h.shutdown()
    t.stop()
    with open(img, "rb") as f:
        if f.read() != model:
            t.fail(f"{fstype}: the image file does not hold what was written")
    t.umount(mnt)
    r = subprocess.run([*check, dev], capture_output=True, text=True)
    if r.returncode != 0:
        t.fail(f"{fstype}: {' '.join(check)}: {(r.stdout + r.stderr)[-400:]}")
    print(f"{fstype}: 32 MiB nbdcopy and 200 unaligned writes/zeroes round trip; fsck clean")
t.cleanup()
