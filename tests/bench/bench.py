#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Side-by-side benchmark: uringnbd against nbd-server, nbdkit (file plugin)
and qemu-nbd (--cache=none --aio=io_uring) on the same image, each on its own
unix socket, and fio on the raw file as the ceiling. fio's nbd engine drives
the servers. Several short rounds with the targets interleaved; medians are
reported. Not a test: nothing here asserts a number.

Environment: BENCH_ROUNDS (5), BENCH_RUNTIME seconds per run (4),
BENCH_SIZE image size (1G), BENCH_ONLY comma-separated target names,
BENCH_WORKLOADS comma-separated workload names, URINGNBD (build/uringnbd),
BENCH_DIR (build/bench); URINGNBD_BASE names
another uringnbd binary, run in the same rounds as "uringnbd-base" (a
before/after pair for a change).
"""
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
RUNTIME = int(os.environ.get("BENCH_RUNTIME", "4"))
SIZE = os.environ.get("BENCH_SIZE", "1G")
URINGNBD = os.environ.get("URINGNBD", "build/uringnbd")
URINGNBD_BASE = os.environ.get("URINGNBD_BASE")
DIR = os.path.abspath(os.environ.get("BENCH_DIR", "build/bench"))
SOCKDIR = "/tmp/uringnbd-bench"

# name, rw, bs, iodepth, numjobs (connections), flush at the end
WORKLOADS = [
    ("4k randread QD32", "randread", "4k", 32, 1, False),
    ("4k randwrite QD32", "randwrite", "4k", 32, 1, False),
    ("1M seqread QD8", "read", "1M", 8, 1, False),
    ("1M seqwrite QD8", "write", "1M", 8, 1, False),
    ("4k randread QD1", "randread", "4k", 1, 1, False),
    ("4k randread 4x QD16", "randread", "4k", 16, 4, False),
    # The same writes counted until a final FLUSH has made them durable:
    # a server that acknowledges from the page cache pays for it here.
    ("4k randwrite QD32 +flush", "randwrite", "4k", 32, 1, True),
    ("1M seqwrite QD8 +flush", "write", "1M", 8, 1, True),
]


def sh(*args, **kw):
    return subprocess.run(args, check=True, **kw)


def wait_socket(path, proc=None, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if os.path.exists(path):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.args}")
        time.sleep(0.02)
    raise RuntimeError(f"no socket {path}")


class Server:
    """One NBD server process on its own unix socket."""

    def __init__(self, name, img):
        self.name, self.img = name, img
        self.sock = f"{SOCKDIR}/{name}.sock"
        self.proc = None
        self.pid = None

    def uri(self):
        return f"nbd+unix:///{self.export}?socket={self.sock}"

    def start(self):
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        self.export = ""
        log = open(f"{DIR}/{self.name}.log", "a")
        if self.name in ("uringnbd", "uringnbd-base"):
            binary = URINGNBD if self.name == "uringnbd" else URINGNBD_BASE
            self.proc = subprocess.Popen([binary, "-U", self.sock, self.img], stderr=log)
        elif self.name == "nbdkit":
            self.proc = subprocess.Popen(["nbdkit", "-f", "-U", self.sock, "file",
                                          f"file={self.img}", "cache=none"], stderr=log)
        elif self.name == "qemu-nbd":
            self.proc = subprocess.Popen(["qemu-nbd", "-k", self.sock, "-f", "raw", "-t",
                                          "-e", "8", "--cache=none", "--aio=io_uring",
                                          self.img], stderr=log)
        elif self.name == "nbd-server":
            self.export = "export"
            conf = f"{DIR}/nbd-server.conf"
            with open(conf, "w") as f:
                f.write(f"[generic]\nunixsock = {self.sock}\n"
                        f"[export]\nexportname = {self.img}\nflush = true\nfua = true\n")
            pidfile = f"{DIR}/nbd-server.pid"
            if os.path.exists(pidfile):
                os.unlink(pidfile)
            sh("nbd-server", "-C", conf, "-p", pidfile, stderr=log)
            wait_socket(pidfile)
            time.sleep(0.1)
            self.pid = int(open(pidfile).read().split()[0])
        if self.proc is not None:
            self.pid = self.proc.pid
        wait_socket(self.sock, self.proc)

    def stop(self):
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        else:
            for _ in range(200):
                if not os.path.exists(f"/proc/{self.pid}"):
                    break
                time.sleep(0.05)
        # Whatever children a forking server left behind.
        subprocess.run(["pkill", "-9", "-P", str(self.pid)], stderr=subprocess.DEVNULL)
        self.proc = self.pid = None

    def cpu_seconds(self):
        """CPU of the server and its children (live and reaped)."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in [self.pid] + children(self.pid):
            try:
                f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
        return total / tick


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def fio(target, wl, img):
    name, rw, bs, qd, jobs, flush = wl
    args = ["fio", "--name=bench", f"--rw={rw}", f"--bs={bs}", f"--iodepth={qd}",
            f"--numjobs={jobs}", "--group_reporting", f"--runtime={RUNTIME}", "--time_based",
            f"--size={SIZE}", "--output-format=json", "--randrepeat=0",
            f"--end_fsync={int(flush)}"]
    if target is None:
        args += ["--ioengine=io_uring", "--direct=1", f"--filename={img}"]
    else:
        args += ["--ioengine=nbd", f"--uri={target.uri()}"]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    job = json.loads(out[out.index("{"):])["jobs"][0]
    side = job["read"] if "read" in rw else job["write"]
    return side["iops"], side["bw_bytes"], side["io_bytes"]


def fincore_bytes(img):
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", img],
                         capture_output=True, text=True).stdout.strip()
    return int(out or 0)


def drop_cache(img):
    subprocess.run(["dd", f"if={img}", "iflag=nocache", "count=0", "status=none"])


def main():
    os.makedirs(DIR, exist_ok=True)
    os.makedirs(SOCKDIR, exist_ok=True)
    img = f"{DIR}/bench.img"
    want = {"1G": 1 << 30}.get(SIZE) or int(SIZE)
    if not os.path.exists(img) or os.path.getsize(img) != want:
        print(f"writing a {SIZE} image of random data...", flush=True)
        sh("fio", "--name=fill", "--rw=write", "--bs=1M", f"--size={SIZE}", f"--filename={img}",
           "--ioengine=io_uring", "--direct=1", "--refill_buffers", "--output=/dev/null")
    names = ["uringnbd", "nbd-server", "nbdkit", "qemu-nbd", "raw file"]
    if URINGNBD_BASE:
        names.insert(1, "uringnbd-base")
    only = os.environ.get("BENCH_ONLY")
    if only:
        names = [n for n in names if n in only.split(",")]
    workloads = WORKLOADS
    if os.environ.get("BENCH_WORKLOADS"):
        pick = os.environ["BENCH_WORKLOADS"].split(",")
        workloads = [w for w in WORKLOADS if w[0] in pick]
    res = {(n, w[0]): [] for n in names for w in workloads}
    cpu = {n: [] for n in names}
    cache = {n: 0 for n in names}
    for rnd in range(ROUNDS):
        for wl in workloads:
            # Interleaved, and rotated each round so no target always goes first.
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            for n in order:
                target = None if n == "raw file" else Server(n, img)
                drop_cache(img)
                if target:
                    target.start()
                    c0 = target.cpu_seconds()
                try:
                    iops, bw, moved = fio(target, wl, img)
                finally:
                    if target:
                        c1 = target.cpu_seconds()
                if target:
                    cpu[n].append((c1 - c0) / (moved / (1 << 30)) if moved else 0)
                    cache[n] = max(cache[n], fincore_bytes(img))
                    target.stop()
                res[(n, wl[0])].append((iops, bw))
                print(f"  round {rnd + 1} {wl[0]:<25} {n:<13} {iops:10.0f} IOPS "
                      f"{bw / 1e6:9.1f} MB/s", flush=True)

    lines = []
    host = f"{platform.node()}: {os.cpu_count()} CPUs, Linux {platform.release()}"
    lines.append(f"# uringnbd benchmark, {time.strftime('%Y-%m-%d')}, {host}")
    lines.append(f"# {ROUNDS} rounds x {RUNTIME} s per run, medians; image {SIZE} of random data")
    lines.append("")
    hdr = (f"{'workload':<25} {'target':<13} {'IOPS':>8} {'MB/s':>8} {'vs best peer':>12} "
           f"{'vs raw':>7}  {'IOPS min-max':>15}")
    lines.append(hdr)
    for wl in workloads:
        med = {n: (statistics.median(x[0] for x in res[(n, wl[0])]),
                   statistics.median(x[1] for x in res[(n, wl[0])])) for n in names}
        peers = [med[n][0] for n in names if n not in ("uringnbd", "uringnbd-base", "raw file")]
        best = max(peers) if peers else 0
        raw = med["raw file"][0] if "raw file" in med else 0
        for n in names:
            iops, bw = med[n]
            vb = f"{iops / best:.2f}x" if best else "-"
            vr = f"{iops / raw:.2f}x" if raw else "-"
            lo = min(x[0] for x in res[(n, wl[0])])
            hi = max(x[0] for x in res[(n, wl[0])])
            lines.append(f"{wl[0]:<25} {n:<13} {iops:8.0f} {bw / 1e6:8.1f} {vb:>12} {vr:>7}  "
                         f"{lo:7.0f}-{hi:<7.0f}")
        lines.append("")
    lines.append(f"{'server':<13} {'CPU s/GiB (median)':>20} {'page cache after (bytes)':>26}")
    for n in names:
        if n == "raw file":
            continue
        lines.append(f"{n:<13} {statistics.median(cpu[n]) if cpu[n] else 0:20.3f} {cache[n]:26d}")
    text = "\n".join(line.rstrip() for line in lines) + "\n"
    print()
    print(text)
    out = f"{DIR}/bench-{time.strftime('%Y%m%d-%H%M%S')}.txt"
    open(out, "w").write(text)
    shutil.copy(out, f"{DIR}/bench-latest.txt")
    print(f"saved {out}")


if __name__ == "__main__":
    sys.exit(main())
