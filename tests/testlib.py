# SPDX-License-Identifier: BSD-3-Clause
"""What the Python tests share: where the binaries are, a private directory
per test (under TEST_TMPDIR, and one under /tmp for short socket paths),
fail/check/skip that say why (exit 1, 77), and a daemon per test that is
killed on any exit.

    from testlib import T, S, check, fail, Daemon
    d = Daemon(["--control", S + "/ctl"], image)   # returns once listening
    d.stop()                                       # SIGTERM, must exit 0
"""
import atexit
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

NAME = os.path.basename(sys.argv[0])
URINGNBD = os.path.abspath(os.environ.get("URINGNBD", "build/uringnbd"))
URINGNBDCTL = os.path.abspath(os.environ.get(
    "URINGNBDCTL", os.path.join(os.path.dirname(URINGNBD), "uringnbdctl")))
BASE = os.environ.get("TEST_TMPDIR", "build/tmp")
os.makedirs(BASE, exist_ok=True)
T = tempfile.mkdtemp(prefix=NAME + ".", dir=BASE)
S = tempfile.mkdtemp(prefix="uringnbd-test.", dir="/tmp")
_procs = []


def _cleanup():
    for p in _procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    shutil.rmtree(S, ignore_errors=True)


atexit.register(_cleanup)


def _log_tail():
    for p in _procs:
        log = getattr(p, "log_path", None)
        if log and os.path.exists(log):
            print(f"---- {os.path.basename(log)} ----\n" + open(log).read()[-4000:],
                  file=sys.stderr)


def fail(msg):
    print(f"FAIL {NAME}: {msg}", file=sys.stderr)
    _log_tail()
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def skip(msg):
    print(f"SKIP {NAME}: {msg}", file=sys.stderr)
    sys.exit(77)


def need(*cmds):
    for c in cmds:
        if not shutil.which(c):
            skip(f"{c} is not installed")


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def recvn(s, n):
    """Exactly n bytes from socket s; EOFError if it closes first."""
    b = b""
    while len(b) < n:
        got = s.recv(n - len(b))
        if not got:
            raise EOFError(f"closed after {len(b)} of {n} bytes")
        b += got
    return b


def raw_export_name(s, name=""):
    """A raw client's whole negotiation on s: fixed newstyle, NO_ZEROES, then
    NBD_OPT_EXPORT_NAME; returns the export's size (transmission follows)."""
    greeting = recvn(s, 18)
    check(greeting[:16] == b"NBDMAGICIHAVEOPT", f"greeting {greeting!r}")
    s.sendall(struct.pack(">I", 3) + b"IHAVEOPT" + struct.pack(">II", 1, len(name))
              + name.encode())
    return struct.unpack(">QH", recvn(s, 10))[0]


def image(name, size=64 << 20, data=None):
    """A sparse file of size bytes in T (data written at its start)."""
    p = os.path.join(T, name)
    with open(p, "wb") as f:
        f.truncate(size)
        if data:
            f.write(data)
    return p


def track(p):
    """p (a Popen) is killed if the test ends before it."""
    _procs.append(p)
    return p


class Daemon:
    """uringnbd on a unix socket in S, serving args (files or options)."""

    def __init__(self, args, sock=None, log="daemon.log"):
        self.sock = sock or os.path.join(S, "nbd.sock")
        self.pid_file = os.path.join(S, "pid")
        self.log_path = os.path.join(T, log)
        if os.path.exists(self.pid_file):
            os.unlink(self.pid_file)
        self.proc = track(subprocess.Popen(
            [URINGNBD, "-U", self.sock, "--pid-file", self.pid_file] + list(args),
            stderr=open(self.log_path, "a")))
        self.proc.log_path = self.log_path
        deadline = time.time() + 10
        while not os.path.exists(self.pid_file):
            if self.proc.poll() is not None:
                fail(f"daemon exited during start-up ({self.proc.returncode})")
            if time.time() > deadline:
                fail("daemon did not start within 10 s")
            time.sleep(0.01)

    def uri(self, name=""):
        return f"nbd+unix:///{name}?socket={self.sock}"

    def log(self):
        return open(self.log_path).read()

    def wait_memory(self):
        """Until the daemon has faulted in its buffer pools and cache (a thread
        of its own does it after start-up): a test that measures the daemon's
        memory starts from there."""
        deadline = time.time() + 30
        while "buffer pools and cache fault" not in self.log():
            check(time.time() < deadline, "the daemon did not fault in its buffers within 30 s")
            time.sleep(0.05)

    def stop(self, expect=0):
        self.proc.terminate()
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            fail("daemon did not exit within 10 s of SIGTERM")
        check(rc == expect, f"daemon exited with {rc}, expected {expect}")
