#!/usr/bin/env bash
# Start/stop the real vLLM (CPU) server with the tiny local model, for e2e tests and recordings.
#
#   scripts/vllm/vllm_server.sh start    # env + model (cached) + server in the background, waits, warms up
#   scripts/vllm/vllm_server.sh wait     # wait until /health answers (timeout GUARD_VLLM_TIMEOUT, 180 s)
#   scripts/vllm/vllm_server.sh status   # "running pid P on port N" / "stopped" (exit 0 / 1)
#   scripts/vllm/vllm_server.sh stop     # kill the whole process group, wait for it to go
#
# Env: GUARD_VLLM_PORT (8000), GUARD_VLLM_MODEL_DIR (default: built by scripts/models/tiny_model/build.py),
#      GUARD_CACHE (~/.cache/guard), GUARD_VLLM_TIMEOUT (180), GUARD_VLLM_EXTRA_ARGS (appended).
# Pid and log files: $GUARD_CACHE/vllm-server-<port>.{pid,log}. The served model name is "tiny".
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${GUARD_CACHE:-$HOME/.cache/guard}"
PORT="${GUARD_VLLM_PORT:-8000}"
TIMEOUT="${GUARD_VLLM_TIMEOUT:-180}"
PIDFILE="$CACHE/vllm-server-$PORT.pid"
LOGFILE="$CACHE/vllm-server-$PORT.log"
URL="http://127.0.0.1:$PORT"

log() { echo "[vllm_server] $*" >&2; }

# shellcheck source=scripts/vllm/vllm_proc.sh
source "$ROOT/scripts/vllm/vllm_proc.sh"

warmup() {
  # The first request with logprobs after start is slow: do one now.
  local t0 body
  t0=$(date +%s%N)
  body='{"model":"tiny","messages":[{"role":"user","content":"Where is my order?"}],"max_tokens":8,"temperature":0,"logprobs":true,"top_logprobs":3,"stream":true}'
  "$PY" - "$URL" "$body" <<'EOF' >&2
import sys, urllib.request
req = urllib.request.Request(sys.argv[1] + "/v1/chat/completions", data=sys.argv[2].encode(),
                             headers={"Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=120) as r:
    body = r.read()
assert b"[DONE]" in body, body[:500]
EOF
  log "warm-up request done in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
}

cmd_start() {
  mkdir -p "$CACHE"
  if is_running; then
    log "already running (pid $(cat "$PIDFILE")) on port $PORT"
    cmd_wait
    return 0
  fi
  PY="$("$ROOT/scripts/vllm/vllm_env.sh")"
  local model="${GUARD_VLLM_MODEL_DIR:-}"
  if [[ -z "$model" ]]; then
    model="$(HF_HUB_DISABLE_PROGRESS_BARS=1 "$PY" "$ROOT/scripts/models/tiny_model/build.py" | tail -n 1)"
  fi
  [[ -f "$model/config.json" ]] || { log "no model at '$model'"; return 1; }
  prune_logs 'vllm-server-*.log'
  local rundir
  rundir="$(make_rundir)"
  log "starting vLLM on $URL with model $model (log: $LOGFILE)"
  local t0
  t0=$(date +%s)
  # setsid: own process group, so stop can kill vLLM and its engine-core child together.
  # shellcheck disable=SC2086
  VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
  VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 TMPDIR="$rundir" VLLM_RPC_BASE_PATH="$rundir" \
    setsid "$PY" -m vllm.entrypoints.openai.api_server \
      --model "$model" --served-model-name tiny --host 127.0.0.1 --port "$PORT" \
      --dtype bfloat16 --max-model-len 512 --max-num-seqs 16 --enforce-eager \
      ${GUARD_VLLM_EXTRA_ARGS:-} \
      >"$LOGFILE" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  if ! cmd_wait; then
    cmd_stop || true
    return 1
  fi
  pin_engine "$PY"
  warmup
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
