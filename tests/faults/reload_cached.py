#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""A cached export re-added while a direct client writes: both exports of
one file are removed by SIGHUP while a direct client stays connected, the
cached one is added back, a client reads a block through it (the cache now
holds it), the direct client rewrites the block, and the cached export must
then serve the new bytes, never the stale page. One cache key per file
(backing.c) is what makes the direct write reach the re-added export's
pages."""
import os
import signal
import sys
import time

import nbd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faultlib import Fault  # noqa: E402

t = Fault("reload_cached.py")
img = os.path.join(t.dir, "shared.img")
with open(img, "wb") as f:
    f.write(b"\x11" * (4 << 20))
other = os.path.join(t.dir, "other.img")
with open(other, "wb") as f:
    f.truncate(1 << 20)
cfg = os.path.join(t.dir, "uringnbd.conf")


def config(*exports):
    text = "".join(f"[export {name}]\npath = {img}\n{extra}" for name, extra in exports)
    with open(cfg + ".tmp", "w") as f:
        f.write(text)
    os.rename(cfg + ".tmp", cfg)


def reload(n):
    t.proc.send_signal(signal.SIGHUP)
    end = time.time() + 10
    while open(t.log).read().count("reload:") < n and time.time() < end:
        time.sleep(0.02)


def client(name):
    h = nbd.NBD()
    h.set_export_name(name)
    h.connect_uri(t.uri(name))
    return h


config(("cached", "cache = always\n"), ("direct", ""))
t.start("-c", cfg, other)
writer = client("direct")
config()
reload(1)                      # both gone; the direct client carries on
config(("cached", "cache = always\n"))
reload(2)                      # the cached one is back: a new export of the file
reader = client("cached")
if reader.pread(4096, 8192) != b"\x11" * 4096:
    t.fail("the first read through the re-added cached export")
writer.pwrite(b"\x22" * 4096, 8192)
if reader.pread(4096, 8192) != b"\x22" * 4096:
    t.fail("the re-added cached export served a stale page after a direct write")
reader.shutdown()
writer.shutdown()
t.stop()
t.cleanup()
print("a re-added cached export sees a direct client's write: no stale page")
