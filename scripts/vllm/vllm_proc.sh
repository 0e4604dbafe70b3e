# Process management shared by scripts/vllm/vllm_server.sh and scripts/vllm/classifier_server.sh (sourced).
# The caller sets CACHE, URL, PIDFILE, LOGFILE, TIMEOUT and defines log().
#
# Per-run directory: vLLM puts its IPC sockets (UUID-named) and vllm_dist_* files in the temp dir;
# make_rundir creates ${TMPDIR:-/tmp}/guard-vllm.XXXXXX for one server (/tmp if TMPDIR is long) (TMPDIR and
# VLLM_RPC_BASE_PATH point there), remembered in "$PIDFILE.rundir", and cmd_stop removes it.
# Logs: each start overwrites its port's log; at most GUARD_LOG_KEEP (default 6) server logs of each
# kind stay in the cache (the oldest are removed on start).

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
  local t0 now last_beat
  t0=$(date +%s)
  last_beat=$t0
  while ! http_ok "$URL/health"; do
    if ! is_running; then
      log "server process is gone; last log lines ($LOGFILE):"
      tail -n 40 "$LOGFILE" >&2 2>/dev/null || true
      return 1
    fi
    now=$(date +%s)
    if (( now - last_beat >= 20 && now - t0 >= 20 )); then
      last_beat=$now
      log "waiting for $URL/health ($(( now - t0 )) s; the log: $LOGFILE)"
    fi
    if (( now - t0 > TIMEOUT )); then
      log "not healthy after ${TIMEOUT}s; last log lines ($LOGFILE):"
      tail -n 40 "$LOGFILE" >&2 2>/dev/null || true
      return 1
    fi
    sleep 1
  done
  log "healthy at $URL after $(( $(date +%s) - t0 ))s"
}


make_rundir() {  # prints the new per-run temp directory
  # vLLM's IPC sockets are <dir>/<uuid>: a Unix socket path has at most 107 bytes, so a long
  # TMPDIR (some CI runners, macOS) falls back to /tmp
  local base="${TMPDIR:-/tmp}" d
  if (( ${#base} > 48 )); then base=/tmp; fi
  d="$(mktemp -d "$base/guard-vllm.XXXXXX")"
  echo "$d" >"$PIDFILE.rundir"
  echo "$d"
}

remove_rundir() {
  if [[ -f "$PIDFILE.rundir" ]]; then
    local d
    d="$(cat "$PIDFILE.rundir")"
    case "$d" in
      */guard-vllm.*) rm -rf -- "$d" ;;
    esac
    rm -f "$PIDFILE.rundir"
  fi
}

prune_logs() {  # $1: glob of this kind of log in $CACHE, e.g. 'vllm-server-*.log'
  # Never fails: on a fresh cache the glob matches nothing (``ls`` would exit 2 and, under
  # ``set -euo pipefail``, end the caller without a word), and the cache may not exist yet.
  local keep="${GUARD_LOG_KEEP:-6}" f
  local -a logs=()
  mkdir -p "$CACHE"
  # newest first; nullglob: no match is an empty list, not the pattern itself
  while IFS= read -r f; do
    [[ -n "$f" ]] && logs+=("$f")
  done < <(shopt -s nullglob; for f in "$CACHE"/$1; do printf '%s\t%s\n' "$(stat -c %Y "$f" 2>/dev/null || echo 0)" "$f"; done | sort -rn | cut -f2-)
  local i
  for (( i = keep; i < ${#logs[@]}; i++ )); do
    [[ "${logs[$i]}" == "$LOGFILE" ]] || rm -f -- "${logs[$i]}"
  done
  return 0
}

cmd_stop() {
  if ! [[ -f "$PIDFILE" ]]; then
    remove_rundir
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
  remove_rundir
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
