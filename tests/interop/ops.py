#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Operations: the config file (errors name file:line; the command line
overrides it), SIGHUP reload (exports added and removed while a client stays
connected to a removed one; a bad file keeps the old configuration),
sd_notify (READY, STATUS, RELOADING, STOPPING read from a NOTIFY_SOCKET this
test owns), socket activation of two named sockets with
systemd-socket-activate, SIGTERM with writes in flight (every acknowledged
write is in the file; the rest see ESHUTDOWN or a closed connection), and a
second SIGTERM exiting at once. Uses Debian's python3-libnbd."""
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import nbd

URINGNBD = os.path.abspath(os.environ.get("URINGNBD", "build/uringnbd"))
BASE = os.environ.get("TEST_TMPDIR", "build/tmp")
os.makedirs(BASE, exist_ok=True)
T = tempfile.mkdtemp(prefix="ops.", dir=BASE)
S = tempfile.mkdtemp(prefix="uringnbd-test.", dir="/tmp")
procs = []


def fail(msg):
    print(f"FAIL ops.py: {msg}", file=sys.stderr)
    for p in procs:
        if p.poll() is None:
            p.kill()
    log = os.path.join(T, "daemon.log")
    if os.path.exists(log):
        print("---- daemon log ----\n" + open(log).read()[-4000:], file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def image(name, size=4 << 20):
    p = os.path.join(T, name)
    with open(p, "wb") as f:
        f.truncate(size)
    return p


def write_config(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)


class Notify:
    """A NOTIFY_SOCKET this test owns."""

    def __init__(self):
        self.path = os.path.join(S, "notify")
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.s.bind(self.path)
        self.seen = []

    def wait_for(self, key, timeout=10):
        end = time.time() + timeout
        while time.time() < end:
            for m in self.seen:
                if key in m:
                    self.seen.remove(m)
                    return m
            r, _, _ = select.select([self.s], [], [], max(0, end - time.time()))
            if r:
                self.seen.append(self.s.recv(4096).decode())
        fail(f"no {key} on NOTIFY_SOCKET (saw {self.seen})")


def start(args, env=None, wait_sock=None):
    log = open(os.path.join(T, "daemon.log"), "a")
    p = subprocess.Popen([URINGNBD] + args, stderr=log, env=env)
    procs.append(p)
    if wait_sock:
        end = time.time() + 10
        while not os.path.exists(wait_sock):
            check(p.poll() is None, f"daemon exited during start-up: {args}")
            check(time.time() < end, "daemon did not start")
            time.sleep(0.01)
    return p


def stop(p, expect=0):
    p.send_signal(signal.SIGTERM)
    try:
        rc = p.wait(10)
    except subprocess.TimeoutExpired:
        fail("daemon did not exit within 10 s of SIGTERM")
    check(rc == expect, f"daemon exited {rc}, expected {expect}")


def connect(sock, name=""):
    h = nbd.NBD()
    h.set_export_name(name)
    h.connect_unix(sock)
    return h


def exports_of(sock):
    out = subprocess.run(["nbdinfo", "--list", "--json", f"nbd+unix:///?socket={sock}"],
                         capture_output=True, text=True, timeout=30).stdout
    import json
    return sorted(e["export-name"] for e in json.loads(out)["exports"])


def config_errors():
    cases = [
        ("[global]\nthreads = 2\nbogus = 1\n", ":3: unknown key in [global]"),
        ("[global]\nthreads = 0\n", ":2: threads: expected 1 to 256"),
        ("[global]\nmax-connections = many\n",
         ":2: max-connections: expected 0 (no limit) to 1000000"),
        ("[global]\nhandshake-timeout = 99999\n",
         ":2: handshake-timeout: expected 0 (none) to 86400 seconds"),
        ("[exports]\n", ":1: unknown section [exports]"),
        ("[export a]\npath = /x\nreadonly = maybe\n", ":3: readonly: expected true or false"),
        ("[export a]\ndescription = no path\n", ":1: [export a] has no path"),
        ("[export a]\npath=/x\n[export a]\npath=/y\n", ":3: export \"a\" defined twice"),
        ("[export a]\njunk\n", ":2: expected key = value"),
        ("path = /x\n", ":1: \"path\" outside a section"),
    ]
    conf = os.path.join(T, "bad.conf")
    for text, want in cases:
        write_config(conf, text)
        r = subprocess.run([URINGNBD, "--config", conf, "-U", os.path.join(S, "never")],
                           capture_output=True, text=True, timeout=10)
        check(r.returncode == 1, f"bad config accepted: {text!r}")
        check(conf + want in r.stderr, f"config error {want!r} not reported: {r.stderr!r}")
    r = subprocess.run([URINGNBD, "--config", os.path.join(T, "missing.conf")],
                       capture_output=True, text=True, timeout=10)
    check(r.returncode == 1 and "missing.conf" in r.stderr, "missing config file")


def config_and_reload():
    a, b, c = image("a.img"), image("b.img"), image("c.img")
    sock, sock2 = os.path.join(S, "sock"), os.path.join(S, "sock2")
    conf = os.path.join(T, "u.conf")
    write_config(conf, f"""# uringnbd test
[global]
unix = {sock}
threads = 2
log-level = info

[export a]
path = {a}
description = first

[export b]
path = {b}
readonly = true
""")
    notify = Notify()
    env = dict(os.environ, NOTIFY_SOCKET=notify.path)
    # The command line overrides the file: another socket, one more export.
    p = start(["--config", conf, "-U", sock2, "-e", f"cli={c}"], env=env, wait_sock=sock2)
    check(not os.path.exists(sock), "the file's unix socket was used despite -U")
    notify.wait_for("READY=1")
    st = notify.wait_for("STATUS=")
    check("3 exports" in st, f"STATUS does not count the exports: {st}")
    check(exports_of(sock2) == ["a", "b", "cli"], f"exports {exports_of(sock2)}")
    hb = connect(sock2, "b")
    check(hb.is_read_only(), "[export b] readonly = true not honoured")

    # A client stays on export a across a reload that removes it.
    ha = connect(sock2, "a")
    ha.pwrite(b"x" * 4096, 0)
    write_config(conf, f"""[global]
unix = {sock}
[export b]
path = {b}
readonly = true
[export new]
path = {c}
""")
    p.send_signal(signal.SIGHUP)
    notify.wait_for("RELOADING=1")
    notify.wait_for("READY=1")
    check(exports_of(sock2) == ["b", "cli", "new"], f"after reload: {exports_of(sock2)}")
    try:
        connect(sock2, "a")
        fail("a removed export still takes new connections")
    except nbd.Error:
        pass
    ha.pwrite(b"y" * 4096, 4096)
    check(ha.pread(8192, 0) == b"x" * 4096 + b"y" * 4096, "connection to a removed export broken")
    check(hb.pread(10, 0) == bytes(10), "connection to a kept export broken")
    hn = connect(sock2, "new")
    hn.pwrite(b"z" * 512, 0)

    # A bad file on reload: reported, the old configuration stays.
    write_config(conf, "[export broken\n")
    p.send_signal(signal.SIGHUP)
    notify.wait_for("READY=1")
    time.sleep(0.2)
    check(exports_of(sock2) == ["b", "cli", "new"], "a bad reload changed the exports")
    check("reload: \"" in open(os.path.join(T, "daemon.log")).read(), "bad reload not logged")
    ha.shutdown()
    hb.shutdown()
    hn.shutdown()
    stop(p)
    notify.wait_for("STOPPING=1")
    check(open(a, "rb").read(8192) == b"x" * 4096 + b"y" * 4096, "export a's data not in the file")


def socket_activation():
    img = image("sa.img")
    us = os.path.join(S, "sa.sock")
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    pnum = port.getsockname()[1]
    port.close()
    log = open(os.path.join(T, "daemon.log"), "a")
    p = subprocess.Popen(["systemd-socket-activate", "-l", us, "-l", f"127.0.0.1:{pnum}",
                          "--fdname=unix:tcp", URINGNBD, img], stderr=log)
    procs.append(p)
    end = time.time() + 10
    while not os.path.exists(us):
        check(time.time() < end, "systemd-socket-activate did not listen")
        time.sleep(0.01)
    h = connect(us)
    h.pwrite(b"u" * 512, 0)
    h2 = nbd.NBD()
    h2.connect_tcp("127.0.0.1", str(pnum))
    check(h2.pread(512, 0) == b"u" * 512, "TCP socket from socket activation")
    h.shutdown()
    h2.shutdown()
    stop(p)
    text = open(os.path.join(T, "daemon.log")).read()
    check("fd 3 (unix)" in text and "fd 4 (tcp)" in text, "LISTEN_FDNAMES not used")


def sigterm_in_flight():
    img = image("t.img", 64 << 20)
    sock = os.path.join(S, "t.sock")
    p = start(["-U", sock, img], wait_sock=sock)
    h = connect(sock)
    bufs, cookies = [], []
    for i in range(256):
        b = nbd.Buffer.from_bytearray(bytearray([i % 251 + 1]) * 65536)
        bufs.append(b)
        try:
            cookies.append(h.aio_pwrite(b, i * 65536, flags=nbd.CMD_FLAG_FUA if i % 2 else 0))
        except nbd.Error:
            # After the signal the daemon may finish what it has and close first.
            check(i > 100 and h.aio_is_dead(), f"write {i} could not be queued")
            break
        if i == 100:
            # Some writes acknowledged and more on the wire, then the signal.
            end = time.time() + 10
            while h.aio_peek_command_completed() == 0 and time.time() < end:
                h.poll(100)
            p.send_signal(signal.SIGTERM)
    acked, refused = [], 0
    while h.aio_in_flight() > 0:
        try:
            h.poll(1000)
        except nbd.Error:
            break
        if p.poll() is not None and h.aio_in_flight() > 0 and h.aio_is_dead():
            break
    for i, ck in enumerate(cookies):
        try:
            if h.aio_command_completed(ck):
                acked.append(i)
        except nbd.Error as e:
            check(e.errnum in (None, 108, 107, 32, 104) or "dead" in str(e) or "closed" in str(e),
                  f"write {i}: unexpected error {e}")
            refused += 1
    try:
        rc = p.wait(10)
    except subprocess.TimeoutExpired:
        fail("daemon did not exit after SIGTERM with writes in flight")
    check(rc == 0, f"daemon exited {rc}")
    data = open(img, "rb").read()
    for i in acked:
        check(data[i * 65536:(i + 1) * 65536] == bytes([i % 251 + 1]) * 65536,
              f"acknowledged write {i} is not in the file")
    print(f"SIGTERM with 256 writes queued: {len(acked)} acknowledged and in the file, "
          f"{refused} refused or cut off")
    check(len(acked) > 0, "no write acknowledged")


def second_signal():
    img = image("s.img")
    sock = os.path.join(S, "s.sock")
    p = start(["-U", sock, img], wait_sock=sock)
    # A client idle in negotiation would hold a graceful stop for the grace period.
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    s.recv(18)
    t0 = time.time()
    p.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    try:
        rc = p.wait(3)
    except subprocess.TimeoutExpired:
        fail("a second SIGTERM did not exit at once")
    check(rc != 0 and time.time() - t0 < 3, f"second SIGTERM: exit {rc}")
    s.close()


try:
    config_errors()
    config_and_reload()
    socket_activation()
    sigterm_in_flight()
    second_signal()
finally:
    for p in procs:
        if p.poll() is None:
            p.kill()
    shutil.rmtree(S, ignore_errors=True)
print("ok")
