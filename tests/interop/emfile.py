#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Out of descriptors: uringnbd under `prlimit --nofile=64:64` with 80
clients connecting at once. It must not spin (CPU time over 5 s stays
small) nor flood its log (accept warnings are rate-limited), and once the
clients go it serves a new one. Fails on a daemon that retries accept on
EMFILE at once (100% of a CPU, millions of identical lines)."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

URINGNBD = os.path.abspath(os.environ.get("URINGNBD", "build/uringnbd"))
BASE = os.environ.get("TEST_TMPDIR", "build/tmp")
os.makedirs(BASE, exist_ok=True)
T = tempfile.mkdtemp(prefix="emfile.", dir=BASE)
S = tempfile.mkdtemp(prefix="uringnbd-test.", dir="/tmp")
SOCK = os.path.join(S, "sock")
LOG = os.path.join(T, "daemon.log")
proc = None


def fail(msg):
    print(f"FAIL emfile.py: {msg}", file=sys.stderr)
    if proc and proc.poll() is None:
        proc.kill()
    if os.path.exists(LOG):
        print("---- daemon log ----\n" + open(LOG).read()[-3000:], file=sys.stderr)
    sys.exit(1)


def cpu_seconds(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


if not shutil.which("prlimit") or not shutil.which("nbdinfo"):
    print("SKIP emfile.py: prlimit and nbdinfo are needed", file=sys.stderr)
    sys.exit(77)
img = os.path.join(T, "disk.img")
with open(img, "wb") as f:
    f.truncate(1 << 20)
proc = subprocess.Popen(["prlimit", "--nofile=64:64", URINGNBD, "-t", "1", "-U", SOCK,
                         "--handshake-timeout", "0", img], stderr=open(LOG, "w"))
for _ in range(1000):
    if os.path.exists(SOCK):
        break
    time.sleep(0.01)
else:
    fail("daemon did not start")
time.sleep(0.2)

clients = []
for i in range(80):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(SOCK)
    clients.append(s)
time.sleep(0.5)  # it accepts what it can, then runs out
c0, t0 = cpu_seconds(proc.pid), time.monotonic()
time.sleep(5)
c1, t1 = cpu_seconds(proc.pid), time.monotonic()
lines = open(LOG).read().splitlines()
accept_lines = [ln for ln in lines if "accept on" in ln]
print(f"5 s out of descriptors: {c1 - c0:.2f} s of CPU, {len(accept_lines)} accept warnings, "
      f"{len(lines)} log lines in all")
if proc.poll() is not None:
    fail(f"daemon exited with {proc.returncode}")
if c1 - c0 > 0.5:
    fail(f"the daemon used {c1 - c0:.2f} s of CPU in {t1 - t0:.1f} s out of descriptors")
if len(accept_lines) > 5 or not any("Too many open files" in ln for ln in accept_lines):
    fail(f"{len(accept_lines)} accept warnings (expected one line per 5 s, naming EMFILE)")

for s in clients:
    s.close()
# Served again once descriptors are free (after at most one backoff).
ok = False
end = time.monotonic() + 10
while time.monotonic() < end and not ok:
    r = subprocess.run(["nbdinfo", "--size", f"nbd+unix:///?socket={SOCK}"],
                       capture_output=True, text=True, timeout=10)
    ok = r.returncode == 0 and r.stdout.strip() == str(1 << 20)
    if not ok:
        time.sleep(0.2)
if not ok:
    fail("no client was served after the others went")
proc.terminate()
try:
    rc = proc.wait(10)
except subprocess.TimeoutExpired:
    fail("daemon did not exit after SIGTERM")
if rc != 0:
    fail(f"daemon exited with {rc}")
shutil.rmtree(S, ignore_errors=True)
print("PASS")
