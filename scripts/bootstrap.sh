#!/usr/bin/env bash
# Create/refresh the project virtualenv (.venv) with guard and its dev tools. Idempotent: a second
# run is a no-op until pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv" >&2
  "$PY" -m venv .venv
fi
stamp=.venv/.guard-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: installing guard[dev] into .venv (first run: ~1-3 min)" >&2
  # pip warns once per configured-but-absent local index directory ("Location ... is ignored");
  # those lines are noise on machines without them, everything else pip says is kept.
  start=$(date +%s)
  ( set +e +o pipefail  # grep exits 1 when pip says nothing else: not a failure
    .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 \
      | grep -v "is ignored: it is neither a file nor a directory" >&2
    exit "${PIPESTATUS[0]}" ) &
  pip_pid=$!
  while kill -0 "$pip_pid" 2>/dev/null; do  # a heartbeat every 30 s: pip -q is silent for minutes
    for _ in $(seq 1 30); do kill -0 "$pip_pid" 2>/dev/null || break; sleep 1; done
    if kill -0 "$pip_pid" 2>/dev/null; then
      echo "bootstrap: still installing ($(( $(date +%s) - start )) s)" >&2
    fi
  done
  rc=0
  wait "$pip_pid" || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "bootstrap: pip install failed (exit $rc)" >&2
    exit "$rc"
  fi
  touch "$stamp"
fi
