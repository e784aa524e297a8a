#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""A full filesystem: the image (sparse, larger than its filesystem) sits
on a small loop-mounted ext4 that another file fills. Writes into holes
fail with ENOSPC and the daemon serves on (reads, writes to allocated
blocks); once the space is freed the same writes succeed; every
acknowledged byte reads back, also after a restart."""
import os
import random
import subprocess
import sys

import nbd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faultlib import Fault  # noqa: E402

t = Fault("enospc.py")
t.need_root("mkfs.ext4", "fallocate")
rng = random.Random(1)
dev, mnt = t.mount_fs("ext4", 48 << 20, "-q", "-F", "-m", "0")
img = os.path.join(mnt, "disk.img")
with open(img, "wb") as f:
    f.truncate(128 << 20)          # more than the filesystem holds
    f.write(b"\x01" * (1 << 20))   # its first MiB allocated
filler = os.path.join(mnt, "filler")
st = os.statvfs(mnt)
for spare in (0, 256 << 10, 1 << 20, 2 << 20):
    size = st.f_bavail * st.f_frsize - spare
    if subprocess.run(["fallocate", "-l", str(size), filler],
                      stderr=subprocess.DEVNULL).returncode == 0:
        break
st = os.statvfs(mnt)
if st.f_bavail * st.f_frsize >= 1 << 20:
    t.fail(f"could not fill the filesystem ({st.f_bavail * st.f_frsize} bytes left)")
t.start(img)
h = nbd.NBD()
h.connect_uri(t.uri())
data = rng.randbytes(1 << 20)
try:
    h.pwrite(data, 64 << 20)       # a hole: needs space
    t.fail("a write into a hole succeeded on a full filesystem")
except nbd.Error as e:
    if e.errnum != 28:
        t.fail(f"a write into a hole on a full filesystem: {e} (expected ENOSPC)")
h.pwrite(b"\x02" * 4096, 4096)     # allocated blocks: fine
if h.pread(4096, 4096) != b"\x02" * 4096 or h.pread(4096, 0) != b"\x01" * 4096:
    t.fail("the allocated blocks do not read back")
os.unlink(filler)
h.pwrite(data, 64 << 20)           # the same write, with space
h.flush()
if h.pread(1 << 20, 64 << 20) != data:
    t.fail("the write after freeing space does not read back")
h.shutdown()
t.stop()
t.start(img)
h = nbd.NBD()
h.connect_uri(t.uri())
if h.pread(1 << 20, 64 << 20) != data or h.pread(4096, 4096) != b"\x02" * 4096:
    t.fail("acknowledged data is missing after a restart")
h.shutdown()
t.stop()
t.cleanup()
print("ENOSPC reaches the client; the daemon serves on; the writes succeed once space is free")
