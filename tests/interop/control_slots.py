#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""The control socket stays usable under a crowd: 300 idle clients, each
replaced 0.1 s after the daemon closes it, and 16 slow ones that dribble a
request a byte at a time, hammer it for 8 s; meanwhile the operator's
uringnbdctl commands are each answered within 1 s (a slot holder idle for
the grace period is closed for it). A client whose command is running is
never the one closed: a slow 'stats' reader keeps its slot. Bounded: every
loop ends at a deadline."""
import os
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from testlib import S, URINGNBDCTL, Daemon, check, image  # noqa: E402

CTL = os.path.join(S, "ctl")
d = Daemon(["--control", CTL, image("disk.img")])
HAMMER_S = 8.0
stop = threading.Event()
counts = {"idle_connects": 0, "slow_bytes": 0}


def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.connect(CTL)
    except (BlockingIOError, InterruptedError):
        pass
    return s


def idle_crowd():
    """300 idle clients; each one closed by the daemon comes back 0.1 s later."""
    import selectors
    sel = selectors.DefaultSelector()
    again = []  # (when, count) of clients to connect again
    for _ in range(300):
        sel.register(connect(), selectors.EVENT_READ)
        counts["idle_connects"] += 1
    while not stop.is_set():
        now = time.monotonic()
        while again and again[0] <= now:
            again.pop(0)
            sel.register(connect(), selectors.EVENT_READ)
            counts["idle_connects"] += 1
        for key, _ in sel.select(timeout=0.02):
            s = key.fileobj
            try:
                gone = s.recv(4096) == b""
            except BlockingIOError:
                gone = False
            except OSError:
                gone = True
            if gone:
                sel.unregister(s)
                s.close()
                again.append(time.monotonic() + 0.1)
    for key in list(sel.get_map().values()):
        key.fileobj.close()


def slow_client():
    """A request dribbled a byte every 50 ms, padded so that it never ends in the test."""
    line = b'{"command": "version"' + b" " * 4000 + b"}\n"
    s = connect()
    i = 0
    while not stop.is_set():
        try:
            s.send(line[i:i + 1])
            i = (i + 1) % len(line)
            counts["slow_bytes"] += 1
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            s.close()
            s = connect()  # closed for someone else: back in the crowd
            i = 0
        time.sleep(0.05)
    s.close()


# A client with a command running keeps its slot: a stats it reads slowly.
busy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
busy.connect(CTL)
busy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

threads = [threading.Thread(target=idle_crowd)] + \
          [threading.Thread(target=slow_client) for _ in range(16)]
for t in threads:
    t.start()
try:
    time.sleep(4.0)  # longer than the grace period: the first holders are idle by now
    worst = 0.0
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < HAMMER_S - 4.0:
        t0 = time.monotonic()
        p = subprocess.run([URINGNBDCTL, "-c", CTL, "exports"], capture_output=True, text=True,
                           timeout=10)
        took = time.monotonic() - t0
        check(p.returncode == 0, f"uringnbdctl exports failed: {p.stdout}{p.stderr}")
        worst = max(worst, took)
        n += 1
        time.sleep(0.2)
    print(f"{n} operator commands, slowest answered in {worst * 1000:.0f} ms; "
          f"{counts['idle_connects']} idle connects, {counts['slow_bytes']} slow bytes")
    check(worst <= 1.0, f"an operator command took {worst:.2f} s (expected <= 1 s)")
    check(counts["idle_connects"] > 300, "the idle crowd was never closed for the operator")
    check(counts["slow_bytes"] > 16 * 20, f"the slow clients sent only {counts['slow_bytes']} "
          "bytes: the test itself was starved")
finally:
    stop.set()
    for t in threads:
        t.join(timeout=10)
busy.close()
# The daemon is fine, and still serves its control socket.
p = subprocess.run([URINGNBDCTL, "-c", CTL, "version"], capture_output=True, text=True,
                   timeout=10)
check(p.returncode == 0, f"version after the crowd: {p.stderr}")
d.stop()
print("ok")
