#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""A block device with 4 KiB sectors (losetup --sector-size 4096): unaligned
READ, WRITE, TRIM and WRITE_ZEROES (with and without NO_HOLE, with FUA)
round trip against a model. The kernel takes discards and zeroing on such
a device in whole 4 KiB blocks only: a 512-byte TRIM is done as no discard
(TRIM is advisory) and an unaligned WRITE_ZEROES writes zeroes over its
span with the edge blocks kept (over 32 MiB, in segments); neither may fail. Trimmed bytes may read as
anything, so the model stops checking them until they are written again.
Seed printed; BLOCKDEV_SEED=N repeats it."""
import os
import random
import subprocess
import sys

import nbd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faultlib import Fault  # noqa: E402

SIZE = 40 << 20
t = Fault("blockdev_4k.py")
t.need_root("losetup")
fail = t.fail
seed = int(os.environ.get("BLOCKDEV_SEED", random.randrange(1 << 30)))
print(f"seed {seed} (BLOCKDEV_SEED={seed} repeats it)")
rng = random.Random(seed)
backing = os.path.join(t.dir, "backing.img")
model = bytearray(rng.randbytes(SIZE))
with open(backing, "wb") as f:
    f.write(model)
r = subprocess.run(["losetup", "--find", "--show", "--sector-size", "4096", backing],
                   capture_output=True, text=True)
if r.returncode != 0:
    t.skip(f"losetup --sector-size 4096: {r.stderr.strip()}")
loopdev = r.stdout.strip()
t.loops.append(loopdev)  # detached on any exit
known = bytearray(b"\x01" * SIZE)  # bytes whose contents the model knows

t.start(loopdev)
h = nbd.NBD()
h.connect_uri(t.uri())
if h.get_size() != SIZE:
    fail(f"size {h.get_size()}")
if h.get_block_size(nbd.SIZE_PREFERRED) != 4096:
    fail(f"preferred block size {h.get_block_size(nbd.SIZE_PREFERRED)}, expected 4096")


def check(off, length):
    got = h.pread(length, off)
    for b in range(0, length, 65536):
        n = min(65536, length - b)
        if got[b:b + n] == model[off + b:off + b + n]:
            continue
        for i in range(b, b + n):
            if known[off + i] and got[i] != model[off + i]:
                fail(f"byte {off + i} reads {got[i]}, the model says {model[off + i]}")


# The cases the kernel refuses unless they are aligned, first.
h.trim(512, 4096 + 512)
h.trim(512, 0)
h.zero(100, 8192 + 7)
model[8192 + 7:8192 + 107] = bytes(100)
h.zero(5000, 3 * 4096 - 100, nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FUA)
model[3 * 4096 - 100:3 * 4096 - 100 + 5000] = bytes(5000)
check(0, 6 * 4096)
# A loop device has a zeroing command: FAST_ZERO of whole blocks is fine; an
# unaligned one would be a write of zeroes, which FAST_ZERO refuses.
h.zero(8192, 16384, nbd.CMD_FLAG_FAST_ZERO)
model[16384:16384 + 8192] = bytes(8192)
try:
    h.zero(100, 16384 + 1, nbd.CMD_FLAG_FAST_ZERO)
    fail("an unaligned FAST_ZERO on a device succeeded")
except nbd.Error as e:
    if e.errnum != 95:
        fail(f"an unaligned FAST_ZERO on a device: {e} (expected ENOTSUP)")
check(0, 8 * 4096)
# Over 32 MiB, an unaligned WRITE_ZEROES is written as zeroes in segments, edges kept.
h.zero((34 << 20) + 1000, 3000)
model[3000:3000 + (34 << 20) + 1000] = bytes((34 << 20) + 1000)
check(0, SIZE)

for i in range(300):
    op = rng.randrange(5)
    off = rng.randrange(SIZE - 1)
    length = 1 + rng.randrange(min(SIZE - off, 1 << rng.choice((9, 12, 16, 20))))
    if op == 0:
        data = rng.randbytes(length)
        h.pwrite(data, off, nbd.CMD_FLAG_FUA if rng.random() < 0.2 else 0)
        model[off:off + length] = data
        known[off:off + length] = b"\x01" * length
    elif op == 1:
        check(off, length)
    elif op == 2:
        h.trim(length, off)
        first, last = (off + 4095) // 4096 * 4096, (off + length) // 4096 * 4096
        if last > first:  # whole blocks inside may now read as anything
            known[first:last] = bytes(last - first)
    else:
        flags = rng.choice((0, nbd.CMD_FLAG_NO_HOLE, nbd.CMD_FLAG_FUA))
        h.zero(length, off, flags)
        model[off:off + length] = bytes(length)
        known[off:off + length] = b"\x01" * length
check(0, SIZE)
h.shutdown()
t.stop()
log = open(t.log).read()
if "EINVAL" in log or "Invalid argument" in log:
    fail("the device refused a request (EINVAL) on the way")
t.cleanup()
print("300 random unaligned operations on a 4 KiB-sector device match the model")
