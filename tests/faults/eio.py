#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""EIO from the disk on reads and writes (faultfs): each failing request
gets EIO, on direct and cached exports alike; the daemon serves on, a
client of another export is not disturbed, and once the fault is gone the
same requests succeed and the data written since reads back. No flush
fails here, so nothing becomes sticky."""
import os
import sys

import nbd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faultlib import Fault  # noqa: E402

t = Fault("eio.py")
mnt = t.mount_faultfs()
EIO = 5


def expect_eio(what, fn):
    t.expect_errno(what, EIO, fn)


img = os.path.join(mnt, "disk.img")
with open(img, "wb") as f:
    f.write(b"\x11" * (4 << 20))
other = os.path.join(t.dir, "other.img")
with open(other, "wb") as f:
    f.truncate(4 << 20)
t.start("-n", "direct", "-e", f"cached={img},cache=always", "-e", f"other={other}", img)
h = {}
for name in ("direct", "cached", "other"):
    h[name] = nbd.NBD()
    h[name].set_export_name(name)
    h[name].connect_uri(t.uri(name))

t.fault("r")
expect_eio("a direct read", lambda: h["direct"].pread(4096, 0))
expect_eio("a cached read of a cold page", lambda: h["cached"].pread(4096, 1 << 20))
expect_eio("an unaligned direct read", lambda: h["direct"].pread(100, 12345))
h["other"].pwrite(b"\x22" * 4096, 0)  # the other file does not notice
t.fault("w")
expect_eio("a direct write", lambda: h["direct"].pwrite(b"\x33" * 4096, 8192))
expect_eio("an unaligned write", lambda: h["direct"].pwrite(b"\x33" * 100, 8192 + 7))
expect_eio("WRITE_ZEROES with NO_HOLE",
           lambda: h["direct"].zero(4096, 16384, nbd.CMD_FLAG_NO_HOLE))
t.fault(None)
h["direct"].pwrite(b"\x44" * 4096, 8192)
h["direct"].flush()
if h["direct"].pread(4096, 8192) != b"\x44" * 4096:
    t.fail("a write after the fault did not read back")
if h["cached"].pread(4096, 1 << 20) != b"\x11" * 4096:
    t.fail("a cached read after the fault returned the wrong data")
if h["other"].pread(4096, 0) != b"\x22" * 4096:
    t.fail("the other export's data changed")
if "a flush failed" in open(t.log).read():
    t.fail("a read or write fault was taken for a failed flush")
for x in h.values():
    x.shutdown()
t.stop(0)  # no flush failed: a clean exit
t.cleanup()
print("EIO on reads and writes reaches the client; the daemon serves on and recovers")
