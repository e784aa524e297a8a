#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Memory per idle connection: N clients (10,000 by default) each negotiate
an export with NBD_OPT_EXPORT_NAME and then stay idle; the resident memory
of each server (its whole process tree) is compared before and after.
uringnbd, nbdkit (file plugin) and qemu-nbd on the same image, each on its
own unix socket. Not a test: it prints figures.

Environment: IDLE_CONNS (10000), URINGNBD (build/uringnbd), BENCH_DIR.
"""
import os
import resource
import socket
import struct
import subprocess
import sys
import time

N = int(os.environ.get("IDLE_CONNS", "10000"))
URINGNBD = os.environ.get("URINGNBD", "build/uringnbd")
DIR = os.path.abspath(os.environ.get("BENCH_DIR", "build/bench"))
SOCKDIR = "/tmp/uringnbd-bench"


def rss_kib(pid):
    total = 0
    pids = [pid]
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    pids += [int(p) for p in out.split()]
    for p in pids:
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def recv_exact(s, n, what):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise RuntimeError(f"closed {what}")
        data += chunk
    return data


def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(path)
    recv_exact(s, 18, "before the greeting")
    s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    s.sendall(struct.pack(">QII", 0x49484156454F5054, 1, 0))  # EXPORT_NAME ""
    recv_exact(s, 10, "during EXPORT_NAME")
    return s


def measure(name, argv, sock):
    if os.path.exists(sock):
        os.unlink(sock)
    proc = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    for _ in range(500):
        if os.path.exists(sock):
            break
        time.sleep(0.02)
    # Settled: uringnbd faults in its buffers on a thread of its own after start-up.
    before, deadline = -1, time.time() + 10
    while time.time() < deadline:
        time.sleep(0.3)
        now = rss_kib(proc.pid)
        if now == before:
            break
        before = now
    conns = []
    try:
        for _ in range(N):
            conns.append(connect(sock))
        time.sleep(5)  # long enough for uringnbd to give quiet areas back
        after = rss_kib(proc.pid)
        print(f"{name:<10} {N} idle connections: {(after - before) / N:7.1f} KiB each "
              f"(RSS {before} -> {after} KiB)", flush=True)
    except Exception as e:  # a server that cannot take that many says so
        print(f"{name:<10} failed after {len(conns)} connections: {e}", flush=True)
    finally:
        for s in conns:
            s.close()
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = N + 100
    if hard < need:
        print(f"skipped: {N} connections need {need} descriptors, the hard limit is {hard}")
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.makedirs(DIR, exist_ok=True)
    os.makedirs(SOCKDIR, exist_ok=True)
    img = f"{DIR}/idle.img"
    with open(img, "wb") as f:
        f.truncate(1 << 30)
    measure("uringnbd", [URINGNBD, "-U", f"{SOCKDIR}/idle-u.sock", "--max-connections", "0",
                         "--handshake-timeout", "0", img], f"{SOCKDIR}/idle-u.sock")
    measure("nbdkit", ["nbdkit", "-f", "-U", f"{SOCKDIR}/idle-k.sock", "file", f"file={img}",
                       "cache=none"], f"{SOCKDIR}/idle-k.sock")
    measure("qemu-nbd", ["qemu-nbd", "-k", f"{SOCKDIR}/idle-q.sock", "-f", "raw", "-t",
                         "-e", str(N + 10), "--cache=none", "--aio=io_uring", img],
            f"{SOCKDIR}/idle-q.sock")


if __name__ == "__main__":
    sys.exit(main())
