#!/usr/bin/env bash
# Start/stop the real vLLM (CPU) server with the sentence encoder (POST /v1/embeddings).
#
#   scripts/vllm/encoder_server.sh start    # env + model (cached) + server in the background, waits, warms up
#   scripts/vllm/encoder_server.sh wait     # wait until /health answers (timeout GUARD_ENC_TIMEOUT, 180 s)
#   scripts/vllm/encoder_server.sh status   # "running pid P on port N" / "stopped" (exit 0 / 1)
#   scripts/vllm/encoder_server.sh stop     # kill the whole process group, wait for it to go
#
# Env: GUARD_ENC_PORT (8002), GUARD_ENC_MODEL_DIR (default: all-MiniLM-L6-v2 from
#      scripts/encoder/fetch_minilm.sh, SHA-256 checked), GUARD_ENC_MODEL_NAME (all-MiniLM-L6-v2),
#      GUARD_CACHE (~/.cache/guard), GUARD_ENC_TIMEOUT (180), GUARD_ENC_EXTRA_ARGS (appended).
# Pid and log files: $GUARD_CACHE/encoder-server-<port>.{pid,log}.
#
# vLLM 0.32 serves a sentence-transformers folder as an embedding model with --runner pooling
# (mean pooling and normalisation from the folder's modules.json); float32, so the vectors match
# what `guard fit` trained the probe heads on.
# POST /v1/embeddings {"model", "input": [texts]} -> {"data": [{"index", "embedding": [384 floats]}]}.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${GUARD_CACHE:-$HOME/.cache/guard}"
PORT="${GUARD_ENC_PORT:-8002}"
TIMEOUT="${GUARD_ENC_TIMEOUT:-180}"
NAME="${GUARD_ENC_MODEL_NAME:-all-MiniLM-L6-v2}"
PIDFILE="$CACHE/encoder-server-$PORT.pid"
LOGFILE="$CACHE/encoder-server-$PORT.log"
URL="http://127.0.0.1:$PORT"

log() { echo "[encoder_server] $*" >&2; }

# shellcheck source=scripts/vllm/vllm_proc.sh
source "$ROOT/scripts/vllm/vllm_proc.sh"

warmup() {
  # One /v1/embeddings call so the first real request does not pay the start-up cost; checks the
  # shape (one normalised vector per input).
  local t0
  t0=$(date +%s%N)
  "$PY" - "$URL" "$NAME" <<'PYEOF' >&2
import json, sys, urllib.request
body = json.dumps({"model": sys.argv[2], "input": ["Where is my order?", "Sure, here is how"]}).encode()
req = urllib.request.Request(sys.argv[1] + "/v1/embeddings", data=body,
                             headers={"Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=120) as r:
    out = json.loads(r.read())
vecs = [d["embedding"] for d in out["data"]]
assert len(vecs) == 2 and all(abs(sum(x * x for x in v) - 1.0) < 1e-3 for v in vecs), out
PYEOF
  log "warm-up /v1/embeddings done in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
}

cmd_start() {
  mkdir -p "$CACHE"
  if is_running; then
    log "already running (pid $(cat "$PIDFILE")) on port $PORT"
    cmd_wait
    echo "$URL"
    return 0
  fi
  PY="$("$ROOT/scripts/vllm/vllm_env.sh")"
  local model="${GUARD_ENC_MODEL_DIR:-}"
  if [[ -z "$model" ]]; then
    model="$("$ROOT/scripts/encoder/fetch_minilm.sh" | tail -n 1)"
  fi
  [[ -f "$model/config.json" ]] || { log "no model at '$model'"; return 1; }
  prune_logs 'encoder-server-*.log'
  local rundir
  rundir="$(make_rundir)"
  log "starting vLLM encoder on $URL with model $model (log: $LOGFILE)"
  local t0
  t0=$(date +%s)
  # setsid: own process group, so stop can kill vLLM and its engine-core child together.
  # shellcheck disable=SC2086
  VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
  VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 TMPDIR="$rundir" VLLM_RPC_BASE_PATH="$rundir" \
    setsid "$PY" -m vllm.entrypoints.openai.api_server \
      --model "$model" --served-model-name "$NAME" --host 127.0.0.1 --port "$PORT" \
      --runner pooling \
      --dtype float32 --max-model-len 256 --max-num-seqs 128 --enforce-eager \
      ${GUARD_ENC_EXTRA_ARGS:-} \
      >"$LOGFILE" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  if ! cmd_wait; then
    cmd_stop || true
    return 1
  fi
  pin_engine "$PY"
  if ! warmup; then
    log "warm-up failed; last log lines ($LOGFILE):"
    tail -n 40 "$LOGFILE" >&2 2>/dev/null || true
    cmd_stop || true
    return 1
  fi
  log "started in $(( $(date +%s) - t0 ))s (pid $(cat "$PIDFILE"))"
  echo "$URL"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  wait) cmd_wait ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|wait|status" >&2; exit 2 ;;
esac
