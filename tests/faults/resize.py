#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""The image changes under the daemon. Grown: a new connection sees the new
size, an open one keeps the old. Shrunk: new connections see the smaller
size; an open one reading past the new end gets an error, never zeroes
that were not written or another file's bytes. Replaced (a new file renamed
over the path): new connections get the new file, an open one keeps the
old. Each change is logged."""
import os
import sys

import nbd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faultlib import Fault  # noqa: E402

t = Fault("resize.py")
img = os.path.join(t.dir, "disk.img")
with open(img, "wb") as f:
    f.write(b"\x11" * (4 << 20))
t.start("-t", "1", img)


def client():
    h = nbd.NBD()
    h.connect_uri(t.uri())
    return h


old = client()
if old.get_size() != 4 << 20:
    t.fail(f"size {old.get_size()}")

# Grown.
with open(img, "ab") as f:
    f.write(b"\x22" * (4 << 20))
grown = client()
if grown.get_size() != 8 << 20:
    t.fail(f"a new connection sees {grown.get_size()} bytes after growth, not 8 MiB")
if grown.pread(4096, (6 << 20)) != b"\x22" * 4096:
    t.fail("the grown part does not read back")
if old.get_size() != 4 << 20:
    t.fail("an open connection's size changed")

# Shrunk.
os.truncate(img, 2 << 20)
small = client()
if small.get_size() != 2 << 20:
    t.fail(f"a new connection sees {small.get_size()} bytes after shrinking, not 2 MiB")
for h, name in ((old, "the first"), (grown, "the grown")):
    try:
        data = h.pread(4096, 3 << 20)
        t.fail(f"{name} connection read past the new end: "
               f"{'zeroes' if data == bytes(4096) else 'data'}, not an error")
    except nbd.Error:
        pass
    if h.pread(4096, 0) != b"\x11" * 4096:
        t.fail(f"{name} connection: the data before the new end changed")

# Replaced: a new file renamed over the path.
new = img + ".new"
with open(new, "wb") as f:
    f.write(b"\x33" * (1 << 20))
os.rename(new, img)
fresh = client()
if fresh.get_size() != 1 << 20 or fresh.pread(4096, 0) != b"\x33" * 4096:
    t.fail("a new connection does not see the replacing file")
if small.pread(4096, 0) != b"\x11" * 4096:
    t.fail("an open connection lost the file it had")

log = open(t.log).read()
for want in ("size 4194304 -> 8388608 bytes", "size 8388608 -> 2097152 bytes",
             "replaced by another file"):
    if want not in log:
        t.fail(f"no log line saying {want!r}")
for h in (old, grown, small, fresh):
    h.shutdown()
t.stop()
t.cleanup()
print("growth, shrinking and replacement seen by new connections; open ones keep theirs")
