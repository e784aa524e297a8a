#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Idle connections do not wake their worker. 200 clients negotiate and
then send nothing (no idle-timeout set); once their buffers have been
given back, the worker's loop must pass at most a few times a second
(its oldest-request watch, and the stats queries of this test), not once
per connection per tick: each connection's deadlines are timers on the
worker's clock, and a quiet connection with no timeout to keep has none
armed. The previous binary's worker looked at its timers every 50 ms
while it had connections (80 passes in 4 s)."""
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from testlib import S, URINGNBDCTL, Daemon, check, image, raw_export_name  # noqa: E402

CONNS, SECONDS = 200, 4
CTL = os.path.join(S, "ctl")
d = Daemon(["--control", CTL, "--threads", "1", image("idle.img", 16 << 20)])
while not os.path.exists(CTL):
    time.sleep(0.01)


conns = []
for _ in range(CONNS):
    s = socket.socket(socket.AF_UNIX)
    s.connect(d.sock)
    raw_export_name(s)
    conns.append(s)


def passes():
    st = json.loads(subprocess.run([URINGNBDCTL, "-c", CTL, "--json", "stats"],
                                   capture_output=True, text=True, check=True).stdout)
    return sum(w["loop-iterations"] for w in st["per-worker"]), st["connections"]


time.sleep(3)   # past the 2 s after which a quiet connection gives its area back
p0, n = passes()
check(n == CONNS, f"{n} connections open, not {CONNS}")
time.sleep(SECONDS)
p1, n = passes()
check(n == CONNS, f"{n} connections open after {SECONDS} s, not {CONNS}")
print(f"{p1 - p0} loop passes in {SECONDS} s with {CONNS} idle connections")
check(p1 - p0 <= 3 * SECONDS, f"the worker passed its loop {p1 - p0} times in {SECONDS} s "
      f"with {CONNS} idle connections: they wake it")
for s in conns:
    s.close()
d.stop()
