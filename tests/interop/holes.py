#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Reads of holes: with structured replies and no DF, a READ of 256 KiB or
more of a sparse file answers its holes as OFFSET_HOLE chunks, which
libnbd (pread_structured sees them), qemu-img and nbdcopy read back as the
file's bytes; with DF, with simple replies, and on a fully allocated file
(zeroes in it, but no holes) it sends data only; a TRIM that punches a hole
there makes later reads answer it as a hole."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from testlib import T, Daemon, check, image, need  # noqa: E402

import nbd  # noqa: E402

need("qemu-img", "nbdcopy", "cmp")
MIB = 1 << 20
sparse = image("sparse.img", 64 * MIB)
with open(sparse, "r+b") as f:
    for off in (0, 8 * MIB + 4096, 40 * MIB):
        f.seek(off)
        f.write(os.urandom(MIB))
full = os.path.join(T, "full.img")
with open(full, "wb") as f:
    f.write(b"\0" * (16 * MIB))
    f.write(os.urandom(16 * MIB))
    os.fsync(f.fileno())
d = Daemon(["-e", f"sparse={sparse}", "-e", f"full={full}"])


def read_chunks(h, off, length, flags=0):
    """The data as read, and the kinds of chunk it came in."""
    buf = bytearray(length)
    kinds = []

    def chunk(sub, offset, status, err):
        kinds.append(status)
        if status == nbd.READ_DATA:
            buf[offset - off:offset - off + len(sub)] = sub
        return 0

    got = h.pread_structured(length, off, chunk, flags)
    check(len(got) == length, "short read")
    return bytes(got), kinds


def file_bytes(path, off, length):
    with open(path, "rb") as f:
        f.seek(off)
        return f.read(length)


h = nbd.NBD()
h.set_export_name("sparse")
h.connect_unix(d.sock)
check(h.can_df(), "DF is not offered")
# 16 MiB from 2 MiB: data, hole, data, hole.
data, kinds = read_chunks(h, 2 * MIB - 512, 16 * MIB)
check(data == file_bytes(sparse, 2 * MIB - 512, 16 * MIB), "a read with holes differs")
holes = kinds.count(nbd.READ_HOLE)
check(holes >= 2 and kinds.count(nbd.READ_DATA) >= 1, f"chunks: {kinds}")
print(f"16 MiB read: {holes} hole chunk(s), {kinds.count(nbd.READ_DATA)} data chunk(s)")
# All hole: one chunk, no data.
data, kinds = read_chunks(h, 16 * MIB, 8 * MIB)
check(data == bytes(8 * MIB) and kinds == [nbd.READ_HOLE], f"an all-hole read: {kinds}")
# Small reads, and DF, send data.
data, kinds = read_chunks(h, 16 * MIB, 64 * 1024)
check(kinds == [nbd.READ_DATA], f"a 64 KiB read of a hole: {kinds}")
data, kinds = read_chunks(h, 2 * MIB, 16 * MIB, nbd.CMD_FLAG_DF)
check(kinds == [nbd.READ_DATA] and data == file_bytes(sparse, 2 * MIB, 16 * MIB),
      f"DF: {kinds}")
h.shutdown()

# Simple replies: plain data.
h = nbd.NBD()
h.set_request_structured_replies(False)
h.set_export_name("sparse")
h.connect_unix(d.sock)
check(h.pread(16 * MIB, 2 * MIB) == file_bytes(sparse, 2 * MIB, 16 * MIB), "simple replies")
h.shutdown()

# Real clients read the same bytes.
out = os.path.join(T, "out.img")
for cmd in (["nbdcopy", d.uri("sparse"), out],
            ["qemu-img", "compare", "-f", "raw", "-F", "raw", sparse, d.uri("sparse")]):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    check(p.returncode == 0, f"{cmd[0]}: {p.stdout} {p.stderr}")
check(subprocess.run(["cmp", sparse, out]).returncode == 0, "nbdcopy's copy differs")

# A fully allocated file: zeroes are data, until a TRIM punches a hole.
h = nbd.NBD()
h.set_export_name("full")
h.connect_unix(d.sock)
data, kinds = read_chunks(h, 0, 8 * MIB)
check(data == bytes(8 * MIB) and nbd.READ_HOLE not in kinds, f"allocated zeroes: {kinds}")
h.trim(4 * MIB, 2 * MIB)
data, kinds = read_chunks(h, 2 * MIB, 8 * MIB)
check(data == bytes(8 * MIB) and nbd.READ_HOLE in kinds, f"after a trim: {kinds}")
data, kinds = read_chunks(h, 14 * MIB, 4 * MIB)
check(data == file_bytes(full, 14 * MIB, 4 * MIB), "data after the zeroes")
h.shutdown()
d.stop()
print("holes: answered as OFFSET_HOLE where they pay, read back right by every client")
