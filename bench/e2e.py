#!/usr/bin/env python3
"""End-to-end prefetch benchmark: do applications read faster through prescient?

One run, on this machine, per workload:
- a redis-server with maxmemory set so about 5% (--cache-share) of the workload's distinct
  values fit, allkeys-lru;
- an HTTP origin (a separate process) answering every key with a value of the key's size
  (random bytes: no codec shrinks them, so every mode holds the same number of values) after
  --delay-ms (20 ms), counting requests;
- each client replays its own reads in order, closed loop: it starts at its first read's
  time and waits its trace gap between reads, both scaled so the trace spans --span seconds,
  the wait clamped to [--min-think, --max-think] (20 ms, 1 s);
- modes, one after another on a flushed Redis and a fresh prescient:
  cache-aside   the clients GET Redis directly, on nil fetch from the origin and SET (EX 3600);
  read-through  GET through prescient, an origin route for every key, prefetch off;
  prefetch      the same with prefetch on, adaptive threshold (the defaults);
  prefetch@T    prefetch at each fixed threshold of --thresholds;
  prefetch-wide the defaults but --wide-workers workers and --wide-rate requests/s (the
                defaults, 4 and 200, fetch at most 200 keys/s from a 20 ms origin).
Reported per mode: hit ratio (reads served without waiting for the origin: for prescient,
1 - demand misses / reads, from PROXY PREFETCH STATS), client latency mean/p50/p99, origin
requests and load (requests over read-through's), and for prefetch modes precision, coverage,
late share and wasted by class; beside them `prescient replay`'s simulated figures for the
same trace and a cache of the same bytes (how much of the simulated gain survives real timing).

Workloads: nasa (../shared/traces/nasa_19950801.tsv, client = host, size from the trace,
1 KB where it gives none, capped at 64 KB), kv (generated: users' sessions over templated
keys: profile, orders, feed pages in order, products; 1 KB values), and any
`time,client,key[,size]` CSV given with --csv.

Usage: python3 bench/e2e.py [--workloads nasa,kv] [--csv FILE] [--span 120] [--json FILE]
"""
import argparse
import asyncio
import hashlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from core import DEFAULT_PRESCIENT, ROOT, free_port, need, stop, wait_port  # noqa: E402
from origin import resp  # noqa: E402

NASA = os.path.join(ROOT, "..", "shared", "traces", "nasa_19950801.tsv")
MAX_SIZE = 64 << 10
TTL = 3600


# ---- workloads ----

def load_nasa(path):
    """(time, client, key, size) for GETs answered 200 or 304, in file order."""
    out = []
    sizes = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f):
            p = line.rstrip("\n").split("\t")
            if i == 0 or len(p) < 7 or p[3] != "GET" or p[5] not in ("200", "304"):
                continue
            key = "nasa:" + p[4]
            size = int(p[6]) if p[6].isdigit() else 0
            if size > 0:
                sizes[key] = max(sizes.get(key, 0), size)
            out.append([float(p[2]), p[0], key, 0])
    for a in out:
        a[3] = min(sizes.get(a[2], 1024) or 1024, MAX_SIZE)
    return [tuple(a) for a in out]


def gen_kv(seed=7, users=400, sessions=4, products=3000):
    """Users' sessions over templated keys, in real time (about a minute): profile, then
    orders, then feed pages in order, then a few products (two of the user's usual ones and a
    popular one), then sometimes the cart; 0.05-1 s between a session's reads, 5-15 s between
    a user's sessions."""
    rng = random.Random(seed)
    zipf = [1.0 / (i + 1) ** 1.1 for i in range(products)]
    usual = {u: rng.sample(range(products), 4) for u in range(users)}
    out = []
    for u in range(users):
        t = rng.uniform(0, 10)
        for _ in range(sessions):
            keys = [f"kv:user:{u}:profile", f"kv:user:{u}:orders"]
            keys += [f"kv:feed:{u}:page:{n}" for n in range(1, rng.randint(2, 5))]
            keys += [f"kv:product:{p}" for p in rng.sample(usual[u], 2)]
            keys.append(f"kv:product:{rng.choices(range(products), zipf)[0]}")
            if rng.random() < 0.5:
                keys.append(f"kv:user:{u}:cart")
            for k in keys:
                out.append((t, f"u{u}", k, 1024))
                t += rng.uniform(0.05, 1.0)
            t += rng.uniform(5, 15)
    out.sort(key=lambda a: a[0])
    return out


def load_csv(path):
    out = []
    with open(path) as f:
        for line in f:
            p = line.strip().split(",")
            if len(p) < 3:
                continue
            try:
                t = float(p[0])
            except ValueError:
                continue  # a header
            size = int(p[3]) if len(p) > 3 and p[3].isdigit() else 1024
            out.append((t, p[1], p[2], min(max(size, 1), MAX_SIZE)))
    return out


def write_csv(trace, path):
    with open(path, "w") as f:
        for t, c, k, s in trace:
            f.write(f"{t},{c},{k},{s}\n")


# ---- the origin (a process of its own) ----

def serve_origin(sizes_path, delay):
    import http.server
    import threading
    with open(sizes_path) as f:
        sizes = json.load(f)
    state = {"hits": 0}
    lock = threading.Lock()

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: without this, Nagle's algorithm and the
        # client's delayed ACK hold the body ~40 ms.
        disable_nagle_algorithm = True

        def do_GET(self):
            if self.path == "/__stats":
                body = json.dumps(state).encode()
            elif self.path == "/__reset":
                with lock:
                    state["hits"] = 0
                body = b"{}"
            else:
                with lock:
                    state["hits"] += 1
                time.sleep(delay)
                key = urllib.parse.unquote(self.path[len("/v/"):])
                size = sizes.get(key)
                if size is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = os.urandom(size)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 4096

        def handle_error(self, request, client_address):
            pass  # a client (prescient at its end) closing a kept-alive connection

    srv = Server(("127.0.0.1", 0), H)
    print(srv.server_address[1], flush=True)
    srv.serve_forever()


def http_json(port, path):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


# ---- RESP ----

async def read_reply(r):
    """The reply's first line and, for a bulk string, its payload (None for nil)."""
    line = await r.readline()
    if line[:1] == b"$":
        n = int(line[1:])
        if n < 0:
            return line, None
        return line, (await r.readexactly(n + 2))[:-2]
    if line[:1] in (b"=", b"+", b"-", b":"):
        return line, line
    raise RuntimeError(f"unexpected reply {line!r}")


def command(port, *args):
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(resp(*args))
        data = b""
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                return None  # closed (SHUTDOWN)
            data += chunk
            if data.startswith((b"+", b"-", b":")) and data.endswith(b"\r\n"):
                return data.decode(errors="replace").strip()
            if data[:1] in (b"$", b"="):
                head, _, rest = data.partition(b"\r\n")
                n = int(head[1:])
                if n < 0:
                    return None
                if len(rest) >= n + 2:
                    return rest[:n].decode(errors="replace")


# ---- a keep-alive HTTP/1.1 pool for the cache-aside clients (as an application has) ----

class Pool:
    def __init__(self, port, size=64):
        self.port, self.size, self.made = port, size, 0
        self.idle = asyncio.Queue()

    async def get(self, path):
        if self.idle.empty() and self.made < self.size:
            self.made += 1
            conn = await asyncio.open_connection("127.0.0.1", self.port)
        else:
            conn = await self.idle.get()
        r, w = conn
        w.write(f"GET {path} HTTP/1.1\r\nHost: origin\r\n\r\n".encode())
        await w.drain()
        status = await r.readline()
        length = 0
        while (h := await r.readline()) not in (b"\r\n", b""):
            if h.lower().startswith(b"content-length:"):
                length = int(h.split(b":")[1])
        body = await r.readexactly(length)
        self.idle.put_nowait(conn)
        return int(status.split()[1]), body


# ---- one mode ----

async def run_clients(trace, port, opts, think_scale, ready, pool=None):
    """Replays each client's reads; returns (latencies, cache-aside misses, keys held).
    Every client connects first; `ready()` runs once they all have (the store's memory then
    counts their connections), and the clock starts."""
    t0 = trace[0][0]
    span = max(trace[-1][0] - t0, 1e-9)
    scale = min(1.0, opts.span / span)
    by_client = {}
    for t, c, k, _ in trace:
        by_client.setdefault(c, []).append((t, k))
    lat = []
    misses = [0]
    done = [0]
    total = len(trace)
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in by_client]
    redis_port, fixed, room = ready()
    begin = time.perf_counter() + 0.5

    async def one(reads, conn):
        await asyncio.sleep(max(0.0, begin + (reads[0][0] - t0) * scale - time.perf_counter()))
        r, w = conn
        prev = None
        for t, key in reads:
            if prev is not None:
                gap = min(max((t - prev) * (think_scale or scale), opts.min_think), opts.max_think)
                await asyncio.sleep(gap)
            prev = t
            start = time.perf_counter()
            w.write(resp("GET", key))
            await w.drain()
            _, value = await read_reply(r)
            if value is None and pool is not None:
                misses[0] += 1
                path = "/v/" + urllib.parse.quote(key, safe="")
                status, body = await pool.get(path)
                if status == 200:
                    w.write(resp("SET", key, body, "EX", TTL))
                    await w.drain()
                    await read_reply(r)
            lat.append(time.perf_counter() - start)
            done[0] += 1
        w.close()

    held = []

    async def progress():
        r, w = await asyncio.open_connection("127.0.0.1", redis_port)
        while done[0] < total:
            w.write(resp("DBSIZE"))
            await w.drain()
            held.append(int((await r.readline())[1:]))
            # Redis counts its clients' buffers in the memory it evicts by, and shrinks a new
            # connection's 16 KB reply buffer when it idles: with thousands of connections
            # (cache-aside) the room for keys would grow by tens of MB. Keep it fixed.
            w.write(resp("INFO", "memory"))
            await w.drain()
            _, info = await read_reply(r)
            clients = int(info.split(b"mem_clients_normal:")[1].split()[0])
            w.write(resp("CONFIG", "SET", "maxmemory", str(fixed + clients + room)))
            await w.drain()
            await read_reply(r)
            if sys.stderr.isatty():
                print(f"\r    {done[0]}/{total} reads", end="", file=sys.stderr, flush=True)
            await asyncio.sleep(1)
        w.close()

    p = asyncio.create_task(progress())
    await asyncio.gather(*(one(reads, c) for reads, c in zip(by_client.values(), conns)))
    await p
    return lat, misses[0], statistics.fmean(held) if held else 0


def stats_of(port):
    text = command(port, "PROXY", "PREFETCH", "STATS") or ""
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        out[k.removeprefix("prefetch_")] = v
    return out


def prescient_conf(path, prefix, origin_port, mode, opts):
    with open(path, "w") as f:
        f.write("[origin]\ntimeout_ms = 5000\nmax_concurrency = 64\n\n")
        f.write("[[origin.routes]]\nname = \"e2e\"\n")
        f.write(f"key = \"{prefix}:{{rest*}}\"\n")
        f.write(f"url = \"http://127.0.0.1:{origin_port}/v/{prefix}%3A{{rest}}\"\n")
        f.write(f"ttl = {TTL}\nmax_body_bytes = {MAX_SIZE * 2}\n\n")
        f.write("[prefetch]\n")
        if mode == "read-through":
            f.write("enabled = false\n")
        elif mode.startswith("prefetch@"):
            f.write(f"min_probability = {float(mode.split('@')[1])}\n")
        elif mode == "prefetch-wide":
            f.write(f"num_workers = {opts.wide_workers}\nmax_requests_per_second = {opts.wide_rate}\n")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else 0.0


def run_mode(mode, trace, prefix, think_scale, redis_port, origin_port, room, opts, tmp, procs):
    command(redis_port, "CONFIG", "SET", "maxmemory", "0")
    command(redis_port, "FLUSHALL", "SYNC")
    http_json(origin_port, "/__reset")
    p = None
    if mode == "cache-aside":
        port = redis_port
    else:
        conf = os.path.join(tmp, f"{mode}.toml")
        prescient_conf(conf, prefix, origin_port, mode, opts)
        port = free_port()
        p = subprocess.Popen([opts.binary, "--config", conf, "--listen", f"127.0.0.1:{port}",
                              "--admin-listen", "", "--upstream", f"redis://127.0.0.1:{redis_port}"],
                             env={**os.environ, "RUST_LOG": "warn"}, stdout=subprocess.DEVNULL,
                             stderr=open(os.path.join(tmp, f"{mode}.log"), "w"))
        procs.append(p)
        wait_port(port, p, f"prescient ({mode})")
    pool = Pool(origin_port) if mode == "cache-aside" else None

    def ready():
        info = command(redis_port, "INFO", "memory")
        base = int(info.split("used_memory:")[1].split()[0])
        clients = int(info.split("mem_clients_normal:")[1].split()[0])
        command(redis_port, "CONFIG", "SET", "maxmemory", str(base + room))
        return redis_port, base - clients, room
    started = time.time()
    lat, ca_misses, held = asyncio.run(run_clients(trace, port, opts, think_scale, ready, pool))
    took = time.time() - started
    row = {"mode": mode, "reads": len(lat), "seconds": round(took, 1),
           "mean_ms": statistics.fmean(lat) * 1e3, "p50_ms": pct(lat, 0.5) * 1e3,
           "p99_ms": pct(lat, 0.99) * 1e3, "keys_held": held,
           "origin_requests": http_json(origin_port, "/__stats")["hits"]}
    if p is None:
        row["hit_ratio"] = 1 - ca_misses / len(lat)
    else:
        s = stats_of(port)
        row["hit_ratio"] = 1 - int(s["demand_misses"]) / len(lat)
        row["stats"] = s
        p.terminate()
        p.wait(timeout=10)
        procs.remove(p)
    return row


def replay(opts, csv_path, cache_bytes, threshold):
    args = [opts.binary, "replay", "--trace", csv_path, "--format", "csv",
            "--cache-size", f"{cache_bytes}B", "--json"]
    if threshold is not None:
        args += ["--threshold", str(threshold)]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default="nasa,kv")
    ap.add_argument("--csv", action="append", default=[], help="a time,client,key[,size] trace")
    ap.add_argument("--span", type=float, default=120.0,
                    help="clients start at their first read's time, scaled so the trace spans this (s)")
    ap.add_argument("--think-scale", type=float,
                    help="trace gaps are multiplied by this before the clamp (default: as the starts)")
    ap.add_argument("--min-think", type=float, default=0.020)
    ap.add_argument("--max-think", type=float, default=1.0)
    ap.add_argument("--delay-ms", type=float, default=20.0)
    ap.add_argument("--cache-share", type=float, default=0.05)
    ap.add_argument("--thresholds", default="0.2,0.35,0.5")
    ap.add_argument("--modes", default="cache-aside,read-through,prefetch,fixed")
    ap.add_argument("--binary", default=DEFAULT_PRESCIENT)
    ap.add_argument("--wide-workers", type=int, default=32,
                    help="prefetch-wide mode: prefetch.num_workers (the default is 4)")
    ap.add_argument("--wide-rate", type=float, default=1000.0,
                    help="prefetch-wide mode: prefetch.max_requests_per_second (the default is 200)")
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument("--serve-origin", nargs=2, metavar=("SIZES", "DELAY"), help=argparse.SUPPRESS)
    opts = ap.parse_args()
    if opts.serve_origin:
        serve_origin(opts.serve_origin[0], float(opts.serve_origin[1]))
        return
    need("redis-server", "redis-server")
    if not os.path.exists(opts.binary):
        subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)
    workloads = []
    for w in [w for w in opts.workloads.split(",") if w]:
        if w == "nasa":
            workloads.append(("nasa", "nasa", load_nasa(NASA), None))
        elif w == "kv":
            workloads.append(("kv", "kv", gen_kv(), None))
        else:
            sys.exit(f"unknown workload {w}")
    for path in opts.csv:
        t = load_csv(path)
        prefix = "csv" + hashlib.sha1(path.encode()).hexdigest()[:6]
        workloads.append((os.path.basename(path), prefix,
                          [(a, c, f"{prefix}:{k}", s) for a, c, k, s in t], None))
    modes = []
    for m in opts.modes.split(","):
        if m == "fixed":
            modes += [f"prefetch@{t}" for t in opts.thresholds.split(",") if t]
        elif m:
            modes.append(m)
    tmp = tempfile.mkdtemp(prefix="prescient-e2e-")
    procs = []
    results = []
    try:
        for name, prefix, trace, think_scale in workloads:
            if opts.think_scale is not None:
                think_scale = opts.think_scale
            sizes = {}
            for _, _, k, s in trace:
                sizes[k] = s
            sizes_path = os.path.join(tmp, f"{name}.sizes.json")
            with open(sizes_path, "w") as f:
                json.dump(sizes, f)
            csv_path = os.path.join(tmp, f"{name}.csv")
            write_csv(trace, csv_path)
            origin = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve-origin",
                                       sizes_path, str(opts.delay_ms / 1000)], stdout=subprocess.PIPE, text=True)
            procs.append(origin)
            origin_port = int(origin.stdout.readline())
            value_bytes = sum(sizes.values())
            cache_bytes = int(opts.cache_share * value_bytes)
            redis_port = free_port()
            rp = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                   "--save", "", "--appendonly", "no", "--maxmemory-policy", "allkeys-lru"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(rp)
            wait_port(redis_port, rp, "redis-server")
            # Room for the values and each key's overhead (key, envelope, Redis's bookkeeping,
            # the allocator's size classes), over what the store holds with the clients
            # connected and no keys: measured by storing a sample of the workload's keys.
            room = int(cache_bytes * bytes_per_value_byte(redis_port, sizes))
            print(f"\n== {name}: {len(trace)} reads, {len(sizes)} distinct keys, "
                  f"{len({c for _, c, _, _ in trace})} clients; cache {cache_bytes} value bytes "
                  f"({opts.cache_share:.0%}, about {int(opts.cache_share * len(sizes))} keys), "
                  f"maxmemory = used + {room}", flush=True)
            rows = []
            for mode in modes:
                print(f"  {mode} ...", file=sys.stderr, flush=True)
                rows.append(run_mode(mode, trace, prefix, think_scale, redis_port, origin_port, room,
                                     opts, tmp, procs))
            rt = next((r for r in rows if r["mode"] == "read-through"), None)
            sims = {"no prefetch": replay_base(opts, csv_path, cache_bytes)}
            for r in rows:
                if r["mode"] == "prefetch":
                    sims["prefetch"] = replay(opts, csv_path, cache_bytes, None)
                elif r["mode"].startswith("prefetch@"):
                    sims[r["mode"]] = replay(opts, csv_path, cache_bytes, r["mode"].split("@")[1])
            print_table(name, rows, rt, sims)
            results.append({"workload": name, "rows": rows, "replay": sims,
                            "room": room, "cache_bytes": cache_bytes})
            command(redis_port, "SHUTDOWN", "NOSAVE")
            origin.terminate()
    finally:
        stop(procs, tmp)
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(results, f, indent=1)


def bytes_per_value_byte(port, sizes, n=300):
    """What Redis uses per byte of value, keys and bookkeeping included, for a sample of the
    workload's keys (random values, an envelope's worth longer, with a TTL, as fills are)."""
    sample = random.Random(1).sample(sorted(sizes), min(n, len(sizes)))
    before = int(command(port, "INFO", "memory").split("used_memory:")[1].split()[0])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        f = s.makefile("rb")
        for k in sample:
            s.sendall(resp("SET", k, os.urandom(sizes[k] + 24), "EX", TTL))
            f.readline()
    after = int(command(port, "INFO", "memory").split("used_memory:")[1].split()[0])
    command(port, "FLUSHALL", "SYNC")
    return (after - before) / sum(sizes[k] for k in sample)


def replay_base(opts, csv_path, cache_bytes):
    args = [opts.binary, "replay", "--trace", csv_path, "--format", "csv",
            "--cache-size", f"{cache_bytes}B", "--json", "--no-prefetch"]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def print_table(name, rows, rt, sims):
    print(f"\n{'mode':<14} {'hit':>6} {'sim':>6} {'mean ms':>8} {'p50':>6} {'p99':>7} "
          f"{'x rt mean':>9} {'origin':>7} {'load':>6} {'sim ld':>6} {'prec':>5} {'cov':>5} "
          f"{'late':>5}  wasted ev/exp/ow/un  thr   lag ms  wait ms  keys held")
    for r in rows:
        sim_key = "prefetch" if r["mode"] == "prefetch-wide" else r["mode"]
        sim = sims.get(sim_key) if r["mode"].startswith("prefetch") else sims["no prefetch"]
        s = r.get("stats", {})
        load = r["origin_requests"] / rt["origin_requests"] if rt and rt["origin_requests"] else 0
        rel = r["mean_ms"] / rt["mean_ms"] if rt else 0
        pf = r["mode"].startswith("prefetch")
        useful, late = int(s.get("useful", 0)), int(s.get("late", 0))
        late_share = late / (useful + late) if useful + late else 0
        wasted = "/".join(s.get(k, "-") for k in
                          ("wasted_evicted", "wasted_expired", "wasted_overwritten", "wasted_unused"))
        print(f"{r['mode']:<14} {r['hit_ratio']:>6.3f} {sim['hit_ratio'] if sim else 0:>6.3f} "
              f"{r['mean_ms']:>8.2f} {r['p50_ms']:>6.2f} {r['p99_ms']:>7.1f} {rel:>9.2f} "
              f"{r['origin_requests']:>7} {load:>6.2f} "
              f"{(sim or {}).get('load_factor', 1.0):>6.2f} "
              f"{float(s.get('precision', 0)) if pf else 0:>5.2f} "
              f"{float(s.get('coverage', 0)) if pf else 0:>5.2f} {late_share if pf else 0:>5.2f}  "
              f"{wasted if pf else '-':<20} {s.get('threshold', '-') if pf else '-':<5} "
              f"{s.get('avg_prediction_lag_ms', '-') if pf else '-':<7} "
              f"{s.get('avg_wait_ms', '-') if pf else '-':<8} {r['keys_held']:.0f}")


if __name__ == "__main__":
    main()
