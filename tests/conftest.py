"""Suite-wide: a heartbeat for long tests, so a test log never sits silent for a minute.

Some tests legitimately run for minutes (the end-to-end fixtures start vLLM; the alignment loop
fine-tunes a model). pytest captures their output at the file-descriptor level, so without this the
log shows nothing while they run. Every ``HEARTBEAT_S`` seconds a running test writes one line,
which test and for how long, to the stderr pytest itself started with (the descriptor its output
capture saved), or to ``sys.stderr`` when capture is off (``-s``).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Generator

import pytest

HEARTBEAT_S = float(os.environ.get("GUARD_TEST_HEARTBEAT_S", "45"))


def _writer(config: pytest.Config) -> Callable[[str], None]:
    capman = config.pluginmanager.getplugin("capturemanager")
    err = getattr(getattr(capman, "_global_capturing", None), "err", None)
    fd = getattr(err, "targetfd_save", None)
    if isinstance(fd, int):
        return lambda line: os.write(fd, line.encode("utf-8", "replace")) and None

    def to_stderr(line: str) -> None:
        sys.stderr.write(line)
        sys.stderr.flush()

    return to_stderr


def _beat(nodeid: str, stop: threading.Event, write: Callable[[str], None]) -> None:
    start = time.monotonic()
    while not stop.wait(HEARTBEAT_S):
        write(f"\n[still running {time.monotonic() - start:.0f} s] {nodeid}\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    stop = threading.Event()
    t = threading.Thread(target=_beat, args=(item.nodeid, stop, _writer(item.config)), daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(timeout=1.0)
