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
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
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


def block_data(b, gen):
    """Block b's bytes at generation gen (a loaded client's writes)."""
    return struct.pack("<QQ", b, gen) * (Loaded.BLOCK // 16)


class Loaded:
    """A libnbd client on its own thread keeping depth requests in flight on
    uri: writes of a block's next generation and reads checked against what
    the last completed write put there, until stop() (then a FLUSH). errors
    lists what went wrong; model, counts and lat (each request's seconds)
    are what it saw."""
    BLOCK = 4096

    def __init__(self, uri, nblocks, depth=64, seed=7):
        import nbd
        self.nbd = nbd
        self.uri, self.nblocks, self.depth, self.seed = uri, nblocks, depth, seed
        self.model = [0] * nblocks       # the generation last written (0: zeroes)
        self.errors, self.lat = [], []
        self.counts = {"writes": 0, "reads": 0}
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def want(self, b):
        return block_data(b, self.model[b]) if self.model[b] else bytes(self.BLOCK)

    @staticmethod
    def _errval(err):
        """The errno a completion callback got (a ctypes int, or a list, by libnbd version)."""
        return err.value if hasattr(err, "value") else err[0]

    def _run(self):
        nbd, model, errors, lat, counts = self.nbd, self.model, self.errors, self.lat, self.counts
        h = nbd.NBD()
        h.connect_uri(self.uri)
        rng = random.Random(self.seed)
        busy = set()

        def submit():
            b = rng.randrange(self.nblocks)
            while b in busy:
                b = rng.randrange(self.nblocks)
            busy.add(b)
            t0 = time.monotonic()
            if rng.random() < 0.5:
                gen = model[b] + 1
                buf = nbd.Buffer.from_bytearray(bytearray(block_data(b, gen)))

                def wdone(err, b=b, gen=gen, t0=t0, buf=buf):
                    try:
                        lat.append(time.monotonic() - t0)
                        busy.discard(b)
                        if self._errval(err):
                            errors.append(f"write of block {b}: errno {self._errval(err)}")
                        else:
                            model[b] = gen
                            counts["writes"] += 1
                    except Exception as e:  # an exception here would be swallowed by libnbd
                        errors.append(f"write callback: {e!r}")
                    return 1
                h.aio_pwrite(buf, b * self.BLOCK, completion=wdone)
            else:
                buf = nbd.Buffer(self.BLOCK)

                def rdone(err, b=b, t0=t0, buf=buf):
                    try:
                        lat.append(time.monotonic() - t0)
                        busy.discard(b)
                        if self._errval(err):
                            errors.append(f"read of block {b}: errno {self._errval(err)}")
                        elif buf.to_bytearray() != self.want(b):
                            errors.append(f"read of block {b}: not generation {model[b]}")
                        counts["reads"] += 1
                    except Exception as e:
                        errors.append(f"read callback: {e!r}")
                    return 1
                h.aio_pread(buf, b * self.BLOCK, completion=rdone)

        try:
            while not self._stop.is_set() and not errors:
                while h.aio_in_flight() < self.depth:
                    submit()
                h.poll(1000)
            while h.aio_in_flight():
                h.poll(1000)
            h.flush()
            h.shutdown()
        except nbd.Error as e:
            errors.append(f"the loaded client: {e}")

    def stop(self, timeout=60):
        """Ends it; whether its thread finished."""
        self._stop.set()
        self.thread.join(timeout)
        return not self.thread.is_alive()
