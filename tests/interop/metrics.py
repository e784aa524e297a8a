#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Metrics with a real Prometheus server (Debian's prometheus, on 127.0.0.1
only): it scrapes uringnbd every second while fio writes 4k blocks at a
fixed rate through one export and reads 4 MiB blocks at queue depth 1
through another; then its HTTP API is asked for rate(requests_total) per
export and for the median request duration (histogram_quantile), and both
must match what fio did within 20%. promtool accepts a scrape with no
warning; unknown paths, other methods and malformed HTTP get HTTP errors;
40 scrapers at once and one that never finishes its request get errors or
closed connections while an NBD client is served (p99 under 100 ms); the
stats command's JSON has the same figures; every query of the shipped
Grafana dashboard (contrib/) is evaluated and the main panels have data."""
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from testlib import (T, S, URINGNBDCTL, Daemon, check, fail, free_port, image, need,  # noqa: E402
                     skip, track)

import nbd  # noqa: E402

need("fio")
PROM = "/usr/bin/prometheus"
if not os.path.exists(PROM) or not os.path.exists("/usr/bin/promtool"):
    skip("prometheus is not installed (Debian package prometheus)")
fio_nbd = subprocess.run(["fio", "--enghelp=nbd"], capture_output=True, text=True)
if fio_nbd.returncode != 0:
    skip("this fio has no nbd engine")


def http(url, method="GET"):
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


MPORT = free_port()
a = image("a.img", 256 << 20)
b = image("b.img", 256 << 20, os.urandom(64 << 20))
# Adaptive polling (off by default) on, so that its counters count.
d = Daemon(["--metrics", f"127.0.0.1:{MPORT}", "--control", os.path.join(S, "ctl"),
            "--poll-max", "100", "-e", f"a={a}", "-e", f"b={b}"])
METRICS = f"http://127.0.0.1:{MPORT}/metrics"

# ---- the endpoint itself ----
status, text = http(METRICS)
check(status == 200, f"GET /metrics: {status}")
p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
check(p.returncode == 0 and not p.stdout.strip() and not p.stderr.strip(),
      f"promtool check metrics: {p.stdout} {p.stderr}")
check(http(f"http://127.0.0.1:{MPORT}/")[0] == 404, "GET / is not 404")
check(http(f"http://127.0.0.1:{MPORT}/metricsx")[0] == 404, "GET /metricsx is not 404")
check(http(METRICS, "POST")[0] == 405, "POST /metrics is not 405")
check(http(METRICS, "HEAD")[0] == 200, "HEAD /metrics is not 200")
s = socket.create_connection(("127.0.0.1", MPORT), timeout=10)
s.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
got = s.recv(100)
check(got.startswith(b"HTTP/1.1 400") or got == b"", f"malformed HTTP answered {got[:40]!r}")
s.close()

# ---- Prometheus scraping it ----
PPORT = free_port()
conf = os.path.join(T, "prometheus.yml")
with open(conf, "w") as f:
    f.write(f"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"scrape_configs:\n  - job_name: uringnbd\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{MPORT}']\n")
prom = track(subprocess.Popen([PROM, f"--config.file={conf}", f"--storage.tsdb.path={T}/tsdb",
                               f"--web.listen-address=127.0.0.1:{PPORT}"],
                              stdout=subprocess.DEVNULL, stderr=open(f"{T}/prometheus.log", "w")))
API = f"http://127.0.0.1:{PPORT}/api/v1"
deadline = time.time() + 30
while time.time() < deadline:
    try:
        if http(f"http://127.0.0.1:{PPORT}/-/ready")[0] == 200:
            break
    except OSError:
        pass
    time.sleep(0.2)
else:
    fail("prometheus did not become ready: " + open(f"{T}/prometheus.log").read()[-2000:])


def query(expr, at):
    q = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
    status, body = http(f"{API}/query?{q}")
    check(status == 200, f"prometheus query {expr}: {status} {body[:300]}")
    res = json.loads(body)["data"]["result"]
    return float(res[0]["value"][1]) if res else None


# Scraping before the load starts, so every rate window below is covered by samples.
deadline = time.time() + 30
while query('up{job="uringnbd"}', time.time()) != 1:
    check(time.time() < deadline, "prometheus never scraped uringnbd")
    time.sleep(0.2)
time.sleep(1.5)

# ---- fio through both exports, with hostile scrapers meanwhile ----
RUN = 16
RATE = 1500
jobs = [
    ("a", ["--rw=randwrite", "--bs=4k", "--iodepth=8", f"--rate_iops={RATE}"]),
    ("b", ["--rw=randread", "--bs=4M", "--iodepth=1", "--size=64M", "--rate_iops=150"]),
]
fios = []
t_start = time.time()
for name, extra in jobs:
    out = os.path.join(T, f"fio-{name}.json")
    fios.append((name, out, track(subprocess.Popen(
        ["fio", "--name=" + name, "--ioengine=nbd", f"--uri={d.uri(name)}", "--time_based",
         f"--runtime={RUN}", "--output-format=json", f"--output={out}"] + extra,
        stdout=subprocess.DEVNULL, stderr=open(out + ".err", "w")))))

# A client that never finishes its request, and 40 scrapers at once.
stuck = socket.create_connection(("127.0.0.1", MPORT))
stuck.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
results = []


def scrape():
    try:
        results.append(http(METRICS)[0])
    except OSError as e:
        results.append(type(e).__name__)


threads = [threading.Thread(target=scrape) for _ in range(40)]
h = nbd.NBD()
h.set_export_name("a")  # reads: fio only writes there, and b's read latency stays fio's
h.connect_unix(d.sock)
for t in threads:
    t.start()
lat = []
t0 = time.time()
while time.time() - t0 < 3:
    t1 = time.time()
    h.pread(4096, 0)
    lat.append(time.time() - t1)
for t in threads:
    t.join(timeout=30)
h.shutdown()
lat.sort()
p99 = lat[len(lat) * 99 // 100]
check(p99 < 0.1, f"NBD p99 {p99 * 1e3:.1f} ms during 40 scrapes")
ok = sum(1 for r in results if r == 200)
check(ok >= 1 and len(results) == 40, f"40 scrapers: {results}")
print(f"40 scrapers at once: {ok} answered, the rest {sorted(set(map(str, results)) - {'200'})}; "
      f"NBD p99 {p99 * 1e3:.2f} ms over {len(lat)} reads")

for name, out, proc in fios:
    check(proc.wait(timeout=RUN + 60) == 0, f"fio {name}: " + open(out + ".err").read()[-2000:])
t_end = time.time()
stuck.settimeout(20)  # libmicrohttpd closes a connection silent for 10 s
try:
    closed = stuck.recv(100) == b""
except ConnectionResetError:
    closed = True
except socket.timeout:
    closed = False
check(closed, "a scraper that never finished its request was not closed")
time.sleep(2.5)  # the last scrapes

fio = {}
for name, out, _ in fios:
    job = json.load(open(out))["jobs"][0]
    side = job["write"] if name == "a" else job["read"]
    fio[name] = side
mid = t_start + RUN * 0.75
w_rate = query('rate(uringnbd_requests_total{export="a",op="write"}[8s])', mid)
check(w_rate is not None, "no write rate for export a")
print(f"export a: Prometheus rate {w_rate:.0f}/s, fio {fio['a']['iops']:.0f} IOPS")
check(abs(w_rate - fio["a"]["iops"]) <= 0.2 * fio["a"]["iops"], "write rates differ by over 20%")
r_rate = query('rate(uringnbd_requests_total{export="b",op="read"}[8s])', mid)
check(r_rate is not None, "no read rate for export b")
print(f"export b: Prometheus rate {r_rate:.1f}/s, fio {fio['b']['iops']:.1f} IOPS")
check(abs(r_rate - fio["b"]["iops"]) <= 0.2 * fio["b"]["iops"], "read rates differ by over 20%")
p50 = query('histogram_quantile(0.5, rate(uringnbd_request_duration_seconds_bucket'
            '{export="b",op="read"}[10s]))', mid)
fio_p50 = fio["b"]["clat_ns"]["percentile"]["50.000000"] / 1e9
print(f"export b: median 4 MiB read, Prometheus {p50 * 1e3:.3f} ms, fio {fio_p50 * 1e3:.3f} ms")
check(abs(p50 - fio_p50) <= 0.2 * fio_p50, "median latencies differ by over 20%")
bytes_a = query('uringnbd_request_bytes_total{export="a",op="write"}', t_end + 2)
check(bytes_a == fio["a"]["io_bytes"], f"bytes written: Prometheus {bytes_a}, fio "
      f"{fio['a']['io_bytes']}")

# ---- the stats command: the same figures ----
st = json.loads(subprocess.run([URINGNBDCTL, "-c", os.path.join(S, "ctl"), "--json", "stats"],
                               capture_output=True, text=True, check=True).stdout)
ea = [e for e in st["exports"] if e["name"] == "a"][0]
check(ea["ops"]["write"]["bytes"] == fio["a"]["io_bytes"], f"stats: {ea}")
status, text = http(METRICS)
check(f'uringnbd_request_bytes_total{{export="a",op="write"}} {fio["a"]["io_bytes"]}' in text,
      "the scrape and the stats command disagree")
# Adaptive polling found completions during fio; both views count the same.
hits = sum(w["poll-hits"] for w in st["per-worker"])
scraped = sum(int(line.split()[-1]) for line in text.splitlines()
              if line.startswith("uringnbd_poll_hits_total{"))
check(hits > 0 and hits == scraped and "uringnbd_poll_seconds_total{worker=" in text,
      f"polling counters: stats {hits}, scrape {scraped}")
# ---- every query of the shipped Grafana dashboard, evaluated by this Prometheus ----
dash = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                   "contrib", "grafana-uringnbd.json")))
for panel in dash["panels"]:
    for target in panel["targets"]:
        expr = target["expr"].replace("$export", ".*").replace("$__rate_interval", "10s")
        q = urllib.parse.urlencode({"query": expr, "time": f"{mid:.3f}"})
        status, body = http(f"{API}/query?{q}")
        check(status == 200 and json.loads(body)["status"] == "success",
              f"dashboard panel {panel['title']!r}: {expr}: {status} {body[:200]}")
        if panel["id"] in (1, 2, 3):
            check(json.loads(body)["data"]["result"], f"panel {panel['title']!r} is empty")

prom.terminate()
prom.wait(timeout=20)
d.stop()
print("metrics: Prometheus agrees with fio")
