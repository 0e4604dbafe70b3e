"""Real processes on 127.0.0.1 for reliability tests: the scripted fast upstream and a guard."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.guard_proc import free_port, guard_server

ROOT = Path(__file__).resolve().parents[2]

__all__ = ["fake_upstream", "free_port", "guard_server", "uvicorn_workers"]


@contextmanager
def fake_upstream(*args: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "loadtests" / "fake_vllm.py"), "--port", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("fake upstream did not start")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def uvicorn_workers(pid: int) -> set[int]:
    """The workers of a ``guard serve --workers N`` supervisor: its multiprocessing-spawned
    children (not multiprocessing's resource tracker)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            kids = {int(x) for x in fh.read().split()}
    except OSError:
        return set()
    out = set()
    for k in kids:
        try:
            with open(f"/proc/{k}/cmdline", "rb") as fh:
                if b"spawn_main" in fh.read():
                    out.add(k)
        except OSError:
            pass
    return out
