#!/usr/bin/env python3
"""Replay simulator speed and figures on the shipped traces.

Runs `prescient replay --json` --rounds times on each trace (NASA at 5% of its distinct keys,
cloudPhysics at 128 MiB, the README's commands) and prints the prefetch run's speed (reads per
second of the replay with prefetching, as the replay's `speed` line reports it): median, lowest
and highest over the rounds, with the figures (identical in every round: the replay is
deterministic, which this script checks). One round takes well under a second, so one run's
speed is at the mercy of this shared machine's neighbours: read the median.

Usage: python3 bench/replay.py [--rounds N] [--prescient PATH]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRACES = os.path.normpath(os.path.join(ROOT, "..", "shared", "traces"))

RUNS = [
    ("NASA, 5%", "nasa_19950801.tsv", "nasa", "5%"),
    ("cloudPhysics, 128 MiB", "cloudPhysicsIO.oracleGeneral.bin", "oracle", "128MiB"),
]


def replay(binary, trace, fmt, size):
    out = subprocess.run(
        [binary, "replay", "--trace", trace, "--format", fmt, "--cache-size", size, "--json"],
        check=True, capture_output=True, text=True).stdout
    speed = next(float(l.split()[1]) for l in out.splitlines() if l.startswith("speed"))
    return speed, json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--prescient", default=os.path.join(ROOT, "target/release/prescient"))
    ap.add_argument("--traces", default=TRACES, help="directory holding the shipped traces")
    a = ap.parse_args()
    if a.prescient == os.path.join(ROOT, "target/release/prescient"):
        subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)
    print(f"{'trace':<24} {'median':>12} {'lowest':>12} {'highest':>12}  hit ratio (LRU)   "
          f"precision  load")
    for name, file, fmt, size in RUNS:
        path = os.path.join(a.traces, file)
        if not os.path.exists(path):
            sys.exit(f"{path} missing (--traces DIR)")
        speeds, figures = [], None
        for _ in range(a.rounds):
            speed, fig = replay(a.prescient, path, fmt, size)
            speeds.append(speed)
            fig = {k: v for k, v in fig.items() if k not in ("model_bytes",)}
            if figures is not None and fig != figures:
                sys.exit(f"{name}: figures differ between rounds: {figures} vs {fig}")
            figures = fig
        print(f"{name:<24} {statistics.median(speeds) / 1e6:>10.2f} M {min(speeds) / 1e6:>10.2f} M "
              f"{max(speeds) / 1e6:>10.2f} M  {figures['hit_ratio']:.4f} "
              f"({figures['hit_ratio_no_prefetch']:.4f})  {figures['precision']:.4f}     "
              f"{figures['load_factor']:.3f}x")


if __name__ == "__main__":
    main()
