#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Side-by-side benchmark: uringnbd against nbd-server, nbdkit (file plugin)
and qemu-nbd (--cache=none --aio=io_uring) on the same image, each on its own
unix socket or on TCP 127.0.0.1, and fio on the raw file as the ceiling.
fio's nbd engine drives the servers. Several short rounds with the targets
interleaved; medians are reported, with the device's average I/Os in flight
during each run (from /sys/block/DEV/stat), and the server's CPU per GiB and
context switches per request (over its whole life, all threads; not for
nbd-server, which daemonizes). Not a test: nothing here asserts a number.

Transports: unix and TCP by default (BENCH_TRANSPORTS=unix,tcp,tls adds TLS).
TLS (transport "tls", in BENCH_TRANSPORTS): TCP 127.0.0.1 with TLS required
and an X.509 certificate made by certtool, for uringnbd, nbdkit
(--tls=require) and qemu-nbd (--tls-creds); nbd-server is left out. fio's
libnbd finds the CA in $HOME/.pki/libnbd, a home made for it.

Pinned (BENCH_PIN=1): every server on CPU 0 and fio on CPU 1, as when the
client runs on another machine; unpinned, the scheduler often runs a server
thread and fio on one CPU, where a wakeup costs little.

Cold cache (BENCH_COLD=1): every server runs in a memory cgroup limited to
BENCH_COLD_MEM (256M), so a server that reads through the page cache cannot
keep the image there, as on a host serving many images (cgroup v1 memory
controller, or v2).

A run that fails (fio exits non-zero, reports an error, or moves nothing)
fails the whole benchmark with fio's stderr and the server's log, never
counting as a figure.

Environment: BENCH_ROUNDS (4), BENCH_RUNTIME seconds per run (3),
BENCH_SIZE image size (1G), BENCH_ONLY comma-separated target names,
BENCH_WORKLOADS comma-separated workload names, URINGNBD (build/uringnbd),
BENCH_DIR (build/bench); URINGNBD_BASE names
another uringnbd binary, run in the same rounds as "uringnbd-base" (a
before/after pair for a change).

By default the targets are uringnbd, uringnbd-base (when given), qemu-nbd,
nbdkit, nbd-server and the raw file; BENCH_ONLY names others too.
"uringnbd-poll" is uringnbd with --busy-poll BENCH_BUSY_POLL (50)
microseconds: the same binary trading CPU for latency, beside its default.
"uringnbd-ctl" is uringnbd with a control socket that a client asks for
`exports` ten times a second while fio runs: what watching it costs.
"""
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "4"))
RUNTIME = int(os.environ.get("BENCH_RUNTIME", "3"))
SIZE = os.environ.get("BENCH_SIZE", "1G")
URINGNBD = os.environ.get("URINGNBD", "build/uringnbd")
URINGNBD_BASE = os.environ.get("URINGNBD_BASE")
BUSY_POLL = os.environ.get("BENCH_BUSY_POLL", "50")
OURS = ("uringnbd", "uringnbd-poll", "uringnbd-base", "uringnbd-ctl")
# BENCH_PIN=1: every server on CPU 0 and fio on CPU 1, as when the client is
# another machine and the server's CPU is its own (unpinned, the scheduler
# often puts both on one CPU, where a wakeup is cheap).
PIN = os.environ.get("BENCH_PIN") == "1"
PIN_SERVER = ["taskset", "-c", "0"] if PIN else []
PIN_CLIENT = ["taskset", "-c", "1"] if PIN else []
TRANSPORTS = os.environ.get("BENCH_TRANSPORTS", "unix,tcp").split(",")
COLD = os.environ.get("BENCH_COLD") == "1"
COLD_MEM = os.environ.get("BENCH_COLD_MEM", "256M")
DIR = os.path.abspath(os.environ.get("BENCH_DIR", "build/bench"))
SOCKDIR = "/tmp/uringnbd-bench"
TLS_DIR = f"{DIR}/tls"
TLS_HOME = f"{DIR}/tls-home"

# name, rw, bs, iodepth, numjobs (connections), flush at the end
WORKLOADS = [
    ("4k randread QD1", "randread", "4k", 1, 1, False),
    ("4k randread QD8", "randread", "4k", 8, 1, False),
    ("4k randread QD16", "randread", "4k", 16, 1, False),
    ("4k randread QD32", "randread", "4k", 32, 1, False),
    ("4k randread QD64", "randread", "4k", 64, 1, False),
    ("64k randread QD8", "randread", "64k", 8, 1, False),
    ("64k randread QD32", "randread", "64k", 32, 1, False),
    ("4k randread 4x QD16", "randread", "4k", 16, 4, False),
    ("4k randwrite QD32", "randwrite", "4k", 32, 1, False),
    ("1M seqread QD8", "read", "1M", 8, 1, False),
    ("1M seqwrite QD8", "write", "1M", 8, 1, False),
    # The same writes counted until a final FLUSH has made them durable:
    # a server that acknowledges from the page cache pays for it here.
    ("4k randwrite QD32 +flush", "randwrite", "4k", 32, 1, True),
    ("1M seqwrite QD8 +flush", "write", "1M", 8, 1, True),
]
BLOCK_BYTES = {"4k": 4096, "64k": 65536, "1M": 1 << 20}


def wait_port(port, proc=None, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.args}")
            time.sleep(0.02)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port}")


def sh(*args, **kw):
    return subprocess.run(args, check=True, **kw)


def wait_socket(path, proc=None, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if os.path.exists(path):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.args}")
        time.sleep(0.02)
    raise RuntimeError(f"no socket {path}")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Cgroup:
    """A memory cgroup (v1 or v2) that the cold-cache servers run in."""

    def __init__(self, limit):
        v1 = "/sys/fs/cgroup/memory"
        if os.path.isdir(v1):
            self.path = f"{v1}/uringnbd-bench"
            os.makedirs(self.path, exist_ok=True)
            open(f"{self.path}/memory.limit_in_bytes", "w").write(limit)
        else:
            self.path = "/sys/fs/cgroup/uringnbd-bench"
            os.makedirs(self.path, exist_ok=True)
            open(f"{self.path}/memory.max", "w").write(limit)

    def add(self, pid):
        open(f"{self.path}/cgroup.procs", "w").write(str(pid))


CGROUP = Cgroup(COLD_MEM) if COLD else None


class Server:
    """One NBD server process on its own unix socket or TCP port."""

    def __init__(self, name, img, transport="unix"):
        self.name, self.img, self.transport = name, img, transport
        self.sock = f"{SOCKDIR}/{name}.sock"
        self.port = free_port()
        self.proc = None
        self.pid = None

    def uri(self):
        if self.transport == "tls":
            return f"nbds://127.0.0.1:{self.port}/{self.export}"
        if self.transport == "tcp":
            return f"nbd://127.0.0.1:{self.port}/{self.export}"
        return f"nbd+unix:///{self.export}?socket={self.sock}"

    def start(self):
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        self.export = ""
        log = open(f"{DIR}/{self.name}.log", "a")
        tls = self.transport == "tls"
        tcp = self.transport in ("tcp", "tls")
        where = ["-b", "127.0.0.1", "-p", str(self.port)] if tcp else ["-U", self.sock]
        if self.name in OURS:
            binary = URINGNBD_BASE if self.name == "uringnbd-base" else URINGNBD
            if self.name == "uringnbd-poll":
                where += ["--busy-poll", BUSY_POLL]
            if self.name == "uringnbd-ctl":
                where += ["--control", f"{SOCKDIR}/ctl"]
            if tls:
                where += ["--tls", "require", "--tls-certificates", TLS_DIR]
            self.proc = subprocess.Popen([*PIN_SERVER, binary, *where, self.img], stderr=log)
        elif self.name == "nbdkit":
            where = ["-i", "127.0.0.1", "-p", str(self.port)] if tcp else ["-U", self.sock]
            if tls:
                where += ["--tls=require", f"--tls-certificates={TLS_DIR}"]
            self.proc = subprocess.Popen([*PIN_SERVER, "nbdkit", "-f", *where, "file",
                                          f"file={self.img}", "cache=none"], stderr=log)
        elif self.name == "qemu-nbd":
            where = ["-b", "127.0.0.1", "-p", str(self.port)] if tcp else ["-k", self.sock]
            if tls:
                where += ["--object",
                          f"tls-creds-x509,id=tls0,endpoint=server,dir={TLS_DIR},verify-peer=off",
                          "--tls-creds", "tls0"]
            self.proc = subprocess.Popen([*PIN_SERVER, "qemu-nbd", *where, "-f", "raw", "-t",
                                          "-e", "8", "--cache=none", "--aio=io_uring",
                                          self.img], stderr=log)
        elif self.name == "nbd-server":
            self.export = "export"
            conf = f"{DIR}/nbd-server.conf"
            listen = (f"listenaddr = 127.0.0.1\nport = {self.port}\n" if tcp
                      else f"unixsock = {self.sock}\n")
            with open(conf, "w") as f:
                f.write(f"[generic]\n{listen}"
                        f"[export]\nexportname = {self.img}\nflush = true\nfua = true\n")
            pidfile = f"{DIR}/nbd-server.pid"
            if os.path.exists(pidfile):
                os.unlink(pidfile)
            sh(*PIN_SERVER, "nbd-server", "-C", conf, "-p", pidfile, stderr=log)
            wait_socket(pidfile)
            time.sleep(0.1)
            self.pid = int(open(pidfile).read().split()[0])
        if self.proc is not None:
            self.pid = self.proc.pid
        if CGROUP:
            CGROUP.add(self.pid)  # before any client: a forking server's children follow
        if tcp:
            wait_port(self.port, self.proc)
        else:
            wait_socket(self.sock, self.proc)
        self.poller = None
        if self.name == "uringnbd-ctl":
            wait_socket(f"{SOCKDIR}/ctl", self.proc)
            self.polling = True
            self.poller = threading.Thread(target=self.poll_exports)
            self.poller.start()

    def poll_exports(self):
        """`exports` on the control socket ten times a second, as a dashboard would."""
        s = socket.socket(socket.AF_UNIX)
        s.connect(f"{SOCKDIR}/ctl")
        self.polls = 0
        while self.polling:
            s.sendall(b'{"command": "exports"}\n')
            buf = b""
            while not buf.endswith(b"\n"):
                buf += s.recv(65536)
            self.polls += 1
            time.sleep(0.1)
        s.close()

    def stop(self):
        if getattr(self, "poller", None):
            self.polling = False
            self.poller.join()
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.csw = None
        if self.proc is not None:
            # Reaped here for its resource usage: every thread's, the exited ones too.
            end = time.time() + 10
            while True:
                pid, _, ru = os.wait4(self.pid, os.WNOHANG)
                if pid:
                    self.csw = ru.ru_nvcsw + ru.ru_nivcsw
                    self.proc.returncode = 0
                    break
                if time.time() > end:
                    self.proc.kill()
                    self.proc.wait()
                    break
                time.sleep(0.02)
        else:
            for _ in range(200):
                if not os.path.exists(f"/proc/{self.pid}"):
                    break
                time.sleep(0.05)
        # Whatever children a forking server left behind.
        subprocess.run(["pkill", "-9", "-P", str(self.pid)], stderr=subprocess.DEVNULL)
        self.proc = self.pid = None

    def cpu_seconds(self):
        """CPU of the server and its children (live and reaped)."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in [self.pid] + children(self.pid):
            try:
                f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
        return total / tick

def disk_queue_ms(img):
    """time_in_queue (ms) of the device under img: its rate is the I/Os in flight."""
    d = os.stat(img).st_dev
    try:
        f = open(f"/sys/dev/block/{os.major(d)}:{os.minor(d)}/stat").read().split()
        return int(f[10])
    except (FileNotFoundError, IndexError):
        return None


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


class RoundFailed(Exception):
    """A run that errored or moved nothing: the whole benchmark fails, never a figure."""


def stop_process(proc, grace_s=30):
    """SIGTERM, then SIGKILL if it has not exited within grace_s."""
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def report(lines, prefix):
    """Prints a benchmark's closing figures and keeps them in DIR/PREFIX-DATE.txt."""
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    open(f"{DIR}/{prefix}-{time.strftime('%Y%m%d-%H%M%S')}.txt", "w").write(text)


def run_main(main):
    """Exits with main()'s status; a failed round prints why and exits 1."""
    try:
        sys.exit(main())
    except RoundFailed as e:
        print(f"FAIL {e}", file=sys.stderr)
        sys.exit(1)


def log_tail(target, lines=30):
    """The end of a server's log, to say why its round failed."""
    if target is None:
        return ""
    try:
        text = open(f"{DIR}/{target.name}.log", errors="replace").read().splitlines()
    except FileNotFoundError:
        return f"(no log for {target.name})"
    return f"---- {DIR}/{target.name}.log (last {lines} lines) ----\n" + "\n".join(text[-lines:])


def fio(target, wl, img):
    """One fio run: (IOPS, bytes/s, bytes moved). Raises RoundFailed if fio
    failed, reported an error, or moved nothing."""
    name, rw, bs, qd, jobs, flush = wl
    args = [*PIN_CLIENT, "fio", "--name=bench", f"--rw={rw}", f"--bs={bs}", f"--iodepth={qd}",
            f"--numjobs={jobs}", "--group_reporting", f"--runtime={RUNTIME}", "--time_based",
            f"--size={SIZE}", "--output-format=json", "--randrepeat=0",
            f"--end_fsync={int(flush)}"]
    if target is None:
        args += ["--ioengine=io_uring", "--direct=1", f"--filename={img}"]
    else:
        args += ["--ioengine=nbd", f"--uri={target.uri()}"]
    env = dict(os.environ, HOME=TLS_HOME) if target and target.transport == "tls" else None
    # Bounded: a client that cannot connect must not hang the run.
    try:
        p = subprocess.run(args, capture_output=True, text=True, env=env,
                           timeout=RUNTIME * 3 + 60)
    except subprocess.TimeoutExpired:
        raise RoundFailed(f"fio ran past {RUNTIME * 3 + 60} s") from None
    why = f"fio exited with {p.returncode}" if p.returncode else None
    try:
        job = json.loads(p.stdout[p.stdout.index("{"):])["jobs"][0]
        side = job["read"] if "read" in rw else job["write"]
        if not why and job.get("error"):
            why = f"fio reported error {job['error']}"
        if not why and (side["iops"] <= 0 or side["io_bytes"] <= 0):
            why = "fio moved nothing (0 IOPS)"
    except (ValueError, KeyError, IndexError):
        why = why or "fio printed no result"
    if why:
        said = (p.stderr + p.stdout[:p.stdout.find("{")]).strip()
        raise RoundFailed(f"{why}\n---- what fio said ----\n{said[-2000:]}")
    return side["iops"], side["bw_bytes"], side["io_bytes"]


def make_tls_keys():
    """A CA and a server certificate for 127.0.0.1 in TLS_DIR; the CA in fio's libnbd home."""
    os.makedirs(TLS_DIR, exist_ok=True)
    os.makedirs(f"{TLS_HOME}/.pki/libnbd", exist_ok=True)
    if not os.path.exists(f"{TLS_DIR}/server-cert.pem"):
        ct = lambda *a: subprocess.run(["certtool", *a], check=True, capture_output=True)
        open(f"{TLS_DIR}/ca.info", "w").write("cn = bench CA\nca\ncert_signing_key\n")
        open(f"{TLS_DIR}/server.info", "w").write(
            "cn = 127.0.0.1\nip_address = 127.0.0.1\ntls_www_server\nencryption_key\n"
            "signing_key\n")
        ct("--generate-privkey", "--outfile", f"{TLS_DIR}/ca-key.pem")
        ct("--generate-self-signed", "--load-privkey", f"{TLS_DIR}/ca-key.pem", "--template",
           f"{TLS_DIR}/ca.info", "--outfile", f"{TLS_DIR}/ca-cert.pem")
        ct("--generate-privkey", "--outfile", f"{TLS_DIR}/server-key.pem")
        ct("--generate-certificate", "--load-ca-certificate", f"{TLS_DIR}/ca-cert.pem",
           "--load-ca-privkey", f"{TLS_DIR}/ca-key.pem", "--load-privkey",
           f"{TLS_DIR}/server-key.pem", "--template", f"{TLS_DIR}/server.info",
           "--outfile", f"{TLS_DIR}/server-cert.pem")
    shutil.copy(f"{TLS_DIR}/ca-cert.pem", f"{TLS_HOME}/.pki/libnbd/ca-cert.pem")


def fincore_bytes(img):
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", img],
                         capture_output=True, text=True).stdout.strip()
    return int(out or 0)


def random_image():
    """The 1 GiB image of random data the overlay and bitmap benchmarks share (made once)."""
    os.makedirs(DIR, exist_ok=True)
    os.makedirs(SOCKDIR, exist_ok=True)
    img = f"{DIR}/bench.img"
    if not os.path.exists(img) or os.path.getsize(img) != 1 << 30:
        print("writing a 1G image of random data...", flush=True)
        sh("fio", "--name=fill", "--rw=write", "--bs=1M", "--size=1G", f"--filename={img}",
           "--ioengine=io_uring", "--direct=1", "--refill_buffers", "--output=/dev/null")
    return img


def drop_cache(img):
    subprocess.run(["dd", f"if={img}", "iflag=nocache", "count=0", "status=none"])


def plot_svg(path, workloads, targets, med, date=None):
    """The medians as grouped bars, one panel per transport, each target's IOPS
    over the raw file's (gnuplot, from Debian's gnuplot-nox). False if no gnuplot."""
    if not shutil.which("gnuplot"):
        return False
    trs = [t for t in TRANSPORTS if any(tg[1] == t for tg in targets)]
    names = [n for n in dict.fromkeys(tg[0] for tg in targets) if n != "raw file"]
    raw = {wl[0]: med.get((("raw file", ""), wl[0]), (0, 0))[0] for wl in workloads}
    script = [f'set terminal svg size 1100,{330 * len(trs) + 40} dynamic font "sans,11"',
              f'set output "{path}"',
              f'set multiplot layout {len(trs)},1 title "uringnbd and its peers: IOPS over '
              f'the raw file\'s, medians ({date or time.strftime("%Y-%m-%d")})"',
              'set style data histograms', 'set style histogram clustered gap 1',
              'set style fill solid 0.85 border -1', 'set boxwidth 0.9',
              'set yrange [0:*]', 'set grid ytics', 'set key outside right top',
              'set xtics scale 0 nomirror font ",10"', 'set datafile separator "\t"',
              'set bmargin 5',
              'set arrow 1 from graph 0, first 1 to graph 1, first 1 nohead dashtype 2 lw 1.5',
              'set label 1 "raw file" at graph 1, first 1 offset 1,0']
    for tr in trs:
        dat = f"{path}.{tr}.dat"
        with open(dat, "w") as f:
            for wl in workloads:
                row = []
                for n in names:
                    v = med.get(((n, tr), wl[0]), (0, 0))[0]
                    row.append(f"{v / raw[wl[0]]:.3f}" if raw[wl[0]] else "0")
                f.write(wl[0] + "\t" + "\t".join(row) + "\n")
        # Two-line labels: the load over its queue depth.
        tics = ", ".join('"%s" %d' % (wl[0].replace(" QD", "\\nQD").replace(" 4x", "\\n4x"), i)
                         for i, wl in enumerate(workloads))
        script.append(f'set title "{tr}" ; set ylabel "x raw file" ; set xtics ({tics})')
        script.append("plot " + ", ".join(
            f'"{dat}" using {i + 2} title "{n}"' for i, n in enumerate(names)))
    script.append("unset multiplot")
    gp = subprocess.run(["gnuplot"], input="\n".join(script) + "\n", text=True,
                        capture_output=True)
    if gp.returncode:
        print("gnuplot: " + gp.stderr.strip(), file=sys.stderr)
    return gp.returncode == 0


def main():
    os.makedirs(DIR, exist_ok=True)
    os.makedirs(SOCKDIR, exist_ok=True)
    img = f"{DIR}/bench.img"
    want = {"1G": 1 << 30}.get(SIZE) or int(SIZE)
    if not os.path.exists(img) or os.path.getsize(img) != want:
        print(f"writing a {SIZE} image of random data...", flush=True)
        sh("fio", "--name=fill", "--rw=write", "--bs=1M", f"--size={SIZE}", f"--filename={img}",
           "--ioengine=io_uring", "--direct=1", "--refill_buffers", "--output=/dev/null")
    names = ["uringnbd", "nbd-server", "nbdkit", "qemu-nbd", "raw file"]
    if URINGNBD_BASE:
        names.insert(1, "uringnbd-base")
    only = os.environ.get("BENCH_ONLY")
    if only:
        # Named ones only; the extras (uringnbd-poll, uringnbd-ctl) only so.
        names = [n for n in ["uringnbd", "uringnbd-base", "uringnbd-ctl", "uringnbd-poll",
                             "nbd-server", "nbdkit", "qemu-nbd", "raw file"]
                 if n in only.split(",") and (n != "uringnbd-base" or URINGNBD_BASE)]
    # Each server over each transport; the raw file once.
    targets = [(n, t) for t in TRANSPORTS for n in names
               if n != "raw file" and not (t == "tls" and n == "nbd-server")]
    if "tls" in TRANSPORTS:
        make_tls_keys()
    if "raw file" in names:
        targets.append(("raw file", ""))
    workloads = WORKLOADS
    if os.environ.get("BENCH_WORKLOADS"):
        pick = os.environ["BENCH_WORKLOADS"].split(",")
        workloads = [w for w in WORKLOADS if w[0] in pick]
    res = {(tg, w[0]): [] for tg in targets for w in workloads}
    devq = {(tg, w[0]): [] for tg in targets for w in workloads}
    cpu = {tg: [] for tg in targets}
    cpuw = {(tg, w[0]): [] for tg in targets for w in workloads}
    csw = {tg: [] for tg in targets}
    cache = {tg: 0 for tg in targets}
    for rnd in range(ROUNDS):
        for wl in workloads:
            # Interleaved, and rotated each round so no target always goes first.
            order = targets[rnd % len(targets):] + targets[:rnd % len(targets)]
            for tg in order:
                n, tr = tg
                target = None if n == "raw file" else Server(n, img, tr)
                drop_cache(img)
                if target:
                    target.start()
                    c0 = target.cpu_seconds()
                q0, t0 = disk_queue_ms(img), time.monotonic()
                try:
                    iops, bw, moved = fio(target, wl, img)
                except RoundFailed as e:
                    label = f"{n} {tr}".strip()
                    print(f"FAIL round {rnd + 1} {wl[0]} {label}: {e}\n{log_tail(target)}",
                          file=sys.stderr, flush=True)
                    if target:
                        target.stop()
                    return 1
                finally:
                    q1, t1 = disk_queue_ms(img), time.monotonic()
                    if target and target.pid:
                        c1 = target.cpu_seconds()
                if q0 is not None and q1 is not None:
                    devq[(tg, wl[0])].append((q1 - q0) / ((t1 - t0) * 1000))
                if target:
                    cpu[tg].append((c1 - c0) / (moved / (1 << 30)) if moved else 0)
                    cpuw[(tg, wl[0])].append(cpu[tg][-1])
                    cache[tg] = max(cache[tg], fincore_bytes(img))
                    target.stop()
                    reqs = moved / BLOCK_BYTES[wl[2]]
                    if target.csw is not None and reqs:
                        csw[tg].append(target.csw / reqs)
                res[(tg, wl[0])].append((iops, bw))
                label = f"{n} {tr}".strip()
                print(f"  round {rnd + 1} {wl[0]:<25} {label:<18} {iops:10.0f} IOPS "
                      f"{bw / 1e6:9.1f} MB/s", flush=True)

    def label(tg):
        return f"{tg[0]} {tg[1]}".strip()

    lines = []
    host = f"{platform.node()}: {os.cpu_count()} CPUs, Linux {platform.release()}"
    lines.append(f"# uringnbd benchmark, {time.strftime('%Y-%m-%d')}, {host}")
    lines.append(f"# {ROUNDS} rounds x {RUNTIME} s per run, medians; image {SIZE} of random data"
                 + (f"; cold cache: servers in a {COLD_MEM} memory cgroup" if COLD else "")
                 + ("; pinned: servers on CPU 0, fio on CPU 1" if PIN else ""))
    lines.append("# vs best peer: against the best of nbd-server, nbdkit and qemu-nbd over the "
                 "same transport; dev QD: average I/Os in flight at the disk; CPU: the "
                 "server's CPU seconds per GiB moved"
                 + (f"; vs base: uringnbd against {os.environ.get('URINGNBD_BASE_NAME', 'its base')} "
                    "in the same rounds" if URINGNBD_BASE else ""))
    lines.append("")
    hdr = (f"{'workload':<25} {'target':<19} {'IOPS':>8} {'MB/s':>8} {'vs best peer':>12} "
           f"{'vs raw':>7} {'dev QD':>6} {'CPU':>6}  {'IOPS min-max':>15}"
           + (f" {'vs base':>7}" if URINGNBD_BASE else ""))
    lines.append(hdr)
    allmed = {}
    for wl in workloads:
        med = {tg: (statistics.median(x[0] for x in res[(tg, wl[0])]),
                    statistics.median(x[1] for x in res[(tg, wl[0])])) for tg in targets}
        allmed.update({(tg, wl[0]): v for tg, v in med.items()})
        raw = med[("raw file", "")][0] if ("raw file", "") in med else 0
        for tg in targets:
            peers = [med[p][0] for p in targets
                     if p[1] == tg[1] and p[0] not in OURS + ("raw file",)]
            best = max(peers) if peers else 0
            iops, bw = med[tg]
            vb = f"{iops / best:.2f}x" if best and tg[0] != "raw file" else "-"
            vr = f"{iops / raw:.2f}x" if raw else "-"
            dq = f"{statistics.median(devq[(tg, wl[0])]):.1f}" if devq[(tg, wl[0])] else "-"
            cw = (f"{statistics.median(cpuw[(tg, wl[0])]):.2f}" if cpuw[(tg, wl[0])]
                  else "-")
            lo = min(x[0] for x in res[(tg, wl[0])])
            hi = max(x[0] for x in res[(tg, wl[0])])
            base = med.get(("uringnbd-base", tg[1]), (0, 0))[0]
            vbase = (f" {iops / base:6.2f}x" if base and tg[0] == "uringnbd" else "")
            lines.append(f"{wl[0]:<25} {label(tg):<19} {iops:8.0f} {bw / 1e6:8.1f} {vb:>12} "
                         f"{vr:>7} {dq:>6} {cw:>6}  {lo:7.0f}-{hi:<7.0f}{vbase}")
        lines.append("")
    lines.append(f"{'server':<19} {'CPU s/GiB':>10} {'csw/request':>12} "
                 f"{'page cache after (bytes)':>26}")
    for tg in targets:
        if tg[0] == "raw file":
            continue
        c = statistics.median(cpu[tg]) if cpu[tg] else 0
        x = f"{statistics.median(csw[tg]):.2f}" if csw[tg] else "-"
        lines.append(f"{label(tg):<19} {c:10.3f} {x:>12} {cache[tg]:26d}")
    text = "\n".join(line.rstrip() for line in lines) + "\n"
    print()
    print(text)
    out = f"{DIR}/bench-{time.strftime('%Y%m%d-%H%M%S')}.txt"
    open(out, "w").write(text)
    shutil.copy(out, f"{DIR}/bench-latest.txt")
    print(f"saved {out}")
    if ("raw file", "") in targets and plot_svg(out[:-4] + ".svg", workloads, targets, allmed):
        shutil.copy(out[:-4] + ".svg", f"{DIR}/bench-latest.svg")
        print(f"saved {out[:-4]}.svg")


def plot_saved(text_path, svg_path):
    """`bench.py --plot RUN.txt OUT.svg`: the SVG of a saved run's table."""
    global TRANSPORTS
    med, wls, targets, date = {}, [], [], None
    for line in open(text_path):
        if line.startswith("# uringnbd benchmark, "):
            date = line.split(",")[1].strip()
        if len(line) < 60 or line.startswith(("#", "workload", "server")):
            continue
        wl, tg = line[:25].strip(), line[26:45].strip()
        try:
            iops = float(line[46:54])
        except ValueError:
            continue
        name, _, tr = tg.rpartition(" ") if tg != "raw file" else ("raw file", "", "")
        key = (name, tr)
        if wl not in [w[0] for w in wls]:
            wls.append((wl,))
        if key not in targets:
            targets.append(key)
        med[(key, wl)] = (iops, 0)
    TRANSPORTS = [t for t in ("unix", "tcp", "tls") if any(k[1] == t for k in targets)]
    return 0 if plot_svg(svg_path, wls, targets, med, date) else 1


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--plot":
        sys.exit(plot_saved(sys.argv[2], sys.argv[3]))
    sys.exit(main())
