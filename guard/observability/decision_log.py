"""The decision log: JSONL in the trajectory format (docs/decision-log.md) plus the decision trace.

Writing never blocks the event loop: records go into a bounded queue drained by one thread; a full
queue drops (and counts) rather than stall a stream. ``close()`` drains everything, so no record is
lost on shutdown. Files are created owner-only (0600); size-based rotation keeps ``backups`` files
and deletes rotated files older than ``retention_days``.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from guard import jsonfast

log = logging.getLogger("guard.decision_log")

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_PHONE = re.compile(r"(?<!\w)\+?\d[\d\s().-]{7,}\d(?!\w)")


def redact(text: str) -> str:
    """Mask common PII: emails, card numbers, phone numbers."""
    text = _EMAIL.sub("[EMAIL]", text)
    text = _CARD.sub("[CARD]", text)
    return _PHONE.sub("[PHONE]", text)


class DecisionLog:
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 100 * 1024 * 1024,
        backups: int = 5,
        retention_days: float | None = None,
        queue_size: int = 10000,
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        self._args = (path, max_bytes, backups, retention_days, queue_size, on_drop)
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.retention_days = retention_days
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=queue_size)
        self._on_drop = on_drop
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self._open()
        self._thread = threading.Thread(target=self._run, name="guard-decision-log", daemon=True)
        self._closed = False
        self._thread.start()

    def _open(self) -> Any:
        self._drop_torn_tail()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.chmod(self.path, 0o600)  # also when the file already existed with wider bits
        return os.fdopen(fd, "ab", buffering=64 * 1024)

    def _drop_torn_tail(self) -> None:
        """A process killed mid-write (SIGKILL, OOM) can leave a record cut off at the end of the
        file. Appending after it would glue the next record to the fragment: one malformed line
        in the middle of the log, which every reader rejects. So the fragment (never a whole
        record: every record ends with a newline) is cut off before the first append."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size == 0:
            return
        with self.path.open("r+b") as fh:
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return
            keep, end = 0, size
            while end > 0:  # back to the last newline, a block at a time (records can be large)
                start = max(0, end - (1 << 20))
                fh.seek(start)
                cut = fh.read(end - start).rfind(b"\n")
                if cut >= 0:
                    keep = start + cut + 1
                    break
                end = start
            fh.truncate(keep)
        log.warning(
            "decision log %s: removed a record cut off mid-write (%d bytes) at its end, left by "
            "a process that was killed; every whole record before it is kept",
            self.path,
            size - keep,
        )

    def submit(self, record: dict[str, Any]) -> None:
        """Never blocks: drops (counted) when the writer is far behind."""
        if self._closed:
            return
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            if self._on_drop is not None:
                self._on_drop()

    def _run(self) -> None:
        while True:
            rec = self._queue.get()
            if rec is None:
                break
            batch = [rec]
            while len(batch) < 256:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._write(batch)
                    self._fh.flush()
                    return
                batch.append(nxt)
            self._write(batch)
            # Every batch reaches the operating system at once (one write of up to 256
            # records): a killed process loses only records not yet taken off the queue.
            self._fh.flush()
        self._fh.flush()

    def _write(self, batch: list[dict[str, Any]]) -> None:
        for rec in batch:
            line = jsonfast.dumps(rec) + b"\n"
            if self._fh.tell() + len(line) > self.max_bytes and self._fh.tell() > 0:
                self._rotate()
            self._fh.write(line)

    def _rotate(self) -> None:
        self._fh.close()
        if self.backups > 0:
            for i in range(self.backups - 1, 0, -1):
                src = self.path.with_name(f"{self.path.name}.{i}")
                if src.exists():
                    src.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        if self.retention_days is not None:
            cutoff = time.time() - self.retention_days * 86400
            for old in self.path.parent.glob(f"{self.path.name}.*"):
                if old.stat().st_mtime < cutoff:
                    old.unlink(missing_ok=True)
        self._fh = self._open()

    @property
    def closed(self) -> bool:
        return self._closed

    def reopened(self) -> DecisionLog:
        """A fresh writer on the same file with the same settings."""
        path, max_bytes, backups, retention_days, queue_size, on_drop = self._args
        return DecisionLog(
            path,
            max_bytes=max_bytes,
            backups=backups,
            retention_days=retention_days,
            queue_size=queue_size,
            on_drop=on_drop,
        )

    def close(self, timeout: float = 10.0) -> None:
        """Drain every queued record to disk, then close."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout)
        self._fh.close()
