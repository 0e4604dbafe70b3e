"""Fixtures for the real guard-classifier server (scripts/vllm/classifier_server.sh), imported by
tests/e2e/test_classifier_server.py (kept out of conftest.py, which other tests own).

``classifier_url`` (session): ``GUARD_CLS_URL`` if set (an already running server), else
``scripts/vllm/vllm_env.sh`` then ``scripts/vllm/classifier_server.sh start`` on a free port
(builds/caches
the tiny guard classifier the first time, ~2-4 min; server start ~30-50 s), stopped at the end.
If the server cannot be started the fixture FAILS (never skips).

``ClassifierServer.start(port)`` starts a throw-away second server (same cached model) for tests
that kill it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
SERVER = SCRIPTS / "vllm" / "classifier_server.sh"
MODEL_NAME = "tiny-guard"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass
class ClassifierServer:
    port: int
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pidfile(self) -> Path:
        cache = Path(self.env.get("GUARD_CACHE", Path.home() / ".cache" / "guard"))
        return cache / f"classifier-server-{self.port}.pid"

    @classmethod
    def start(cls, port: int | None = None) -> ClassifierServer:
        env = dict(os.environ)
        srv = cls(port or free_port(), env)
        env["GUARD_CLS_PORT"] = str(srv.port)
        r = _run([str(SCRIPTS / "vllm" / "vllm_env.sh")], env, timeout=1800)
        if r.returncode != 0:
            pytest.fail(
                f"scripts/vllm/vllm_env.sh failed (rc {r.returncode}):\n{r.stdout}\n{r.stderr}",
                pytrace=False,
            )
        r = _run([str(SERVER), "start"], env, timeout=1200)
        if r.returncode != 0:
            _run([str(SERVER), "stop"], env, timeout=60)
            pytest.fail(
                f"scripts/vllm/classifier_server.sh start failed (rc {r.returncode}):\n{r.stdout}\n"
                f"{r.stderr}",
                pytrace=False,
            )
        return srv

    def signal_group(self, sig: signal.Signals) -> None:
        pid = int(self.pidfile.read_text().strip())
        os.killpg(pid, sig)

    def stop(self) -> None:
        _run([str(SERVER), "stop"], self.env, timeout=60)


@pytest.fixture(scope="session")
def classifier_url() -> Iterator[str]:
    url = os.environ.get("GUARD_CLS_URL")
    if url:
        yield url.rstrip("/")
        return
    srv = ClassifierServer.start()
    try:
        yield srv.url
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def classifier_model() -> str:
    return os.environ.get("GUARD_CLS_MODEL", MODEL_NAME)
