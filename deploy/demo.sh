#!/usr/bin/env bash
# The service end to end on a bare machine: builds crewgraph, starts llama.cpp's
# server with SmolLM2-135M (built once into ~/.cache/crewgraph/llm), starts
# `crewgraph serve` on the embedded default (SQLite under a scratch directory),
# submits a run of the example crew `research-report` over HTTP, streams its
# events, approves its review step over the API, and prints the result.
#
#   deploy/demo.sh [TOPIC]
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
TOPIC="${1:-tide pools}"

WORK=$(mktemp -d /tmp/crewgraph-demo.XXXXXX)
LLM_PID="" SERVER_PID="" STREAM_PID=""
cleanup() {
  if declare -F stop_llm >/dev/null; then stop_llm; fi
  for pid in "$STREAM_PID" "$SERVER_PID"; do
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
json_field() { python3 -c 'import json,sys; v=json.load(sys.stdin)
for k in sys.argv[1].split("."): v=v[int(k)] if isinstance(v,list) else v[k]
print(v if isinstance(v,str) else json.dumps(v))' "$1"; }
. tests/llm.sh

step() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

step "building crewgraph (release)"
cargo build --release -p crewgraph-cli >&2
BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/crewgraph"

step "starting llama.cpp's server"
start_llm
[ -n "${CREWGRAPH_LLM_URL:-}" ] || { echo "no model server; see the warnings above" >&2; exit 1; }

step "starting crewgraph serve (embedded SQLite in $WORK)"
PORT=$(free_port)
API="http://127.0.0.1:$PORT"
cd "$WORK"
export CREWGRAPH_DEFINITIONS="$REPO/crews:$REPO/graphs" OPENAI_BASE_URL="$CREWGRAPH_LLM_URL"
unset DATABASE_URL REDIS_URL QDRANT_URL
KEY=$("$BIN" keys create --tenant demo --roles submit,approve,read)
"$BIN" serve --bind "127.0.0.1:$PORT" --workers 2 2>"$WORK/serve.log" &
SERVER_PID=$!
for _ in $(seq 100); do curl -sf "$API/healthz" >/dev/null && break; sleep 0.1; done
curl -sf "$API/readyz" >&2 && echo >&2

step "POST /v1/runs  research-report, topic=$TOPIC"
RUN=$(curl -sf -H "Authorization: Bearer $KEY" -H 'content-type: application/json' \
  -d "{\"graph\": \"research-report\", \"input\": {\"topic\": \"$TOPIC\"}}" "$API/v1/runs")
echo "$RUN" >&2
RUN_ID=$(echo "$RUN" | json_field id)

step "GET /v1/runs/$RUN_ID/events (SSE, in the background)"
curl -sN -H "Authorization: Bearer $KEY" "$API/v1/runs/$RUN_ID/events" | grep --line-buffered '^event:' \
  | sed -u 's/^event: /  event: /' >&2 &
STREAM_PID=$!

WAITED=$(curl -sf -H "Authorization: Bearer $KEY" "$API/v1/runs/$RUN_ID/wait?timeout_s=300")
[ "$(echo "$WAITED" | json_field status)" = waiting ] || { echo "expected the run to wait for review: $WAITED" >&2; exit 1; }

step "GET /v1/approvals?status=pending"
APPROVAL=$(curl -sf -H "Authorization: Bearer $KEY" "$API/v1/approvals?status=pending&run_id=$RUN_ID")
echo "$APPROVAL" | python3 -m json.tool >&2
APPROVAL_ID=$(echo "$APPROVAL" | json_field 0.id)

step "POST /v1/approvals/$APPROVAL_ID  approve"
curl -sf -H "Authorization: Bearer $KEY" -H 'content-type: application/json' \
  -d '{"action": "approve", "comment": "looks right"}' "$API/v1/approvals/$APPROVAL_ID" >/dev/null

DONE=$(curl -sf -H "Authorization: Bearer $KEY" "$API/v1/runs/$RUN_ID/wait?timeout_s=300")
wait "$STREAM_PID" 2>/dev/null || true
STREAM_PID=""
step "the run"
echo "$DONE" | python3 -m json.tool
[ "$(echo "$DONE" | json_field status)" = succeeded ]
