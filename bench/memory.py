#!/usr/bin/env python3
"""Memory per key: loads the same N keys with 1 KB values into redis-server and into prescient
on its embedded store (memory://), then reports each one's used_memory (INFO memory) and the
growth of its process RSS, per key, and the ratio prescient/Redis.

Usage: python3 bench/memory.py [--keys 1000000] [--value-size 1024] [--prescient PATH]
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from core import DEFAULT_PRESCIENT, ROOT, need, start_prescient, start_redis, stop  # noqa: E402


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def resp(*args):
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def load(port, keys, value, batch=1000):
    s = socket.create_connection(("127.0.0.1", port))
    want = b"+OK\r\n" * batch
    for start in range(0, keys, batch):
        n = min(batch, keys - start)
        s.sendall(b"".join(resp("SET", f"key:{i:08d}", value) for i in range(start, start + n)))
        got = b""
        while len(got) < 5 * n:
            chunk = s.recv(65536)
            if not chunk:
                sys.exit("connection closed while loading")
            got += chunk
        if got != want[: 5 * n]:
            sys.exit(f"unexpected reply while loading: {got[:80]!r}")
    s.close()


def info_used(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(resp("INFO", "memory"))
    data = b""
    while b"used_memory:" not in data or not data.endswith(b"\r\n"):
        data += s.recv(65536)
    s.close()
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("used_memory:"):
            return int(line.split(":")[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--value-size", type=int, default=1024)
    ap.add_argument("--prescient", default=DEFAULT_PRESCIENT)
    args = ap.parse_args()
    need("redis-server", "redis-server")
    # The default binary is rebuilt (a no-op when current), so a run never measures a stale
    # build; an explicit --prescient is used as given.
    if args.prescient == DEFAULT_PRESCIENT:
        subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)
    value = b"v" * args.value_size
    tmp = tempfile.mkdtemp(prefix="prescient-mem-")
    procs = []
    try:
        rport, redis = start_redis(procs)
        # Compression off: this measures the store's cost per key, not what the codec saves
        # (bench/compression.py does; redis-benchmark-like repeated bytes shrink to ~20 B).
        env = {**os.environ, "RUST_LOG": "warn", "PRESCIENT__MEMORY__MAXMEMORY": "0",
               "PRESCIENT__COMPRESSION__ENABLED": "false"}
        mport = start_prescient(args.prescient, "memory://", env, tmp, "prescient", procs)
        mem = procs[-1]
        rows = []
        for name, port, proc in (("redis", rport, redis), ("prescient memory://", mport, mem)):
            used0, rss0 = info_used(port), rss_kib(proc.pid)
            t = time.time()
            load(port, args.keys, value)
            secs = time.time() - t
            used1, rss1 = info_used(port), rss_kib(proc.pid)
            rows.append((name, (used1 - used0) / args.keys, (rss1 - rss0) * 1024 / args.keys, secs))
        print(f"\n{args.keys:,} keys, {args.value_size}-byte values")
        print("| store | used_memory per key (B) | RSS growth per key (B) | load time (s) |")
        print("|---|---|---|---|")
        for name, used, rss, secs in rows:
            print(f"| {name} | {used:,.0f} | {rss:,.0f} | {secs:.1f} |")
        (_, ru, rr, _), (_, mu, mr, _) = rows
        print(f"\nprescient/redis: used_memory {mu / ru:.2f}x, RSS {mr / rr:.2f}x")
    finally:
        stop(procs, tmp)


if __name__ == "__main__":
    main()
