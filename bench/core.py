#!/usr/bin/env python3
"""Proxy overhead benchmark: redis-benchmark SET/GET with 1 KB values, 50 clients, unpipelined
and -P 16, against Redis directly, through prescient, and through twemproxy (nutcracker), all in
front of the same redis-server, and against prescient on its embedded store (memory://), in one
run. Prints throughput, p50/p99 and the ratios.

`prescient` is prescient with its defaults (compression and tracking on): what a user gets.
The other columns explain its parts: `uncompressed` is the same with compression off,
`untracked` with tracking off as well; `memory` is prescient on memory:// with its defaults.

Each endpoint works on its own keyspace: before its turn the store is flushed, and its GETs read
the values its own SETs wrote (so prescient's GETs decode the envelopes it stored, and direct
Redis never reads an envelope). The endpoint order is shuffled every round; each cell is the
median of --rounds runs and each ratio the median of the per-round ratios, because this machine
is shared and noisy: read the ratios, not the absolutes.

Usage: python3 bench/core.py [--requests N] [--rounds R] [--prescient PATH] [--extra-config K=V]
Needs redis-server, redis-benchmark (redis-tools) and nutcracker; installs them with apt-get
when missing and run as root.
"""
import argparse
import csv
import io
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PRESCIENT = os.path.join(ROOT, "target/release/prescient")


def need(binary, package):
    if shutil.which(binary):
        return
    if os.geteuid() != 0:
        sys.exit(f"{binary} missing: apt-get install {package}")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=15.0):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            sys.exit(f"{what} exited early (code {proc.returncode})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"*1\r\n$4\r\nPING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"{what} did not answer PING on port {port}")


def stop(procs, tmp):
    """Stops the started processes (newest first) and removes the scratch directory."""
    for p in reversed(procs):
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
    shutil.rmtree(tmp, ignore_errors=True)


def start_redis(procs):
    """Starts a redis-server without persistence on a free port; returns (port, process)."""
    port = free_port()
    p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                          "--save", "", "--appendonly", "no"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(p)
    wait_port(port, p, "redis-server")
    return port, p


def start_prescient(binary, upstream, env, tmp, name, procs):
    """Starts prescient on a free port in front of `upstream`; returns the port."""
    port = free_port()
    p = subprocess.Popen([binary, "--listen", f"127.0.0.1:{port}", "--admin-listen", "",
                          "--upstream", upstream],
                         env=env, stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(tmp, f"{name}.log"), "w"))
    procs.append(p)
    wait_port(port, p, name)
    return port


def start_twemproxy(redis_port, tmp, procs):
    """Starts twemproxy (nutcracker) on a free port in front of one redis-server; returns the
    port."""
    port = free_port()
    conf = os.path.join(tmp, "nutcracker.yml")
    with open(conf, "w") as f:
        f.write(f"bench:\n  listen: 127.0.0.1:{port}\n  redis: true\n  preconnect: true\n"
                f"  servers:\n    - 127.0.0.1:{redis_port}:1\n")
    tw = subprocess.Popen(["nutcracker", "-c", conf, "-o", os.path.join(tmp, "nutcracker.log")],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(tw)
    wait_port(port, tw, "nutcracker")
    return port


def flush(port):
    """FLUSHALL SYNC on the endpoint at `port`."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"*2\r\n$8\r\nFLUSHALL\r\n$4\r\nSYNC\r\n")
        if not s.recv(64).startswith(b"+OK"):
            sys.exit(f"FLUSHALL failed on port {port}")


def bench(port, test, pipeline, requests, clients=50, size=1024):
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", test, "-n", str(requests),
           "-c", str(clients), "-d", str(size), "-P", str(pipeline), "-r", "100000", "--csv", "-q"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600).stdout
    rows = [r for r in csv.reader(io.StringIO(out)) if r and r[0] != "test"]
    if not rows:
        raise RuntimeError(f"redis-benchmark printed nothing useful: {out!r}")
    r = rows[0]
    return {"rps": float(r[1]), "p50": float(r[4]), "p99": float(r[6])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prescient", default=DEFAULT_PRESCIENT)
    ap.add_argument("--extra-config", action="append", default=[],
                    help="PRESCIENT__SECTION__KEY=value environment for the proxy")
    ap.add_argument("--no-twemproxy", action="store_true")
    ap.add_argument("--no-embedded", action="store_true", help="skip prescient on memory://")
    ap.add_argument("--no-untracked", action="store_true",
                    help="skip prescient with compression and tracking off")
    ap.add_argument("--no-uncompressed", action="store_true",
                    help="skip prescient with compression off (the compression cost column)")
    args = ap.parse_args()
    need("redis-server", "redis-server")
    need("redis-benchmark", "redis-tools")
    if not args.no_twemproxy:
        need("nutcracker", "nutcracker")
    # The default binary is rebuilt (a no-op when current), so a run never measures a stale
    # build; an explicit --prescient is used as given.
    if args.prescient == DEFAULT_PRESCIENT:
        subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)

    tmp = tempfile.mkdtemp(prefix="prescient-bench-")
    procs = []
    try:
        rport, _ = start_redis(procs)
        env = {**os.environ, "RUST_LOG": "warn"}
        for kv in args.extra_config:
            k, v = kv.split("=", 1)
            env[k] = v
        upstream = f"redis://127.0.0.1:{rport}"
        raw = {**env, "PRESCIENT__COMPRESSION__ENABLED": "false"}
        targets = [("direct", rport),
                   ("prescient", start_prescient(args.prescient, upstream, env, tmp, "prescient", procs))]
        if not args.no_uncompressed:
            targets.append(("uncompressed", start_prescient(args.prescient, upstream, raw, tmp,
                                                            "prescient-uncompressed", procs)))
        if not args.no_untracked:
            targets.append(("untracked", start_prescient(
                args.prescient, upstream, {**raw, "PRESCIENT__TRACKING__ENABLED": "false"}, tmp,
                "prescient-untracked", procs)))
        if not args.no_embedded:
            mport = start_prescient(args.prescient, "memory://", env, tmp, "prescient-memory", procs)
            targets.append(("memory", mport))
        if not args.no_twemproxy:
            targets.append(("twemproxy", start_twemproxy(rport, tmp, procs)))

        rows = [(t, p) for p in (1, 16) for t in ("set", "get")]
        results = {}
        for rnd in range(args.rounds):
            order = targets[:]
            random.shuffle(order)
            for name, port in order:
                # Its own keyspace: the memory endpoint's store, or Redis flushed for it.
                flush(port if name == "memory" else rport)
                for test, pipe in rows:
                    n = args.requests * (4 if pipe > 1 else 1)
                    r = bench(port, test, pipe, n)
                    results.setdefault((test, pipe, name), []).append(r)
            print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)

        med = {k: {m: statistics.median(x[m] for x in v) for m in ("rps", "p50", "p99")}
               for k, v in results.items()}
        names = [n for n, _ in targets]
        ratios = [(a, b) for a, b in [("prescient", "direct"), ("prescient", "twemproxy"),
                                      ("memory", "direct"), ("twemproxy", "direct"),
                                      ("prescient", "uncompressed"), ("uncompressed", "untracked")]
                  if a in names and b in names]
        print(f"\nredis-benchmark, 50 clients, 1 KB values, median of {args.rounds} rounds "
              "(endpoint order shuffled per round, each on its own keyspace)")
        print("(prescient = defaults, in front of the same redis-server; uncompressed = the same, "
              "compression off; untracked = compression and tracking off; memory = defaults on "
              "memory://)")
        head = "| test | " + " | ".join(f"{n} rps (p50/p99 ms)" for n in names) + " |"
        head += "".join(f" {a}/{b} |" for a, b in ratios)
        print(head)
        print("|" + "---|" * (head.count("|") - 1))
        for test, pipe in rows:
            cells = {n: med[(test, pipe, n)] for n in names}
            line = f"| {test.upper()} -P {pipe} | " + " | ".join(
                f"{cells[n]['rps']:,.0f} ({cells[n]['p50']:.2f}/{cells[n]['p99']:.2f})" for n in names)
            # Each ratio is the median of the per-round ratios: runs of one round are back to
            # back, so slow drift of the shared machine cancels out of them.
            line += " |" + "".join(
                f" {statistics.median(x['rps'] / y['rps'] for x, y in zip(results[(test, pipe, a)], results[(test, pipe, b)])):.2f}x |"
                for a, b in ratios)
            print(line)
    finally:
        stop(procs, tmp)


if __name__ == "__main__":
    main()
