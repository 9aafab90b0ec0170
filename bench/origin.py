#!/usr/bin/env python3
"""Read-through benchmark, in one run against one redis-server and one HTTP origin (Python's
ThreadingHTTPServer, 20 ms per request, counting requests):

1. What read-through costs on a hit: redis-benchmark GET -P 1 and -P 16, 50 clients, on keys
   that are all present (1 KB values), through prescient with a route matching every key and
   through prescient without routes, interleaved rounds; throughput ratio and p99 difference.
   Then stale reads: 10,000 keys of a route with ttl 1 s and stale 600 s are filled through
   prescient and left to go stale; GETs of them (each stale read is served at once, and
   starts its key's one refresh) against GETs of fresh keys, on the same prescient.
2. A thundering herd: N clients (default 1,000) read one cold key at the same moment.
   Through prescient (read-through): one GET each. Cache-aside, as clients do it by hand
   against Redis directly: GET, on nil fetch from the origin and SET. Reported: origin requests
   and the clients' p50/p99 latency, per round (the key is deleted between rounds).

Usage: python3 bench/origin.py [--rounds 3] [--requests 100000] [--herd 1000]
"""
import argparse
import asyncio
import csv
import io
import http.server
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from core import (DEFAULT_PRESCIENT, ROOT, bench, flush, free_port, need, start_redis, stop,  # noqa: E402
                  wait_port)

DELAY = 0.020
BODY = b'{"id":"cold","name":"a product","price":12.5}'


class Origin(http.server.BaseHTTPRequestHandler):
    hits = 0
    cold = 0
    lock = threading.Lock()

    def do_GET(self):
        with Origin.lock:
            Origin.hits += 1
            Origin.cold += self.path.startswith("/cold/")
        time.sleep(DELAY)
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *a):
        pass


def start_origin():
    http.server.ThreadingHTTPServer.daemon_threads = True
    http.server.ThreadingHTTPServer.request_queue_size = 2048
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def start_proxy(binary, upstream, tmp, name, procs, route_port=None):
    port = free_port()
    env = {**os.environ, "RUST_LOG": "warn"}
    conf = os.path.join(tmp, f"{name}.toml")
    with open(conf, "w") as f:
        if route_port:
            f.write("[origin]\ntimeout_ms = 5000\nmax_concurrency = 64\n\n[[origin.routes]]\n"
                    'name = "bench"\nkey = "key:{id}"\n'
                    f'url = "http://127.0.0.1:{route_port}/items/{{id}}"\nttl = 900\n'
                    "\n[[origin.routes]]\n"
                    'name = "cold"\nkey = "cold:{id}"\n'
                    f'url = "http://127.0.0.1:{route_port}/cold/{{id}}"\nttl = 900\n'
                    "\n[[origin.routes]]\n"
                    'name = "stale"\nkey = "stale:{id}"\n'
                    f'url = "http://127.0.0.1:{route_port}/stale/{{id}}"\nttl = 1\nstale = 600\n')
    p = subprocess.Popen([binary, "--config", conf, "--listen", f"127.0.0.1:{port}",
                          "--admin-listen", "", "--upstream", upstream], env=env,
                         stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, f"{name}.log"), "w"))
    procs.append(p)
    wait_port(port, p, name)
    return port


def bench_cmd(port, args, requests, pipeline=1, keyspace=10000):
    """redis-benchmark with a command of its own: rps and p99 (ms)."""
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-n", str(requests), "-c", "50",
           "-P", str(pipeline), "-r", str(keyspace), "--csv"] + args
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600).stdout
    rows = [r for r in csv.reader(io.StringIO(out)) if r and r[0] != "test"]
    return {"rps": float(rows[0][1]), "p99": float(rows[0][6])}


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


async def read_reply(r):
    line = await r.readline()
    if line[:1] == b"$":
        n = int(line[1:])
        if n >= 0:
            await r.readexactly(n + 2)
    return line


async def herd(port, n, read):
    """Opens n connections to `port`, then lets all of them run `read(r, w)` at the same
    moment; returns each one's latency (s)."""
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(n)]
    go = asyncio.Event()

    async def one(r, w):
        await go.wait()
        t = time.perf_counter()
        await read(r, w)
        return time.perf_counter() - t
    tasks = [asyncio.create_task(one(r, w)) for r, w in conns]
    await asyncio.sleep(0.05)
    go.set()
    lat = await asyncio.gather(*tasks)
    for _, w in conns:
        w.close()
    return lat


async def herd_proxy(port, n, key):
    async def read(r, w):
        w.write(resp("GET", key))
        await w.drain()
        line = await read_reply(r)
        assert line.startswith(b"$") and line != b"$-1\r\n", line
    return await herd(port, n, read)


async def http_get(port, path):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    await w.drain()
    data = await r.read()
    w.close()
    return data.split(b"\r\n\r\n", 1)[1]


async def herd_cache_aside(rport, oport, n, key):
    async def read(r, w):
        w.write(resp("GET", key))
        await w.drain()
        if await read_reply(r) == b"$-1\r\n":
            body = await http_get(oport, "/cold/x")
            w.write(resp("SET", key, body, "EX", 900))
            await w.drain()
            await read_reply(r)
    return await herd(rport, n, read)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--herd", type=int, default=1000)
    ap.add_argument("--prescient", default=DEFAULT_PRESCIENT)
    args = ap.parse_args()
    need("redis-server", "redis-server")
    need("redis-benchmark", "redis-tools")
    if args.prescient == DEFAULT_PRESCIENT:
        subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    except (ImportError, ValueError):
        pass

    tmp = tempfile.mkdtemp(prefix="prescient-obench-")
    procs = []
    origin = start_origin()
    oport = origin.server_address[1]
    try:
        rport, _ = start_redis(procs)
        upstream = f"redis://127.0.0.1:{rport}"
        routed = start_proxy(args.prescient, upstream, tmp, "routed", procs, route_port=oport)
        plain = start_proxy(args.prescient, upstream, tmp, "plain", procs)
        # 1. Hits: every key present.
        flush(rport)
        subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(rport), "-t", "set",
                        "-n", "200000", "-r", "100000", "-d", "1024", "-q"], check=True,
                       capture_output=True)
        # redis-benchmark -r 100000 misses some keys: fill the rest so every GET is a hit.
        s = socket.create_connection(("127.0.0.1", rport))
        for start in range(0, 100000, 1000):
            s.sendall(b"".join(resp("SET", f"key:{i:012d}", "x" * 1024, "NX") for i in range(start, start + 1000)))
            got = b""
            while got.count(b"\r\n") < 1000:
                got += s.recv(1 << 16)
        s.close()
        hits_before = Origin.hits
        ratios = {}
        for rnd in range(args.rounds):
            for pipe in (1, 16):
                order = [("routed", routed), ("plain", plain)]
                if rnd % 2:
                    order.reverse()
                got = {}
                for name, port in order:
                    got[name] = bench(port, "get", pipe, args.requests * (4 if pipe > 1 else 1))
                ratios.setdefault(pipe, []).append((got["routed"]["rps"] / got["plain"]["rps"],
                                                    got["routed"]["p99"] - got["plain"]["p99"]))
            print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)
        print("\nRead-through on hits: redis-benchmark GET, 50 clients, 1 KB values, every key present;"
              f" prescient with a route over every key vs without routes, median of {args.rounds} rounds")
        print("| test | routed/plain throughput | p99 routed - plain (ms) |")
        print("|---|---|---|")
        for pipe, xs in ratios.items():
            print(f"| GET -P {pipe} | {statistics.median(x[0] for x in xs):.2f}x | "
                  f"{statistics.median(x[1] for x in xs):+.3f} |")
        print(f"(origin requests during the hit runs: {Origin.hits - hits_before})")

        # 1b. Stale reads: 10,000 keys filled through the route (ttl 1 s, stale 600 s).
        s = socket.create_connection(("127.0.0.1", routed))
        for start in range(0, 10000, 500):
            s.sendall(resp("MGET", *[f"stale:{i:012d}" for i in range(start, start + 500)]))
            got = b""
            while not got.endswith(b"\r\n") or got.count(b"\r\n") < 1001:
                got += s.recv(1 << 20)
        s.close()
        time.sleep(1.5)  # past their ttl: every key is stale now
        stale_ratios = []
        for rnd in range(args.rounds):
            stale = bench_cmd(routed, ["GET", "stale:__rand_int__"], args.requests)
            fresh = bench_cmd(routed, ["GET", "key:__rand_int__"], args.requests, keyspace=100000)
            stale_ratios.append((stale["rps"] / fresh["rps"], stale["p99"] - fresh["p99"]))
        print("\nStale reads (served at once, one refresh per key) vs fresh hits, same prescient, GET -P 1:")
        print("| stale/fresh throughput | p99 stale - fresh (ms) |")
        print("|---|---|")
        print(f"| {statistics.median(x[0] for x in stale_ratios):.2f}x | "
              f"{statistics.median(x[1] for x in stale_ratios):+.3f} |")

        # 2. Thundering herd.
        rows = []
        for rnd in range(args.rounds):
            for how in ("prescient", "cache-aside"):
                key = f"cold:herd{rnd}"
                flush(rport)
                before = Origin.cold
                if how == "prescient":
                    lat = asyncio.run(herd_proxy(routed, args.herd, key))
                else:
                    lat = asyncio.run(herd_cache_aside(rport, oport, args.herd, key))
                # Requests for the cold key only (the stale keys above keep refreshing).
                rows.append((how, Origin.cold - before, pct(lat, 0.5) * 1000, pct(lat, 0.99) * 1000))
        print(f"\nThundering herd: {args.herd} clients read one cold key at once; origin 20 ms per request")
        print("| how | origin requests (per round) | p50 ms (median) | p99 ms (median) |")
        print("|---|---|---|---|")
        for how in ("prescient", "cache-aside"):
            rs = [r for r in rows if r[0] == how]
            print(f"| {how} | {', '.join(str(r[1]) for r in rs)} | "
                  f"{statistics.median(r[2] for r in rs):.1f} | {statistics.median(r[3] for r in rs):.1f} |")
    finally:
        origin.shutdown()
        stop(procs, tmp)


if __name__ == "__main__":
    main()
