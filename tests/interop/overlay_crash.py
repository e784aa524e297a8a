#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""An overlay survives SIGKILL: four connections write 4 KiB blocks (each
block once, with its own pattern; some FUA, the rest followed now and then
by a FLUSH) over a random base while the daemon is killed at a random
moment, three times, restarting on the same overlay file each time. After
each restart: every write acknowledged with FUA, or before an acknowledged
FLUSH, reads back; and in the overlay file itself no granule whose map bit
is set holds anything but the base's bytes or blocks that were written
(a bit on disk before its data would show the sparse file's zeroes)."""
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time

import nbd

URINGNBD = os.path.abspath(os.environ.get("URINGNBD", "build/uringnbd"))
BASE = os.environ.get("TEST_TMPDIR", "build/tmp")
os.makedirs(BASE, exist_ok=True)
T = tempfile.mkdtemp(prefix="overlay_crash.", dir=BASE)
S = tempfile.mkdtemp(prefix="uringnbd-test.", dir="/tmp")
SOCK = os.path.join(S, "sock")
LOG = os.path.join(T, "daemon.log")
SIZE = 16 << 20
G = 32 << 10
B = 4096
proc = None


def fail(msg):
    print(f"FAIL overlay_crash.py: {msg}", file=sys.stderr)
    if proc and proc.poll() is None:
        proc.kill()
    print("---- daemon log ----\n" + open(LOG).read()[-3000:], file=sys.stderr)
    sys.exit(1)


def start():
    global proc
    if os.path.exists(SOCK):
        os.unlink(SOCK)
    proc = subprocess.Popen([URINGNBD, "-U", SOCK, "--overlay", ov, base],
                            stderr=open(LOG, "a"))
    for _ in range(1000):
        if os.path.exists(SOCK):
            return
        if proc.poll() is not None:
            fail("daemon exited at start (the overlay was refused?)")
        time.sleep(0.01)
    fail("daemon did not start")


def pattern(blk, gen):
    return struct.pack(">QQ", blk, gen) * (B // 16)


seed = int(os.environ.get("OVERLAY_SEED", random.randrange(1 << 30)))
print(f"seed {seed}")
rng = random.Random(seed)
base = os.path.join(T, "base.img")
base_bytes = rng.randbytes(SIZE)
open(base, "wb").write(base_bytes)
ov = os.path.join(T, "disk.ovl")
blocks = list(range(SIZE // B))
rng.shuffle(blocks)
written = {}       # block -> pattern of every write sent (acknowledged or not)
durable = {}       # block -> pattern acknowledged durable
lock = threading.Lock()
stop_writing = threading.Event()


def writer(k, gen, mine):
    try:
        h = nbd.NBD()
        h.connect_unix(SOCK)
        since_flush = []
        for blk in mine:
            if stop_writing.is_set():
                break
            data = pattern(blk, gen)
            fua = rng.random() < 0.3
            with lock:
                written[blk] = data
            h.pwrite(data, blk * B, nbd.CMD_FLAG_FUA if fua else 0)
            if fua:
                with lock:
                    durable[blk] = data
            else:
                since_flush.append(blk)
            if len(since_flush) >= 8:
                h.flush()
                with lock:
                    for b2 in since_flush:
                        durable[b2] = written[b2]
                since_flush = []
    except nbd.Error:
        pass  # the daemon was killed


cursor = 0
for gen in range(1, 4):
    start()
    per = 330
    ts = []
    for k in range(4):
        mine = blocks[cursor:cursor + per]
        cursor += per
        ts.append(threading.Thread(target=writer, args=(k, gen, mine)))
    for t in ts:
        t.start()
    time.sleep(0.05 + rng.random() * 0.25)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stop_writing.set()
    for t in ts:
        t.join()
    stop_writing.clear()

    # The overlay file itself: each set bit's granule holds base bytes or written blocks.
    with open(ov, "rb") as f:
        hdr = f.read(4096)
        map_off, map_len, data_off = struct.unpack("<QQQ", hdr[32:56])
        f.seek(map_off)
        bitmap = f.read(map_len)
        bad = 0
        for g in range(SIZE // G):
            if not bitmap[g // 8] >> (g % 8) & 1:
                continue
            f.seek(data_off + g * G)
            gran = f.read(G)
            for i in range(G // B):
                blk = g * G // B + i
                got = gran[i * B:(i + 1) * B]
                ok = got == base_bytes[blk * B:(blk + 1) * B] or got == written.get(blk)
                if not ok:
                    bad += 1
        if bad:
            fail(f"round {gen}: {bad} blocks of mapped granules hold neither the base nor a write")
    start()
    h = nbd.NBD()
    h.connect_unix(SOCK)
    for blk, data in durable.items():
        if h.pread(B, blk * B) != data:
            fail(f"round {gen}: block {blk} was acknowledged durable and is lost")
    h.shutdown()
    proc.terminate()
    if proc.wait(10) != 0:
        fail("daemon did not exit cleanly after the check")
    print(f"round {gen}: {len(durable)} durable writes present, mapped granules consistent")
with open(base, "rb") as f:
    if f.read() != base_bytes:
        fail("the base changed")
print("overlay: three SIGKILLs during writes, nothing acknowledged durable lost")
