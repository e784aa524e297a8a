#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Storage errors part-way through requests over 32 MiB (served in 16 MiB
segments), on a faultfs image, over a raw socket: a READ whose simple reply
has started when the next segment's read fails ends the connection (the
spec: an error cannot follow part of a simple reply's data); with
structured replies the same failure is an ERROR chunk after the first
segment's data, and the connection goes on; a WRITE whose first segment
fails has the rest of its payload read and dropped, then EIO, and the
connection goes on. The daemon serves the next client each time."""
import os
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faultlib import Fault  # noqa: E402

MIB = 1 << 20
t = Fault("segment_errors.py")
t.need_root()
mnt = t.mount_faultfs()
img = os.path.join(mnt, "disk.img")
with open(img, "wb") as f:
    f.write(os.urandom(64 * MIB))
t.start(img)


def recv(s, n):
    b = b""
    while len(b) < n:
        chunk = s.recv(n - len(b))
        if not chunk:
            return b
        b += chunk
    return b


def connect(structured):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(20)
    s.connect(t.sock)
    if len(recv(s, 18)) != 18:
        t.fail("no greeting")
    s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    if structured:
        s.sendall(struct.pack(">QII", 0x49484156454F5054, 8, 0))
        _, _, rtype, rlen = struct.unpack(">QIII", recv(s, 20))
        recv(s, rlen)
        if rtype != 1:
            t.fail("STRUCTURED_REPLY refused")
    s.sendall(struct.pack(">QII", 0x49484156454F5054, 1, 0))  # EXPORT_NAME ""
    recv(s, 10)
    return s


def request(s, typ, cookie, off, length, payload=b""):
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, typ, cookie, off, length) + payload)


def still_serves(s, cookie):
    request(s, 3, cookie, 0, 0)  # FLUSH
    hdr = recv(s, 16)
    if len(hdr) != 16 or struct.unpack(">I", hdr[4:8])[0] not in (0, 5):
        t.fail(f"the connection does not go on: {hdr.hex()}")


# Simple reply: the first segment's data goes, then the next segment fails.
s = connect(False)
request(s, 0, 1, 12345, 40 * MIB)
hdr = recv(s, 16)
if struct.unpack(">IIQ", hdr) != (0x67446698, 0, 1):
    t.fail(f"simple reply header {hdr.hex()}")
got = recv(s, MIB)
t.fault("r")
got += recv(s, 40 * MIB)
t.fault(None)
if len(got) >= 40 * MIB:
    t.fail("the whole simple reply was sent though a read failed")
if got[:MIB] != open(img, "rb").read(12345 + MIB)[12345:]:
    t.fail("the data before the failure is wrong")
print(f"simple reply: {len(got) / MIB:.1f} MiB of data, then the connection closed")
s.close()

# Structured: OFFSET_DATA for the first segment, then an ERROR chunk; the connection goes on.
s = connect(True)
request(s, 0, 2, 12345, 40 * MIB)
types, covered = [], 0
while True:
    magic, flags, typ, cookie, length = struct.unpack(">IHHQI", recv(s, 20))
    payload = recv(s, length) if typ != 1 else None
    if typ == 1:  # OFFSET_DATA: read the offset, then its data
        recv(s, 8)
        data = recv(s, length - 8)
        covered += len(data)
        if covered >= MIB and "r" not in types:
            t.fault("r")
            types.append("r")
    types.append(typ)
    if flags & 1:
        break
t.fault(None)
errors = [x for x in types if x == 32769]
if not errors or types[-1] != 32769 or covered >= 40 * MIB:
    t.fail(f"structured reply chunk types {types}, {covered} bytes of data")
print(f"structured reply: {covered / MIB:.1f} MiB of data, then an ERROR chunk")
still_serves(s, 3)
s.close()

# A WRITE whose first segment fails: the payload is dropped, EIO, the connection goes on.
s = connect(False)
t.fault("w")
request(s, 1, 4, 4096, 36 * MIB, os.urandom(36 * MIB))
hdr = recv(s, 16)
t.fault(None)
if struct.unpack(">IIQ", hdr) != (0x67446698, 5, 4):
    t.fail(f"the failed WRITE's reply {hdr.hex()}")
still_serves(s, 5)
s.close()
t.stop()
print("segment errors: a simple reply cut, a structured one ended by an ERROR chunk, a WRITE's "
      "payload dropped")
