#!/usr/bin/env python3
"""Compression benchmark, in one run against one redis-server:

1. Memory: the same corpus of generated JSON documents (1 KB to 64 KB, log-uniform sizes,
   records of users/orders with names, emails, timestamps, tags, nested addresses) is loaded
   through prescient with compression off and with each codec; Redis's used_memory growth is
   reported for each, and the saving against compression off. Every document is read back
   through the proxy and compared byte for byte.
2. Throughput: redis-benchmark SET/GET with a 1 KB and a 16 KB JSON document as the value,
   50 clients, against Redis directly and through prescient with compression off and on
   (zlib), interleaved, median of --rounds. Read the on/off ratio, not the absolutes.

Usage: python3 bench/compression.py [--docs 2000] [--requests 50000] [--rounds 3]
"""
import argparse
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from core import DEFAULT_PRESCIENT, ROOT, free_port, need, start_redis, stop, wait_port  # noqa: E402,E501
from memory import info_used, resp  # noqa: E402

FIRST = ["ada", "grace", "alan", "edsger", "barbara", "ken", "dennis", "margaret", "linus", "guido"]
LAST = ["lovelace", "hopper", "turing", "dijkstra", "liskov", "thompson", "ritchie", "hamilton"]
CITIES = ["Lisbon", "Oslo", "Nairobi", "Osaka", "Lima", "Toronto", "Auckland", "Krakow"]
TAGS = ["vip", "beta", "churn-risk", "newsletter", "mobile", "desktop", "trial", "annual"]


def record(rng, i):
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return {
        "id": rng.randrange(1, 10**9),
        "name": f"{first.title()} {last.title()}",
        "email": f"{first}.{last}{rng.randrange(1000)}@example.com",
        "created_at": f"2026-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}T"
                      f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}Z",
        "active": rng.random() < 0.8,
        "score": round(rng.random() * 100, 3),
        "tags": rng.sample(TAGS, rng.randrange(0, 4)),
        "address": {"city": rng.choice(CITIES), "zip": f"{rng.randrange(10000, 99999)}",
                    "street": f"{rng.randrange(1, 300)} {rng.choice(LAST).title()} Street"},
        "orders": [{"sku": f"SKU-{rng.randrange(10**6):06d}", "qty": rng.randrange(1, 5),
                    "price": round(rng.random() * 500, 2)} for _ in range(rng.randrange(0, 4))],
        "seq": i,
    }


def document(rng, size):
    recs = []
    doc = "[]"
    while len(doc) < size:
        recs.append(record(rng, len(recs)))
        doc = json.dumps({"page": rng.randrange(100), "items": recs}, separators=(",", ":"))
    return doc.encode()


def corpus(n, seed=42):
    rng = random.Random(seed)
    return [document(rng, int(1024 * 64 ** rng.random())) for _ in range(n)]


def send_all(port, commands, expect_prefix):
    s = socket.create_connection(("127.0.0.1", port))
    replies = []
    for start in range(0, len(commands), 200):
        batch = commands[start:start + 200]
        s.sendall(b"".join(resp(*c) for c in batch))
        buf = b""
        got = []
        while len(got) < len(batch):
            chunk = s.recv(1 << 20)
            if not chunk:
                sys.exit("connection closed")
            buf += chunk
            more, buf = parse_replies(buf, len(batch) - len(got))
            got.extend(more)
        for r in got:
            if not r.startswith(expect_prefix):
                sys.exit(f"unexpected reply: {r[:80]!r}")
        replies.extend(got)
    s.close()
    return replies


def parse_replies(buf, want):
    """Splits complete simple/bulk replies off buf (enough for SET/GET)."""
    out, pos = [], 0
    while len(out) < want and pos < len(buf):
        nl = buf.find(b"\r\n", pos)
        if nl < 0:
            break
        if buf[pos:pos + 1] == b"$":
            n = int(buf[pos + 1:nl])
            end = nl + 2 + (n + 2 if n >= 0 else 0)
            if end > len(buf):
                break
            out.append(buf[pos:end])
            pos = end
        else:
            out.append(buf[pos:nl + 2])
            pos = nl + 2
    return out, buf[pos:]


def bench(port, args, requests, keyspace):
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-n", str(requests), "-c", "50",
           "-r", str(keyspace), "-q"] + args
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600).stdout
    # The CSV form would quote the JSON value badly: read "... N requests per second".
    found = re.findall(r"([\d.]+) requests per second", out.split("\r")[-1])
    if not found:
        raise RuntimeError(f"redis-benchmark printed nothing useful: {out[-300:]!r}")
    return float(found[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prescient", default=DEFAULT_PRESCIENT)
    args = ap.parse_args()
    need("redis-server", "redis-server")
    need("redis-benchmark", "redis-tools")
    # The default binary is rebuilt (a no-op when current), so a run never measures a stale
    # build; an explicit --prescient is used as given.
    if args.prescient == DEFAULT_PRESCIENT:
        subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)

    tmp = tempfile.mkdtemp(prefix="prescient-zbench-")
    procs = []
    try:
        rport, _ = start_redis(procs)

        def proxy(name, **cfg):
            port = free_port()
            env = {**os.environ, "RUST_LOG": "warn"}
            for k, v in cfg.items():
                env[f"PRESCIENT__COMPRESSION__{k.upper()}"] = str(v)
            p = subprocess.Popen([args.prescient, "--listen", f"127.0.0.1:{port}", "--admin-listen", "",
                                  "--upstream", f"redis://127.0.0.1:{rport}"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, f"{name}.log"), "w"))
            procs.append(p)
            wait_port(port, p, f"prescient ({name})")
            return port

        proxies = {
            "off": proxy("off", enabled="false"),
            "zlib": proxy("zlib", codec="zlib", level=1),
            "zlib-6": proxy("zlib-6", codec="zlib", level=6),
            "zstd": proxy("zstd", codec="zstd", level=3),
            "lz4": proxy("lz4", codec="lz4", level=0),
        }

        docs = corpus(args.docs)
        total = sum(len(d) for d in docs)
        print(f"corpus: {len(docs)} JSON documents, {total / 2**20:.1f} MiB, "
              f"{min(map(len, docs))} to {max(map(len, docs))} bytes")
        print("\n| compression | Redis used_memory growth | vs off | saving |")
        print("|---|---|---|---|")
        base = None
        for name, port in proxies.items():
            send_all(rport, [("FLUSHALL", "SYNC")], b"+OK")
            before = info_used(rport)
            send_all(port, [("SET", f"doc:{i}", d) for i, d in enumerate(docs)], b"+OK")
            grew = info_used(rport) - before
            got = send_all(port, [("GET", f"doc:{i}") for i in range(len(docs))], b"$")
            for i, (r, d) in enumerate(zip(got, docs)):
                if r != b"$%d\r\n%s\r\n" % (len(d), d):
                    sys.exit(f"{name}: doc:{i} read back different bytes")
            base = base or grew
            print(f"| {name} | {grew / 2**20:.1f} MiB | {grew / base:.3f} | {100 * (1 - grew / base):.1f}% |")
        send_all(rport, [("FLUSHALL", "SYNC")], b"+OK")

        small = document(random.Random(1), 1024)[:1024]
        large = document(random.Random(2), 16384)[:16384]
        rows = [("SET", "1 KB", small, 20000), ("GET", "1 KB", small, 20000),
                ("SET", "16 KB", large, 5000), ("GET", "16 KB", large, 5000)]
        targets = [("direct", rport), ("off", proxies["off"]), ("zlib", proxies["zlib"]),
                   ("lz4", proxies["lz4"])]
        results = {}
        for rnd in range(args.rounds):
            for op, label, value, keyspace in rows:
                for name, port in targets:
                    if op == "GET":
                        send_all(port, [("SET", f"key:{i:012d}", value) for i in range(keyspace)], b"+OK")
                        bargs = ["GET", "key:__rand_int__"]
                    else:
                        bargs = ["SET", "key:__rand_int__", value.decode()]
                    results.setdefault((op, label, name), []).append(
                        bench(port, bargs, args.requests, keyspace))
                    send_all(rport, [("FLUSHALL", "SYNC")], b"+OK")
            print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)
        print(f"\nredis-benchmark, 50 clients, JSON values, median of {args.rounds} interleaved rounds (rps)")
        print("| test | direct | prescient, compression off | prescient, zlib level 1 | prescient, lz4 "
              "| zlib/off | lz4/off | off/direct |")
        print("|---|---|---|---|---|---|---|---|")
        for op, label, _, _ in rows:
            m = {n: statistics.median(results[(op, label, n)]) for n, _ in targets}
            print(f"| {op} {label} | {m['direct']:,.0f} | {m['off']:,.0f} | {m['zlib']:,.0f} | "
                  f"{m['lz4']:,.0f} | {m['zlib'] / m['off']:.2f}x | {m['lz4'] / m['off']:.2f}x | "
                  f"{m['off'] / m['direct']:.2f}x |")
    finally:
        stop(procs, tmp)


if __name__ == "__main__":
    main()
