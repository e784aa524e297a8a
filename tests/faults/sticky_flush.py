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
import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import nbd

URINGNBD = os.path.abspath(os.environ.get("URINGNBD", "build/uringnbd"))
FAULTFS = os.path.abspath(os.environ.get("FAULTFS", "build/tests/faults/faultfs"))
BASE = os.environ.get("TEST_TMPDIR", "build/tmp")
os.makedirs(BASE, exist_ok=True)
T = tempfile.mkdtemp(prefix="sticky_flush.", dir=BASE)
S = tempfile.mkdtemp(prefix="uringnbd-test.", dir="/tmp")
SOCK = os.path.join(S, "sock")
LOG = os.path.join(T, "daemon.log")
MNT = os.path.join(T, "mnt")
TRIGGER = os.path.join(T, "trigger")
proc = None
mounted = False


def cleanup():
    if proc and proc.poll() is None:
        proc.kill()
        proc.wait()
    if mounted:
        subprocess.run(["fusermount3", "-u", MNT], stderr=subprocess.DEVNULL)


atexit.register(cleanup)


def fail(msg):
    print(f"FAIL sticky_flush.py: {msg}", file=sys.stderr)
    if os.path.exists(LOG):
        print("---- daemon log ----\n" + open(LOG).read()[-3000:], file=sys.stderr)
    cleanup()
    sys.exit(1)


def expect_eio(what, fn):
    try:
        fn()
    except nbd.Error as e:
        if e.errnum != 5:  # EIO
            fail(f"{what}: {e} (expected EIO)")
        return
    fail(f"{what} succeeded")


if not os.path.exists("/dev/fuse") or not shutil.which("fusermount3"):
    print("SKIP sticky_flush.py: no /dev/fuse or fusermount3", file=sys.stderr)
    sys.exit(77)
if not os.path.exists(FAULTFS):
    print(f"SKIP sticky_flush.py: {FAULTFS} not built", file=sys.stderr)
    sys.exit(77)
os.makedirs(os.path.join(T, "back"))
os.makedirs(MNT)
if subprocess.run([FAULTFS, os.path.join(T, "back"), TRIGGER, MNT]).returncode != 0:
    fail("faultfs did not mount")
mounted = True
img = os.path.join(MNT, "disk.img")
with open(img, "wb") as f:
    f.truncate(16 << 20)
proc = subprocess.Popen([URINGNBD, "-U", SOCK, img], stderr=open(LOG, "w"))
for _ in range(500):
    if os.path.exists(SOCK):
        break
    if proc.poll() is not None:
        fail("the daemon did not start on the faultfs image")
    time.sleep(0.01)
uri = f"nbd+unix:///?socket={SOCK}"

h = nbd.NBD()
h.connect_uri(uri)
h.pwrite(b"\x11" * 4096, 0)
h.flush()  # no fault yet

open(TRIGGER, "w").close()
h.pwrite(b"\x22" * 4096, 4096)
expect_eio("FLUSH while the disk's flush fails", h.flush)
os.unlink(TRIGGER)
expect_eio("FLUSH after the fault went", h.flush)

h2 = nbd.NBD()
h2.connect_uri(uri)
expect_eio("FLUSH on a new connection", h2.flush)
expect_eio("a FUA write", lambda: h2.pwrite(b"\x33" * 4096, 8192, nbd.CMD_FLAG_FUA))
h2.pwrite(b"\x44" * 4096, 12288)  # plain writes go on
if h2.pread(4096, 12288) != b"\x44" * 4096:
    fail("a plain write after the fault did not read back")
h.shutdown()
h2.shutdown()

text = open(LOG).read()
if text.count("a flush failed") != 1 or img not in text:
    fail("the failed flush was not logged exactly once with the path")
proc.send_signal(signal.SIGTERM)
try:
    rc = proc.wait(15)
except subprocess.TimeoutExpired:
    fail("the daemon did not exit after SIGTERM")
if rc != 1:
    fail(f"exit status {rc} after a lost flush, expected 1")
if "exiting with writes that may have been lost" not in open(LOG).read():
    fail("no log line at exit about the lost flush")
cleanup()
shutil.rmtree(S, ignore_errors=True)
print("a failed flush stays failed: FLUSH and FUA fail with EIO on every connection; exit 1")
