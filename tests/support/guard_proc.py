"""Run a real `guard serve` (uvicorn on 127.0.0.1) as a subprocess for end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from guard.demo import wait_healthy

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def guard_server(
    upstream: str, *args: str, env: dict[str, str] | None = None, timeout: float = 30.0
) -> Iterator[str]:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "guard",
        "serve",
        "--upstream",
        upstream,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *args,
    ]
    full_env = dict(os.environ)
    full_env.update(env or {})
    log = (ROOT / ".cache").joinpath(f"guard-{port}.log")
    log.parent.mkdir(exist_ok=True)
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_healthy(url, proc, timeout)
        except SystemExit as exc:
            raise RuntimeError(f"{exc}:\n{log.read_text()}") from None
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
