#!/usr/bin/env python3
"""Large values and everybody else: one client SETs and then GETs a large compressible value
(50 MB of hex digits by default) while another client PINGs every 10 ms through the same
endpoint. Against Redis directly, through prescient (compression on, all defaults), through a
second prescient build if given (--before), and through twemproxy (nutcracker), all in front
of the same redis-server, and against prescient on its embedded store (`memory`), in
interleaved rounds.

Prints, per endpoint, the median SET and GET times and the worst PING seen while they ran,
with the ratios of the times to direct. A proxy that compresses or decodes a large value on
the thread that serves other clients makes them wait as long as that takes: the worst PING
shows it.

Usage: python3 bench/stall.py [--mb 50] [--rounds 3] [--prescient PATH] [--before PATH]
"""
import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from core import (DEFAULT_PRESCIENT, ROOT, need, start_prescient,  # noqa: E402
                  start_redis, start_twemproxy, stop)
from large import command  # noqa: E402


def round_trip(sock, cmd, want):
    """Sends `cmd`, reads `want` reply bytes; returns (seconds, bytes read)."""
    t = time.perf_counter()
    sock.sendall(cmd)
    got = 0
    while got < want:
        b = sock.recv(1 << 20)
        if not b:
            break
        got += len(b)
    return time.perf_counter() - t, got


class Pinger:
    """PINGs every 10 ms on its own connection; `worst` is the longest round trip seen."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.worst = 0.0
        self.halt = False
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self):
        while not self.halt:
            t = time.perf_counter()
            self.sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            if not self.sock.recv(64).startswith(b"+PONG"):
                raise SystemExit("PING did not get PONG")
            self.worst = max(self.worst, time.perf_counter() - t)
            time.sleep(0.01)

    def finish(self):
        self.halt = True
        self.thread.join()
        self.sock.close()
        return self.worst


def one(port, key, value, gets):
    """SET then `gets` GETs of `value`; returns (set s, median get s, worst PING during the
    SET, worst PING during the GETs)."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        p = Pinger(port)
        set_s, n = round_trip(s, command(b"SET", key, value), 5)
        if n != 5:
            sys.exit(f"SET through port {port}: {n} reply bytes")
        ping_set = p.finish()
        p = Pinger(port)
        want = len(value) + len(b"$%d\r\n\r\n" % len(value))
        times = []
        for _ in range(gets):
            t, n = round_trip(s, command(b"GET", key), want)
            if n != want:
                sys.exit(f"GET through port {port}: {n} of {want} reply bytes")
            times.append(t)
        ping_get = p.finish()
    return set_s, statistics.median(times), ping_set, ping_get


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gets", type=int, default=3)
    ap.add_argument("--prescient", default=DEFAULT_PRESCIENT)
    ap.add_argument("--before", help="a second prescient binary to run side by side")
    args = ap.parse_args()
    need("redis-server", "redis-server")
    need("nutcracker", "nutcracker")
    if args.prescient == DEFAULT_PRESCIENT:
        subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)

    # Hex digits of random bytes: they compress to a little over half.
    value = os.urandom(args.mb * (1 << 20) // 2).hex().encode()
    tmp = tempfile.mkdtemp(prefix="prescient-bench-")
    procs = []
    try:
        rport, _ = start_redis(procs)
        upstream = f"redis://127.0.0.1:{rport}"
        env = {**os.environ, "RUST_LOG": "warn"}
        targets = [("direct", rport),
                   ("prescient", start_prescient(args.prescient, upstream, env, tmp,
                                                 "prescient", procs))]
        if args.before:
            targets.append(("before", start_prescient(args.before, upstream, env, tmp,
                                                      "before", procs)))
        targets.append(("twemproxy", start_twemproxy(rport, tmp, procs)))
        targets.append(("memory", start_prescient(args.prescient, "memory://", env, tmp,
                                                  "memory", procs)))
        rows = {name: [] for name, _ in targets}
        for r in range(args.rounds):
            for name, port in targets:
                rows[name].append(one(port, b"stall:" + name.encode(), value, args.gets))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        stop(procs, tmp)

    def med(name, i):
        return statistics.median(x[i] for x in rows[name])

    print(f"{args.mb} MB value, {args.rounds} rounds, {args.gets} GETs each; "
          "PING every 10 ms on another connection")
    print(f"{'endpoint':<10} {'SET ms':>8} {'GET ms':>8} {'SET/direct':>11} {'GET/direct':>11} "
          f"{'worst PING in SET ms':>21} {'in GET ms':>10}")
    for name, _ in targets:
        set_r = statistics.median(a[0] / b[0] for a, b in zip(rows[name], rows["direct"]))
        get_r = statistics.median(a[1] / b[1] for a, b in zip(rows[name], rows["direct"]))
        worst_set = max(x[2] for x in rows[name]) * 1000
        worst_get = max(x[3] for x in rows[name]) * 1000
        print(f"{name:<10} {med(name, 0) * 1000:>8.0f} {med(name, 1) * 1000:>8.0f} "
              f"{set_r:>11.2f} {get_r:>11.2f} {worst_set:>21.0f} {worst_get:>10.0f}")


if __name__ == "__main__":
    main()
