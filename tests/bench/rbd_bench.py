#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""RBD benchmark (make bench-rbd): one throw-away cluster (tests/ceph.py: one
mon, one bluestore OSD on a sparse file in BENCH_DIR), one 1 GiB image
written in full first (reads of unwritten objects cost the cluster
nothing), and on it, in interleaved rounds:
  uringnbd rbd:rbd/bench              (unix socket, and TCP 127.0.0.1)
  qemu-nbd rbd:rbd/bench:conf=...     (--cache=none, unix and TCP; needs
                                       qemu-block-extra)
  fio's rbd engine                    (librbd in fio: the ceiling, no NBD)
fio's nbd engine drives the servers: 4k random reads and writes at QD1 and
QD32, 1M sequential reads and writes at QD8. Medians of BENCH_ROUNDS (3),
with the range, and CPU seconds per GiB moved: the server's (all its
threads) and fio's (all its threads: for the rbd engine, librbd's too, so
that column is the whole client side there). A run that errors fails the
benchmark. Not a test."""
import resource
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import bench  # noqa: E402
from ceph import Cluster  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
RUNTIME = int(os.environ.get("BENCH_RUNTIME", "4"))
DIR = bench.DIR
SIZE = "1G"
WORKLOADS = [
    ("4k randread QD1", "randread", "4k", 1),
    ("4k randread QD32", "randread", "4k", 32),
    ("4k randwrite QD1", "randwrite", "4k", 1),
    ("4k randwrite QD32", "randwrite", "4k", 32),
    ("1M read QD8", "read", "1M", 8),
    ("1M write QD8", "write", "1M", 8),
]


class Server:
    def __init__(self, name, transport, conf):
        self.name, self.transport, self.conf = name, transport, conf
        self.sock = f"{bench.SOCKDIR}/rbd-{name}.sock"
        self.port = None
        self.proc = None

    def label(self):
        return f"{self.name} ({self.transport})"

    def uri(self):
        if self.transport == "unix":
            return f"nbd+unix:///{'vm' if self.name == 'uringnbd' else ''}?socket={self.sock}"
        return f"nbd://127.0.0.1:{self.port}/{'vm' if self.name == 'uringnbd' else ''}"

    def start(self):
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        if self.transport == "tcp":
            self.port = bench.free_port()
        log = open(f"{DIR}/rbd-{self.name}.log", "a")
        if self.name == "uringnbd":
            listen = ["-U", self.sock] if self.transport == "unix" else \
                ["-b", "127.0.0.1", "-p", str(self.port)]
            args = [bench.URINGNBD, *listen, "-e", f"vm=rbd:rbd/bench,ceph-conf={self.conf}"]
        else:
            listen = ["-k", self.sock] if self.transport == "unix" else \
                ["-b", "127.0.0.1", "-p", str(self.port)]
            args = ["qemu-nbd", *listen, "-f", "raw", "-t", "-e", "16", "--cache=none",
                    f"rbd:rbd/bench:conf={self.conf}"]
        self.proc = subprocess.Popen(args, stderr=log, stdout=log)
        if self.transport == "unix":
            bench.wait_socket(self.sock, self.proc, timeout=30)
        else:
            bench.wait_port(self.port, self.proc, timeout=30)

    def cpu(self):
        tick = os.sysconf("SC_CLK_TCK")
        f = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / tick

    def stop(self):
        bench.stop_process(self.proc)


def children_cpu():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_fio(target, wl, conf):
    """(IOPS, bytes moved, CPU seconds of the server, CPU seconds of fio: every
    thread of each, librbd's in fio's for its rbd engine)."""
    name, rw, bs, qd = wl
    args = ["fio", "--name=rbd", f"--rw={rw}", f"--bs={bs}", f"--iodepth={qd}",
            f"--runtime={RUNTIME}", "--time_based", f"--size={SIZE}", "--output-format=json",
            "--randrepeat=0"]
    if target is None:
        args += ["--ioengine=rbd", "--clientname=admin", "--pool=rbd", "--rbdname=bench"]
    else:
        args += ["--ioengine=nbd", f"--uri={target.uri()}"]
    env = dict(os.environ, CEPH_CONF=conf)
    c0 = target.cpu() if target else None
    f0 = children_cpu()
    p = subprocess.run(args, capture_output=True, text=True, env=env, timeout=RUNTIME * 3 + 90)
    fio_cpu = children_cpu() - f0
    try:
        job = json.loads(p.stdout[p.stdout.index("{"):])["jobs"][0]
        side = job["read"] if "read" in rw else job["write"]
        ok = p.returncode == 0 and not job.get("error") and side["iops"] > 0
    except (ValueError, KeyError, IndexError):
        ok = False
    if not ok:
        where = f"{DIR}/rbd-{target.name}.log" if target else "fio"
        raise bench.RoundFailed(f"{name} on {target.label() if target else 'fio rbd'}: fio "
                                f"exit {p.returncode}\n{p.stderr[-2000:]}\n(log: {where})")
    return side["iops"], side["io_bytes"], target.cpu() - c0 if target else 0.0, fio_cpu


def main():
    os.makedirs(DIR, exist_ok=True)
    os.makedirs(bench.SOCKDIR, exist_ok=True)
    if not shutil.which("fio") or "rbd" not in subprocess.run(
            ["fio", "--enghelp"], capture_output=True, text=True).stdout:
        print("fio has no rbd engine", file=sys.stderr)
        return 1
    qemu_rbd = os.path.exists("/usr/lib/x86_64-linux-gnu/qemu/block-rbd.so")
    work = tempfile.mkdtemp(prefix="rbd-bench.", dir=DIR)
    cl = Cluster(os.path.join(work, "ceph"), store="bluestore")
    conf = cl.conf
    cl.rbd("create", "rbd/bench", "--size", SIZE)
    t = time.monotonic()
    subprocess.run(["fio", "--name=fill", "--ioengine=rbd", "--clientname=admin", "--pool=rbd",
                    "--rbdname=bench", "--rw=write", "--bs=4M", "--iodepth=8", f"--size={SIZE}"],
                   check=True, capture_output=True, env=dict(os.environ, CEPH_CONF=conf))
    print(f"cluster up in {cl.started_s:.1f} s; image written in {time.monotonic() - t:.1f} s",
          flush=True)
    targets = [Server("uringnbd", tr, conf) for tr in ("unix", "tcp")]
    if qemu_rbd:
        targets += [Server("qemu-nbd", tr, conf) for tr in ("unix", "tcp")]
    else:
        print("qemu-nbd left out: no rbd driver (qemu-block-extra)", flush=True)
    targets.append(None)
    label = {id(tg): tg.label() if tg else "fio rbd engine" for tg in targets}
    res = {(label[id(tg)], wl[0]): [] for tg in targets for wl in WORKLOADS}
    cpu = {k: [] for k in res}
    fcpu = {k: [] for k in res}
    try:
        for rnd in range(ROUNDS):
            order = targets[rnd % len(targets):] + targets[:rnd % len(targets)]
            for tg in order:
                if tg:
                    tg.start()
                try:
                    for wl in WORKLOADS:
                        iops, moved, c, fc = run_fio(tg, wl, conf)
                        res[(label[id(tg)], wl[0])].append(iops)
                        cpu[(label[id(tg)], wl[0])].append(c / (moved / (1 << 30)))
                        fcpu[(label[id(tg)], wl[0])].append(fc / (moved / (1 << 30)))
                        print(f"  round {rnd + 1} {label[id(tg)]:<20} {wl[0]:<18} "
                              f"{iops:9.0f} IOPS", flush=True)
                finally:
                    if tg:
                        tg.stop()
    finally:
        cl.stop()
        shutil.rmtree(work, ignore_errors=True)
    names = [label[id(tg)] for tg in targets]
    lines = [f"# RBD benchmark, {time.strftime('%Y-%m-%d')}, {ROUNDS} rounds of "
             f"{RUNTIME} s: median IOPS [min-max]; CPU s/GiB (medians) of the server",
             "and of fio (with the rbd engine, librbd runs in fio: no server)", ""]
    for wl in WORKLOADS:
        lines.append(f"{wl[0]}:")
        ceiling = statistics.median(res[("fio rbd engine", wl[0])])
        for n in names:
            v = res[(n, wl[0])]
            lines.append(f"  {n:<20} {statistics.median(v):9.0f} [{min(v):.0f}-{max(v):.0f}]"
                         f"  {statistics.median(v) / ceiling:5.2f}x fio rbd"
                         f"  server {statistics.median(cpu[(n, wl[0])]):5.1f}"
                         f"  fio {statistics.median(fcpu[(n, wl[0])]):5.1f} CPU s/GiB")
    bench.report(lines, "rbd-bench")
    return 0


if __name__ == "__main__":
    bench.run_main(main)
