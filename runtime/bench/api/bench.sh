#!/usr/bin/env bash
# API benchmarks (issue 5) against a release `crewgraph serve` on loopback, load from wrk.
#
#   runtime/bench/api/bench.sh [DATABASE_URL]      (default: the machine's PostgreSQL, a fresh database)
#
# B1 run creation: POST /v1/runs for 10 s from 16 and from 64 connections (API only, no workers):
#    requests/s and the latency distribution.
# B2 end to end: 2,000 runs of a 5-step graph without a model, submitted at once,
#    executed by 2 worker processes (4 slots each): runs/s from the first submission
#    to the last run succeeded.
set -euo pipefail
cd "$(dirname "$0")/../../.."
REPO=$PWD
BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/crewgraph"
[ -x "$BIN" ] || cargo build --release -p crewgraph-cli
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)" >&2; exit 1; }

ADMIN="${1:-postgres://postgres@127.0.0.1:5432/postgres}"
DB="crewgraph_bench_$$"
psql "$ADMIN" -qc "CREATE DATABASE $DB" >/dev/null
export DATABASE_URL="${ADMIN%/*}/$DB"
WORK=$(mktemp -d /tmp/crewgraph-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/graphs"
cp "$REPO/tests/fixtures/five-steps.yaml" "$WORK/graphs/"
cd "$WORK"
export CREWGRAPH_DEFINITIONS="$WORK/graphs" CREWGRAPH_RATE_LIMIT=0 CREWGRAPH_LOG=warn
KEY=$("$BIN" keys create --tenant bench --roles submit)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
API="http://127.0.0.1:$PORT"
"$BIN" serve --no-workers --bind "127.0.0.1:$PORT" &
PIDS+=($!)
for _ in $(seq 100); do curl -sf "$API/healthz" >/dev/null && break; sleep 0.1; done

cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
wrk.body = '{"graph": "five-steps", "input": {}}'
LUA
for c in 16 64; do
  echo "== B1 run creation (POST /v1/runs, $c connections, 10 s, API only)"
  wrk -t1 -c"$c" -d10s --latency -s "$WORK/post.lua" "$API/v1/runs" | sed -n '/Latency Distribution/,$p'
done

echo "== B2 end to end: 2,000 five-step runs through the API, 2 worker processes x 4 slots"
psql "$DATABASE_URL" -qc "UPDATE runs SET status = 'cancelled', queue_state = NULL WHERE status = 'queued'" >/dev/null
BEFORE=$(psql "$DATABASE_URL" -Atc "SELECT COUNT(*) FROM runs WHERE status = 'succeeded'")
for w in 1 2; do
  CREWGRAPH_WORKER_NAME="bench-$w" "$BIN" worker --workers 4 &
  PIDS+=($!)
done
sleep 1
python3 - "$API" "$KEY" "$DATABASE_URL" "$BEFORE" <<'PY'
import concurrent.futures as cf, subprocess, sys, time, urllib.request
api, key, db, before = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
N = 2000
def post(_):
    req = urllib.request.Request(f"{api}/v1/runs", data=b'{"graph": "five-steps", "input": {}}', method="POST",
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        assert r.status == 201
start = time.monotonic()
with cf.ThreadPoolExecutor(16) as pool:
    list(pool.map(post, range(N)))
submitted = time.monotonic() - start
while True:
    done = int(subprocess.check_output(["psql", db, "-Atc", "SELECT COUNT(*) FROM runs WHERE status = 'succeeded'"]))
    if done - before >= N:
        break
    time.sleep(0.05)
total = time.monotonic() - start
print(f'{{"workload": "B2", "runs": {N}, "submitted_s": {submitted:.2f}, "total_s": {total:.2f}, "runs_per_s": {N / total:.0f}}}')
PY
