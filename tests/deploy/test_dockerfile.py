"""Dockerfile: static checks, and its install steps run outside a container (no Docker here)."""

from __future__ import annotations

import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from .conftest import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_multi_stage() -> None:
    froms = [rest for op, rest in _instructions() if op == "FROM"]
    assert len(froms) >= 2
    assert any(" AS builder" in f for f in froms)
    assert "python:3.11-slim" in DOCKERFILE


def test_builder_builds_wheel_runtime_installs_it() -> None:
    runs = [rest for op, rest in _instructions() if op == "RUN"]
    assert any("pip wheel --wheel-dir /wheels ." in r for r in runs)
    assert any("pip install --no-index --find-links /wheels guard" in r for r in runs)
    assert any("from=builder" in r for r in runs)


def test_non_root_user() -> None:
    users = [rest for op, rest in _instructions() if op == "USER"]
    assert users, "no USER instruction"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")


def test_healthcheck_without_curl() -> None:
    hc = [rest for op, rest in _instructions() if op == "HEALTHCHECK"]
    assert hc and "/health" in hc[0] and "urllib.request" in hc[0]
    assert "curl" not in hc[0] and "wget" not in hc[0]


def test_entrypoint_and_cmd() -> None:
    ins = dict(_instructions())
    assert ins["ENTRYPOINT"] == '["guard"]'
    assert ins["CMD"] == '["serve", "--host", "0.0.0.0", "--port", "8080"]'
    assert "GUARD_UPSTREAM" in DOCKERFILE


def test_dockerignore_keeps_build_inputs() -> None:
    lines = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "**"
    for needed in ("!pyproject.toml", "!README.md", "!guard/"):
        assert needed in lines
    copies = [rest for op, rest in _instructions() if op == "COPY" and "--from" not in rest]
    for c in copies:
        for src in c.split()[:-1]:
            assert f"!{src}" in lines or f"!{src.rstrip('/')}/" in lines, src


@pytest.mark.slow
def test_install_steps_outside_container(tmp_path: Path) -> None:
    """builder: `pip wheel` of the project; runtime: install that wheel into a fresh venv."""
    wheels = tmp_path / "wheels"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (whl,) = wheels.glob("guard-*.whl")
    import zipfile

    names = zipfile.ZipFile(whl).namelist()
    assert "guard/data/default_model.npz" in names, "default risk model not packaged in the wheel"

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    r = subprocess.run(
        [
            str(py),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--find-links",
            str(wheels),
            str(whl),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    r = subprocess.run(
        [str(env_dir / "bin" / "guard"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "serve" in r.stdout
    r = subprocess.run(
        [
            str(py),
            "-c",
            "import importlib.resources as r, guard;"
            " p = r.files('guard') / 'data' / 'default_model.npz'; print(p.is_file(), p)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("True") and str(env_dir) in r.stdout
