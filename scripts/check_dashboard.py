#!/usr/bin/env python3
"""Checks the Grafana dashboard against a real Prometheus: starts a local origin
(examples/jobs_origin.py), prescient (the debug build) with prefetching, compression, read-through
with stale windows, warming, view counts and an expiry set, and a Prometheus (Debian's
`prometheus` package) scraping it every second with grafana/alerts.yml loaded; drives a small
workload through prescient; then evaluates every panel's query of grafana/prescient.json
through Prometheus's HTTP API. Fails on a query Prometheus rejects, a query with an empty
result, or an alert rule that does not load. `promtool check rules` runs first.

Usage: python3 scripts/check_dashboard.py [--show]   (CI runs it after the tests; --show prints
every series each query returned)
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "debug", "prescient")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_http(url, limit=30):
    end = time.time() + limit
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status < 500:
                    return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"no answer from {url} within {limit}s")


def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


class Client:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.f = self.s.makefile("rb")

    def read(self):
        line = self.f.readline()
        t, rest = line[:1], line[1:-2]
        if t in (b"+", b"-", b":"):
            return rest
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data
        if t == b"*":
            return [self.read() for _ in range(max(int(rest), 0))]
        raise RuntimeError(f"unexpected reply {line!r}")

    def cmd(self, *args):
        self.s.sendall(resp(*args))
        return self.read()


def main():
    for tool in ("prometheus", "promtool"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install prometheus")
    alerts = os.path.join(ROOT, "grafana", "alerts.yml")
    subprocess.run(["promtool", "check", "rules", alerts], check=True)
    subprocess.run(["cargo", "build", "--quiet"], cwd=ROOT, check=True)
    dash = json.load(open(os.path.join(ROOT, "grafana", "prescient.json")))

    tmp = tempfile.mkdtemp(prefix="prescient-dash-")
    procs = []
    try:
        origin, port, admin, prom = free_port(), free_port(), free_port(), free_port()
        procs.append(subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "examples", "jobs_origin.py"), "--port", str(origin)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        conf = os.path.join(tmp, "prescient.toml")
        with open(conf, "w") as f:
            f.write(f"""
[compression]
threshold_bytes = 64
[tracking]
min_support = 1.0
[[origin.routes]]
name = "product"
key = "product:{{id}}"
url = "http://127.0.0.1:{origin}/products/{{id}}.json"
ttl = 1
stale = 600
tags = ["catalog"]
[[warming.tasks]]
name = "catalog"
route = "product"
ids = "1-2"
interval = 5
[counters]
sink_url = "http://127.0.0.1:{origin}/api/views"
interval_s = 1
patterns = ["views:product:{{id}}"]
[[expiry.sets]]
name = "offers"
key = "offers:expiring"
interval_s = 1
delete = ["offer:{{member}}"]
webhook = "http://127.0.0.1:{origin}/api/offers/expired"
""")
        procs.append(subprocess.Popen(
            [BIN, "--config", conf, "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}"],
            stdout=open(os.path.join(tmp, "prescient.log"), "w"), stderr=subprocess.STDOUT))
        wait_http(f"http://127.0.0.1:{admin}/health")
        pconf = os.path.join(tmp, "prometheus.yml")
        with open(pconf, "w") as f:
            f.write(f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: ["{alerts}"]
scrape_configs:
  - job_name: prescient
    static_configs:
      - targets: ["127.0.0.1:{admin}"]
""")
        procs.append(subprocess.Popen(
            ["prometheus", f"--config.file={pconf}", f"--storage.tsdb.path={tmp}/tsdb",
             f"--web.listen-address=127.0.0.1:{prom}"],
            stdout=open(os.path.join(tmp, "prometheus.log"), "w"), stderr=subprocess.STDOUT))
        wait_http(f"http://127.0.0.1:{prom}/-/ready", 60)

        # A small workload: users reading products page by page (prefetching learns the
        # sequence; reads past the 1 s ttl are served stale), large values (compressed),
        # counters and expiring offers.
        c = Client(port)
        big = json.dumps({"id": 1, "description": "a product description " * 20})
        started = time.time()
        rounds = 0
        while time.time() - started < 25:
            for user in range(5):
                for page in range(1, 4):
                    c.cmd("GET", f"product:{page}")
                c.cmd("GET", "product:42")
                c.cmd("SET", f"doc:{user}", big)
                c.cmd("GET", f"doc:{user}")
                c.cmd("INCR", f"views:product:{user}")
                c.cmd("GET", f"missing:{rounds}:{user}")
            now = int(time.time())
            c.cmd("SET", f"offer:{rounds}", "x")
            c.cmd("ZADD", "offers:expiring", now, rounds)
            rounds += 1
            time.sleep(0.2)

        failures = []
        rows = []
        for panel in dash["panels"]:
            for t in panel.get("targets", []):
                expr = t["expr"].replace("$instance", ".*")
                q = urllib.parse.urlencode({"query": expr})
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{prom}/api/v1/query?{q}", timeout=10) as r:
                        body = json.load(r)
                except urllib.error.HTTPError as e:
                    body = json.load(e)
                if body.get("status") != "success":
                    failures.append(f"{panel['title']} [{t['refId']}]: {body.get('error')}")
                    continue
                result = body["data"]["result"]
                if not result:
                    failures.append(f"{panel['title']} [{t['refId']}]: empty result for {t['expr']}")
                    continue
                # A legend naming a label the series lack means the query groups by a label
                # the metric does not have.
                for label in re.findall(r"\{\{(\w+)\}\}", t["legendFormat"]):
                    if any(label not in r["metric"] for r in result):
                        failures.append(f"{panel['title']} [{t['refId']}]: no label '{label}' in {result[0]['metric']}")
                rows.append((panel["title"], t["legendFormat"], len(result), result[0]["value"][1]))
                if "--show" in sys.argv:
                    for r in result:
                        print(f"    {panel['title']}: {r['metric']} = {r['value'][1]}")
        with urllib.request.urlopen(f"http://127.0.0.1:{prom}/api/v1/rules", timeout=10) as r:
            groups = json.load(r)["data"]["groups"]
        rules = [rule for g in groups for rule in g["rules"]]
        bad = [r["name"] for r in rules if r.get("health") not in ("ok", "unknown")]
        if len(rules) == 0 or bad:
            failures.append(f"alert rules not healthy: {bad or 'none loaded'}")

        w = max(len(r[0]) for r in rows) if rows else 10
        for title, legend, n, value in rows:
            print(f"  {title:<{w}}  {legend:<20} {n:>3} series  e.g. {value}")
        print(f"{len(rows)} queries of {len(dash['panels'])} panels answered; {len(rules)} alert rules loaded")
        if failures:
            print("FAILED:")
            for f in failures:
                print("  " + f)
            print(f"(logs in {tmp})")
            sys.exit(1)
        print("dashboard check passed")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
