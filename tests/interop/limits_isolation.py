#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Rate limits isolate tenants:
- fair within a group: three connections of a throttle group's exports
  (fio 4k QD32, QD8 and QD1, all saturating) each get a third of the
  group's 1500 IOPS, +-10%: a deep queue cannot take the others' share;
- a throttled export never slows another: an unthrottled export's 4k QD1
  p99 latency with a throttled neighbour at full pressure (QD32 reads and
  1 MiB QD8 writes, far over its 100 IOPS and 1 MiB/s) is within 10% of
  its value alone: 12 rounds, each measuring alone then loaded back to
  back, and the median of the 12 ratios (a round's p99 here wanders by 2x
  with the machine's other tenants; a pair sees the same machine).
  Waiting requests cost nothing: no polling, no buffers, no worker held."""
import json
import os
import statistics
import subprocess
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from testlib import Daemon, check, image, need, skip  # noqa: E402

need("fio")
if subprocess.run(["fio", "--enghelp=nbd"], capture_output=True).returncode != 0:
    skip("this fio has no nbd engine")

img = image("a.img", 512 << 20)
other = image("b.img", 512 << 20)
d = Daemon(["--throttle-group", "tenant:iops-total=1500",
            "-e", f"g1={img},throttle-group=tenant", "-e", f"g2={img},throttle-group=tenant",
            "-e", f"free={other}", "-e", f"noisy={img},iops-total=100,bps-total=1M"])


def fio(name, rw, bs, qd, secs, extra=()):
    p = subprocess.run(["fio", "--name=x", "--ioengine=nbd", f"--uri={d.uri(name)}",
                        f"--rw={rw}", f"--bs={bs}", f"--iodepth={qd}", f"--runtime={secs}",
                        "--time_based", "--size=256M", "--output-format=json",
                        "--randrepeat=0", *extra],
                       capture_output=True, text=True, timeout=secs + 60)
    check(p.returncode == 0, f"fio {rw} {bs} QD{qd} on {name}: {p.stderr[-500:]}")
    job = json.loads(p.stdout[p.stdout.index("{"):])["jobs"][0]
    return job["read"] if "read" in rw else job["write"]


# ---- fair within the group ----
res = {}


def into(key, *args):
    res[key] = fio(*args)["iops"]


th = [threading.Thread(target=into, args=("QD32", "g1", "randread", "4k", 32, 8)),
      threading.Thread(target=into, args=("QD8", "g2", "randread", "4k", 8, 8)),
      threading.Thread(target=into, args=("QD1", "g2", "randread", "4k", 1, 8))]
for t in th:
    t.start()
for t in th:
    t.join()
total = sum(res.values())
print("group of 1500 IOPS: " + ", ".join(f"{k} {v:.0f}" for k, v in res.items()))
check(abs(total - 1500) <= 1500 * 0.08, f"the group ran at {total:.0f} IOPS, limit 1500")
for k, v in res.items():
    check(abs(v - total / 3) <= total / 3 * 0.10,
          f"{k} got {v:.0f} of the group's {total:.0f} IOPS: not a fair third (+-10%)")

# ---- a throttled neighbour does not slow an unthrottled export ----
P99 = "--percentile_list=99"


ROUNDS = 12


def p99_us():
    r = fio("free", "randread", "4k", 1, 2, (P99,))
    return r["clat_ns"]["percentile"]["99.000000"] / 1000


def noisy(stop_after):
    fio("noisy", "randread", "4k", 32, stop_after)


def noisy_writes(stop_after):
    fio("noisy", "write", "1M", 8, stop_after)


alone, loaded = [], []
for rnd in range(ROUNDS):
    alone.append(p99_us())
    bg = [threading.Thread(target=noisy, args=(4,)),
          threading.Thread(target=noisy_writes, args=(4,))]
    for t in bg:
        t.start()
    loaded.append(p99_us())
    for t in bg:
        t.join()
# Each round's pair was measured back to back: their ratio sees the same machine.
ratios = sorted(b / a for a, b in zip(alone, loaded))
ratio = statistics.median(ratios)
print(f"unthrottled export 4k QD1 p99 with a throttled neighbour at full pressure, against "
      f"alone: median ratio {ratio:.3f} over {ROUNDS} rounds (ratios "
      f"{[round(r, 2) for r in ratios]}); p99 medians {statistics.median(alone):.0f} and "
      f"{statistics.median(loaded):.0f} us; rounds {[round(x) for x in alone]} and "
      f"{[round(x) for x in loaded]}")
check(ratio <= 1.10, f"the throttled neighbour made the unthrottled export's p99 "
      f"{(ratio - 1) * 100:.0f}% worse (median of {ROUNDS} paired rounds): more than 10%")
d.stop()
print("ok")
