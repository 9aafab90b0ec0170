#!/usr/bin/env python3
"""Compression benchmark, in one run against one redis-server:

1. Memory, on two JSON corpora: "users" (1 KB to 64 KB documents, log-uniform sizes, pages of
   user records with names, emails, timestamps, tags, nested addresses and orders: long and
   repetitive) and "orders" (1-2 KB API records dense in numbers and ids: order and customer
   ids, SKUs, quantities, prices, statuses, timestamps; where dictionary coders gain less).
   Each corpus is loaded through prescient with compression off and with each codec, with and
   without dictionaries (trained as in service: from the first values written, while the rest
   are being written); Redis's used_memory growth is reported for each, and the saving against
   compression off. Every document is read back through the proxy and compared byte for byte.
2. Throughput: redis-benchmark SET/GET with a 1 KB and a 16 KB JSON document as the value,
   50 clients, against Redis directly and through prescient with compression off and with the
   codecs, interleaved, median of --rounds of the per-round ratios. Read ratios, not absolutes.

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
import time

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


STATUSES = ["pending", "paid", "shipped", "delivered", "cancelled", "refunded"]
CARRIERS = ["ups", "fedex", "dhl", "usps"]
CURRENCIES = ["USD", "EUR", "GBP"]


def api_record(rng, i):
    """An order as an API returns it: 1-2 KB, mostly numbers and ids."""
    lines = []
    for _ in range(rng.randrange(6, 20)):
        q, p = rng.randrange(1, 6), round(rng.uniform(1, 400), 2)
        lines.append({"sku": f"SKU-{rng.randrange(10**6):06d}", "variant_id": rng.randrange(10**7),
                      "qty": q, "unit_price": p, "total": round(q * p, 2),
                      "discount": round(rng.choice([0, 0, 0, rng.uniform(0, 20)]), 2)})
    sub = round(sum(line["total"] for line in lines), 2)
    ts = 1_780_000_000 + rng.randrange(10**7)
    return {"order_id": 10**9 + i * 7 + rng.randrange(7), "customer_id": rng.randrange(10**7),
            "status": rng.choice(STATUSES), "currency": rng.choice(CURRENCIES),
            "created_at": ts, "updated_at": ts + rng.randrange(10**5),
            "lines": lines, "subtotal": sub, "tax": round(sub * 0.08, 2),
            "shipping": {"carrier": rng.choice(CARRIERS), "tracking": f"1Z{rng.randrange(16**12):012X}",
                         "cost": round(rng.uniform(0, 30), 2), "eta": ts + 86400 * rng.randrange(1, 9)},
            "flags": {"gift": rng.random() < 0.1, "priority": rng.random() < 0.2}}


def orders(n, seed=7):
    rng = random.Random(seed)
    return [json.dumps(api_record(rng, i), separators=(",", ":")).encode() for i in range(n)]


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


def stat(port, name):
    """A counter from PROXY STATS."""
    text = send_all(port, [("PROXY", "STATS")], b"$")[0].decode()
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return int(line.split(":", 1)[1])
    sys.exit(f"no {name} in PROXY STATS")


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
    ap.add_argument("--memory-only", action="store_true", help="skip the throughput part")
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

        # (name, settings): dictionaries off unless the name says "+dict".
        configs = [
            ("off", dict(enabled="false")),
            ("zlib 1", dict(codec="zlib", level=1)),
            ("zlib 6", dict(codec="zlib", level=6)),
            ("zstd 1", dict(codec="zstd", level=1)),
            ("zstd 3", dict(codec="zstd", level=3)),
            ("lz4", dict(codec="lz4", level=0)),
            ("zstd 1 +dict", dict(codec="zstd", level=1)),
            ("lz4 +dict", dict(codec="lz4", level=0)),
        ]
        proxies = {}
        for name, cfg in configs:
            cfg = {**cfg, "dictionaries": str("+dict" in name).lower(),
                   # No write-back of a dictionary FLUSHALL removed into a later measurement.
                   "dictionary_check_secs": 3600}
            proxies[name] = proxy(name.replace(" ", "_").replace("+", ""), **cfg)

        for label, docs in [("users", corpus(args.docs)), ("orders", orders(args.docs))]:
            total = sum(len(d) for d in docs)
            print(f"\ncorpus {label}: {len(docs)} JSON documents, {total / 2**20:.1f} MiB, "
                  f"{min(map(len, docs))} to {max(map(len, docs))} bytes")
            print("| compression | Redis used_memory growth | vs off | saving |")
            print("|---|---|---|---|")
            base = None
            for name, port in proxies.items():
                send_all(rport, [("FLUSHALL", "SYNC")], b"+OK")
                before = info_used(rport)
                sets = [("SET", f"{label}:{i}", d) for i, d in enumerate(docs)]
                if "+dict" in name:
                    # As in service: the first values written train the dictionary (written
                    # with the plain codec meanwhile), the later ones use it.
                    trained = stat(port, "dictionaries_trained")
                    send_all(port, sets[:200], b"+OK")
                    deadline = time.time() + 60
                    while stat(port, "dictionaries_trained") == trained and time.time() < deadline:
                        time.sleep(0.05)
                    sets = sets[200:]
                send_all(port, sets, b"+OK")
                grew = info_used(rport) - before
                got = send_all(port, [("GET", f"{label}:{i}") for i in range(len(docs))], b"$")
                for i, (r, d) in enumerate(zip(got, docs)):
                    if r != b"$%d\r\n%s\r\n" % (len(d), d):
                        sys.exit(f"{name}: {label}:{i} read back different bytes")
                base = base or grew
                print(f"| {name} | {grew / 2**20:.2f} MiB | {grew / base:.3f} | {100 * (1 - grew / base):.1f}% |")
        send_all(rport, [("FLUSHALL", "SYNC")], b"+OK")
        if args.memory_only:
            return

        small = document(random.Random(1), 1024)[:1024]
        large = document(random.Random(2), 16384)[:16384]
        rows = [("SET", "1 KB", small, 20000), ("GET", "1 KB", small, 20000),
                ("SET", "16 KB", large, 5000), ("GET", "16 KB", large, 5000)]
        targets = [("direct", rport), ("off", proxies["off"]), ("zlib 1", proxies["zlib 1"]),
                   ("lz4", proxies["lz4"]), ("zstd 1", proxies["zstd 1"]),
                   ("zstd 1 +dict", proxies["zstd 1 +dict"]),
                   ("lz4 +dict", proxies["lz4 +dict"])]
        ratios = {}
        for rnd in range(args.rounds):
            for op, label, value, keyspace in rows:
                order = targets[:]
                random.shuffle(order)
                got = {}
                for name, port in order:
                    if op == "GET":
                        send_all(port, [("SET", f"key:{i:012d}", value) for i in range(keyspace)], b"+OK")
                        bargs = ["GET", "key:__rand_int__"]
                    else:
                        bargs = ["SET", "key:__rand_int__", value.decode()]
                    got[name] = bench(port, bargs, args.requests, keyspace)
                    send_all(rport, [("FLUSHALL", "SYNC")], b"+OK")
                for name, _ in targets:
                    ratios.setdefault((op, label, name), []).append(got[name] / got["off"])
                ratios.setdefault((op, label, "off/direct"), []).append(got["off"] / got["direct"])
            print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)
        names = [n for n, _ in targets if n not in ("direct", "off")]
        print(f"\nredis-benchmark, 50 clients, JSON values: throughput over prescient with compression "
              f"off, median of {args.rounds} per-round ratios (endpoint order shuffled per round)")
        print("| test | " + " | ".join(f"{n}/off" for n in names) + " | off/direct |")
        print("|---|" + "---|" * (len(names) + 1))
        for op, label, _, _ in rows:
            cells = [f"{statistics.median(ratios[(op, label, n)]):.2f}x" for n in names]
            cells.append(f"{statistics.median(ratios[(op, label, 'off/direct')]):.2f}x")
            print(f"| {op} {label} | " + " | ".join(cells) + " |")
    finally:
        stop(procs, tmp)


if __name__ == "__main__":
    main()
