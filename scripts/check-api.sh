#!/usr/bin/env bash
# Fuzzes the HTTP API against its own OpenAPI document with schemathesis (PyPI): a running
# prescient (the debug build) on the embedded store, with an origin route, a warming task and a
# token, so every operation has something to act on. Any response outside the document (an
# undocumented status or content type, a 5xx, a schema-violating body accepted) fails it.
# CI runs it after the tests; by hand: scripts/check-api.sh
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${ST_VENV:-${TMPDIR:-/tmp}/prescient-schemathesis}"
if [ ! -x "$VENV/bin/st" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "schemathesis==4.32.5"
fi
cargo build --quiet

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ORIGIN=$(free_port); PORT=$(free_port); ADMIN=$(free_port)
DIR=$(mktemp -d)
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$DIR"; }
PIDS=()
trap cleanup EXIT

python3 examples/jobs_origin.py --port "$ORIGIN" >"$DIR/origin.log" 2>&1 &
PIDS+=($!)
cat >"$DIR/api.toml" <<CONF
[server]
admin_token = "check-api-token"
[[origin.routes]]
name = "product"
key = "product:{id}"
url = "http://127.0.0.1:$ORIGIN/products/{id}.json"
tags = ["catalog"]
[[warming.tasks]]
name = "catalog"
route = "product"
ids = "1-2,42"
CONF
./target/debug/prescient --config "$DIR/api.toml" --listen "127.0.0.1:$PORT" \
  --admin-listen "127.0.0.1:$ADMIN" >"$DIR/prescient.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$ADMIN/ready" >/dev/null 2>&1 && break
  sleep 0.1
done

"$VENV/bin/st" run "http://127.0.0.1:$ADMIN/api/v1/openapi.json" \
  -H "Authorization: Bearer check-api-token" \
  --max-examples 50 --seed 1
