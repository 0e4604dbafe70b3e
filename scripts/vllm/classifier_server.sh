#!/usr/bin/env bash
# Start/stop the real vLLM (CPU) server with the tiny guard classifier (POST /classify).
#
#   scripts/vllm/classifier_server.sh start    # env + model (cached) + server in the background, waits, warms up
#   scripts/vllm/classifier_server.sh wait     # wait until /health answers (timeout GUARD_CLS_TIMEOUT, 180 s)
#   scripts/vllm/classifier_server.sh status   # "running pid P on port N" / "stopped" (exit 0 / 1)
#   scripts/vllm/classifier_server.sh stop     # kill the whole process group, wait for it to go
#
# Env: GUARD_CLS_PORT (8001), GUARD_CLS_MODEL_DIR (default: built by scripts/models/guard_classifier/build.py),
#      GUARD_CLS_MODEL_NAME (tiny-guard), GUARD_CACHE (~/.cache/guard), GUARD_CLS_TIMEOUT (180),
#      GUARD_CLS_EXTRA_ARGS (appended to the vLLM command line).
# Pid and log files: $GUARD_CACHE/classifier-server-<port>.{pid,log}.
#
# vLLM 0.32 serves a *ForSequenceClassification checkpoint with --runner pooling --convert classify;
# POST /classify {"model", "input": text | [texts]} -> {"data": [{"index","label","probs",...}]}.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${GUARD_CACHE:-$HOME/.cache/guard}"
PORT="${GUARD_CLS_PORT:-8001}"
TIMEOUT="${GUARD_CLS_TIMEOUT:-180}"
NAME="${GUARD_CLS_MODEL_NAME:-tiny-guard}"
PIDFILE="$CACHE/classifier-server-$PORT.pid"
LOGFILE="$CACHE/classifier-server-$PORT.log"
URL="http://127.0.0.1:$PORT"

log() { echo "[classifier_server] $*" >&2; }

# shellcheck source=scripts/vllm/vllm_proc.sh
source "$ROOT/scripts/vllm/vllm_proc.sh"

warmup() {
  # One /classify call so the first real verdict does not pay the start-up cost; checks the shape.
  local t0
  t0=$(date +%s%N)
  "$PY" - "$URL" "$NAME" <<'PYEOF' >&2
import json, sys, urllib.request
body = json.dumps({"model": sys.argv[2], "input": ["Where is my order?", "Sure, here is how"]}).encode()
req = urllib.request.Request(sys.argv[1] + "/classify", data=body,
                             headers={"Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=120) as r:
    out = json.loads(r.read())
assert len(out["data"]) == 2 and len(out["data"][0]["probs"]) == 2, out
PYEOF
  log "warm-up /classify done in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
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
  local model="${GUARD_CLS_MODEL_DIR:-}"
  if [[ -z "$model" ]]; then
    model="$(HF_HUB_DISABLE_PROGRESS_BARS=1 "$PY" "$ROOT/scripts/models/guard_classifier/build.py" | tail -n 1)"
  fi
  [[ -f "$model/config.json" ]] || { log "no model at '$model'"; return 1; }
  prune_logs 'classifier-server-*.log'
  local rundir
  rundir="$(make_rundir)"
  log "starting vLLM classifier on $URL with model $model (log: $LOGFILE)"
  local t0
  t0=$(date +%s)
  # setsid: own process group, so stop can kill vLLM and its engine-core child together.
  # shellcheck disable=SC2086
  VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
  VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 TMPDIR="$rundir" VLLM_RPC_BASE_PATH="$rundir" \
    setsid "$PY" -m vllm.entrypoints.openai.api_server \
      --model "$model" --served-model-name "$NAME" --host 127.0.0.1 --port "$PORT" \
      --runner pooling --convert classify \
      --dtype bfloat16 --max-model-len 512 --max-num-seqs 64 --enforce-eager \
      ${GUARD_CLS_EXTRA_ARGS:-} \
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
