#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Restarts that keep connections (SIGUSR2: the daemon execs itself again
and hands its connections over). A libnbd client keeps 64 requests in
flight (writes of a block's generation, and reads checked against what the
last completed write put there) through 20 restarts: no request fails and
every read and the final image verify. A raw client sends half a request
header before a restart and the rest after: it is answered. A TLS client is
closed cleanly (said in the log; TLS cannot be handed over), a negotiating
one too, and a new client is served by the new process. uringnbdctl tells
what the last start adopted. Prints the pause requests saw (max, p99)."""
import os
import signal
import socket
import struct
import subprocess
import sys
import time

import nbd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from testlib import T, S, URINGNBDCTL, check, fail, need, image, Daemon, Loaded  # noqa: E402

need("psktool")
BLOCK = 4096
NBLOCKS = 16384                          # 64 MiB
RESTARTS = int(os.environ.get("RESTARTS", "20"))
CTL = os.path.join(S, "ctl")
psk = os.path.join(T, "keys.psk")
subprocess.run(["psktool", "-u", "alice", "-p", psk], check=True, capture_output=True)
img = image("disk.img", NBLOCKS * BLOCK)
d = Daemon(["--control", CTL, "--tls", "on", "--tls-psk", psk, img])
pid = d.proc.pid


def restarts_logged():
    return d.log().count("restarted with ")


def restart(n_before):
    """SIGUSR2, then wait until the new process has adopted what was handed over."""
    os.kill(pid, signal.SIGUSR2)
    deadline = time.time() + 15
    while restarts_logged() <= n_before:
        check(d.proc.poll() is None, f"the daemon exited ({d.proc.returncode}) on SIGUSR2")
        check(time.time() < deadline, "no restart within 15 s of SIGUSR2")
        time.sleep(0.01)


# ---- the loaded client: 64 requests in flight, all verified ----
load = Loaded(d.uri(), NBLOCKS)
errors, model, counts, lat = load.errors, load.model, load.counts, load.lat
time.sleep(0.5)

# ---- a TLS client and a half-sent request header, both across the first restart ----
tls = nbd.NBD()
tls.set_tls(nbd.TLS_REQUIRE)
tls.set_tls_psk_file(psk)
tls.set_tls_username("alice")
tls.connect_uri(f"nbds+unix:///?socket={d.sock}")
check(tls.pread(512, 0) is not None, "TLS client")
raw = socket.socket(socket.AF_UNIX)
raw.connect(d.sock)
hello = raw.recv(18)
check(hello[:8] == b"NBDMAGIC", "greeting")
raw.sendall(struct.pack(">I", 3))                                # FIXED_NEWSTYLE | NO_ZEROES
raw.sendall(struct.pack(">QII", 0x49484156454F5054, 1, 0))      # NBD_OPT_EXPORT_NAME ""
reply = raw.recv(10)
check(len(reply) == 10, "EXPORT_NAME reply")
req = struct.pack(">IHHQQI", 0x25609513, 0, 0, 0xfeed, 0, 512)  # READ 512 at 0
raw.sendall(req[:14])                                           # half a header
negotiating = socket.socket(socket.AF_UNIX)
negotiating.connect(d.sock)
negotiating.recv(18)                                            # still negotiating

restart(restarts_logged())
raw.sendall(req[14:])                                           # the rest, to the new process
r = b""
while len(r) < 16 + 512:
    chunk = raw.recv(16 + 512 - len(r))
    check(chunk, "the raw client's READ was not answered after the restart")
    r += chunk
magic, err, cookie = struct.unpack(">IIQ", r[:16])
check(magic == 0x67446698 and err == 0 and cookie == 0xfeed,
      f"raw client's reply: magic {magic:#x} error {err} cookie {cookie:#x}")
raw.close()
try:
    tls.pread(512, 0)
    fail("the TLS connection survived a restart")
except nbd.Error:
    pass
check(negotiating.recv(1) == b"", "a negotiating connection was not closed at the restart")
log = d.log()
check("TLS cannot be handed over" in log and "closed (TLS)" in log,
      "the TLS connection's close is not logged")
print("half a header before a restart, the rest after: answered; a TLS and a negotiating "
      "client closed, logged")

# ---- the rest of the restarts under load ----
for i in range(1, RESTARTS):
    time.sleep(0.15)
    restart(restarts_logged())
    check(not errors, f"after restart {i + 1}: {errors[:3]}")
time.sleep(0.3)
check(load.stop(), "the loaded client did not finish")
check(not errors, f"the loaded client saw errors: {errors[:5]}")
info = subprocess.run([URINGNBDCTL, "-c", CTL, "--json", "version"], capture_output=True,
                      text=True)
check('"restarted":true' in info.stdout.replace(" ", "") and
      '"adopted":1' in info.stdout.replace(" ", ""), f"uringnbdctl version: {info.stdout}")
new = nbd.NBD()
new.connect_uri(d.uri())
new.shutdown()
d.stop()
with open(img, "rb") as f:
    for b in range(NBLOCKS):
        want = load.want(b)
        if f.read(BLOCK) != want:
            fail(f"the image's block {b} is not generation {model[b]}")
lat.sort()
print(f"{RESTARTS} restarts under 64 requests in flight: {counts['writes']} writes and "
      f"{counts['reads']} reads, none failed, all verified, the image too; request latency "
      f"p50 {lat[len(lat) // 2] * 1e3:.2f} ms, p99 {lat[int(len(lat) * 0.99)] * 1e3:.1f} ms, "
      f"max {lat[-1] * 1e3:.0f} ms (the pause a restart costs)")
