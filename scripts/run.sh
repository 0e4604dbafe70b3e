#!/usr/bin/env bash
# The README's main command: set up on a fresh machine and run `guard demo` (local vLLM-CPU tiny
# model + the guard with the shipped risk model + a scripted scenario; serves until Ctrl-C).
# Arguments go to `guard demo`, e.g. --upstream http://127.0.0.1:8000 to use an existing server.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/guard demo "$@"
