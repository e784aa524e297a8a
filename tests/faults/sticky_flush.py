#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""A failed flush is never forgotten. The image lives on faultfs (this
directory's FUSE filesystem), whose fdatasync fails while a trigger file
exists. The first FLUSH after the fault fails with EIO; once the fault is
gone, every later FLUSH and FUA write to that file still fails, on this
connection and on a new one, while plain writes and reads go on; the event
is logged once with the path; and the daemon exits 1 at SIGTERM because
writes may have been lost. Without the sticky error the second FLUSH would
succeed although the data behind the first was never made durable."""
import os
import sys

import nbd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faultlib import Fault  # noqa: E402

t = Fault("sticky_flush.py")
mnt = t.mount_faultfs()


def expect_eio(what, fn):
    t.expect_errno(what, 5, fn)


img = os.path.join(mnt, "disk.img")
with open(img, "wb") as f:
    f.truncate(16 << 20)
t.start(img)
uri = t.uri()

h = nbd.NBD()
h.connect_uri(uri)
h.pwrite(b"\x11" * 4096, 0)
h.flush()  # no fault yet

t.fault("")
h.pwrite(b"\x22" * 4096, 4096)
expect_eio("FLUSH while the disk's flush fails", h.flush)
t.fault(None)
expect_eio("FLUSH after the fault went", h.flush)

h2 = nbd.NBD()
h2.connect_uri(uri)
expect_eio("FLUSH on a new connection", h2.flush)
expect_eio("a FUA write", lambda: h2.pwrite(b"\x33" * 4096, 8192, nbd.CMD_FLAG_FUA))
h2.pwrite(b"\x44" * 4096, 12288)  # plain writes go on
if h2.pread(4096, 12288) != b"\x44" * 4096:
    t.fail("a plain write after the fault did not read back")
h.shutdown()
h2.shutdown()

text = open(t.log).read()
if text.count("a flush failed") != 1 or img not in text:
    t.fail("the failed flush was not logged exactly once with the path")
t.stop(1)  # writes may have been lost: exit status 1
if "exiting with writes that may have been lost" not in open(t.log).read():
    t.fail("no log line at exit about the lost flush")
t.cleanup()
print("a failed flush stays failed: FLUSH and FUA fail with EIO on every connection; exit 1")
