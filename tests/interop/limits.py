#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Rate limits, measured from the client's side with real clients:
- accuracy: iops-total=2000 gives 2000 +- 5% over 10 s with fio 4k QD32,
  and bps-total=100M gives 100 MiB/s +- 5% with fio 1M QD8 (over TLS);
- a burst (iops-total-max, -max-length) runs for its length and no longer;
- a limit lowered live with uringnbdctl export-set holds within 100 ms for
  the connection already open, and a raised one likewise;
- conn-iops-total caps each connection; a config file's [throttle-group]
  shared by two exports caps their sum, and a reload changes it live;
- a throttled writer's payload stays in its socket: 1 MiB writes at QD32
  behind a 4 MiB/s limit keep the daemon's buffer pool nearly empty;
- the waits are in uringnbdctl stats and /metrics;
- bad limits are refused with a clear error (command line, export-set)."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from testlib import (T, S, URINGNBD, URINGNBDCTL, Daemon, check, free_port, image,  # noqa: E402
                     need, skip)

import nbd  # noqa: E402

need("fio", "psktool")
if subprocess.run(["fio", "--enghelp=nbd"], capture_output=True).returncode != 0:
    skip("this fio has no nbd engine")

CTL = os.path.join(S, "ctl")
MPORT = free_port()
psk = os.path.join(T, "keys.psk")
subprocess.run(["psktool", "-u", "alice", "-p", psk], check=True, capture_output=True)
a = image("a.img", 512 << 20)
b = image("b.img", 512 << 20)
m = image("m.img", 64 << 20)
conf = os.path.join(T, "uringnbd.conf")


def write_conf(group_iops):
    with open(conf, "w") as f:
        f.write(f"[global]\ntls = on\ntls-psk = {psk}\ncontrol = {CTL}\n"
                f"metrics = 127.0.0.1:{MPORT}\n"
                f"[throttle-group tenant]\niops-total = {group_iops}\n"
                f"[export a]\npath = {a}\niops-total = 2000\n"
                f"[export b]\npath = {b}\nthrottle-group = tenant\n"
                f"[export c]\npath = {a}\nthrottle-group = tenant\nconn-iops-total = 300\n"
                f"[export w]\npath = {b}\nbps-write = 4M\n"
                f"[export t]\npath = {a}\nbps-total = 100M\n"
                # Eight keys kept as strings, and limits: none crowds the others out.
                f"[export many]\npath = {m}\ndescription = many keys\nallow = anyunix\n"
                f"deny = all\ntls-allow = alice\nthrottle-group = tenant\nbitmaps = nightly\n"
                f"bitmap-file = {m}.bm\niops-read = 700\nconn-bps-write = 1M\n")


def ctl(*args):
    p = subprocess.run([URINGNBDCTL, "-c", CTL, *args], capture_output=True, text=True,
                       timeout=30)
    return p


def fio(uri, rw, bs, qd, secs, extra=()):
    p = subprocess.run(["fio", "--name=x", "--ioengine=nbd", f"--uri={uri}", f"--rw={rw}",
                        f"--bs={bs}", f"--iodepth={qd}", f"--runtime={secs}", "--time_based",
                        "--size=256M", "--output-format=json", *extra],
                       capture_output=True, text=True, timeout=secs + 60)
    check(p.returncode == 0, f"fio {rw} {bs} QD{qd} on {uri}: {p.stderr[-500:]}")
    job = json.loads(p.stdout[p.stdout.index("{"):])["jobs"][0]
    return job["read"] if "read" in rw or rw == "randrw" else job["write"]


def stamps(uri, secs, qd, at=None, write=False, size=4096):
    """Completion times (monotonic) of requests of size kept qd deep for secs;
    at() is called once, after half of it."""
    h = nbd.NBD()
    h.set_uri_allow_local_file(True)
    h.connect_uri(uri)
    buf = nbd.Buffer(size)
    done = []
    left = [0]

    def cb(err):
        done.append(time.monotonic())
        left[0] -= 1
        return 1

    start = time.monotonic()
    mid = start + secs / 2
    fired = None
    i = 0
    while time.monotonic() - start < secs:
        while left[0] < qd:
            off = (i * size * 7919) % (256 << 20) // size * size
            if write:
                h.aio_pwrite(buf, off, completion=cb)
            else:
                h.aio_pread(buf, off, completion=cb)
            left[0] += 1
            i += 1
        h.poll(100)
        if at and fired is None and time.monotonic() >= mid:
            fired = time.monotonic()
            at()
    while left[0]:
        h.poll(-1)
    h.shutdown()
    return done, start, fired


def between(ts, lo, hi):
    return sum(1 for t in ts if lo <= t < hi)


def near(v, want, tol, what):
    check(abs(v - want) <= want * tol, f"{what}: {v:.0f}, expected {want:.0f} +- {tol:.0%}")
    print(f"{what}: {v:.0f} (limit {want:.0f})")


# ---- bad limits: clear errors, nothing started ----
for bad, why in [("iops-total-max=100", "iops-total-max needs iops-total"),
                 ("iops-total=10,iops-read=5", "total limit cannot be set"),
                 ("bps-total=lots", "bps-total: expected bytes per second"),
                 ("throttle-group=nosuch", "throttle-group \"nosuch\" is not defined")]:
    p = subprocess.run([URINGNBD, "-U", os.path.join(S, "x.sock"), "-e", f"x={a},{bad}"],
                       capture_output=True, text=True, timeout=30)
    check(p.returncode != 0 and why in p.stderr, f"-e x=...,{bad}: {p.returncode} {p.stderr}")

write_conf(1000)
d = Daemon(["--config", conf])
A, B, C, W = (d.uri(n) for n in "abcw")
TLS_T = f"nbds+unix://alice@/t?socket={d.sock}&tls-psk-file={psk}"

# ---- accuracy: 4k QD32 on iops, 1M QD8 on bps (over TLS) ----
r = fio(A, "randread", "4k", 32, 10)
near(r["iops"], 2000, 0.05, "iops-total=2000, 4k QD32, 10 s")
done, start, _ = stamps(TLS_T, 10.0, 8, size=1 << 20)
near(between(done, start, start + 10.0) / 10.0, 100, 0.05,
     "bps-total=100M, 1M QD8 over TLS, MiB/s")

# ---- live changes, on the connection already open ----
def change_at(t_set, value):
    """An export-set of a's iops-total, for stamps(at=...): its time goes in t_set."""
    def at():
        t_set.append(time.monotonic())
        p = ctl("export-set", "a", f"iops-total={value}")
        check(p.returncode == 0, f"export-set a iops-total={value}: {p.stderr}")
    return at


for before, after in ((2000, 500), (500, 2000)):
    t_set = []
    done, start, _ = stamps(A, 4.0, 32, at=change_at(t_set, after))
    tc = t_set[0]
    near(between(done, tc + 0.1, tc + 1.1), after, 0.10, f"{before} -> {after} live: ops in "
         "the second starting 100 ms after export-set")
    near(between(done, start + 0.5, tc) / (tc - start - 0.5), before, 0.10,
         "before it, ops/s")

# ---- a burst: its length and no longer (an export added live, idle so far) ----
p = ctl("export-add", "burst", a, "iops-total=500", "iops-total-max=2000",
        "iops-total-max-length=2")
check(p.returncode == 0, f"export-add burst: {p.stderr}")
done, start, _ = stamps(d.uri("burst"), 5.0, 32)
first = done[0] if done else start
near(between(done, first, first + 2.0) / 2.0, 2000, 0.10, "burst: ops/s in its 2 s")
near(between(done, first + 2.3, first + 4.8) / 2.5, 500, 0.10, "after the burst: ops/s")
p = ctl("export-set", "a", "iops-total=0", "iops-total-max=0", "iops-total-max-length=0")
check(p.returncode == 0, f"export-set a no limits: {p.stderr}")
r = fio(A, "randread", "4k", 32, 2)
check(r["iops"] > 4000, f"with its limits removed, a still ran at {r['iops']:.0f} IOPS")

# ---- a group shared by two exports; each connection of c capped ----
res = {}


def run_into(key, uri, qd):
    res[key] = fio(uri, "randread", "4k", qd, 6)["iops"]


th = [threading.Thread(target=run_into, args=("b", B, 32)),
      threading.Thread(target=run_into, args=("c", C, 32))]
for t in th:
    t.start()
for t in th:
    t.join()
near(res["b"] + res["c"], 1000, 0.08, "throttle-group tenant (1000): b + c")
check(res["c"] <= 300 * 1.08, f"conn-iops-total=300: c's connection ran at {res['c']:.0f}")
# A reload changes the group's limit live.
write_conf(3000)
d.proc.send_signal(signal.SIGHUP)
deadline = time.time() + 10
while "reload:" not in d.log() and time.time() < deadline:
    time.sleep(0.05)
r = fio(B, "randread", "4k", 32, 4)
near(r["iops"], 3000, 0.08, "throttle-group tenant reloaded to 3000: b alone")

# ---- a throttled writer's payload stays in its socket ----
peak = [0]
stop = threading.Event()


def sample_pool():
    while not stop.is_set():
        st = json.loads(ctl("--json", "stats").stdout)
        peak[0] = max(peak[0], sum(w["pool-used-bytes"] for w in st["per-worker"]))
        time.sleep(0.1)


smp = threading.Thread(target=sample_pool)
smp.start()
r = fio(W, "write", "1M", 32, 5)
stop.set()
smp.join()
near(r["bw_bytes"] / (1 << 20), 4, 0.15, "bps-write=4M, 1M QD32 writes, MiB/s")
check(peak[0] <= 4 << 20, f"the throttled writer held {peak[0] >> 20} MiB of the buffer pool "
      "(its payloads should wait in the socket)")
print(f"throttled writer: buffer pool peak {peak[0] >> 10} KiB")

# ---- the waits, in stats and /metrics ----
st = json.loads(ctl("--json", "stats").stdout)
ex = {e["name"]: e for e in st["exports"]}
check(ex["a"]["throttled"]["requests"] > 1000 and ex["a"]["throttled"]["seconds"] > 1,
      f"stats: a's waits {ex['a']['throttled']}")
grp = {g["name"]: g for g in st["throttle-groups"]}
check(grp["tenant"]["requests"] > 100, f"stats: the group's waits {grp.get('tenant')}")
text = urllib.request.urlopen(f"http://127.0.0.1:{MPORT}/metrics", timeout=10).read().decode()
for series in ('uringnbd_throttled_seconds_total{export="a"}',
               'uringnbd_throttled_requests_total{group="tenant"}',
               'uringnbd_throttle_waiting{export="w"}'):
    check(series in text, f"/metrics has no {series}")
ex = json.loads(ctl("--json", "exports", "many").stdout)[0]
check(ex["description"] == "many keys" and ex["throttle-group"] == "tenant" and
      ex["limits"] == {"iops-read": 700} and ex["conn-limits"] == {"bps-write": 1 << 20},
      f"exports many: {ex}")
ex = json.loads(ctl("--json", "exports", "c").stdout)[0]
check(ex["conn-limits"] == {"iops-total": 300} and ex["throttle-group"] == "tenant",
      f"exports c: {ex['conn-limits']} {ex['throttle-group']}")
p = ctl("export-set", "a", "bps-read-max=1M")
check(p.returncode == 1 and "bps-read-max needs bps-read" in p.stderr,
      f"export-set a bps-read-max alone: {p.returncode} {p.stderr}")
p = ctl("group-set", "tenant", "iops-total=1")
check(p.returncode == 0, f"group-set: {p.stderr}")
d.stop()
print("ok")
