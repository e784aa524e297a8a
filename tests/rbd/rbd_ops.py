#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
# test-timeout: 300
"""An export on an RBD image of a real (throw-away) cluster, against a model:
random READs, WRITEs (some FUA), WRITE_ZEROES, TRIMs and FLUSHes at any
offset and length, over two connections (CAN_MULTI_CONN), one of them
through the daemon's page cache (cache=always); every read matches the
model. Then what other tools see of the same image: `rbd
export` equals what the clients read, nbdcopy and qemu-img convert write
it, base:allocation agrees with `rbd diff`. A resize with `rbd resize` is
followed by new connections; a snapshot is served read-only as it was; a
second daemon asked to write the image is refused while the first serves
it; a daemon without librbd refuses only its rbd: export; and one export
over TLS (PSK)."""
import json
import os
import random
import subprocess
import sys
import time

import nbd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from testlib import T, S, check, fail, need, skip, Daemon, URINGNBD, URINGNBDCTL, track  # noqa: E402
from ceph import Cluster  # noqa: E402

need("nbdcopy", "qemu-img", "psktool")
SIZE = 64 << 20
cl = Cluster(os.path.join(S, "ceph"), skip=skip)
conf = cl.conf
cl.rbd("create", "rbd/img", "--size", "64M")
print(f"cluster up in {cl.started_s:.1f} s")

psk = os.path.join(T, "keys.psk")
subprocess.run(["psktool", "-u", "alice", "-p", psk], check=True, stdout=subprocess.DEVNULL)
d = Daemon(["-t", "2", "--tls-psk", psk, "--tls", "on",
            "-e", f"vm=rbd:rbd/img,ceph-conf={conf}",
            "-e", f"vmc=rbd:rbd/img,ceph-conf={conf},cache=always",
            "-e", f"tlsvm=rbd:rbd/img,ceph-conf={conf},tls=require",
            "--control", os.path.join(S, "ctl")])


def client(name="vm"):
    h = nbd.NBD()
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_uri(d.uri(name))
    return h


a, b = client(), client("vmc")  # the same image, the second through the page cache
check(a.get_size() == SIZE, f"size {a.get_size()}")
check(a.can_multi_conn(), "no CAN_MULTI_CONN")
check(a.can_fua() and a.can_flush() and a.can_trim() and a.can_zero(),
      "FUA, FLUSH, TRIM or WRITE_ZEROES not offered")

# ---- the model: random operations, unaligned, over two connections ----
rng = random.Random(42)
model = bytearray(SIZE)
known = bytearray(b"\x01" * SIZE)   # 0: trimmed, either the old bytes or zeroes
SPAN = 8 << 20                      # the first 8 MiB: objects 0-1 and their edges


def check_read(h, off, n):
    got = h.pread(n, off)
    for i in range(n):
        if known[off + i] and got[i] != model[off + i]:
            fail(f"read at {off}+{n}: byte {off + i} is {got[i]}, the model says "
                 f"{model[off + i]}")


ops = {"read": 0, "write": 0, "fua": 0, "zero": 0, "trim": 0, "flush": 0}
for i in range(1500):
    h = a if i % 2 else b
    off = rng.randrange(0, SPAN - 1)
    n = min(rng.choice([1, 7, 512, 4095, 4096, 4097, 65536, 1 << 20 | 3]), SPAN - off)
    k = rng.random()
    if k < 0.4:
        data = bytes(rng.getrandbits(8) for _ in range(min(n, 64))) * (n // 64 + 1)
        data = data[:n]
        fua = rng.random() < 0.2
        h.pwrite(data, off, nbd.CMD_FLAG_FUA if fua else 0)
        model[off:off + n] = data
        known[off:off + n] = b"\x01" * n
        ops["fua" if fua else "write"] += 1
    elif k < 0.5:
        h.zero(n, off, nbd.CMD_FLAG_NO_HOLE if rng.random() < 0.5 else 0)
        model[off:off + n] = bytes(n)
        known[off:off + n] = b"\x01" * n
        ops["zero"] += 1
    elif k < 0.55:
        h.trim(n, off)
        known[off:off + n] = bytes(n)
        ops["trim"] += 1
    elif k < 0.6:
        h.flush()
        ops["flush"] += 1
    else:
        check_read(a if i % 3 else b, off, min(n, 1 << 16))
        ops["read"] += 1
for off in range(0, SPAN, 1 << 20):
    check_read(a, off, 1 << 20)
print("model:", ", ".join(f"{v} {k}" for k, v in ops.items()), "- every read matched")
a.flush()

# ---- other tools see the same image ----
exp = os.path.join(T, "export.img")
cl.rbd("export", "rbd/img", exp)
served = os.path.join(T, "served.img")
subprocess.run(["nbdcopy", d.uri("vm"), served], check=True)
check(open(exp, "rb").read() == open(served, "rb").read(),
      "rbd export and what the export serves differ")

# base:allocation against rbd diff: every byte rbd diff calls data is data here
# (extents are object-sized in rbd's view; a hole here is a hole there).
data_ranges = []
for ext in json.loads(cl.rbd("diff", "rbd/img", "--format", "json")):
    if ext["exists"] in (True, "true"):
        data_ranges.append((ext["offset"], ext["offset"] + ext["length"]))
holes = []
reached = [0]


def seen(meta, off, entries, err):
    pos = off
    for j in range(0, len(entries), 2):
        if entries[j + 1] & nbd.STATE_HOLE:
            holes.append((pos, pos + entries[j]))
        pos += entries[j]
    reached[0] = pos


while reached[0] < SIZE:
    a.block_status(min(SIZE - reached[0], 32 << 20), reached[0], seen)
for ho, he in holes:
    for do, de in data_ranges:
        check(he <= do or ho >= de, f"hole {ho}-{he} overlaps rbd diff's data {do}-{de}")
hole_bytes = sum(e - o for o, e in holes)
data_bytes = sum(e - o for o, e in data_ranges)
check(hole_bytes + data_bytes == SIZE,
      f"holes {hole_bytes} + rbd diff's data {data_bytes} != {SIZE}")
print(f"block status: {hole_bytes >> 20} MiB of holes, {data_bytes >> 20} MiB data, "
      "as rbd diff says")

# nbdcopy and qemu-img convert in
src = os.path.join(T, "src.img")
with open(src, "wb") as f:
    f.truncate(SIZE)
    f.seek(3 << 20)
    f.write(os.urandom(5 << 20 | 12345))
    f.seek(40 << 20)
    f.write(os.urandom(1 << 20))
subprocess.run(["nbdcopy", src, d.uri("vm")], check=True)
cl.rbd("export", "rbd/img", exp + ".2")
check(open(exp + ".2", "rb").read() == open(src, "rb").read(), "nbdcopy in: rbd export differs")
with open(src, "r+b") as f:
    f.seek(20 << 20)
    f.write(os.urandom(2 << 20))
subprocess.run(["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src,
                d.uri("vm")], check=True)
os.unlink(exp + ".2")
cl.rbd("export", "rbd/img", exp + ".2")
check(open(exp + ".2", "rb").read() == open(src, "rb").read(),
      "qemu-img convert in: rbd export differs")
print("nbdcopy and qemu-img convert wrote what rbd export reads")

# ---- TLS ----
tls = nbd.NBD()
tls.set_tls(nbd.TLS_REQUIRE)
tls.set_tls_psk_file(psk)
tls.set_tls_username("alice")
tls.connect_uri(d.uri("tlsvm").replace("nbd+unix", "nbds+unix"))
check(tls.pread(4096, 3 << 20) == open(src, "rb").read()[3 << 20:(3 << 20) + 4096],
      "TLS read differs")
tls.pwrite(b"T" * 1000, 123)
tls.flush()
check(a.pread(1000, 123) == b"T" * 1000, "a TLS write is not seen on another connection")
tls.shutdown()
print("TLS-PSK: read and written")

# ---- resize followed ----
cl.rbd("resize", "rbd/img", "--size", "96M")
deadline = time.monotonic() + 10
while True:
    grown = client()
    if grown.get_size() == 96 << 20:
        break
    grown.shutdown()
    check(time.monotonic() < deadline, "a new connection does not see the resize in 10 s")
    time.sleep(0.1)
check(a.get_size() == SIZE, "an open connection's size changed")
grown.pwrite(b"G" * 4096, 90 << 20)
check(grown.pread(4096, 90 << 20) == b"G" * 4096, "the grown part does not read back")
check("resized, 67108864 -> 100663296 bytes" in d.log(), "the resize is not logged")
print("rbd resize: new connections see 96 MiB, the open one keeps 64 MiB")

# ---- a snapshot, served read-only as it was ----
cl.rbd("snap", "create", "rbd/img@s1")
snapd_sock = os.path.join(S, "snap.sock")
grown.pwrite(b"X" * 4096, 0)
grown.flush()
snapd = Daemon(["-e", f"s1=rbd:rbd/img@s1,ceph-conf={conf}"], sock=snapd_sock, log="snap.log")
sh = nbd.NBD()
sh.connect_uri(snapd.uri("s1"))
check(sh.is_read_only(), "a snapshot export is not read-only")
check(sh.pread(4096, 0) != b"X" * 4096, "the snapshot shows a write made after it")
try:
    sh.pwrite(b"Y" * 512, 0)
    fail("a write to the snapshot export succeeded")
except nbd.Error:
    pass
sh.shutdown()
snapd.stop()
print("snapshot: read-only, as it was")

# ---- one writer: a second daemon is refused the image ----
two = subprocess.run([URINGNBD, "-U", os.path.join(S, "two.sock"), "-e",
                      f"vm=rbd:rbd/img,ceph-conf={conf}"], stderr=subprocess.PIPE,
                     timeout=120)
err = two.stderr.decode()
check(two.returncode != 0 and "in use by another client" in err,
      f"a second daemon writing the image was not refused: exit {two.returncode}: {err}")
print("a second writer is refused:", [l for l in err.splitlines() if "in use" in l][0])

# ---- without librbd: only the rbd: export is refused, the rest served ----
plain = os.path.join(T, "plain.img")
with open(plain, "wb") as f:
    f.write(b"P" * (1 << 20))
hide = "; ".join(f"[ -e {lib} ] && mount --bind /dev/null {lib}" for lib in (
    "/usr/lib/x86_64-linux-gnu/librbd.so.1", "/usr/lib/x86_64-linux-gnu/librados.so.2"))
nolib_log = os.path.join(T, "nolib.log")
nolib = track(subprocess.Popen(
    ["unshare", "-m", "sh", "-c", f"{hide}; exec {URINGNBD} -U {S}/nolib.sock "
     f"--pid-file {S}/nolib.pid --control {S}/nolib.ctl -e plain={plain}"],
    stderr=open(nolib_log, "w")))
deadline = time.monotonic() + 10
while not os.path.exists(f"{S}/nolib.pid"):
    check(nolib.poll() is None and time.monotonic() < deadline,
          f"the daemon without librbd did not start: {open(nolib_log).read()}")
    time.sleep(0.05)
p = subprocess.run([URINGNBDCTL, "-c", f"{S}/nolib.ctl", "export-add", "vm", "rbd:rbd/img",
                    f"ceph-conf={conf}"], capture_output=True, text=True, timeout=60)
check(p.returncode == 1 and "is not installed" in p.stderr and "librbd1" in p.stderr,
      f"export-add of rbd: without librbd: exit {p.returncode}: {p.stderr}")
ph = nbd.NBD()
ph.connect_uri(f"nbd+unix:///plain?socket={S}/nolib.sock")
check(ph.pread(4096, 0) == b"P" * 4096, "the file export is not served without librbd")
ph.shutdown()
nolib.terminate()
check(nolib.wait(timeout=10) == 0, "the daemon without librbd did not exit cleanly")
print("without librbd:", p.stderr.strip().splitlines()[-1])

for h in (a, b, grown):
    h.shutdown()
d.stop()
cl.stop()
print("ok")
