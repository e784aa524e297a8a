#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Copy-on-write overlays (python3-libnbd):
- model: 3000 random unaligned reads, writes, zeroes (with and without FUA)
  and trims through an overlay export over a random base, checked against
  an in-memory model; FLUSH, restart on the same overlay, the same bytes;
  the base's checksum unchanged; BLOCK_STATUS through both layers (a zeroed
  overlay granule over data, a base hole not written over).
- concurrency: 8 connections write and read 4 KiB pieces straddling granule
  edges: no lost update, no torn read.
- the header names the base: an overlay over a changed base is refused at
  open, and so is a readonly overlay export; overlay=temporary leaves no file.
- sharing: two overlay exports over one base with cache=always read the
  same 16 MiB: the base is read from disk once (cache counters), and the
  page cache holds none of the base.
- many exports of one overlay file share its map (CAN_MULTI_CONN holds)."""
import atexit
import hashlib
import os
import re
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import nbd

URINGNBD = os.path.abspath(os.environ.get("URINGNBD", "build/uringnbd"))
BASE = os.environ.get("TEST_TMPDIR", "build/tmp")
os.makedirs(BASE, exist_ok=True)
T = tempfile.mkdtemp(prefix="overlay.", dir=BASE)
S = tempfile.mkdtemp(prefix="uringnbd-test.", dir="/tmp")
SOCK = os.path.join(S, "sock")
LOG = os.path.join(T, "daemon.log")
SIZE = 32 << 20
G = 32 << 10
proc = None
atexit.register(lambda: proc and proc.poll() is None and proc.kill())


def fail(msg):
    print(f"FAIL overlay.py: {msg}", file=sys.stderr)
    if proc and proc.poll() is None:
        proc.kill()
    if os.path.exists(LOG):
        print("---- daemon log ----\n" + open(LOG).read()[-3000:], file=sys.stderr)
    sys.exit(1)


def start(*args):
    global proc
    if os.path.exists(SOCK):
        os.unlink(SOCK)
    proc = subprocess.Popen([URINGNBD, "-U", SOCK, *args], stderr=open(LOG, "a"))
    for _ in range(1000):
        if os.path.exists(SOCK):
            return
        if proc.poll() is not None:
            fail(f"daemon exited at start: {args}")
        time.sleep(0.01)
    fail("daemon did not start")


def stop():
    global proc
    proc.terminate()
    if proc.wait(10) != 0:
        fail("daemon did not exit 0")
    proc = None


def client(export=""):
    h = nbd.NBD()
    h.set_export_name(export)
    h.add_meta_context("base:allocation")
    h.connect_unix(SOCK)
    return h


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


seed = int(os.environ.get("OVERLAY_SEED", random.randrange(1 << 30)))
print(f"seed {seed} (OVERLAY_SEED={seed} repeats it)")
rng = random.Random(seed)
base = os.path.join(T, "base.img")
data = bytearray(rng.randbytes(SIZE))
data[SIZE - 4 * G:] = bytes(4 * G)  # a tail the base leaves as a hole
with open(base, "wb") as f:
    f.write(data[:SIZE - 4 * G])
    f.truncate(SIZE)
base_sum = sha(base)
ov = os.path.join(T, "disk.ovl")

# ---- model ----
start("--overlay", ov, base)
h = client()
if h.get_size() != SIZE or not h.can_multi_conn() or h.is_read_only():
    fail("overlay export: size, multi-conn or read-only flag wrong")
model = bytearray(data)
for i in range(3000):
    op = rng.random()
    off = rng.randrange(SIZE)
    ln = min(rng.choice([1, 100, 512, 4096, 5000, G, G + 7, 3 * G + 11, 200000]), SIZE - off)
    if op < 0.35:
        got = h.pread(ln, off)
        if got != model[off:off + ln]:
            fail(f"op {i}: read {off}+{ln} differs from the model")
    elif op < 0.75:
        buf = rng.randbytes(ln)
        h.pwrite(buf, off, nbd.CMD_FLAG_FUA if rng.random() < 0.1 else 0)
        model[off:off + ln] = buf
    elif op < 0.9:
        h.zero(ln, off, nbd.CMD_FLAG_FUA if rng.random() < 0.2 else 0)
        model[off:off + ln] = bytes(ln)
    else:
        h.trim(ln, off)  # advisory: the model keeps the bytes
    if i % 500 == 0:
        h.flush()
h.flush()
if h.pread(SIZE, 0) != model:
    fail("the whole export differs from the model")
# BLOCK_STATUS: the untouched base hole at the end reads as a hole; no extent lies.
ext = []
h.block_status(SIZE, 0, lambda ctx, off, entries, err: ext.extend(entries) or 0)
pos = 0
for k in range(0, len(ext), 2):
    ln, fl = ext[k], ext[k + 1]
    if fl & nbd.STATE_ZERO and any(model[pos:pos + ln]):
        fail(f"BLOCK_STATUS says zero at {pos}+{ln}, which holds data")
    pos += ln
if pos < SIZE and not ext:
    fail("no extents")
h.shutdown()
stop()
if sha(base) != base_sum:
    fail("the base changed")
start("--overlay", ov, base)
h = client()
if h.pread(SIZE, 0) != model:
    fail("after a restart the overlay export differs from the model")
h.shutdown()
stop()
if sha(base) != base_sum:
    fail("the base changed")
print("model: 3000 random operations, restart, base unchanged")

# ---- a changed base, readonly, temporary ----
os.utime(base, ns=(0, 0))
r = subprocess.run([URINGNBD, "-U", SOCK + "x", "--overlay", ov, base], capture_output=True,
                   text=True, timeout=20)
if r.returncode == 0 or "changed since" not in r.stderr:
    fail(f"an overlay over a changed base was not refused: {r.stderr}")
r = subprocess.run([URINGNBD, "-U", SOCK + "x", "-r", "--overlay", ov + "2", base],
                   capture_output=True, text=True, timeout=20)
if r.returncode == 0 or "readonly and overlay" not in r.stderr:
    fail("a readonly overlay export was not refused")
tmpdir = os.path.join(T, "tmp")
os.makedirs(tmpdir)
os.environ["TMPDIR"] = tmpdir
start("--overlay", "temporary", base)
h = client()
h.pwrite(b"x" * 4096, 4096)
if h.pread(4096, 4096) != b"x" * 4096:
    fail("temporary overlay: read back")
h.shutdown()
stop()
if os.listdir(tmpdir):
    fail(f"temporary overlay left files: {os.listdir(tmpdir)}")
del os.environ["TMPDIR"]

# ---- concurrency across granule edges: 8 connections ----
base2 = os.path.join(T, "base2.img")
with open(base2, "wb") as f:
    f.write(bytes(4 << 20))
ov2 = os.path.join(T, "conc.ovl")
start("--overlay", ov2, base2)
errors = []


def writer(k):
    hh = client()
    r2 = random.Random(seed + k)
    for n in range(300):
        g = r2.randrange(1, (4 << 20) // G - 1)
        # Each connection owns byte k of every 8 around the edge: a lost update shows.
        off = g * G - 2048 + k * 512
        hh.pwrite(bytes([k + 1]) * 512, off)
        got = hh.pread(512, off)
        if got != bytes([k + 1]) * 512:
            errors.append(f"conn {k}: read back {got[:4]!r} at {off}")
            break
    hh.flush()
    hh.shutdown()


ts = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
for t in ts:
    t.start()
for t in ts:
    t.join()
if errors:
    fail("; ".join(errors[:3]))
h = client()
whole = h.pread(4 << 20, 0)
for g in range(1, (4 << 20) // G - 1):
    for k in range(8):
        piece = whole[g * G - 2048 + k * 512:g * G - 2048 + (k + 1) * 512]
        if piece not in (bytes(512), bytes([k + 1]) * 512):
            fail(f"torn or lost bytes at granule edge {g}, slot {k}")
h.shutdown()
stop()
print("concurrency: 8 connections across granule edges, nothing lost or torn")

# ---- sharing one cached base: read from disk once ----
base3 = os.path.join(T, "base3.img")
base3_bytes = rng.randbytes(64 << 20)
with open(base3, "wb") as f:
    f.write(base3_bytes)
    f.flush()
    os.fsync(f.fileno())  # written back, so that the page cache can let it go
subprocess.run(["dd", f"if={base3}", "iflag=nocache", "count=0", "status=none"])
conf = os.path.join(T, "share.conf")
open(conf, "w").write(f"""[global]
cache-size = 64M
[export a]
path = {base3}
overlay = {T}/a.ovl
cache = always
[export b]
path = {base3}
overlay = {T}/b.ovl
cache = always
""")
start("-c", conf)
ha, hb = client("a"), client("b")
ha.pwrite(b"A" * G, 0)  # a's own first granule: read around the cache
ra = ha.pread(16 << 20, 0)
rb = hb.pread(16 << 20, 0)
want = base3_bytes[:16 << 20]
if ra[G:] != want[G:] or ra[:G] != b"A" * G or rb != want:
    fail("shared cached base: reads differ from the base")
ha.shutdown()
hb.shutdown()
os.kill(proc.pid, 10)  # SIGUSR1: the counters
time.sleep(0.3)
stats = [line for line in open(LOG).read().splitlines() if "stats: cache" in line][-1]
fills = int(re.search(r", (\d+) fills,", stats).group(1))
hits = int(re.search(r"cache (\d+) hits", stats).group(1))
pages = (16 << 20) // 4096
if fills > pages or hits < pages - G // 4096:
    fail(f"the base was read more than once: {fills} fills, {hits} hits for 2 x {pages} pages")
out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", base3],
                     capture_output=True, text=True).stdout.strip()
if int(out or 0) != 0:
    fail(f"the page cache holds {out} bytes of the base")
stop()
print(f"sharing: two overlays, one cached base: {fills} fills, {hits} hits")

# ---- two exports of one overlay file share its map ----
conf2 = os.path.join(T, "same.conf")
open(conf2, "w").write(f"""[export x]
path = {base2}
overlay = {T}/same.ovl
[export y]
path = {base2}
overlay = {T}/same.ovl
""")
start("-c", conf2)
hx, hy = client("x"), client("y")
hx.pwrite(b"Q" * 1000, 12345)
if hy.pread(1000, 12345) != b"Q" * 1000:
    fail("two exports of one overlay file do not share it")
hx.shutdown()
hy.shutdown()
stop()
shutil.rmtree(S, ignore_errors=True)
print("overlay: model, restart, refusals, temporary, concurrency, shared cache, shared map")
