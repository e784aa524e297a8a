#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""A daemon through quiet spells, as a real one spends its life. Every
timeout is scaled down (handshake 1 s, idle 2 s, io 2 s) and the daemon
waits longer than each of them with no client at all: after start, between
bursts, with one worker kept busy by a client while the other sleeps, and
around a SIGUSR2 hand-over. After each spell every kind of client comes:
plain and TLS (PSK) NBD over the unix socket and TCP, the control socket, a
metrics scrape, an overlay export and an export with a dirty bitmap; all
must be served. Probes on both workers time each timeout from the client's
side: a client that sends nothing after the greeting (handshake), one that
negotiates and then sends nothing (idle), one that stops half-way through a
WRITE's payload (io); each must be closed at its configured time, within
100 ms, neither early nor late. The client that kept a worker busy must
see no error, across the hand-over too."""
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request

import nbd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from testlib import (T, S, URINGNBDCTL, Daemon, check, free_port, image, need,  # noqa: E402
                     raw_export_name, recvn)

need("psktool")
HS, IDLE, IO = 1.0, 2.0, 2.0
SPELL = 2.5                       # longer than every timeout
TOL = 0.1
SIZE = 16 << 20
GRAN = 65536
CTL = os.path.join(S, "ctl")
USOCK = os.path.join(S, "nbd.sock")
PORT, MPORT = free_port(), free_port()

psk = os.path.join(T, "keys.psk")
subprocess.run(["psktool", "-u", "alice", "-p", psk], check=True, capture_output=True)
plain, base, bm = image("plain.img", SIZE), image("base.img", SIZE), image("bm.img", SIZE)
conf = os.path.join(T, "uringnbd.conf")
with open(conf, "w") as f:
    f.write(f"[global]\nunix = {USOCK}\nbind = 127.0.0.1\nport = {PORT}\nthreads = 2\n"
            f"pool-size = 32M\ncontrol = {CTL}\nmetrics = 127.0.0.1:{MPORT}\n"
            f"tls = on\ntls-psk = {psk}\n"
            f"handshake-timeout = {int(HS)}\nidle-timeout = {int(IDLE)}\n"
            f"io-timeout = {int(IO)}\n"
            f"[export plain]\npath = {plain}\n"
            f"[export ov]\npath = {base}\noverlay = {os.path.join(T, 'ov.overlay')}\n"
            f"[export bm]\npath = {bm}\nbitmaps = b0\n")
d = Daemon(["-c", conf], sock=USOCK)
pid = d.proc.pid


def quiet(why):
    """A spell with no new client: longer than every timeout."""
    print(f"quiet {SPELL} s: {why}", flush=True)
    time.sleep(SPELL)


# ---- every kind of client ----
def uri(name, tcp, tls):
    if tcp:
        return f"nbd{'s' if tls else ''}://127.0.0.1:{PORT}/{name}"
    return f"nbd{'s' if tls else ''}+unix:///{name}?socket={USOCK}"


def handle(name, tcp=False, tls=False, ctx=None):
    h = nbd.NBD()
    if tls:
        h.set_tls(nbd.TLS_REQUIRE)
        h.set_tls_psk_file(psk)
        h.set_tls_username("alice")
    if ctx:
        h.add_meta_context(ctx)
    h.connect_uri(uri(name, tcp, tls))
    return h


def nbd_client(what, name, tcp, tls, off):
    h = handle(name, tcp, tls)
    data = (f"{what} {time.monotonic()} ".encode() * 200)[:4096]
    h.pwrite(data, off)
    check(h.pread(4096, off) == data, f"{what}: read back something else")
    h.shutdown()


def overlay_client(off):
    h = handle("ov")
    h.pwrite(b"o" * 4096, off)
    check(h.pread(4096, off) == b"o" * 4096, "overlay: read back something else")
    h.shutdown()
    with open(base, "rb") as f:
        f.seek(off)
        check(f.read(4096) == bytes(4096), "overlay: the base image was written")


def bitmap_client(off):
    h = handle("bm", ctx="qemu:dirty-bitmap:b0")
    h.pwrite(b"b" * 4096, off)
    got = []
    h.block_status(GRAN, off - off % GRAN,
                   lambda ctx, o, entries, err: got.extend(entries) or 0)
    h.shutdown()
    check(len(got) >= 2 and got[1] & 1, f"bitmap: granule at {off} not dirty: {got}")


def control_client():
    r = subprocess.run([URINGNBDCTL, "-c", CTL, "--json", "stats"], capture_output=True,
                       text=True, timeout=10)
    check(r.returncode == 0 and "workers" in r.stdout,
          f"control socket: rc {r.returncode}: {r.stdout[:200]} {r.stderr}")


def metrics_client():
    body = urllib.request.urlopen(f"http://127.0.0.1:{MPORT}/metrics", timeout=10).read()
    check(b"uringnbd_connections" in body, "metrics: no uringnbd_connections in the scrape")


# ---- timeouts, timed by the client ----
NBD_REQUEST_MAGIC = 0x25609513


def raw(tcp):
    s = socket.create_connection(("127.0.0.1", PORT)) if tcp else socket.socket(socket.AF_UNIX)
    if not tcp:
        s.connect(USOCK)
    s.settimeout(10)
    return s


def closed_after(s, t0):
    """Seconds from t0 until the daemon closes s (it sends nothing meanwhile)."""
    try:
        while True:
            got = s.recv(4096)
            if not got:
                break
    except (ConnectionResetError, BrokenPipeError):
        pass
    except socket.timeout:
        return None
    return time.monotonic() - t0


def probe_handshake(tcp):
    s = raw(tcp)
    t0 = time.monotonic()
    recvn(s, 18)
    return closed_after(s, t0)


def probe_idle(tcp):
    s = raw(tcp)
    raw_export_name(s, "plain")
    return closed_after(s, time.monotonic())


def probe_io(tcp):
    s = raw(tcp)
    raw_export_name(s, "plain")
    s.sendall(struct.pack(">IHHQQI", NBD_REQUEST_MAGIC, 0, 1, 7, 0, 65536) + b"w" * 100)
    return closed_after(s, time.monotonic())


PROBES = (("handshake", probe_handshake, HS), ("idle", probe_idle, IDLE),
          ("io", probe_io, IO))


def burst(round_name, base_off):
    """Every kind of client at once, and the timeout probes on both workers."""
    results, errors = {}, []

    def run(key, fn, *args):
        try:
            results[key] = fn(*args)
        except Exception as e:  # noqa: BLE001: any failure of any client fails the round
            errors.append(f"{key}: {e!r}")

    jobs = []
    for name, fn, _ in PROBES:
        for tcp in (False, True):
            for k in range(2):            # round-robin: one of each on each worker
                jobs.append((f"{name} probe {'tcp' if tcp else 'unix'} {k}", fn, tcp))
    off = base_off
    for tcp in (False, True):
        for tls in (False, True):
            what = f"{'TLS' if tls else 'plain'} NBD over {'TCP' if tcp else 'unix'}"
            jobs.append((what, nbd_client, what, "plain", tcp, tls, off))
            off += 4096
    jobs += [("overlay", overlay_client, off), ("bitmap", bitmap_client, off + 2 * GRAN),
             ("control socket", control_client), ("metrics", metrics_client)]
    threads = [threading.Thread(target=run, args=j) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    check(not any(t.is_alive() for t in threads), f"{round_name}: a client hung")
    check(not errors, f"{round_name}: clients not served: " + "; ".join(errors))
    for name, _, want in PROBES:
        got = sorted(v for k, v in results.items() if k.startswith(name + " probe"))
        print(f"{round_name}: {name} timeout {want:.0f} s closed after "
              + ", ".join("never" if v is None else f"{v:.3f}" for v in got), flush=True)
        for v in got:
            check(v is not None, f"{round_name}: a {name} probe was never closed")
            check(want - TOL <= v <= want + TOL,
                  f"{round_name}: {name} timeout of {want:.0f} s fired after {v:.3f} s")
    print(f"{round_name}: {len(jobs) - 12} clients served", flush=True)


# ---- a client that keeps one worker busy (bounded: it stops when told, or at 60 s) ----
busy_stop = threading.Event()
busy = {"n": 0, "err": None}


def busy_client():
    try:
        h = handle("plain")
        end = time.monotonic() + 60
        while not busy_stop.is_set() and time.monotonic() < end:
            h.pread(65536, (busy["n"] % 64) * 65536)
            busy["n"] += 1
        h.shutdown()
    except Exception as e:  # noqa: BLE001
        busy["err"] = repr(e)


quiet("after start")
burst("after start", 0)
quiet("between bursts")
burst("between bursts", 1 << 20)

bt = threading.Thread(target=busy_client)
bt.start()
quiet("one worker busy, the other idle")
burst("one worker busy", 2 << 20)

quiet("before a hand-over")
restarts = d.log().count("restarted with ")
os.kill(pid, signal.SIGUSR2)
deadline = time.monotonic() + 15
while d.log().count("restarted with ") == restarts:
    check(d.proc.poll() is None, f"the daemon exited ({d.proc.returncode}) on SIGUSR2")
    check(time.monotonic() < deadline, "no restart within 15 s of SIGUSR2")
    time.sleep(0.01)
burst("right after a hand-over", 3 << 20)
quiet("after a hand-over")
burst("after a hand-over", 4 << 20)

busy_stop.set()
bt.join(timeout=30)
check(not bt.is_alive(), "the busy client hung")
check(busy["err"] is None, f"the busy client failed: {busy['err']}")
check(busy["n"] > 100, f"the busy client did only {busy['n']} reads")
print(f"the busy client did {busy['n']} reads through the spells and the hand-over")

log = d.log()
for what, n in (("no export chosen within 1 s", 4 * 5), ("idle for 2 s (idle-timeout)", 4 * 5),
                ("made no progress for 2 s (io-timeout)", 4 * 5)):
    check(log.count(what) == n, f"the log says \"{what}\" {log.count(what)} times, not {n}")
d.stop()
print("every client served after every spell; every timeout fired on time")
