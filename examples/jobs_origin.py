#!/usr/bin/env python3
"""A local origin for conf/jobs-example.toml: GET serves examples/origin/ (products/{id}.json,
users/{id}.json); POST /api/views (the view-count sink) and POST /api/offers/expired (the
expiry webhook) print what they receive and dedupe on the Idempotency-Key header, as a real
receiver must (a batch is sent again when prescient died between the answer and its
bookkeeping).

Usage: python3 examples/jobs_origin.py [--port 8000]
"""
import argparse
import http.server
import json
import os
import threading

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "origin")
SEEN = set()
TOTALS = {}
LOCK = threading.Lock()


class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **kw):
        super().__init__(*a, directory=ROOT, **kw)

    def do_POST(self):
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(min(n, 1 << 20))
        key = self.headers.get("idempotency-key", "")
        try:
            doc = json.loads(body)
        except ValueError:
            self.send_error(400, "not JSON")
            return
        with LOCK:
            repeat = key in SEEN
            SEEN.add(key)
            if not repeat and self.path == "/api/views":
                for k, v in doc.get("counts", {}).items():
                    TOTALS[k] = TOTALS.get(k, 0) + v
        tag = "repeat, ignored" if repeat else "new"
        print(f"POST {self.path} [{tag}] {key}: {json.dumps(doc)}", flush=True)
        if self.path == "/api/views" and not repeat:
            print(f"  totals: {json.dumps(TOTALS, sort_keys=True)}", flush=True)
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, fmt, *args):
        if self.command != "POST":
            super().log_message(fmt, *args)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8000)
    a = ap.parse_args()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    print(f"origin on 127.0.0.1:{a.port}, serving {ROOT}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
