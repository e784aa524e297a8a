#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""EIO from the disk on reads and writes (faultfs): each failing request
gets EIO, on direct and cached exports alike; the daemon serves on, a
client of another export is not disturbed, and once the fault is gone the
same requests succeed and the data written since reads back. No flush
fails here, so nothing becomes sticky."""
import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time

import nbd

URINGNBD = os.path.abspath(os.environ.get("URINGNBD", "build/uringnbd"))
FAULTFS = os.path.abspath(os.environ.get("FAULTFS", "build/tests/faults/faultfs"))
BASE = os.environ.get("TEST_TMPDIR", "build/tmp")
os.makedirs(BASE, exist_ok=True)
T = tempfile.mkdtemp(prefix="eio.", dir=BASE)
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
    print(f"FAIL eio.py: {msg}", file=sys.stderr)
    if os.path.exists(LOG):
        print("---- daemon log ----\n" + open(LOG).read()[-3000:], file=sys.stderr)
    cleanup()
    sys.exit(1)


def expect_eio(what, fn):
    try:
        fn()
    except nbd.Error as e:
        if e.errnum != 5:
            fail(f"{what}: {e} (expected EIO)")
        return
    fail(f"{what} succeeded during the fault")


def fault(what):
    if what:
        with open(TRIGGER, "w") as f:
            f.write(what)
    elif os.path.exists(TRIGGER):
        os.unlink(TRIGGER)


if not os.path.exists("/dev/fuse") or not os.path.exists(FAULTFS):
    print("SKIP eio.py: no /dev/fuse, or faultfs not built", file=sys.stderr)
    sys.exit(77)
os.makedirs(os.path.join(T, "back"))
os.makedirs(MNT)
if subprocess.run([FAULTFS, os.path.join(T, "back"), TRIGGER, MNT]).returncode != 0:
    fail("faultfs did not mount")
mounted = True
img = os.path.join(MNT, "disk.img")
with open(img, "wb") as f:
    f.write(b"\x11" * (4 << 20))
other = os.path.join(T, "other.img")
with open(other, "wb") as f:
    f.truncate(4 << 20)
proc = subprocess.Popen([URINGNBD, "-U", SOCK, "-n", "direct",
                         "-e", f"cached={img},cache=always", "-e", f"other={other}", img],
                        stderr=open(LOG, "w"))
for _ in range(500):
    if os.path.exists(SOCK):
        break
    if proc.poll() is not None:
        fail("the daemon did not start")
    time.sleep(0.01)
h = {}
for name in ("direct", "cached", "other"):
    h[name] = nbd.NBD()
    h[name].set_export_name(name)
    h[name].connect_unix(SOCK)

fault("r")
expect_eio("a direct read", lambda: h["direct"].pread(4096, 0))
expect_eio("a cached read of a cold page", lambda: h["cached"].pread(4096, 1 << 20))
expect_eio("an unaligned direct read", lambda: h["direct"].pread(100, 12345))
h["other"].pwrite(b"\x22" * 4096, 0)  # the other file does not notice
fault("w")
expect_eio("a direct write", lambda: h["direct"].pwrite(b"\x33" * 4096, 8192))
expect_eio("an unaligned write", lambda: h["direct"].pwrite(b"\x33" * 100, 8192 + 7))
expect_eio("WRITE_ZEROES with NO_HOLE",
           lambda: h["direct"].zero(4096, 16384, nbd.CMD_FLAG_NO_HOLE))
fault(None)
h["direct"].pwrite(b"\x44" * 4096, 8192)
h["direct"].flush()
if h["direct"].pread(4096, 8192) != b"\x44" * 4096:
    fail("a write after the fault did not read back")
if h["cached"].pread(4096, 1 << 20) != b"\x11" * 4096:
    fail("a cached read after the fault returned the wrong data")
if h["other"].pread(4096, 0) != b"\x22" * 4096:
    fail("the other export's data changed")
if "a flush failed" in open(LOG).read():
    fail("a read or write fault was taken for a failed flush")
for x in h.values():
    x.shutdown()
proc.terminate()
if proc.wait(15) != 0:
    fail("the daemon did not exit 0 (no flush failed)")
cleanup()
shutil.rmtree(S, ignore_errors=True)
print("EIO on reads and writes reaches the client; the daemon serves on and recovers")
