#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Dirty bitmaps as clients see them, and every bad input the control
socket and the configuration can be given. Two bitmaps on one export
(config file): nbdinfo lists their contexts, LIST_META_CONTEXT takes
namespaces, one BLOCK_STATUS answers base:allocation and both bitmaps,
qemu-img map reads one through x-dirty-bitmap. Then: names that are no
meta-context leaf, an unknown bitmap, a checkpoint on a read-only export,
a reflink on ext4 (refused; bitmap-only taken), a name used twice,
removals while a client is attached, sidecars that are truncated, of
another image, or not a sidecar, and a full filesystem under the sidecar:
each a clear error, the export serving on and no bit lost."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import nbd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from testlib import T, S, URINGNBD, URINGNBDCTL, check, fail, need, image, Daemon  # noqa: E402

need("nbdinfo", "qemu-img")
SIZE = 64 << 20
GRAN = 64 << 10
CTL = os.path.join(S, "ctl")


def ctl(*args, ok=True):
    """The reply (ok), the error text (not ok: the call must fail), or either (ok=None)."""
    r = subprocess.run([URINGNBDCTL, "-c", CTL, "--json", *args], capture_output=True, text=True)
    if ok is None:
        return r.stdout + r.stderr
    if ok:
        check(r.returncode == 0, f"uringnbdctl {' '.join(args)}: {r.stdout}{r.stderr}")
        return json.loads(r.stdout)
    check(r.returncode != 0, f"uringnbdctl {' '.join(args)} succeeded: {r.stdout}")
    return r.stdout + r.stderr


def ctl_settled(*args):
    """A call refused as Busy until the daemon has seen the last client go (a moment)."""
    for _ in range(100):
        out = ctl(*args, ok=None)
        if "Busy" not in out:
            check('"class"' not in out, f"uringnbdctl {' '.join(args)}: {out}")
            return
        time.sleep(0.05)
    fail(f"uringnbdctl {' '.join(args)}: still Busy after 5 s")


def contexts_of(uri, queries):
    h = nbd.NBD()
    h.set_opt_mode(True)
    h.connect_uri(uri)
    for q in queries:
        h.add_meta_context(q)
    got = []
    h.opt_list_meta_context(lambda name: got.append(name) or 0)
    h.opt_abort()
    return got


def block_status(uri, ctxs, length, offset, flags=0):
    h = nbd.NBD()
    for c in ctxs:
        h.add_meta_context(c)
    h.connect_uri(uri)
    got = {}
    h.block_status(length, offset,
                   lambda ctx, off, entries, err: got.setdefault(ctx, list(entries)) and 0, flags)
    h.shutdown()
    return got


vm, ro = image("vm.img", SIZE), image("ro.img", SIZE)
conf = os.path.join(T, "uringnbd.conf")
with open(conf, "w") as f:
    f.write(f"[global]\ncontrol = {CTL}\n[export vm]\npath = {vm}\nbitmaps = a,b\n"
            f"[export ro]\npath = {ro}\nreadonly = true\nbitmaps = r\n")
d = Daemon(["-c", conf])
while not os.path.exists(CTL):
    time.sleep(0.01)

# ---- what clients see ----
out = subprocess.run(["nbdinfo", d.uri("vm")], capture_output=True, text=True).stdout
check("qemu:dirty-bitmap:a" in out and "qemu:dirty-bitmap:b" in out,
      f"nbdinfo does not list both bitmaps: {out}")
for q, want in (([], ["base:allocation", "qemu:dirty-bitmap:a", "qemu:dirty-bitmap:b"]),
                (["qemu:"], ["qemu:dirty-bitmap:a", "qemu:dirty-bitmap:b"]),
                (["qemu:dirty-bitmap:"], ["qemu:dirty-bitmap:a", "qemu:dirty-bitmap:b"]),
                (["qemu:dirty-bitmap:b"], ["qemu:dirty-bitmap:b"]),
                (["qemu:dirty-bitmap:c", "qemu:dirty"], []), (["base:"], ["base:allocation"])):
    got = contexts_of(d.uri("vm"), q)
    check(got == want, f"LIST_META_CONTEXT {q}: {got}, expected {want}")
h = nbd.NBD()
h.connect_uri(d.uri("vm"))
h.pwrite(b"x" * 5000, 3 * GRAN - 100)          # granules 2 and 3
h.zero(GRAN, 10 * GRAN)                         # 10
h.trim(1, 20 * GRAN + 7)                        # 20
h.pwrite(b"y" * 4096, SIZE - 4096, nbd.CMD_FLAG_FUA)  # the last
h.shutdown()
dirty = [[2 * GRAN, 4 * GRAN], [10 * GRAN, 11 * GRAN], [20 * GRAN, 21 * GRAN],
         [SIZE - GRAN, SIZE]]
got = block_status(d.uri("vm"), ["base:allocation", "qemu:dirty-bitmap:a",
                                 "qemu:dirty-bitmap:b"], SIZE, 0)
check(set(got) == {"base:allocation", "qemu:dirty-bitmap:a", "qemu:dirty-bitmap:b"},
      f"one BLOCK_STATUS answered {sorted(got)}")
for c in ("qemu:dirty-bitmap:a", "qemu:dirty-bitmap:b"):
    e, pos, ranges = got[c], 0, []
    for i in range(0, len(e), 2):
        if e[i + 1] & 1:
            ranges.append([pos, pos + e[i]])
        pos += e[i]
    check(ranges == dirty and pos == SIZE, f"{c}: dirty {ranges}, expected {dirty}")
one = block_status(d.uri("vm"), ["qemu:dirty-bitmap:a"], 8 * GRAN, GRAN + 5, nbd.CMD_FLAG_REQ_ONE)
check(one["qemu:dirty-bitmap:a"] == [GRAN - 5, 0], f"REQ_ONE: {one}")
m = json.loads(subprocess.run(
    ["qemu-img", "map", "--output=json", "--image-opts",
     f"driver=nbd,server.type=unix,server.path={d.sock},export=vm,"
     "x-dirty-bitmap=qemu:dirty-bitmap:a"], capture_output=True, text=True, check=True).stdout)
qdirty = [[x["start"], x["start"] + x["length"]] for x in m if not x["data"]]
check(qdirty == dirty, f"qemu-img map x-dirty-bitmap: {qdirty}")
print("contexts listed and chosen; base:allocation and two bitmaps in one BLOCK_STATUS; "
      "REQ_ONE; qemu-img map with x-dirty-bitmap agrees")

# ---- bad input to the control socket ----
for bad in ("a/b", "", "x" * 101, ".hidden", "sp ace", "a:b", "a@b"):
    msg = ctl("checkpoint", "vm", "a", bad, ok=False)
    check("InvalidArgument" in msg or "name" in msg, f"checkpoint name {bad!r}: {msg}")
check("no bitmap" in ctl("checkpoint", "vm", "zz", "c1", ok=False), "unknown bitmap")
check("no export" in ctl("checkpoint", "nope", "a", "c1", ok=False), "unknown export")
check("read-only" in ctl("checkpoint", "ro", "r", "c1", ok=False), "read-only export")
msg = ctl("checkpoint", "vm", "a", "c1", ok=False)
check("reflink" in msg and "bitmap-only" in msg, f"a checkpoint on ext4: {msg}")
check(not os.path.exists(vm + "@c1") and not os.path.exists(vm + "@c1.tmp"),
      "a refused reflink left a file behind")
b = ctl("bitmaps", "vm")
check([x["dirty-granules"] for x in b["bitmaps"]] == [5, 5] and b["checkpoints"] == [],
      f"a refused checkpoint changed the bitmaps: {b}")
b = ctl("checkpoint", "vm", "a", "c1", "--bitmap-only")
ck = b["checkpoints"][0]
check(ck["name"] == "c1" and ck["snapshot"] is None and ck["dirty-granules"] == 5 and
      [x["dirty-granules"] for x in b["bitmaps"]] == [0, 5], f"bitmap-only checkpoint: {b}")
check("exists already" in ctl("checkpoint", "vm", "a", "c1", "--bitmap-only", ok=False),
      "a checkpoint name used twice")
frozen = block_status(d.uri("vm@c1"), ["qemu:dirty-bitmap:a"], SIZE, 0)["qemu:dirty-bitmap:a"]
check(sum(frozen[i] for i in range(0, len(frozen), 2) if frozen[i + 1] & 1) == 5 * GRAN,
      f"vm@c1's frozen bitmap: {frozen}")
# Removals while a client is attached are refused.
h = nbd.NBD()
h.connect_uri(d.uri("vm@c1"))
check("Busy" in ctl("checkpoint-remove", "vm", "c1", ok=False), "checkpoint-remove, attached")
h.shutdown()
h = nbd.NBD()
h.connect_uri(d.uri("vm"))
time.sleep(0.2)
check("Busy" in ctl("bitmap-remove", "vm", "b", ok=False), "bitmap-remove, attached")
h.shutdown()
ctl_settled("checkpoint-remove", "vm", "c1")
ctl_settled("bitmap-remove", "vm", "b")
check(contexts_of(d.uri("vm"), []) == ["base:allocation", "qemu:dirty-bitmap:a"],
      "a removed bitmap is still offered")
h = nbd.NBD()
h.connect_uri(d.uri("vm"))
h.pwrite(b"z" * 512, 30 * GRAN)
h.shutdown()
b = ctl("bitmap-clear", "vm", "a")
check(b["bitmaps"][0]["dirty-granules"] == 0, f"bitmap-clear: {b}")
print("bad names, unknown bitmap and export, read-only export, reflink on ext4 refused with "
      "nothing changed; bitmap-only checkpoint; removals refused while attached; clear")

# ---- bad sidecars: each refused clearly, the other exports serve on ----
other = image("other.img", SIZE)
for what, setup, want in (
        ("truncated", lambda p: (shutil.copyfile(vm + ".bitmaps", p),
                                 os.truncate(p, 5000)), "truncated"),
        ("another image's", lambda p: shutil.copyfile(vm + ".bitmaps", p), "another image"),
        ("not a sidecar", lambda p: open(p, "wb").write(b"hello" * 2000), "not a uringnbd"),
        ("a newer format", lambda p: (shutil.copyfile(vm + ".bitmaps", p),
                                      open(p, "r+b").write(b"URNBDBMP\x09")), "version")):
    side = os.path.join(T, "other.bitmaps")
    setup(side)
    msg = ctl("export-add", "other", other, "bitmaps=x", f"bitmap-file={side}", ok=False)
    check(want in msg, f"a {what} sidecar: {msg}")
for g in ("3000", "2K", "2G"):
    msg = ctl("export-add", "other", other, "bitmaps=x", f"bitmap-granularity={g}", ok=False)
    check("power of two" in msg, f"bitmap-granularity={g}: {msg}")
msg = ctl("export-add", "other", other, "bitmaps=bad/name", ok=False)
check("InvalidArgument" in msg and "letters" in msg, f"export-add bitmaps=bad/name: {msg}")
h = nbd.NBD()
h.connect_uri(d.uri("vm"))
check(h.pread(5000, 3 * GRAN - 100) == b"x" * 5000, "vm stopped serving")
h.shutdown()
r = subprocess.run([URINGNBD, "-U", os.path.join(S, "x.sock"), "-e", f"v={vm},bitmap=a/b"],
                   capture_output=True, text=True)
check(r.returncode != 0 and "letters" in r.stderr, f"--export ...,bitmap=a/b: {r.stderr}")
print("truncated, foreign, junk and newer sidecars refused; invalid names in export-add and "
      "--export refused; the export serves on")

# ---- a full filesystem under the sidecar (root: a small loop-mounted ext4) ----
if os.getuid() == 0 and shutil.which("mkfs.ext4"):
    fs, mnt = os.path.join(T, "small.fs"), os.path.join(T, "small.mnt")
    open(fs, "wb").truncate(8 << 20)
    subprocess.run(["mkfs.ext4", "-q", fs], check=True)
    os.makedirs(mnt)
    subprocess.run(["mount", "-o", "loop", fs, mnt], check=True)
    try:
        side = os.path.join(mnt, "other.bitmaps")
        ctl("export-add", "other", other, "bitmaps=x", f"bitmap-file={side}")
        h = nbd.NBD()
        h.connect_uri(d.uri("other"))
        h.pwrite(b"q" * 4096, 0)
        fd = os.open(os.path.join(mnt, "fill"), os.O_WRONLY | os.O_CREAT)
        for chunk in (1 << 20, 4096):
            try:
                while True:
                    os.write(fd, b"\1" * chunk)
            except OSError:
                pass
        os.fsync(fd)
        os.close(fd)
        msg = ctl("checkpoint", "other", "x", "full", "--bitmap-only", ok=False)
        check("No space" in msg, f"a checkpoint with the sidecar's filesystem full: {msg}")
        h.pwrite(b"r" * 4096, 40 * GRAN)  # bits of a preallocated sidecar: still written
        b = ctl("bitmaps", "other")
        check(b["bitmaps"][0]["dirty-granules"] == 2 and b["checkpoints"] == [],
              f"after ENOSPC: {b}")
        h.shutdown()
        ctl_settled("export-remove", "other")
        print("a full filesystem under the sidecar: the checkpoint refused (ENOSPC), writes "
              "go on and are marked")
    finally:
        # Lazily: the daemon may still hold the sidecar there if a check failed.
        subprocess.run(["umount", "-l", mnt])
else:
    print("not root: the full-filesystem case is left out")

# ---- a reload keeps checkpoints as exports ----
ctl("checkpoint", "vm", "a", "c2", "--bitmap-only")
d.proc.send_signal(signal.SIGHUP)
time.sleep(0.5)
names = [e["name"] for e in ctl("exports")]
check("vm@c2" in names, f"after a reload the exports are {names}")
d.stop()
print("a reload keeps vm@c2")
