#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""The control socket through uringnbdctl, with real clients attached:
export-add then nbdcopy into the new export, its counters in `exports`,
a TLS (PSK) client listed by `connections` with its identity, export-set
(description seen by nbdinfo, read-only refused to qemu-io's write),
export-remove refused while connected and forced while a client writes
(every acknowledged write is in the file, the client is cut within
seconds), disconnect, log-level, stats, version, a reload undoing run-time
changes, and who may connect: a non-root uid (setpriv) is refused by the
socket's mode and, with the mode opened, by SO_PEERCRED; a missing daemon
is exit status 2."""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from testlib import T, S, URINGNBD, URINGNBDCTL, Daemon, check, fail, image, need, track  # noqa: E402

need("nbdcopy", "nbdinfo", "qemu-io", "psktool", "setpriv")
CTL = os.path.join(S, "ctl")


def ctl(*args, expect=0, user=None):
    cmd = [URINGNBDCTL, "-c", CTL] + list(args)
    if user:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] + cmd
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    check(p.returncode == expect, f"uringnbdctl {' '.join(args)}: exit {p.returncode}, "
          f"expected {expect}\nstdout: {p.stdout}\nstderr: {p.stderr}")
    return p


def ctl_json(*args):
    return json.loads(ctl("--json", *args).stdout)


def run(*cmd):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout + p.stderr


# A client that holds a connection and reads when told (a line on stdin).
HOLDER = r"""
import sys, nbd
h = nbd.NBD()
if sys.argv[3]:
    h.set_tls(nbd.TLS_REQUIRE); h.set_tls_psk_file(sys.argv[3]); h.set_tls_username("alice")
h.set_export_name(sys.argv[2]); h.connect_unix(sys.argv[1])
print("connected", flush=True)
for line in sys.stdin:
    try:
        h.pread(4096, 0); print("ok", flush=True)
    except nbd.Error as e:
        print("err", e, flush=True)
"""

# Writes 4 KiB blocks in order and prints each acknowledged index; stops at the first error.
WRITER = r"""
import sys, struct, nbd
h = nbd.NBD(); h.set_export_name(sys.argv[2]); h.connect_unix(sys.argv[1])
for i in range(65536):
    buf = struct.pack("<Q", i) * 512
    try:
        h.pwrite(buf, i * 4096)
    except nbd.Error as e:
        print("err", e, flush=True); sys.exit(0)
    print(i, flush=True)
print("done", flush=True)
"""


def holder(d, name, psk=""):
    p = track(subprocess.Popen(["/usr/bin/python3", "-c", HOLDER, d.sock, name, psk],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    line = p.stdout.readline()
    check(line.strip() == "connected", f"holder did not connect: {line!r}")
    return p


def holder_read(p):
    p.stdin.write("read\n")
    p.stdin.flush()
    return p.stdout.readline().strip()


# ---- set-up: a PSK key, a config file with one export, TLS offered ----
psk = os.path.join(T, "keys.psk")
subprocess.run(["psktool", "-u", "alice", "-p", psk], check=True, capture_output=True)
base = image("base.img")
conf = os.path.join(T, "uringnbd.conf")
with open(conf, "w") as f:
    f.write(f"[global]\ntls = on\ntls-psk = {psk}\ncontrol = {CTL}\n"
            f"[export base]\npath = {base}\n")
d = Daemon(["--config", conf])
check(oct(os.stat(CTL).st_mode & 0o777) == "0o600", "the control socket is not 0600")

# ---- version, and a daemon that is not there ----
ver = subprocess.run([URINGNBD, "--version"], capture_output=True, text=True).stdout
check(ctl("version").stdout.split()[1] in ver, "version differs from uringnbd --version")
p = subprocess.run([URINGNBDCTL, "-c", os.path.join(S, "nothing"), "version"],
                   capture_output=True, text=True)
check(p.returncode == 2 and "uringnbd is not running" in p.stderr,
      f"a missing daemon: {p.returncode} {p.stderr}")

# ---- export-add: the config file's validation and errors ----
vm1 = image("vm1.img", 128 << 20)
p = ctl("export-add", "vm1", vm1, "cache=sometimes", expect=1)
check("cache: expected none, always or auto" in p.stderr, f"bad cache: {p.stderr}")
p = ctl("export-add", "vm1", os.path.join(T, "missing.img"), expect=1)
check("No such file or directory" in p.stderr, f"missing file: {p.stderr}")
p = ctl("export-add", "vm1", vm1, "allow=300.1.1.1", expect=1)
check("allow:" in p.stderr, f"bad allow list: {p.stderr}")
p = ctl("export-add", "vm1", vm1, "readonly=perhaps", expect=2)  # refused by uringnbdctl
ctl("export-add", "vm1", vm1, "description=first vm")
p = ctl("export-add", "vm1", vm1, expect=1)
check("exists already" in p.stderr, f"duplicate add: {p.stderr}")
rc, out = run("nbdinfo", "--list", d.uri())
check(rc == 0 and "vm1" in out, f"nbdinfo --list does not show vm1: {out}")

# ---- nbdcopy into it; the counters see it ----
data = os.urandom(64 << 20)
with open(os.path.join(T, "in.bin"), "wb") as f:
    f.write(data)
rc, out = run("nbdcopy", os.path.join(T, "in.bin"), d.uri("vm1"))
check(rc == 0, f"nbdcopy into vm1: {out}")
with open(vm1, "rb") as f:
    check(f.read(64 << 20) == data, "vm1.img differs from what nbdcopy wrote")
rc, out = run("nbdcopy", d.uri("vm1"), os.path.join(T, "out.bin"))
check(rc == 0, f"nbdcopy out of vm1: {out}")
e = ctl_json("exports", "vm1")[0]
check(e["path"] == vm1 and e["size"] == 128 << 20 and not e["readonly"], f"exports: {e}")
check(e["bytes"]["write"] == 64 << 20 and e["requests"]["write"] >= 2,
      f"write counters: {e['bytes']} {e['requests']}")
check(e["bytes"]["read"] >= 64 << 20 and e["requests"]["block-status"] > 0,
      f"read counters: {e}")
check(e["connections"] == 0 and e["in-flight"] == 0, f"idle export: {e}")
table = ctl("exports").stdout
check("vm1" in table and "base" in table, f"exports table:\n{table}")

# ---- a TLS client, listed with its identity ----
h1 = holder(d, "vm1", psk)
conns = ctl_json("connections", "vm1")
check(len(conns) == 1, f"connections vm1: {conns}")
c = conns[0]
check(c["tls"] and c["tls-identity"] == "alice" and c["export"] == "vm1" and
      c["peer"].startswith("uid 0") and c["state"] == "serving", f"connection: {c}")
check("alice" in ctl("connections").stdout, "the table does not show the TLS identity")
check(ctl_json("exports", "vm1")[0]["connections"] == 1, "exports: 1 connection expected")

# ---- export-set: new connections get the change, the open one keeps its export ----
ctl("export-set", "vm1", "description=second vm", "readonly=true")
rc, out = run("nbdinfo", "--json", d.uri("vm1"))
check(rc == 0 and json.loads(out)["exports"][0].get("description") == "second vm",
      f"nbdinfo after export-set: {out}")
rc, out = run("qemu-io", "-f", "raw", "-c", "write 0 4k", d.uri("vm1"))
check(rc != 0 or "failed" in out.lower() or "read-only" in out.lower(),
      f"qemu-io wrote to a read-only export: {out}")
rc, out = run("qemu-io", "-r", "-f", "raw", "-c", "read -v 0 16", d.uri("vm1"))
check(rc == 0 and "read 16/16" in out, f"qemu-io read: {out}")
check(holder_read(h1) == "ok", "the open connection stopped working after export-set")
p = ctl("export-set", "vm1", "cache=always", expect=2)  # not a key export-set takes
p = ctl("export-set", "nosuch", "readonly=true", expect=1)
check("no export" in p.stderr, p.stderr)

# ---- export-remove refused while connected; disconnect by id ----
p = ctl("export-remove", "vm1", expect=1)
check("has 1 connection" in p.stderr, f"remove while connected: {p.stderr}")
ctl("disconnect", str(c["id"]))
check(holder_read(h1).startswith("err"), "a disconnected client could still read")
h1.stdin.close()
h1.wait(timeout=10)
deadline = time.time() + 10
while ctl_json("exports", "vm1")[0]["connections"] and time.time() < deadline:
    time.sleep(0.05)
check(not ctl_json("exports", "vm1")[0]["connections"], "the disconnected connection stays")
ctl("disconnect", str(c["id"]), expect=1)
ctl("export-remove", "vm1")
rc, out = run("nbdinfo", d.uri("vm1"))
check(rc != 0, "a removed export is still served")

# ---- export-remove --force while a client writes ----
vm2 = image("vm2.img", 256 << 20)
ctl("export-add", "vm2", vm2)
w = track(subprocess.Popen(["/usr/bin/python3", "-c", WRITER, d.sock, "vm2"],
                           stdout=subprocess.PIPE, text=True))
acked = []
for line in w.stdout:
    acked.append(line.strip())
    if len(acked) >= 200:
        break
t0 = time.time()
r = ctl_json("export-remove", "vm2", "--force")
check(r["removed"] == "vm2" and r["disconnected"] == 1, f"forced remove: {r}")
for line in w.stdout:
    acked.append(line.strip())
w.wait(timeout=20)
cut_s = time.time() - t0
check(acked[-1].startswith("err"), f"the writer was not cut: {acked[-3:]}")
check(cut_s < 10, f"the writer took {cut_s:.1f} s to be cut")
idx = [int(a) for a in acked[:-1]]
check(idx == list(range(len(idx))), "acknowledgements out of order")
with open(vm2, "rb") as f:
    img = f.read(len(idx) * 4096)
for i in idx:
    check(img[i * 4096:(i + 1) * 4096] == i.to_bytes(8, "little") * 512,
          f"acknowledged block {i} is not in the file")
print(f"forced remove: {len(idx)} writes acknowledged and in the file; cut after "
      f"{cut_s:.2f} s with {acked[-1]!r}")

# ---- log-level, stats ----
check(ctl_json("log-level")["level"] == "info", "log level")
ctl("log-level", "debug")
check("log level debug (control socket)" in d.log(), "log-level change not logged")
ctl("log-level", "loud", expect=1)
ctl("log-level", "info")
st = ctl_json("stats")
check(st["connections"] == 0 and st["workers"] >= 1 and "range-locks" in st, f"stats: {st}")

# ---- who may connect ----
p = ctl("version", expect=2, user=65534)
check("Permission denied" in p.stderr, f"uid 65534: {p.stderr}")
os.chmod(S, 0o711)
os.chmod(CTL, 0o666)
p = ctl("version", expect=2, user=65534)
check("closed the connection" in p.stderr, f"uid 65534 past the mode: {p.stderr}")
check("control: refused uid 65534" in d.log(), "the refusal is not logged")
os.chmod(CTL, 0o600)

# ---- a reload: the configuration file is the truth ----
rc, out = run("nbdinfo", "--map", d.uri("base"))
check(rc == 0, f"nbdinfo on base: {out}")
before = ctl_json("exports", "base")[0]["requests"]
check(before["block-status"] > 0, f"base's counters: {before}")
ctl("export-add", "vm3", vm1)
ctl("export-set", "base", "description=changed")
d.proc.send_signal(signal.SIGHUP)
deadline = time.time() + 10
while "vm3" in ctl("exports").stdout and time.time() < deadline:
    time.sleep(0.05)
names = [e["name"] for e in ctl_json("exports")]
check(names == ["base"], f"after a reload: {names}")
check(ctl_json("exports", "base")[0]["description"] == "", "the reload kept export-set's change")
log = d.log()
check('export "vm3" removed by the reload (not in the configuration)' in log and
      'export "base" opened again by the reload' in log, "the reload did not say what it undid")
# The export was opened again, under the same name: its counters go on.
after = ctl_json("exports", "base")[0]["requests"]
check(after["block-status"] >= before["block-status"], f"counters reset by the reload: {after}")

d.stop()
check(not os.path.exists(CTL), "the control socket was left behind")
print("control: every command through uringnbdctl with real clients attached")
