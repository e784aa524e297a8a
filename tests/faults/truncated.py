#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""The image shrinks under the daemon: reads past the new end fail with an
error on a direct and on a cached export (a cache fill that comes back
short before the export's end is an error, never a page of zeroes), reads
before it still return the data, and the daemon serves on."""
import os
import shutil
import subprocess
import sys
import tempfile
import time

import nbd

URINGNBD = os.path.abspath(os.environ.get("URINGNBD", "build/uringnbd"))
BASE = os.environ.get("TEST_TMPDIR", "build/tmp")
os.makedirs(BASE, exist_ok=True)
T = tempfile.mkdtemp(prefix="truncated.", dir=BASE)
S = tempfile.mkdtemp(prefix="uringnbd-test.", dir="/tmp")
SOCK = os.path.join(S, "sock")
LOG = os.path.join(T, "daemon.log")
proc = None


def fail(msg):
    print(f"FAIL truncated.py: {msg}", file=sys.stderr)
    if proc and proc.poll() is None:
        proc.kill()
    print("---- daemon log ----\n" + open(LOG).read()[-3000:], file=sys.stderr)
    sys.exit(1)


img = os.path.join(T, "disk.img")
with open(img, "wb") as f:
    f.write(b"\x5a" * (8 << 20))
proc = subprocess.Popen([URINGNBD, "-U", SOCK, "-n", "direct", "-e", f"cached={img},cache=always",
                         img], stderr=open(LOG, "w"))
for _ in range(500):
    if os.path.exists(SOCK):
        break
    time.sleep(0.01)
handles = {}
for name in ("direct", "cached"):
    h = nbd.NBD()
    h.set_export_name(name)
    h.connect_unix(SOCK)
    handles[name] = h
os.truncate(img, 4 << 20)  # under the daemon: the exports still say 8 MiB
for name, h in handles.items():
    for off in (4 << 20, (6 << 20) + 512):
        try:
            data = h.pread(4096, off)
        except nbd.Error:
            continue
        fail(f"{name}: a read at {off}, past the new end, returned "
             f"{'zeroes' if data == bytes(4096) else 'data'} instead of an error")
    if h.pread(4096, (4 << 20) - 4096) != b"\x5a" * 4096:
        fail(f"{name}: the data before the new end changed")
if proc.poll() is not None:
    fail("the daemon died")
for h in handles.values():
    h.shutdown()
proc.terminate()
if proc.wait(10) != 0:
    fail("the daemon did not exit cleanly")
shutil.rmtree(S, ignore_errors=True)
print("reads past the new end fail on direct and cached exports; the rest is intact")
