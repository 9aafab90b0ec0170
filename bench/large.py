#!/usr/bin/env python3
"""Large replies: LRANGE of a whole list of N short elements (and HGETALL of a hash of N/3
fields), read in full by one client, against Redis directly, through prescient (compression
off and on) and through twemproxy (nutcracker), all in front of the same redis-server, in
interleaved rounds. Prints the median time per reply and the ratios to direct.

A reply of millions of elements reaches the proxy over hundreds of reads; a proxy that parses
each read's buffer from the reply's start does work that grows with the square of its size.

Usage: python3 bench/large.py [--elements 1000000] [--rounds 7] [--prescient PATH]
"""
import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from core import (DEFAULT_PRESCIENT, ROOT, need, start_prescient,  # noqa: E402
                  start_redis, start_twemproxy, stop)


def command(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def load(port, elements):
    """Fills `big:list` with `elements` items and `big:hash` with a third as many fields."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        batch, sent = 1000, 0
        for start in range(0, elements, batch):
            items = [b"item:%d" % i for i in range(start, min(start + batch, elements))]
            s.sendall(command(b"RPUSH", b"big:list", *items))
            sent += 1
            if start < elements // 3:
                fields = []
                for i in range(start, min(start + batch, elements // 3)):
                    fields += [b"field:%d" % i, b"v" * (i % 40)]
                s.sendall(command(b"HSET", b"big:hash", *fields))
                sent += 1
        got = b""
        while got.count(b"\r\n") < sent:
            got += s.recv(1 << 16)


def reply_size(port, cmd):
    """The size of the reply to `cmd` in bytes (read until the connection goes quiet)."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(cmd + command("PING"))
        got = bytearray()
        while not got.endswith(b"+PONG\r\n"):
            chunk = s.recv(1 << 20)
            if not chunk:
                sys.exit(f"connection closed after {len(got)} bytes")
            got += chunk
        return len(got) - len(b"+PONG\r\n")


def timed(port, cmd, size, timeout):
    """Seconds from sending `cmd` to having its `size`-byte reply, or None past `timeout`."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(timeout)
        t = time.perf_counter()
        s.sendall(cmd)
        n = 0
        try:
            while n < size:
                chunk = s.recv(1 << 20)
                if not chunk:
                    return None
                n += len(chunk)
        except socket.timeout:
            return None
        return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--elements", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds before a reply counts as failed")
    ap.add_argument("--prescient", default=DEFAULT_PRESCIENT)
    ap.add_argument("--no-twemproxy", action="store_true")
    args = ap.parse_args()
    need("redis-server", "redis-server")
    if not args.no_twemproxy:
        need("nutcracker", "nutcracker")
    if args.prescient == DEFAULT_PRESCIENT:
        subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)

    tmp = tempfile.mkdtemp(prefix="prescient-bench-")
    procs = []
    try:
        rport, _ = start_redis(procs)
        env = {**os.environ, "RUST_LOG": "warn"}
        upstream = f"redis://127.0.0.1:{rport}"
        targets = [("direct", rport),
                   ("prescient", start_prescient(args.prescient, upstream,
                                                 {**env, "PRESCIENT__COMPRESSION__ENABLED": "false"},
                                                 tmp, "prescient", procs)),
                   ("compressed", start_prescient(args.prescient, upstream, env, tmp,
                                                  "prescient-compressed", procs))]
        if not args.no_twemproxy:
            targets.append(("twemproxy", start_twemproxy(rport, tmp, procs)))
        load(rport, args.elements)
        cases = [("LRANGE", command("LRANGE", "big:list", 0, -1)),
                 ("HGETALL", command("HGETALL", "big:hash"))]
        sizes = {name: reply_size(rport, cmd) for name, cmd in cases}
        times = {}
        for rnd in range(args.rounds):
            for name, cmd in cases:
                for target, port in targets:
                    times.setdefault((name, target), []).append(
                        timed(port, cmd, sizes[name], args.timeout))
            print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)

        names = [t for t, _ in targets]
        print(f"\nWhole-reply time, one client, median of {args.rounds} interleaved rounds "
              f"({args.elements} list elements, {args.elements // 3} hash fields)")
        head = "| reply | " + " | ".join(f"{n} ms" for n in names) + " |" + \
            "".join(f" {n}/direct |" for n in names[1:])
        print(head)
        print("|" + "---|" * (head.count("|") - 1))
        for name, _ in cases:
            cells, ratios = [], []
            for target in names:
                xs = times[(name, target)]
                ok = [x for x in xs if x is not None]
                failed = len(xs) - len(ok)
                med = statistics.median(ok) * 1000 if ok else float("nan")
                cells.append(f"{med:.0f}" + (f" ({failed} failed)" if failed else ""))
            for target in names[1:]:
                pairs = [a / b for a, b in zip(times[(name, target)], times[(name, "direct")])
                         if a is not None and b is not None]
                ratios.append(f"{statistics.median(pairs):.2f}x" if pairs else "n/a")
            print(f"| {name} ({sizes[name] / 1e6:.1f} MB) | " + " | ".join(cells) + " |" +
                  "".join(f" {r} |" for r in ratios))
    finally:
        stop(procs, tmp)


if __name__ == "__main__":
    main()
