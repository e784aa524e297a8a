#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""A slow backing store: every SEEK_DATA/SEEK_HOLE takes 50 ms (faultfs).
A BLOCK_STATUS over an image of many extents then takes seconds; on the
same worker (-t 1) another client's 4 KiB reads must still be answered
promptly, because the extent walk runs off the worker's loop."""
import os
import sys
import time

import nbd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faultlib import Fault  # noqa: E402

t = Fault("slow_extents.py")
mnt = t.mount_faultfs()
img = os.path.join(mnt, "disk.img")
with open(img, "wb") as f:
    f.truncate(16 << 20)
    for off in range(0, 16 << 20, 1 << 20):  # 16 data extents between holes
        f.seek(off)
        f.write(b"\x01" * 4096)
t.start("-t", "1", img)
a = nbd.NBD()
a.add_meta_context("base:allocation")
a.connect_uri(t.uri())
b = nbd.NBD()
b.connect_uri(t.uri())
t.fault("d")
extents = []
t0 = time.monotonic()
cookie = a.aio_block_status(16 << 20, 0,
                            lambda ctx, off, entries, err: extents.extend(entries) or 0)
time.sleep(0.2)  # the walk is under way
worst = 0.0
for i in range(20):
    s = time.monotonic()
    if b.pread(4096, (i * 4096) % (16 << 20)) is None:
        t.fail("read failed")
    worst = max(worst, time.monotonic() - s)
while not a.aio_command_completed(cookie):
    a.poll(-1)
took = time.monotonic() - t0
t.fault(None)
print(f"BLOCK_STATUS took {took:.2f} s; meanwhile 20 reads on the same worker, the slowest "
      f"{worst * 1000:.1f} ms")
if took < 1.0:
    t.fail(f"the extent walk took only {took:.2f} s: the store was not slow, nothing was shown")
if worst > 0.5:
    t.fail(f"a read waited {worst:.2f} s behind another client's BLOCK_STATUS")
if len(extents) < 4:
    t.fail(f"BLOCK_STATUS returned {len(extents) // 2} extents")
a.shutdown()
b.shutdown()
t.stop()
t.cleanup()
