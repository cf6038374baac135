#!/usr/bin/env bash
# Runs every test of the workspace against real PostgreSQL and Redis.
#
# With DATABASE_URL / REDIS_URL set, those servers are used. Without them,
# throwaway instances are started on free loopback ports (installing the
# Debian packages when missing) and stopped on exit, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=$(mktemp -d /tmp/crewgraph-test.XXXXXX)
chmod 755 "$WORK"
PG_DATA="" REDIS_PID="" LLM_PID=""
cleanup() {
  if declare -F stop_llm >/dev/null; then stop_llm; fi
  if [ -n "$PG_DATA" ]; then as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate stop >/dev/null 2>&1 || true; fi
  if [ -n "$REDIS_PID" ]; then kill "$REDIS_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

install_packages() {
  echo "installing $* (Debian packages)" >&2
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# initdb refuses to run as root: run the server as the `postgres` user then.
as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
    install_packages postgresql
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
  local port; port=$(free_port)
  PG_DATA="$WORK/pg"
  mkdir -p "$PG_DATA"
  [ "$(id -u)" = 0 ] && chown postgres "$PG_DATA"
  as_postgres "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 >/dev/null
  as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/log" -w -o "-p $port -k $PG_DATA -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=on" start >/dev/null
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  echo "throwaway PostgreSQL on 127.0.0.1:$port" >&2
}

start_redis() {
  command -v redis-server >/dev/null || install_packages redis-server
  local port; port=$(free_port)
  redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no --daemonize no --logfile "$WORK/redis.log" &
  REDIS_PID=$!
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  export REDIS_URL="redis://127.0.0.1:$port"
  echo "throwaway Redis on 127.0.0.1:$port" >&2
}

# The end-to-end model tier: start_llm, shared with deploy/demo.sh.
. tests/llm.sh

[ -n "${DATABASE_URL:-}" ] || start_postgres
[ -n "${REDIS_URL:-}" ] || start_redis
[ -n "${CREWGRAPH_LLM_URL:-}" ] || start_llm

# openapi-spec-validator (PyPI) checks the server's /openapi.json in the server tests.
spec_venv="${CREWGRAPH_CACHE:-$HOME/.cache/crewgraph}/spec-validator"
if [ ! -x "$spec_venv/bin/openapi-spec-validator" ]; then
  { python3 -m venv "$spec_venv" && "$spec_venv/bin/pip" install -q openapi-spec-validator >&2; } ||
    echo "warning: could not install openapi-spec-validator; the OpenAPI check will say it skipped" >&2
fi
[ -x "$spec_venv/bin/openapi-spec-validator" ] && export CREWGRAPH_OPENAPI_VALIDATOR="$spec_venv/bin/openapi-spec-validator"

# The end-to-end tests drive the real binary.
cargo build --locked -p crewgraph-cli
export CREWGRAPH_BIN="${CARGO_TARGET_DIR:-target}/debug/crewgraph"
cargo test --locked --workspace "$@"
