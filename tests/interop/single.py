#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""--single: one client on stdin/stdout, as inetd (a socket) and ssh or
socat (pipes) run it. libnbd's connect_command gives it a socket; socat's
EXEC with `pipes` gives it two pipes. Data written through one is read back
through the other, and the daemon exits 0 when its client goes."""
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
T = tempfile.mkdtemp(prefix="single.", dir=BASE)


def fail(msg):
    print(f"FAIL single.py: {msg}", file=sys.stderr)
    log = os.path.join(T, "daemon.log")
    if os.path.exists(log):
        print("---- daemon log ----\n" + open(log).read()[-3000:], file=sys.stderr)
    sys.exit(1)


if not shutil.which("socat"):
    print("SKIP single.py: socat is not installed", file=sys.stderr)
    sys.exit(77)
img = os.path.join(T, "disk.img")
with open(img, "wb") as f:
    f.truncate(16 << 20)
log = open(os.path.join(T, "daemon.log"), "w")

# A socket on stdin/stdout (libnbd makes a socketpair), as inetd would.
h = nbd.NBD()
h.connect_command(["sh", "-c", f'exec "$0" -s "$1" 2>>"$2"', URINGNBD, img,
                   os.path.join(T, "daemon.log")])
if h.get_size() != 16 << 20:
    fail(f"size {h.get_size()}")
pattern = bytes(range(256)) * 16 * 64  # 256 KiB
h.pwrite(pattern, 1 << 20, nbd.CMD_FLAG_FUA)
if h.pread(len(pattern), 1 << 20) != pattern:
    fail("read back through the socket differs")
h.shutdown()
del h

# Pipes, as ssh or socat give it: read back what the first one wrote.
sock = os.path.join(tempfile.mkdtemp(prefix="uringnbd-test.", dir="/tmp"), "s")
relay = subprocess.Popen(["socat", f"UNIX-LISTEN:{sock}",
                          f"EXEC:{URINGNBD} -s {img},pipes"], stderr=log)
for _ in range(500):
    if os.path.exists(sock):
        break
    time.sleep(0.01)
h = nbd.NBD()
h.connect_unix(sock)
if h.pread(len(pattern), 1 << 20) != pattern:
    fail("read back through pipes differs")
h.pwrite(b"\xa5" * 4096, 0)
h.flush()
h.shutdown()
del h
try:
    rc = relay.wait(10)
except subprocess.TimeoutExpired:
    fail("the daemon did not exit when its client went")
if rc != 0:
    fail(f"socat (and the daemon) exited with {rc}")
with open(img, "rb") as f:
    if f.read(4096) != b"\xa5" * 4096:
        fail("the write through pipes is not in the image")
text = open(os.path.join(T, "daemon.log")).read()
if text.count("the client on stdin/stdout is gone: exiting") < 1:
    fail("no log line about exiting")
print("socket and pipes: 256 KiB round trip, the daemon exits with its client")
