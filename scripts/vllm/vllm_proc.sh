# Process management shared by scripts/vllm/vllm_server.sh and scripts/vllm/classifier_server.sh (sourced).
# The caller sets URL, PIDFILE, LOGFILE, TIMEOUT and defines log().

is_running() {
  [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

http_ok() {  # curl if present, else python
  if command -v curl >/dev/null 2>&1; then
    curl -fsS -m 2 "$1" >/dev/null 2>&1
  else
    python3 -c "import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" "$1" >/dev/null 2>&1
  fi
}

cmd_wait() {
  local t0 now
  t0=$(date +%s)
  while ! http_ok "$URL/health"; do
    if ! is_running; then
      log "server process is gone; last log lines ($LOGFILE):"
      tail -n 40 "$LOGFILE" >&2 2>/dev/null || true
      return 1
    fi
    now=$(date +%s)
    if (( now - t0 > TIMEOUT )); then
      log "not healthy after ${TIMEOUT}s; last log lines ($LOGFILE):"
      tail -n 40 "$LOGFILE" >&2 2>/dev/null || true
      return 1
    fi
    sleep 1
  done
  log "healthy at $URL after $(( $(date +%s) - t0 ))s"
}


cmd_stop() {
  if ! [[ -f "$PIDFILE" ]]; then
    log "not running (no pid file)"
    return 0
  fi
  local pid
  pid="$(cat "$PIDFILE")"
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping process group $pid"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do
      kill -0 -- "-$pid" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 -- "-$pid" 2>/dev/null; then
      log "still alive after 15s; SIGKILL"
      kill -KILL -- "-$pid" 2>/dev/null || true
      sleep 0.5
    fi
  fi
  rm -f "$PIDFILE"
  log "stopped"
}

cmd_status() {
  if is_running; then
    echo "running pid $(cat "$PIDFILE") on port $PORT ($URL)"
  else
    echo "stopped"
    return 1
  fi
}


pin_engine() {  # small machines: keep vLLM's busy-waiting engine core off the API server's core
  "$1" "$ROOT/scripts/vllm/vllm_pin_engine.py" "$(cat "$PIDFILE")" | while read -r l; do log "$l"; done || true
}
