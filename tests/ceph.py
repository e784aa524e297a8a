# SPDX-License-Identifier: BSD-3-Clause
"""A throw-away single-node Ceph cluster for the rbd: tests and benchmarks:
one mon and one OSD on 127.0.0.1, every path under one directory, no
authentication, a pool "rbd" of size 1. It starts in seconds from Debian's
packages (ceph-mon, ceph-osd, ceph-common) and is stopped by PID (SIGKILL:
a memstore OSD stopped with SIGTERM writes its whole store out first).

    from ceph import Cluster
    c = Cluster(dir)              # skips (exit 77) if Ceph is not installed
    c.rbd("create", "rbd/img", "--size", "64M")
    ... rbd:rbd/img with ceph-conf=c.conf ...
    c.stop()

Where Ceph is not installed the test skips (exit 77), saying so; with
CEPH_REQUIRED=1 (CI) it fails instead.

A client that dies (SIGKILL) holds its watches, and so an image's
exclusive lock, for the OSD's watch timeout: 5 s here, 30 s by default.

The OSD keeps its data in memory (memstore) unless store="bluestore" (a
sparse file in dir): tests that write a lot use bluestore. osd_stop(),
osd_cont(), osd_kill() and osd_start() are the faults; mon_restart() too.

As a command: python3 tests/ceph.py DIR [bluestore] starts one and prints
its conf path, then waits; SIGTERM or SIGINT stops it.
"""
import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

PACKAGES = ("ceph-mon", "ceph-osd", "rbd")


def missing():
    """What is not installed, or None."""
    for c in PACKAGES:
        if not shutil.which(c):
            return f"{c} is not installed (Debian: ceph-mon ceph-osd ceph-common)"
    return None


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Cluster:
    def __init__(self, dir, store="memstore", skip=None):
        why = missing()
        if why and os.environ.get("CEPH_REQUIRED") == "1":
            print(f"FAIL: {why}, and CEPH_REQUIRED=1 (CI installs Ceph)", file=sys.stderr)
            sys.exit(1)
        if why:
            if skip:
                skip(why)
            print(f"SKIP: {why}", file=sys.stderr)
            sys.exit(77)
        self.dir = os.path.abspath(dir)
        os.makedirs(self.dir, exist_ok=True)
        self.conf = os.path.join(self.dir, "ceph.conf")
        self.store = store
        self.mon = self.osd = None
        atexit.register(self.stop)
        self.env = dict(os.environ, MALLOC_ARENA_MAX="2", CEPH_CONF=self.conf)
        port = _free_port()
        fsid = str(uuid.uuid4())
        d = self.dir
        osd_store = ("osd objectstore = memstore\nmemstore page set = true\n"
                     "memstore page size = 4096\nmemstore device bytes = 2147483648\n"
                     if store == "memstore" else
                     "osd objectstore = bluestore\nbluestore block create = true\n"
                     "bluestore block size = 4294967296\nbluestore fsck on mount = false\n"
                     "bluestore cache size = 268435456\n")
        with open(self.conf, "w") as f:
            f.write(f"""[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{port}
public addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
run dir = {d}/run
pid file = {d}/run/$name.pid
keyring = {d}/keyring
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon allow pool delete = true
osd crush initial weight = 1
osd crush chooseleaf type = 0
paxos propose interval = 0.1
mon data avail warn = 2
mon data avail crit = 1
osd client watch timeout = 5
osd max object name len = 256
osd max object namespace len = 64
{osd_store}
[mon]
admin socket = {d}/run/$name.asok
log file = {d}/log/$name.log
[osd]
admin socket = {d}/run/$name.asok
log file = {d}/log/$name.log
[client]
admin socket =
log file =
[mon.a]
mon data = {d}/mon
[osd.0]
osd data = {d}/osd
""")
        for sub in ("run", "log", "mon", "osd"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        t0 = time.monotonic()
        self._run("ceph-authtool", "--create-keyring", f"{d}/keyring", "--gen-key", "-n",
                  "mon.", "--cap", "mon", "allow *")
        self._run("monmaptool", "--create", "--fsid", fsid, "--addv", "a",
                  f"[v2:127.0.0.1:{port}]", f"{d}/monmap")
        self._run("ceph-mon", "-c", self.conf, "--mkfs", "-i", "a", "--monmap", f"{d}/monmap")
        self._start_mon()
        self.ceph("osd", "create")
        self._run("ceph-osd", "-c", self.conf, "-i", "0", "--mkfs")
        self.osd_start()
        self.ceph("osd", "pool", "create", "rbd", "8")
        self.ceph("osd", "pool", "application", "enable", "rbd", "rbd")
        self.wait_healthy()
        self.started_s = time.monotonic() - t0

    def _run(self, *args, timeout=60):
        p = subprocess.run(args, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout)
        if p.returncode:
            raise RuntimeError(f"{' '.join(args)}: exit {p.returncode}: "
                               f"{p.stderr.decode(errors='replace')[-2000:]}{self._why()}")
        return p.stdout.decode(errors="replace")

    def _why(self):
        """What the daemons say, for an error: a mon that exited, and its log's end."""
        out = ""
        for name, p, log in (("ceph-mon", self.mon, "mon.a.log"), ("ceph-osd", self.osd,
                                                                   "osd.0.log")):
            if p is not None and p.poll() is not None:
                out += f"\n{name} exited ({p.returncode})"
                try:
                    tail = open(os.path.join(self.dir, "log", log), errors="replace").read()
                    out += ": ...\n" + "\n".join(tail.splitlines()[-5:])
                except OSError:
                    pass
        free = shutil.disk_usage(self.dir)
        if free.free < free.total * 0.02:
            out += (f"\nthe disk under {self.dir} has {free.free >> 20} MiB free of "
                    f"{free.total >> 30} GiB: ceph-mon stops below 'mon data avail crit' (1%)")
        return out

    def _start_mon(self):
        self.mon = subprocess.Popen(["ceph-mon", "-c", self.conf, "-i", "a", "-f"],
                                    env=self.env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)

    def ceph(self, *args, timeout=60):
        return self._run("ceph", "-c", self.conf, "--connect-timeout", "30", *args,
                         timeout=timeout)

    def rbd(self, *args, timeout=120):
        return self._run("rbd", "-c", self.conf, *args, timeout=timeout)

    def osd_start(self):
        self.osd = subprocess.Popen(["ceph-osd", "-c", self.conf, "-i", "0", "-f"],
                                    env=self.env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)

    def wait_healthy(self, timeout=60):
        """Until the OSD is up and in (there is no mgr: a client's first op waits for
        its placement group to be active, as it would after a restart)."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.ceph("osd", "stat")
            if "1 up" in out and "1 in" in out:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the OSD is not up after {timeout} s: {out.strip()}")
            time.sleep(0.1)

    def osd_stop(self):
        """The OSD freezes (SIGSTOP): its sockets stay open, nothing is answered."""
        os.kill(self.osd.pid, signal.SIGSTOP)

    def osd_cont(self):
        os.kill(self.osd.pid, signal.SIGCONT)

    def osd_kill(self):
        """SIGKILL; with memstore its data is gone, so faults that kill use bluestore."""
        self.osd.kill()
        self.osd.wait()

    def mon_restart(self):
        self.mon.kill()
        self.mon.wait()
        self._start_mon()

    def stop(self):
        for p in (self.osd, self.mon):
            if p and p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                p.kill()
                p.wait()
        self.osd = self.mon = None


if __name__ == "__main__":
    c = Cluster(sys.argv[1], store=sys.argv[2] if len(sys.argv) > 2 else "memstore")
    print(c.conf, flush=True)
    signal.signal(signal.SIGTERM, lambda *a: (c.stop(), sys.exit(0)))
    try:
        signal.pause()
    except KeyboardInterrupt:
        c.stop()
