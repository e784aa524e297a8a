#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Dirty-bitmap benchmark (make bench-bitmap): what tracking costs a write,
on a unix socket, fio's nbd engine, the 1 GiB image of make bench:
  uringnbd, no bitmap                 (the reference)
  uringnbd, bitmaps = b (64 KiB granules, a fresh sidecar each round)
Per round and target, 4k writes at random 64 KiB-aligned offsets:
  fresh QD32   8192 writes, each the first to its granule (a bit to sync first)
  dirty QD32   the same offsets again (bits already on disk: no sync)
  fresh QD1 / dirty QD1   the same with 2048 writes at depth 1
Medians of BENCH_ROUNDS (3), IOPS and mean latency, and the sidecar syncs
the fresh writes cost (group commit: many writes per sync at depth).
Not a test."""
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the image, the servers' helpers)

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
URINGNBDCTL = os.path.join(os.path.dirname(os.path.abspath(bench.URINGNBD)), "uringnbdctl")
DIR = bench.DIR
SOCK = f"{bench.SOCKDIR}/bitmap.sock"
CTL = f"{bench.SOCKDIR}/bitmap.ctl"
TARGETS = ["no bitmap", "bitmap"]
RUNS = [("fresh QD32", 32, 8192), ("dirty QD32", 32, 8192), ("fresh QD1", 1, 2048),
        ("dirty QD1", 1, 2048)]


def start(target, img):
    for p in (SOCK, CTL, img + ".bitmaps"):
        if os.path.exists(p):
            os.unlink(p)
    spec = f"vm={img}" + (",bitmap=b" if target == "bitmap" else "")
    p = subprocess.Popen([bench.URINGNBD, "-U", SOCK, "--control", CTL, "-e", spec],
                         stderr=open(f"{DIR}/bitmap-bench.log", "a"))
    bench.wait_socket(SOCK, p)
    bench.wait_socket(CTL, p)
    return p


def fio(depth, nios, seed):
    args = ["fio", "--name=bm", "--rw=randwrite", "--bs=4k", f"--iodepth={depth}",
            "--ioengine=nbd", f"--uri=nbd+unix:///vm?socket={SOCK}", "--size=1G",
            "--blockalign=64k", "--randrepeat=1", f"--randseed={seed}", f"--number_ios={nios}",
            "--output-format=json"]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=300).stdout
    w = json.loads(out[out.index("{"):])["jobs"][0]["write"]
    return w["iops"], w["lat_ns"]["mean"] / 1000


def commits():
    r = subprocess.run([URINGNBDCTL, "-c", CTL, "--json", "bitmaps", "vm"],
                       capture_output=True, text=True)
    return json.loads(r.stdout)["commits"] if r.returncode == 0 else 0


def main():
    img = bench.random_image()
    res = {(t, r[0]): [] for t in TARGETS for r in RUNS}
    syncs = {r[0]: [] for r in RUNS}
    for rnd in range(ROUNDS):
        for t in TARGETS[rnd % 2:] + TARGETS[:rnd % 2]:
            for k, (name, depth, nios) in enumerate(RUNS):
                if k % 2 == 0:  # a fresh bitmap for each fresh run
                    p = start(t, img)
                before = commits()
                res[(t, name)].append(fio(depth, nios, rnd * 10 + k // 2 + 1))
                if t == "bitmap":
                    syncs[name].append(commits() - before)
                if k % 2 == 1:
                    p.terminate()
                    p.wait()
    print(f"\n4k random writes, unix socket, {ROUNDS} rounds, medians "
          "(IOPS, mean latency; syncs of the sidecar per run)")
    print(f"{'run':<12} {'no bitmap':>18} {'bitmap':>18} {'ratio':>6} {'syncs':>7}")
    for name, _, nios in RUNS:
        a = [x[0] for x in res[("no bitmap", name)]]
        b = [x[0] for x in res[("bitmap", name)]]
        la = statistics.median(x[1] for x in res[("no bitmap", name)])
        lb = statistics.median(x[1] for x in res[("bitmap", name)])
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"{name:<12} {ma:>9.0f} {la:>6.0f} us {mb:>9.0f} {lb:>6.0f} us {mb / ma:>5.2f}x "
              f"{statistics.median(syncs[name]):>7.0f}  (of {nios} writes; ranges "
              f"{min(a):.0f}-{max(a):.0f} / {min(b):.0f}-{max(b):.0f})")


if __name__ == "__main__":
    main()
