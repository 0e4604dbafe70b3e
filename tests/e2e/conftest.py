"""End-to-end tests against a real vLLM (CPU) server serving the tiny local model.

Every test collected under tests/e2e gets ``pytest.mark.e2e``; deselect them with ``-m "not e2e"``.

The ``vllm_url`` fixture (session scope):
  * ``GUARD_VLLM_URL`` set (e.g. ``http://127.0.0.1:8000``): use that already running server.
  * otherwise: ``scripts/vllm/vllm_env.sh`` (idempotent, ~2 min the first time), then
    ``scripts/vllm/vllm_server.sh start`` on a free port (builds/caches the tiny
    model, ~2 min the first
    time; server start ~30 s), and ``stop`` at the end of the session.
If the server cannot be started the fixture FAILS (never skips): an e2e run that silently tests
nothing is worse than a red one.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SCRIPTS = ROOT / "scripts"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.e2e)
    # The chaos test kills and restarts its own vLLM and measures 1 s deadlines: it runs first,
    # before the session's servers (chat model, classifier, encoder) take the cores.
    items.sort(key=lambda it: 0 if Path(str(it.path)).name == "test_chaos_vllm.py" else 1)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="session")
def vllm_url() -> Iterator[str]:
    url = os.environ.get("GUARD_VLLM_URL")
    if url:
        yield url.rstrip("/")
        return
    env = dict(os.environ)
    port = _free_port()
    env["GUARD_VLLM_PORT"] = str(port)
    r = _run([str(SCRIPTS / "vllm" / "vllm_env.sh")], env, timeout=1800)
    if r.returncode != 0:
        pytest.fail(
            f"scripts/vllm/vllm_env.sh failed (rc {r.returncode}):\n{r.stdout}\n{r.stderr}",
            pytrace=False,
        )
    r = _run([str(SCRIPTS / "vllm" / "vllm_server.sh"), "start"], env, timeout=1200)
    if r.returncode != 0:
        _run([str(SCRIPTS / "vllm" / "vllm_server.sh"), "stop"], env, timeout=60)
        pytest.fail(
            f"scripts/vllm/vllm_server.sh start failed (rc {r.returncode}):\n"
            f"{r.stdout}\n{r.stderr}",
            pytrace=False,
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        _run([str(SCRIPTS / "vllm" / "vllm_server.sh"), "stop"], env, timeout=60)


@pytest.fixture(scope="session")
def vllm_model() -> str:
    """Served model name of the tiny model."""
    return os.environ.get("GUARD_VLLM_MODEL", "tiny")
