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
# B3 1,000 SSE subscribers on one API process (all on a run parked at an approval):
#    the process's resident memory before and after, per subscriber.
# B4 10,000 runs parked at approvals: the API process's resident memory before and after
#    (the runs live in PostgreSQL, not in the server).
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
cp "$REPO/tests/fixtures/five-steps.yaml" "$REPO/graphs/review-publish.yaml" "$WORK/graphs/"
cd "$WORK"
export CREWGRAPH_DEFINITIONS="$WORK/graphs" CREWGRAPH_RATE_LIMIT=0 CREWGRAPH_LOG=warn
KEY=$("$BIN" keys create --tenant bench --roles submit)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
API="http://127.0.0.1:$PORT"
"$BIN" serve --no-workers --bind "127.0.0.1:$PORT" &
API_PID=$!
PIDS+=($API_PID)
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$API_PID/status"; }
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

echo "== B3 1,000 SSE subscribers on one API process"
RUN=$(curl -sf -H "Authorization: Bearer $KEY" -H 'content-type: application/json' \
  -d '{"graph": "review-publish"}' "$API/v1/runs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
until [ "$(curl -sf -H "Authorization: Bearer $KEY" "$API/v1/runs/$RUN" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')" = waiting ]; do sleep 0.2; done
python3 - "$PORT" "$KEY" "$RUN" "$API_PID" <<'PY'
import socket, sys, time
port, key, run, pid = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
rss = lambda: int(next(l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")))
time.sleep(1)
before = rss()
socks = []
for _ in range(1000):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET /v1/runs/{run}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n".encode())
    socks.append(s)
# Every stream has answered with the run's events so far.
ok = 0
for s in socks:
    s.settimeout(10)
    data = b""
    while b"run.waiting" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    ok += b"run.waiting" in data
time.sleep(2)
after = rss()
print(f'{{"workload": "B3", "subscribers": {len(socks)}, "streaming": {ok}, "rss_before_kb": {before}, "rss_after_kb": {after}, "kb_per_subscriber": {(after - before) / len(socks):.1f}}}')
for s in socks:
    s.close()
PY

echo "== B4 10,000 runs parked at approvals"
BEFORE_KB=$(rss_kb)
python3 - "$API" "$KEY" "$DATABASE_URL" <<'PY'
import concurrent.futures as cf, subprocess, sys, time, urllib.request
api, key, db = sys.argv[1], sys.argv[2], sys.argv[3]
def post(_):
    req = urllib.request.Request(f"{api}/v1/runs", data=b'{"graph": "review-publish"}', method="POST",
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        assert r.status == 201
with cf.ThreadPoolExecutor(16) as pool:
    list(pool.map(post, range(10000)))
while int(subprocess.check_output(["psql", db, "-Atc", "SELECT COUNT(*) FROM runs WHERE status = 'waiting'"])) < 10001:
    time.sleep(0.5)
PY
sleep 2
AFTER_KB=$(rss_kb)
PENDING=$(psql "$DATABASE_URL" -Atc "SELECT COUNT(*) FROM approvals WHERE status = 'pending'")
echo "{\"workload\": \"B4\", \"parked_runs\": $PENDING, \"api_rss_before_kb\": $BEFORE_KB, \"api_rss_after_kb\": $AFTER_KB}"
