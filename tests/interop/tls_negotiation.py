#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""STARTTLS and access rules, byte by byte (Python's ssl module is the TLS
client; keys come from certtool at test time):
- FORCEDTLS (tls=require): every option before STARTTLS gets ERR_TLS_REQD,
  EXPORT_NAME is a close; STARTTLS with data is ERR_INVALID.
- Plaintext sent in the same packet as STARTTLS is never executed.
- SELECTIVETLS (tls=on): a TLS-only export is absent from a plaintext LIST,
  INFO/GO get ERR_TLS_REQD, META_CONTEXT ERR_POLICY, EXPORT_NAME a close;
  structured replies negotiated before STARTTLS are forgotten after it;
  STARTTLS inside TLS is ERR_INVALID.
- allow/deny by address over TCP (127.0.0.1 vs 127.0.0.2), by uid on a
  unix socket (another user via setpriv), tls-allow by certificate CN:
  refused exports get ERR_POLICY, are absent from LIST, and the refusal is
  logged with who asked. list=no answers LIST with ERR_POLICY."""
import os
import shutil
import socket
import ssl
import warnings
import struct
import subprocess
import sys
import tempfile
import time

URINGNBD = os.path.abspath(os.environ.get("URINGNBD", "build/uringnbd"))
BASE = os.environ.get("TEST_TMPDIR", "build/tmp")
os.makedirs(BASE, exist_ok=True)
T = tempfile.mkdtemp(prefix="tls_negotiation.", dir=BASE)
S = tempfile.mkdtemp(prefix="uringnbd-test.", dir="/tmp")
procs = []
LOGS = []

IHAVEOPT = 0x49484156454F5054
REP_MAGIC = 0x3E889045565A9
SIMPLE_REPLY = 0x67446698
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS, OPT_INFO, OPT_GO = 1, 2, 3, 5, 6, 7
OPT_STRUCTURED_REPLY, OPT_LIST_META_CONTEXT = 8, 9
REP_ACK, REP_SERVER, REP_INFO = 1, 2, 3
ERR_POLICY, ERR_INVALID, ERR_TLS_REQD = 2**31 + 2, 2**31 + 3, 2**31 + 5


def fail(msg):
    print(f"FAIL tls_negotiation.py: {msg}", file=sys.stderr)
    for p in procs:
        if p.poll() is None:
            p.kill()
    for log in LOGS:
        print(f"---- {log} ----\n" + open(log).read()[-3000:], file=sys.stderr)
    sys.exit(1)


def need(*tools):
    for t in tools:
        if not shutil.which(t):
            print(f"SKIP tls_negotiation.py: {t} is not installed", file=sys.stderr)
            sys.exit(77)


def certtool(*args):
    subprocess.run(["certtool", *args], check=True, capture_output=True)


def make_keys():
    k = os.path.join(T, "keys")
    os.makedirs(k)
    open(f"{k}/ca.info", "w").write("cn = test CA\nca\ncert_signing_key\nexpiration_days = 30\n")
    certtool("--generate-privkey", "--outfile", f"{k}/ca-key.pem")
    certtool("--generate-self-signed", "--load-privkey", f"{k}/ca-key.pem", "--template",
             f"{k}/ca.info", "--outfile", f"{k}/ca-cert.pem")
    for name, tmpl in (("server", "cn = localhost\nip_address = 127.0.0.1\ntls_www_server\n"),
                       ("alice", "cn = alice\ntls_www_client\n"),
                       ("bob", "cn = bob\ntls_www_client\n")):
        open(f"{k}/{name}.info", "w").write(tmpl + "encryption_key\nsigning_key\n"
                                            "expiration_days = 30\n")
        certtool("--generate-privkey", "--outfile", f"{k}/{name}-key.pem")
        certtool("--generate-certificate", "--load-ca-certificate", f"{k}/ca-cert.pem",
                 "--load-ca-privkey", f"{k}/ca-key.pem", "--load-privkey", f"{k}/{name}-key.pem",
                 "--template", f"{k}/{name}.info", "--outfile", f"{k}/{name}-cert.pem")
    return k


def start(name, args):
    log = os.path.join(T, f"{name}.log")
    pid = os.path.join(T, f"{name}.pid")
    LOGS.append(log)
    p = subprocess.Popen([URINGNBD, "--pid-file", pid, *args], stderr=open(log, "w"))
    procs.append(p)
    for _ in range(1000):
        if os.path.exists(pid):
            return p, log
        if p.poll() is not None:
            break
        time.sleep(0.01)
    fail(f"daemon {name} did not start")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Client:
    """One connection, option by option; self.s becomes the TLS socket after starttls()."""

    def __init__(self, port=None, src="127.0.0.1", path=None):
        if path:
            self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.s.settimeout(10)
            self.s.connect(path)
        else:
            self.s = socket.socket()
            self.s.settimeout(10)
            self.s.bind((src, 0))
            self.s.connect(("127.0.0.1", port))
        g = self.recv(18)
        if struct.unpack(">QQH", g)[1] != IHAVEOPT:
            fail("not a fixed newstyle greeting")
        self.s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES

    def recv(self, n):
        b = b""
        while len(b) < n:
            c = self.s.recv(n - len(b))
            if not c:
                raise EOFError(f"closed after {len(b)} of {n} bytes")
            b += c
        return b

    def send_opt(self, opt, data=b""):
        self.s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)

    def reply(self, opt):
        magic, o, typ, ln = struct.unpack(">QIII", self.recv(20))
        if magic != REP_MAGIC or o != opt:
            fail(f"bad option reply: magic {magic:#x}, option {o} (wanted {opt})")
        return typ, self.recv(ln)

    def opt(self, opt, data=b""):
        """Sends an option, returns [(type, payload)] up to the final reply."""
        self.send_opt(opt, data)
        out = []
        while True:
            typ, payload = self.reply(opt)
            out.append((typ, payload))
            if typ not in (REP_SERVER, REP_INFO, 4):
                return out

    def final(self, opt, data=b""):
        return self.opt(opt, data)[-1][0]

    def list(self):
        r = self.opt(OPT_LIST)
        if r[-1][0] != REP_ACK:
            return r[-1][0]
        return sorted(p[4:4 + struct.unpack(">I", p[:4])[0]].decode() for t, p in r[:-1])

    def starttls(self, keys, who=None, max_version=None):
        if self.final(OPT_STARTTLS) != REP_ACK:
            fail("STARTTLS not acknowledged")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if max_version:
            # An old client: the protocol allows these versions only if configured.
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = max_version
        ctx.load_verify_locations(f"{keys}/ca-cert.pem")
        ctx.check_hostname = False
        if who:
            ctx.load_cert_chain(f"{keys}/{who}-cert.pem", f"{keys}/{who}-key.pem")
        # A connection cut without close_notify is an error, not an end.
        ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
        self.s = ctx.wrap_socket(self.s, server_hostname="localhost", suppress_ragged_eofs=False)

    def closed(self):
        """True if the server closes without sending anything more."""
        try:
            return self.s.recv(1) == b""
        except (ConnectionResetError, ssl.SSLError):
            return True

    def close(self):
        self.s.close()


def go_data(name, opt=OPT_GO):
    n = name.encode()
    return struct.pack(">I", len(n)) + n + struct.pack(">H", 0)


def meta_data(name):
    n = name.encode()
    q = b"base:allocation"
    return struct.pack(">I", len(n)) + n + struct.pack(">II", 1, len(q)) + q


need("certtool")
if os.getuid() != 0 or not shutil.which("setpriv") or not shutil.which("nbdinfo"):
    print("SKIP tls_negotiation.py: needs root, setpriv and nbdinfo", file=sys.stderr)
    sys.exit(77)
keys = make_keys()
srvdir = os.path.join(T, "server")
os.makedirs(srvdir)
for f in ("ca-cert.pem",):
    shutil.copy(f"{keys}/{f}", srvdir)
shutil.copy(f"{keys}/server-cert.pem", f"{srvdir}/server-cert.pem")
shutil.copy(f"{keys}/server-key.pem", f"{srvdir}/server-key.pem")
img = os.path.join(T, "disk.img")
with open(img, "wb") as f:
    f.truncate(1 << 20)
os.chmod(T, 0o755)
os.chmod(img, 0o644)
os.chmod(S, 0o755)

# ---- FORCEDTLS ----
port = free_port()
p1, log1 = start("forced", ["-b", "127.0.0.1", "-p", str(port), "--tls", "require",
                            "--tls-certificates", srvdir, img])
c = Client(port)
for o, d in ((OPT_LIST, b""), (OPT_INFO, go_data("")), (OPT_GO, go_data("")),
             (OPT_STRUCTURED_REPLY, b""), (99, b"")):
    got = c.final(o, d)
    if got != ERR_TLS_REQD:
        fail(f"FORCEDTLS: option {o} before STARTTLS answered {got:#x}, not ERR_TLS_REQD")
if c.final(OPT_STARTTLS, b"x") != ERR_INVALID:
    fail("STARTTLS with data was not ERR_INVALID")
c.send_opt(OPT_EXPORT_NAME, b"")
if not c.closed():
    fail("FORCEDTLS: EXPORT_NAME before TLS was not a close")
c.close()
# STARTTLS and a plaintext LIST in one packet: the LIST must never be answered.
c = Client(port)
c.s.sendall(struct.pack(">QII", IHAVEOPT, OPT_STARTTLS, 0) + struct.pack(">QII", IHAVEOPT, OPT_LIST, 0))
typ, _ = c.reply(OPT_STARTTLS)
if typ != REP_ACK:
    fail("STARTTLS (pipelined) not acknowledged")
rest = b""
try:
    while len(rest) < 4096:
        chunk = c.s.recv(4096)
        if not chunk:
            break
        rest += chunk
except OSError:
    pass
if struct.pack(">Q", REP_MAGIC) in rest:
    fail("plaintext sent after STARTTLS was executed (an option reply came back)")
if rest and rest[0] != 0x15:
    fail(f"after STARTTLS the server sent {rest[:16].hex()}, not a TLS alert")
c.close()
# TLS older than 1.2 is refused (the protocol: not by default).
c = Client(port)
try:
    c.starttls(keys, max_version=ssl.TLSVersion.TLSv1_1)
    fail("a TLS 1.1 handshake succeeded")
except ssl.SSLError as e:
    print(f"TLS 1.1 refused: {e.reason}")
c.close()
# The daemon still serves a proper TLS client.
c = Client(port)
c.starttls(keys)
if c.list() != [""]:
    fail("FORCEDTLS: LIST inside TLS")
if c.s.version() not in ("TLSv1.2", "TLSv1.3"):
    fail(f"negotiated {c.s.version()}")
# Into transmission, then DISC: the server ends TLS with close_notify before closing.
if c.final(OPT_GO, go_data("")) != REP_ACK:
    fail("GO inside TLS")
c.s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 2, 1, 0, 0))
try:
    if c.s.recv(1) != b"":
        fail("data after DISC")
except ssl.SSLError as e:
    fail(f"the server closed TLS without close_notify ({e})")
c.close()

# ---- SELECTIVETLS with access rules ----
conf = os.path.join(T, "selective.conf")
sock = os.path.join(S, "sock")
port2 = free_port()
open(conf, "w").write(f"""[global]
tls = on
tls-certificates = {srvdir}
tls-verify-peer = yes
[export open]
path = {img}
[export secret]
path = {img}
tls = require
[export lan]
path = {img}
allow = 127.0.0.2
deny = all
[export rootonly]
path = {img}
allow = uid:0
deny = all
[export alice]
path = {img}
tls-allow = alice
""")
p2, log2 = start("selective", ["-c", conf, "-U", sock, "-b", "127.0.0.1", "-p", str(port2)])
for _ in range(100):
    if os.path.exists(sock):
        break
    time.sleep(0.01)
os.chmod(sock, 0o777)
c = Client(port2)
got = c.list()
if got != ["open"]:
    fail(f"plaintext LIST from 127.0.0.1 showed {got}, expected only 'open'")
for o in (OPT_INFO, OPT_GO):
    if c.final(o, go_data("secret")) != ERR_TLS_REQD:
        fail(f"option {o} on a TLS-only export without TLS: not ERR_TLS_REQD")
if c.final(OPT_GO, go_data("lan")) != ERR_POLICY:
    fail("GO 'lan' from 127.0.0.1 (denied) was not ERR_POLICY")
if c.final(OPT_STRUCTURED_REPLY) != REP_ACK:
    fail("STRUCTURED_REPLY refused")
if c.final(OPT_LIST_META_CONTEXT, meta_data("secret")) != ERR_POLICY:
    fail("LIST_META_CONTEXT on a TLS-only export without TLS: not ERR_POLICY")
# Now TLS: structured replies are forgotten, the TLS-only exports appear.
c.starttls(keys, "alice")
got = c.list()
if got != ["alice", "open", "secret"]:
    fail(f"LIST inside TLS as alice showed {got}")
if c.final(OPT_STARTTLS) != ERR_INVALID:
    fail("STARTTLS inside TLS was not ERR_INVALID")
r = c.opt(OPT_GO, go_data("secret"))
if r[-1][0] != REP_ACK:
    fail(f"GO 'secret' inside TLS: {r[-1][0]:#x}")
c.s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, 7, 0, 512))  # READ 512 at 0
magic, err, cookie = struct.unpack(">IIQ", c.recv(16))
if magic != SIMPLE_REPLY:
    fail(f"structured replies chosen before STARTTLS were not forgotten (reply magic {magic:#x})")
if err != 0 or cookie != 7 or c.recv(512) != bytes(512):
    fail("READ inside TLS")
c.close()
c = Client(port2)
c.starttls(keys, "bob")
if c.list() != ["open", "secret"]:
    fail("LIST as bob shows an export tls-allow keeps for alice")
if c.final(OPT_GO, go_data("alice")) != ERR_POLICY:
    fail("GO 'alice' as bob was not ERR_POLICY")
c.close()
c = Client(port2, src="127.0.0.2")
if c.list() != ["lan", "open"]:
    fail("LIST from 127.0.0.2 does not show 'lan'")
if c.final(OPT_GO, go_data("lan")) != REP_ACK:
    fail("GO 'lan' from 127.0.0.2 (allowed) refused")
c.close()
c = Client(port2)
c.send_opt(OPT_EXPORT_NAME, b"secret")
if not c.closed():
    fail("EXPORT_NAME of a TLS-only export without TLS was not a close")
c.close()
# By uid on the unix socket: root is let in, nobody is refused and not shown the export.
c = Client(path=sock)
if c.list() != ["open", "rootonly"] or c.final(OPT_GO, go_data("rootonly")) != REP_ACK:
    fail("root was not let in to 'rootonly'")
c.close()
nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
r = subprocess.run(nobody + ["nbdinfo", "--size", f"nbd+unix:///rootonly?socket={sock}"],
                   capture_output=True, text=True, timeout=20)
if r.returncode == 0:
    fail("another user was served 'rootonly' (allow = uid:0, deny = all)")
r = subprocess.run(nobody + ["nbdinfo", "--list", "--json", f"nbd+unix:///?socket={sock}"],
                   capture_output=True, text=True, timeout=20)
if r.returncode != 0 or '"rootonly"' in r.stdout or '"open"' not in r.stdout:
    fail(f"LIST as another user: {r.stdout} {r.stderr}")
time.sleep(0.2)
text = open(log2).read()
for line in ('(127.0.0.1:', 'export "lan" refused by its access rules'), \
            ('uid 65534 gid 65534', 'export "rootonly" refused by its access rules'):
    if not any(line[0] in t and line[1] in t for t in text.splitlines()):
        fail(f"no log line with {line}")

# ---- list = no ----
port3 = free_port()
p3, log3 = start("nolist", ["-b", "127.0.0.1", "-p", str(port3), "--list", "no", img])
c = Client(port3)
if c.list() != ERR_POLICY:
    fail("list=no: LIST was not ERR_POLICY")
if c.final(OPT_GO, go_data("")) != REP_ACK:
    fail("list=no: GO refused")
c.close()

for p in procs:
    p.terminate()
    if p.wait(10) != 0:
        fail("a daemon did not exit cleanly")
shutil.rmtree(S, ignore_errors=True)
print("STARTTLS per FORCEDTLS and SELECTIVETLS, pipelined plaintext discarded, "
      "allow/deny by address and uid, tls-allow, list=no")
