#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Rate-limit benchmark (make bench-limits), in interleaved rounds:
- accuracy: what a client gets under a limit, against the limit, for
  uringnbd (iops-total=2000; bps-total=100M), qemu-nbd (its throttle driver
  and a throttle-group object, x-iops-total / x-bps-total) and nbdkit's rate
  filter (bits per second: bps only), over a unix socket and TCP, at
  several queue depths, with the raw file's unlimited figure beside;
- cost: uringnbd with no limit against a limit it never reaches
  (iops-total=10M), 4k random reads at QD1 and QD32, unix and TCP, and the
  raw file: what charging a request costs on the hot path;
- isolation: an unlimited export's 4k QD1 p99 latency alone, next to a
  neighbour at full pressure that is throttled (200 IOPS, 4 MiB/s), and
  next to the same neighbour unthrottled: what a limit buys the others.
  Both on sparse files of their own, so that the figure is the server's
  share and not this VM's shared disk (whose p99 wanders by milliseconds).
Medians of BENCH_ROUNDS (3) with the range (isolation: 5 rounds).
BENCH_LIMITS=accuracy,cost,isolation picks parts. A run that errors fails it."""
import json
import os
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
RUNTIME = int(os.environ.get("BENCH_RUNTIME", "5"))
DIR = bench.DIR
IMG = f"{DIR}/limits.img"
SPARSE = (f"{DIR}/limits-free.img", f"{DIR}/limits-noisy.img")
PARTS = os.environ.get("BENCH_LIMITS", "accuracy,cost,isolation").split(",")
MIB = 1 << 20


class Srv:
    """A server on a unix socket or TCP, with the limits of its kind."""

    def __init__(self, kind, transport, limit=None):
        self.kind, self.transport, self.limit = kind, transport, limit
        self.sock = f"{bench.SOCKDIR}/limits-{kind}.sock"
        self.port = bench.free_port()
        self.proc = None

    def uri(self, name=None):
        if name is None:
            name = "d" if self.kind == "uringnbd" else ""
        if self.transport == "tcp":
            return f"nbd://127.0.0.1:{self.port}/{name}"
        return f"nbd+unix:///{name}?socket={self.sock}"

    def start(self, extra=()):
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        log = open(f"{DIR}/limits-{self.kind}.log", "a")
        tcp = self.transport == "tcp"
        if self.kind == "uringnbd":
            where = ["-b", "127.0.0.1", "-p", str(self.port)] if tcp else ["-U", self.sock]
            lim = f",{self.limit}" if self.limit else ""
            args = [bench.URINGNBD, *where, *(["-e", f"d={IMG}{lim}"] if not extra else []),
                    *extra]
        elif self.kind == "qemu-nbd":
            where = ["-b", "127.0.0.1", "-p", str(self.port)] if tcp else ["-k", self.sock]
            args = ["qemu-nbd", *where, "-t", "-e", "8", "--aio=io_uring",
                    "--object", f"throttle-group,id=tg,{self.limit}", "--image-opts",
                    "driver=throttle,throttle-group=tg,file.driver=raw,file.file.driver=file,"
                    f"file.file.filename={IMG},file.file.cache.direct=on"]
        else:  # nbdkit's rate filter
            where = ["-i", "127.0.0.1", "-p", str(self.port)] if tcp else ["-U", self.sock]
            args = ["nbdkit", "-f", *where, "--filter=rate", "file", f"file={IMG}",
                    "cache=none", self.limit]
        self.proc = subprocess.Popen(args, stderr=log, stdout=log)
        if tcp:
            bench.wait_port(self.port, self.proc, timeout=30)
        else:
            bench.wait_socket(self.sock, self.proc, timeout=30)

    def stop(self):
        bench.stop_process(self.proc)


def fio(target, rw, bs, qd, secs=RUNTIME, extra=()):
    """fio's figures for one run (target: a URI, or None for the raw file)."""
    args = ["fio", "--name=l", f"--rw={rw}", f"--bs={bs}", f"--iodepth={qd}",
            f"--runtime={secs}", "--time_based", "--size=1G", "--output-format=json",
            "--randrepeat=0", *extra]
    args += ["--ioengine=libaio", "--direct=1", f"--filename={IMG}"] if target is None \
        else ["--ioengine=nbd", f"--uri={target}"]
    p = subprocess.run(args, capture_output=True, text=True, timeout=secs * 3 + 60)
    try:
        job = json.loads(p.stdout[p.stdout.index("{"):])["jobs"][0]
        side = job["read"] if "read" in rw else job["write"]
        ok = p.returncode == 0 and not job.get("error") and side["io_bytes"] > 0
    except (ValueError, KeyError, IndexError):
        ok = False
    if not ok:
        raise bench.RoundFailed(f"fio {rw} {bs} QD{qd} on {target or IMG}: exit "
                                f"{p.returncode}\n{p.stderr[-1500:]}")
    return side


def row(label, vals, unit="", ref=None):
    med = statistics.median(vals)
    s = f"  {label:<34} {med:9.0f}{unit} [{min(vals):.0f}-{max(vals):.0f}]"
    if ref:
        s += f"  {100.0 * (med - ref) / ref:+6.1f}% of the limit"
    return s


def accuracy(lines):
    cases = [  # (title, limit value, unit, fio args, uringnbd, qemu-nbd, nbdkit)
        ("iops-total=2000, 4k randread QD1", 2000, "iops", ("randread", "4k", 1),
         "iops-total=2000", "x-iops-total=2000", None),
        ("iops-total=2000, 4k randread QD32", 2000, "iops", ("randread", "4k", 32),
         "iops-total=2000", "x-iops-total=2000", None),
        ("bps-total=100M, 1M read QD8", 100, "MiB/s", ("read", "1M", 8),
         "bps-total=100M", f"x-bps-total={100 * MIB}", f"rate={100 * MIB * 8}"),
        ("bps-total=100M, 1M read QD1", 100, "MiB/s", ("read", "1M", 1),
         "bps-total=100M", f"x-bps-total={100 * MIB}", f"rate={100 * MIB * 8}"),
    ]
    for title, want, unit, (rw, bs, qd), ours, qemu, kit in cases:
        res = {}
        for rnd in range(ROUNDS):
            side = fio(None, rw, bs, qd)
            res.setdefault("raw file (no limit)", []).append(
                side["iops"] if unit == "iops" else side["bw_bytes"] / MIB)
            for tr in ("unix", "tcp"):
                servers = [Srv("uringnbd", tr, ours), Srv("qemu-nbd", tr, qemu)]
                if kit:
                    servers.append(Srv("nbdkit", tr, kit))
                for srv in servers[rnd % len(servers):] + servers[:rnd % len(servers)]:
                    srv.start()
                    try:
                        side = fio(srv.uri(), rw, bs, qd)
                    finally:
                        srv.stop()
                    res.setdefault(f"{srv.kind} ({tr})", []).append(
                        side["iops"] if unit == "iops" else side["bw_bytes"] / MIB)
        lines.append(f"{title} ({unit}):")
        for k, v in res.items():
            lines.append(row(k, v, "", None if k.startswith("raw") else want))
        print("\n".join(lines[-len(res) - 1:]), flush=True)


def cost(lines):
    for qd in (1, 32):
        res = {}
        for rnd in range(ROUNDS):
            res.setdefault("raw file", []).append(fio(None, "randread", "4k", qd)["iops"])
            for tr in ("unix", "tcp"):
                order = [None, "iops-total=10000000"]
                for lim in order[rnd % 2:] + order[:rnd % 2]:
                    srv = Srv("uringnbd", tr, lim)
                    srv.start()
                    try:
                        iops = fio(srv.uri(), "randread", "4k", qd)["iops"]
                    finally:
                        srv.stop()
                    res.setdefault(f"uringnbd ({tr}), {'limit never reached' if lim else 'no limit'}",
                                   []).append(iops)
        lines.append(f"cost of charging: 4k randread QD{qd} (IOPS):")
        for k, v in res.items():
            lines.append(row(k, v))
        print("\n".join(lines[-len(res) - 1:]), flush=True)


def isolation(lines):
    res = {}
    srv = Srv("uringnbd", "unix")
    for rnd in range(max(ROUNDS, 5)):
        for case in ("alone", "throttled neighbour", "unthrottled neighbour"):
            for p in SPARSE:
                with open(p, "wb") as f:
                    f.truncate(1 << 30)
            extra = ["-e", f"free={SPARSE[0]}", "-e",
                     f"noisy={SPARSE[1]},iops-total=200,bps-total=4M"
                     if case == "throttled neighbour" else f"noisy={SPARSE[1]}"]
            srv.start(extra)
            try:
                bg = []
                if case != "alone":
                    bg = [threading.Thread(target=fio, args=(srv.uri("noisy"), "randread", "4k",
                                                             32, RUNTIME + 2)),
                          threading.Thread(target=fio, args=(srv.uri("noisy"), "write", "1M", 8,
                                                             RUNTIME + 2))]
                    for t in bg:
                        t.start()
                    time.sleep(1)
                side = fio(srv.uri("free"), "randread", "4k", 1,
                           extra=("--percentile_list=99",))
                for t in bg:
                    t.join()
            finally:
                srv.stop()
            res.setdefault(case, []).append(side["clat_ns"]["percentile"]["99.000000"] / 1000)
    lines.append("isolation: an unlimited export's 4k randread QD1 p99 (us), unix, sparse "
                 "files; the neighbour: 4k randread QD32 + 1M write QD8:")
    for k, v in res.items():
        lines.append(row(k, v))
    print("\n".join(lines[-len(res) - 1:]), flush=True)


def main():
    os.makedirs(DIR, exist_ok=True)
    os.makedirs(bench.SOCKDIR, exist_ok=True)
    if not os.path.exists(IMG) or os.path.getsize(IMG) != 1 << 30:
        subprocess.run(["dd", "if=/dev/urandom", f"of={IMG}", "bs=1M", "count=1024",
                        "status=none", "conv=fsync"], check=True)
    lines = [f"# Rate limits, {time.strftime('%Y-%m-%d')}, {ROUNDS} rounds of {RUNTIME} s: "
             "median [min-max]", ""]
    for part in PARTS:
        {"accuracy": accuracy, "cost": cost, "isolation": isolation}[part](lines)
    bench.report(lines, "limits-bench")
    return 0


if __name__ == "__main__":
    bench.run_main(main)
