#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""The wait histograms count what they say: four connections each keep 32
1 MiB writes of the same range in flight (they wait for each other's range
lock), then 16 8 MiB writes each with a 32 MiB pool per worker (they wait
for pool chunks). The stats command's range-lock waits equal its lock-wait histogram's
count, pool waits are counted, and /metrics says the same."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from testlib import S, URINGNBDCTL, Daemon, check, image  # noqa: E402

import nbd  # noqa: E402

sock = os.path.join(S, "m.sock")
d = Daemon(["--pool-size", "32M", "--threads", "1", "--control", os.path.join(S, "ctl"),
            "--metrics", f"unix:{sock}", image("disk.img", 64 << 20)])
hs = []
for _ in range(4):
    h = nbd.NBD()
    h.connect_unix(d.sock)
    hs.append(h)

def run(nreq, size, offset_of):
    buf = bytearray(os.urandom(size))
    cookies = [(h, h.aio_pwrite(buf, offset_of(i, k))) for i, h in enumerate(hs)
               for k in range(nreq)]
    for h, ck in cookies:
        while not h.aio_command_completed(ck):
            h.poll(-1)


run(32, 1 << 20, lambda i, k: 0)
run(16, 8 << 20, lambda i, k: ((k + i) % 8) << 23)
run(16, 8 << 20, lambda i, k: ((k + i) % 8) << 23)
for h in hs:
    h.shutdown()
st = json.loads(subprocess.run([URINGNBDCTL, "-c", os.path.join(S, "ctl"), "--json", "stats"],
                               capture_output=True, text=True, check=True).stdout)
rl = st["range-locks"]
print(f"range locks: {rl['acquired']} taken, {rl['waited']} waited (histogram count "
      f"{rl['wait']['count']}, p99 {rl['wait']['p99-seconds'] * 1e3:.2f} ms); pool waits "
      f"{st['pool-wait']['count']} (p99 {st['pool-wait']['p99-seconds'] * 1e3:.2f} ms)")
check(rl["acquired"] == 256, f"256 writes, {rl['acquired']} locks")
check(rl["waited"] > 0 and rl["wait"]["count"] == rl["waited"], f"lock waits: {rl}")
check(st["pool-wait"]["count"] > 0, f"no pool waits counted: {st['pool-wait']}")
# The same over HTTP on a unix socket.
out = subprocess.run(["curl", "-s", "--unix-socket", sock, "http://x/metrics"],
                     capture_output=True, text=True)
check(out.returncode == 0, f"curl on the metrics socket: {out.stderr}")
check(f"uringnbd_lock_wait_seconds_count {rl['waited']}" in out.stdout,
      "/metrics disagrees about lock waits")
check(f"uringnbd_pool_wait_seconds_count {st['pool-wait']['count']}" in out.stdout,
      "/metrics disagrees about pool waits")
d.stop()
