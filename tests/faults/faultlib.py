# SPDX-License-Identifier: BSD-3-Clause
"""Shared by the fault tests: a scratch directory, loop-mounted filesystems
made with real mkfs, a daemon on a private unix socket, and cleanup of all
of it on any exit. Exit 0 pass, 1 fail, 77 skip."""
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

URINGNBD = os.path.abspath(os.environ.get("URINGNBD", "build/uringnbd"))
FAULTFS = os.path.abspath(os.environ.get("FAULTFS", "build/tests/faults/faultfs"))
URINGNBDCTL = os.path.abspath(os.environ.get(
    "URINGNBDCTL", os.path.join(os.path.dirname(URINGNBD), "uringnbdctl")))
BASE = os.environ.get("TEST_TMPDIR", "build/tmp")


class Fault:
    def __init__(self, name):
        self.name = name
        os.makedirs(BASE, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix=name + ".", dir=BASE)
        self.sockdir = tempfile.mkdtemp(prefix="uringnbd-test.", dir="/tmp")
        self.sock = os.path.join(self.sockdir, "sock")
        self.ctl_sock = os.path.join(self.sockdir, "ctl")
        self.log = os.path.join(self.dir, "daemon.log")
        self.proc = None
        self.mounts = []
        self.loops = []
        atexit.register(self.cleanup)

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for m in reversed(self.mounts):
            subprocess.run(["umount", m], stderr=subprocess.DEVNULL)
        for dev in self.loops:
            subprocess.run(["losetup", "-d", dev], stderr=subprocess.DEVNULL)
        self.mounts, self.loops = [], []
        shutil.rmtree(self.sockdir, ignore_errors=True)

    def fail(self, msg):
        print(f"FAIL {self.name}: {msg}", file=sys.stderr)
        if os.path.exists(self.log):
            print("---- daemon log ----\n" + open(self.log).read()[-3000:], file=sys.stderr)
        sys.exit(1)

    def skip(self, msg):
        print(f"SKIP {self.name}: {msg}", file=sys.stderr)
        sys.exit(77)

    def need_root(self, *tools):
        if os.getuid() != 0:
            self.skip("needs root (loop devices and mounts)")
        for t in tools:
            if not shutil.which(t):
                self.skip(f"{t} is not installed")

    def mount_fs(self, fstype, size_bytes, *mkfs_args):
        """A fresh filesystem on a loop device; returns (device, mountpoint)."""
        img = os.path.join(self.dir, f"{fstype}.fs")
        with open(img, "wb") as f:
            f.truncate(size_bytes)
        dev = subprocess.run(["losetup", "--find", "--show", img], capture_output=True,
                             text=True).stdout.strip()
        if not dev:
            self.skip("no loop device")
        self.loops.append(dev)
        r = subprocess.run([f"mkfs.{fstype}", *mkfs_args, dev], capture_output=True, text=True)
        if r.returncode != 0:
            self.fail(f"mkfs.{fstype}: {r.stderr.strip()[-300:]}")
        mnt = os.path.join(self.dir, f"{fstype}.mnt")
        os.makedirs(mnt)
        if subprocess.run(["mount", dev, mnt]).returncode != 0:
            self.fail(f"mount {fstype}")
        self.mounts.append(mnt)
        return dev, mnt

    def mount_faultfs(self):
        """faultfs over a fresh directory; returns the mountpoint. fault() drives it."""
        if not os.path.exists("/dev/fuse") or not os.path.exists(FAULTFS):
            self.skip("no /dev/fuse, or faultfs not built")
        mnt = os.path.join(self.dir, "mnt")
        self.trigger = os.path.join(self.dir, "trigger")
        os.makedirs(os.path.join(self.dir, "back"))
        os.makedirs(mnt)
        if subprocess.run([FAULTFS, os.path.join(self.dir, "back"), self.trigger,
                           mnt]).returncode != 0:
            self.fail("faultfs did not mount")
        self.mounts.append(mnt)
        return mnt

    def fault(self, what):
        """faultfs fails as what says ('r', 'w', 'f', 'd', or '' for flushes); None: no fault."""
        if what is None:
            if os.path.exists(self.trigger):
                os.unlink(self.trigger)
            return
        with open(self.trigger, "w") as f:
            f.write(what)

    def expect_errno(self, what, errnum, fn):
        """fn() must fail with NBD error errnum (an nbd.Error)."""
        try:
            fn()
        except Exception as e:  # nbd.Error; faultlib does not import nbd
            if getattr(e, "errnum", None) != errnum:
                self.fail(f"{what}: {e} (expected errno {errnum})")
            return
        self.fail(f"{what} succeeded")

    def umount(self, mnt):
        if subprocess.run(["umount", mnt]).returncode != 0:
            self.fail(f"umount {mnt}")
        self.mounts.remove(mnt)

    def start(self, *args, binary=None, env=None):
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        self.proc = subprocess.Popen([binary or URINGNBD, "-U", self.sock, *args],
                                     stderr=open(self.log, "a"), env=env)
        want = [self.sock] + ([args[args.index("--control") + 1]] if "--control" in args else [])
        for p in want[1:]:
            if os.path.exists(p):
                os.unlink(p)  # a killed daemon's: wait for the new one's
        for _ in range(1000):
            if all(os.path.exists(p) for p in want):
                return
            if self.proc.poll() is not None:
                self.fail(f"the daemon exited at start ({self.proc.returncode})")
            time.sleep(0.01)
        self.fail("the daemon did not start")

    def stop(self, status=0):
        self.proc.terminate()
        try:
            rc = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.fail("the daemon did not exit after SIGTERM")
        if rc != status:
            self.fail(f"the daemon exited with {rc}, expected {status}")

    def uri(self, export=""):
        return f"nbd+unix:///{export}?socket={self.sock}"

    def ctl(self, *args, ok=True):
        """uringnbdctl --json on --control ctl_sock: the reply (ok), or (status, stdout+stderr)."""
        r = subprocess.run([URINGNBDCTL, "-c", self.ctl_sock, "--json", *args],
                           capture_output=True, text=True)
        if not ok:
            return r.returncode, r.stdout + r.stderr
        if r.returncode != 0:
            self.fail(f"uringnbdctl {' '.join(args)}: {r.stdout}{r.stderr}")
        return json.loads(r.stdout) if r.stdout.strip() else None


def dirty_ranges(uri, bitmap, size):
    """The [start, end) ranges qemu:dirty-bitmap:BITMAP of the export at uri marks dirty."""
    import nbd
    ctx = "qemu:dirty-bitmap:" + bitmap
    h = nbd.NBD()
    h.add_meta_context(ctx)
    h.connect_uri(uri)
    if not h.can_meta_context(ctx):
        raise RuntimeError(f"{uri}: no {ctx}")
    out, pos = [], 0
    while pos < size:
        got = []

        def cb(metacontext, offset, entries, err):
            if metacontext == ctx:
                got.extend(entries)
            return 0
        h.block_status(min(size - pos, 1 << 30), pos, cb)
        if not got:
            raise RuntimeError("BLOCK_STATUS answered no extent")
        for i in range(0, len(got), 2):
            n, flags = got[i], got[i + 1]
            if flags & 1:
                if out and out[-1][1] == pos:
                    out[-1][1] = pos + n
                else:
                    out.append([pos, pos + n])
            pos += n
    h.shutdown()
    return out


def granules_of(ranges, gran):
    """The set of granule numbers the [start, end) ranges cover."""
    s = set()
    for a, b in ranges:
        s.update(range(a // gran, (b - 1) // gran + 1))
    return s


def differing_granules(path_a, path_b, gran):
    """Granules whose bytes differ between two files of the same size."""
    out = set()
    with open(path_a, "rb") as a, open(path_b, "rb") as b:
        g = 0
        while True:
            x, y = a.read(gran), b.read(gran)
            if not x and not y:
                return out
            if x != y:
                out.add(g)
            g += 1
