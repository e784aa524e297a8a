#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""The image shrinks under the daemon: reads past the new end fail with an
error on a direct and on a cached export (a cache fill that comes back
short before the export's end is an error, never a page of zeroes), reads
before it still return the data, and the daemon serves on."""
import os
import sys

import nbd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faultlib import Fault  # noqa: E402

t = Fault("truncated.py")
img = os.path.join(t.dir, "disk.img")
with open(img, "wb") as f:
    f.write(b"\x5a" * (8 << 20))
t.start("-n", "direct", "-e", f"cached={img},cache=always", img)
handles = {}
for name in ("direct", "cached"):
    h = nbd.NBD()
    h.set_export_name(name)
    h.connect_uri(t.uri(name))
    handles[name] = h
os.truncate(img, 4 << 20)  # under the daemon: the exports still say 8 MiB
for name, h in handles.items():
    for off in (4 << 20, (6 << 20) + 512):
        try:
            data = h.pread(4096, off)
        except nbd.Error:
            continue
        t.fail(f"{name}: a read at {off}, past the new end, returned "
             f"{'zeroes' if data == bytes(4096) else 'data'} instead of an error")
    if h.pread(4096, (4 << 20) - 4096) != b"\x5a" * 4096:
        t.fail(f"{name}: the data before the new end changed")
if t.proc.poll() is not None:
    t.fail("the daemon died")
for h in handles.values():
    h.shutdown()
t.stop()
t.cleanup()
print("reads past the new end fail on direct and cached exports; the rest is intact")
