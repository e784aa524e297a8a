#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Overlay benchmark (make bench-overlay): a copy-on-write layer over a 1 GiB
base of random data, on unix sockets, fio's nbd engine:
  uringnbd --overlay temporary     (32 KiB granules, O_DIRECT both layers)
  uringnbd, the base itself        (no overlay: the reference for reads)
  nbdkit file --filter=cow         (its temporary overlay, 64 KiB blocks)
  qemu-nbd -s --cache=none --aio=io_uring  (a temporary qcow2 snapshot)
Per round and server, on one fresh overlay: 4k random reads of untouched
blocks (QD32, timed), then 4k writes at 8192 random granule-aligned
offsets, each the first write to its granule (QD32, "first touch": a
copy-up), then the same offsets again ("rewrite"). Medians of BENCH_ROUNDS
(3); the page cache the base holds afterwards is reported. Not a test."""
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the image, the servers' helpers)

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
RUNTIME = int(os.environ.get("BENCH_RUNTIME", "3"))
DIR = bench.DIR
SOCK = f"{bench.SOCKDIR}/overlay.sock"
TARGETS = ["uringnbd overlay", "uringnbd base", "nbdkit cow", "qemu-nbd -s"]
NIOS = 8192


def start(name, img):
    if os.path.exists(SOCK):
        os.unlink(SOCK)
    env = dict(os.environ, TMPDIR=DIR)
    log = open(f"{DIR}/overlay-bench.log", "a")
    if name == "uringnbd overlay":
        args = [bench.URINGNBD, "-U", SOCK, "--overlay", "temporary", img]
    elif name == "uringnbd base":
        args = [bench.URINGNBD, "-U", SOCK, img]
    elif name == "nbdkit cow":
        args = ["nbdkit", "-f", "-U", SOCK, "--filter=cow", "file", f"file={img}", "cache=none"]
    else:
        args = ["qemu-nbd", "-k", SOCK, "-f", "raw", "-s", "-t", "-e", "8", "--cache=none",
                "--aio=io_uring", img]
    p = subprocess.Popen(args, stderr=log, env=env)
    bench.wait_socket(SOCK, p)
    return p


def fio(rw, extra):
    args = ["fio", "--name=ov", f"--rw={rw}", "--bs=4k", "--iodepth=32", "--ioengine=nbd",
            f"--uri=nbd+unix:///?socket={SOCK}", "--size=1G", "--output-format=json", *extra]
    out = subprocess.run(args, capture_output=True, text=True, check=True,
                         timeout=RUNTIME * 3 + 120).stdout
    job = json.loads(out[out.index("{"):])["jobs"][0]
    return (job["read"] if "read" in rw else job["write"])["iops"]


def main():
    img = bench.random_image()
    res = {(t, w): [] for t in TARGETS for w in ("read", "first", "rewrite")}
    cache = {t: 0 for t in TARGETS}
    for rnd in range(ROUNDS):
        for t in TARGETS[rnd % len(TARGETS):] + TARGETS[:rnd % len(TARGETS)]:
            bench.drop_cache(img)
            p = start(t, img)
            try:
                r = fio("randread", ["--runtime=%d" % RUNTIME, "--time_based", "--randrepeat=0"])
                seed = ["--randrepeat=1", "--randseed=%d" % (rnd + 1), "--blockalign=32k",
                        f"--number_ios={NIOS}"]
                w1 = fio("randwrite", seed)
                w2 = fio("randwrite", seed)
            finally:
                cache[t] = max(cache[t], bench.fincore_bytes(img))
                p.terminate()
                p.wait(20)
            res[(t, "read")].append(r)
            res[(t, "first")].append(w1)
            res[(t, "rewrite")].append(w2)
            print(f"  round {rnd + 1} {t:<18} read {r:8.0f}  first touch {w1:8.0f}  "
                  f"rewrite {w2:8.0f} IOPS", flush=True)
    lines = [f"# overlay benchmark, {time.strftime('%Y-%m-%d')}, {ROUNDS} rounds, medians "
             f"(IOPS, 4k QD32, unix socket; first touch and rewrite: {NIOS} writes)", "",
             f"{'server':<18} {'untouched read':>15} {'vs base':>8} {'first touch':>12} "
             f"{'rewrite':>9} {'base page cache after':>22}"]
    base_read = statistics.median(res[("uringnbd base", "read")])
    for t in TARGETS:
        m = {w: statistics.median(res[(t, w)]) for w in ("read", "first", "rewrite")}
        lines.append(f"{t:<18} {m['read']:15.0f} {m['read'] / base_read:7.2f}x "
                     f"{m['first']:12.0f} {m['rewrite']:9.0f} {cache[t]:22d}")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    open(f"{DIR}/overlay-bench-{time.strftime('%Y%m%d-%H%M%S')}.txt", "w").write(text)


if __name__ == "__main__":
    sys.exit(main())
