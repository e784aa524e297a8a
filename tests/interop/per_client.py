#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""--max-connections-per-client: on a unix socket clients are told apart by
uid (another user is run with setpriv), on TCP by address (127.0.0.1 and
127.0.0.2, both loopback). A client at its limit is refused at once and
the refusal logged with who it was (at most a line every 5 s); other clients are served meanwhile;
a refused client is served again once one of its connections ends."""
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

URINGNBD = os.path.abspath(os.environ.get("URINGNBD", "build/uringnbd"))
BASE = os.environ.get("TEST_TMPDIR", "build/tmp")
os.makedirs(BASE, exist_ok=True)
T = tempfile.mkdtemp(prefix="per_client.", dir=BASE)
S = tempfile.mkdtemp(prefix="uringnbd-test.", dir="/tmp")
SOCK = os.path.join(S, "sock")
LOG = os.path.join(T, "daemon.log")
proc = None


def fail(msg):
    print(f"FAIL per_client.py: {msg}", file=sys.stderr)
    if proc and proc.poll() is None:
        proc.kill()
    if os.path.exists(LOG):
        print("---- daemon log ----\n" + open(LOG).read()[-3000:], file=sys.stderr)
    sys.exit(1)


def handshake(s):
    """Fixed newstyle, EXPORT_NAME of the default export; True if served."""
    s.settimeout(5)
    try:
        g = b""
        while len(g) < 18:
            c = s.recv(18 - len(g))
            if not c:
                return False
            g += c
        s.sendall(struct.pack(">I", 3) + struct.pack(">QII", 0x49484156454F5054, 1, 0))
        r = b""
        while len(r) < 10:
            c = s.recv(10 - len(r))
            if not c:
                return False
            r += c
        return struct.unpack(">Q", r[:8])[0] == 1 << 20
    except OSError:
        return False


def unix_client():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(SOCK)
    return s, handshake(s)


def tcp_client(port, src):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s, handshake(s)


if os.getuid() != 0 or not shutil.which("setpriv") or not shutil.which("nbdinfo"):
    print("SKIP per_client.py: needs root, setpriv and nbdinfo", file=sys.stderr)
    sys.exit(77)
img = os.path.join(T, "disk.img")
with open(img, "wb") as f:
    f.truncate(1 << 20)
os.chmod(T, 0o755)
os.chmod(img, 0o644)
os.chmod(S, 0o755)
probe = socket.socket()
probe.bind(("127.0.0.1", 0))
port = probe.getsockname()[1]
probe.close()
proc = subprocess.Popen([URINGNBD, "-U", SOCK, "-b", "127.0.0.1", "-p", str(port),
                         "--max-connections-per-client", "2", img], stderr=open(LOG, "w"))
for _ in range(500):
    if os.path.exists(SOCK):
        break
    time.sleep(0.01)
os.chmod(SOCK, 0o777)

# Unix socket, by uid: root gets two, the third is refused; nobody is served.
a, ok_a = unix_client()
b, ok_b = unix_client()
if not (ok_a and ok_b):
    fail("the first two connections of one user were not served")
c, ok_c = unix_client()
if ok_c:
    fail("a third connection of the same user was served over a limit of 2")
c.close()
r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                    "nbdinfo", "--size", f"nbd+unix:///?socket={SOCK}"],
                   capture_output=True, text=True, timeout=20)
if r.returncode != 0 or r.stdout.strip() != str(1 << 20):
    fail(f"another user was not served beside them: {r.stderr.strip()}")
a.close()
time.sleep(0.3)
d, ok_d = unix_client()
if not ok_d:
    fail("not served again after one of its connections ended")

# TCP, by address.
t1, ok1 = tcp_client(port, "127.0.0.1")
t2, ok2 = tcp_client(port, "127.0.0.1")
t3, ok3 = tcp_client(port, "127.0.0.1")
t4, ok4 = tcp_client(port, "127.0.0.2")
if not (ok1 and ok2) or ok3:
    fail(f"127.0.0.1 over a limit of 2: served {ok1}, {ok2}, {ok3}")
if not ok4:
    fail("127.0.0.2 was refused for 127.0.0.1's connections")
text = open(LOG).read()
if "uid 0 has 2 connections, the per-client limit: refused it" not in text:
    fail("no log line naming the refused uid")
# (The TCP refusal falls within the same 5 s: rate-limited, counted in the next line.)
for s in (b, d, t1, t2, t3, t4):
    s.close()
proc.terminate()
if proc.wait(10) != 0:
    fail("daemon did not exit cleanly")
shutil.rmtree(S, ignore_errors=True)
print("per-client limit: by uid on a unix socket and by address on TCP")
