#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Bad input on the control socket, sent raw: garbage, NUL bytes, invalid
UTF-8, deep nesting, unknown commands and members, wrong types, missing
arguments each get an error object (and the connection stays usable);
ids are echoed; pipelined requests are answered in order; a half-closed
client still gets its answer; a line over 64 KiB gets an error and a
close; a 17th client waits until a slot holder has been idle 3 s (then
that one is closed for it); a client that sends thousands of
requests and never reads is paused and then closed after 10 s, its
memory bounded, while an NBD client is served at full speed throughout."""
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from testlib import S, Daemon, check, image  # noqa: E402

import nbd  # noqa: E402

CTL = os.path.join(S, "ctl")
# Under ASan, freed replies would sit in its quarantine and look like growth.
os.environ["ASAN_OPTIONS"] = ":".join(filter(None, (os.environ.get("ASAN_OPTIONS"),
                                                    "quarantine_size_mb=1")))
d = Daemon(["--control", CTL, image("disk.img")])


def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(CTL)
    return s


def replies(s, n):
    """n reply lines, parsed."""
    buf = b""
    out = []
    while len(out) < n:
        chunk = s.recv(65536)
        check(chunk, f"connection closed after {len(out)} of {n} replies")
        buf += chunk
        while b"\n" in buf and len(out) < n:
            line, buf = buf.split(b"\n", 1)
            out.append(json.loads(line))
    return out


def ask(s, raw):
    s.sendall(raw if raw.endswith(b"\n") else raw + b"\n")
    return replies(s, 1)[0]


def error_class(r):
    check("error" in r, f"expected an error, got {r}")
    return r["error"]["class"]


s = connect()
cases = [
    (b"\xff\xfe garbage {{{", "InvalidArgument"),
    (b'{"command": "version"\x00}', "InvalidArgument"),
    (b'{"command": "export-add", "arguments": {"name": "\xc3\x28", "path": "x"}}',
     "InvalidArgument"),
    (b"[" * 5000 + b"]" * 5000, "InvalidArgument"),
    (b"[1, 2]", "InvalidArgument"),
    (b'"version"', "InvalidArgument"),
    (b'{"command": "version"} {"command": "version"}', "InvalidArgument"),
    (b'{"command": "no-such-command"}', "CommandNotFound"),
    (b'{"command": 42}', "InvalidArgument"),
    (b'{"execute": "version"}', "InvalidArgument"),
    (b'{"command": "version", "arguments": []}', "InvalidArgument"),
    (b'{"command": "disconnect", "arguments": {"id": "7"}}', "InvalidArgument"),
    (b'{"command": "disconnect", "arguments": {}}', "InvalidArgument"),
    (b'{"command": "disconnect", "arguments": {"id": -1}}', "InvalidArgument"),
    (b'{"command": "export-add", "arguments": {"name": "x"}}', "InvalidArgument"),
    (b'{"command": "export-add", "arguments": {"name": "x", "path": "/nonexistent"}}',
     "GenericError"),
    (b'{"command": "export-add", "arguments": {"name": "x", "path": "y", "colour": "red"}}',
     "InvalidArgument"),
    (b'{"command": "export-add", "arguments": {"name": "' + b"n" * 5000 + b'", "path": "y"}}',
     "InvalidArgument"),
    (b'{"command": "export-remove", "arguments": {"name": "nosuch"}}', "NotFound"),
    (b'{"command": "export-set", "arguments": {"name": "", "readonly": "yes"}}',
     "InvalidArgument"),
    (b'{"command": "log-level", "arguments": {"level": 3}}', "InvalidArgument"),
]
for raw, cls in cases:
    got = error_class(ask(s, raw))
    check(got == cls, f"{raw[:60]!r}: class {got}, expected {cls}")
# Still usable, ids echoed whatever their type, blank lines ignored.
for rid in ("abc", 7, [1, {"x": None}], None):
    r = ask(s, b"\n\r\n" + json.dumps({"id": rid, "command": "version"}).encode())
    check(r.get("id") == rid and r["return"]["package"] == "uringnbd", f"id {rid}: {r}")
# Pipelined: answered in order.
s.sendall(b"".join(json.dumps({"id": i, "command": "stats"}).encode() + b"\n"
                   for i in range(50)))
check([r["id"] for r in replies(s, 50)] == list(range(50)), "pipelined replies out of order")
s.close()

# Half-closed after the request: still answered.
s = connect()
s.sendall(b'{"id": 1, "command": "exports"}\n')
s.shutdown(socket.SHUT_WR)
r = replies(s, 1)[0]
check(r["id"] == 1 and r["return"][0]["name"] == "", f"half-closed client: {r}")
check(s.recv(1) == b"", "the daemon did not close after answering a half-closed client")
s.close()

# A line over 64 KiB: an error, then the connection closes.
s = connect()
try:
    s.sendall(b'{"command": "version", "id": "' + b"x" * (70 << 10) + b'"}\n')
except (BrokenPipeError, ConnectionResetError):
    pass
r = replies(s, 1)[0]
check("longer than 65536" in r["error"]["desc"], f"over-long line: {r}")
try:
    closed = s.recv(1) == b""
except ConnectionResetError:
    closed = True  # it closed with the rest of the line unread
check(closed, "the daemon kept a connection that sent an over-long line")
s.close()

# At most 16 clients.
many = [connect() for _ in range(16)]
for c in many:
    check(ask(c, b'{"command": "version"}')["return"]["package"] == "uringnbd", "16 clients")
extra = connect()
t0 = time.monotonic()
# Its line in two parts: the waiting room looks again until the rest has come.
extra.sendall(b'{"command": ')
time.sleep(1.2)  # longer than the control loop's 1 s check, which once stopped the looking
r = ask(extra, b'"version"}')
waited = time.monotonic() - t0
check(r.get("return", {}).get("package") == "uringnbd", f"17th client: {r}")
check(2.0 <= waited <= 8.0, f"17th client answered after {waited:.1f} s: expected once a "
      "holder had been idle 3 s")
gone = 0
for c in many:
    c.settimeout(0.5)
    try:
        gone += c.recv(1) == b""
    except socket.timeout:
        pass
    except ConnectionResetError:
        gone += 1
check(gone == 1, f"{gone} of the 16 idle clients were closed for the 17th, expected 1")
for c in many + [extra]:
    c.close()


def rss_kib():
    for line in open(f"/proc/{d.proc.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# A client that never reads: paused, bounded, closed after 10 s; NBD goes on.
d.wait_memory()
rss0 = rss_kib()
slow = connect()
slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
slow.setblocking(False)
req = b'{"command": "exports"}\n' * 1000
sent = 0
deadline = time.time() + 3
while time.time() < deadline:
    try:
        sent += slow.send(req)
    except BlockingIOError:
        time.sleep(0.01)
h = nbd.NBD()
h.connect_unix(d.sock)
t0 = time.time()
lat = []
while time.time() - t0 < 2:
    t = time.time()
    h.pread(4096, 0)
    lat.append(time.time() - t)
lat.sort()
check(lat[len(lat) * 99 // 100] < 0.05, f"NBD p99 {lat[len(lat) * 99 // 100]:.3f} s while a "
      "control client stalls")
grown = rss_kib() - rss0
check(grown < 16 << 10, f"the daemon grew by {grown} KiB for a client that never reads")
print(f"a client that never reads: sent {sent} request bytes, daemon RSS +{grown} KiB, "
      f"{len(lat)} NBD reads meanwhile (p99 {lat[len(lat) * 99 // 100] * 1e3:.2f} ms)")
deadline = time.time() + 20
while "read none of its replies" not in d.log() and time.time() < deadline:
    time.sleep(0.2)
check("read none of its replies" in d.log(), "the stalled control client was not closed")
slow.close()
h.shutdown()
# The daemon is still answering.
s = connect()
check(ask(s, b'{"command": "version"}')["return"]["version"], "after the bad clients")
s.close()
d.stop()
print("control_input: every bad input answered or cut off; the daemon serves on")
