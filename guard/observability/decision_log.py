"""The decision log: JSONL in the trajectory format (docs/decision-log.md) plus the decision trace.

Writing never blocks the event loop: records go into a bounded queue drained by one thread; a full
queue drops (and counts) rather than stall a stream. ``close()`` drains everything, so no record is
lost on shutdown. Files are created owner-only (0600); size-based rotation keeps ``backups`` files
and deletes rotated files older than ``retention_days``.

Several workers (``--workers N``) append to the same file. Each system call writes whole records
only (``O_APPEND``: a write lands at the end in one piece), so one worker's records are never
interleaved into another's. Each batch is written under an exclusive ``flock`` on a hidden lock
file beside the log (``.NAME.lock``): the size check, the append and, when the file is full, the
rotation are one step among all writers, so rotation happens once and no file is overfilled; the
others notice the file was replaced and reopen it before their next batch.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
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
        self._lock_path = self.path.with_name(f".{self.path.name}.lock")
        self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        with self._locked():
            self._drop_torn_tail()
            self._fd = self._open()
        self._thread = threading.Thread(target=self._run, name="guard-decision-log", daemon=True)
        self._closed = False
        self._thread.start()

    def _open(self) -> int:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.chmod(self.path, 0o600)  # also when the file already existed with wider bits
        return fd

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive among every writer of this log (workers are processes: ``flock``; each
        writer's own open of the lock file is its own lock holder, so writers in one process
        exclude each other too)."""
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

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
                    return
                batch.append(nxt)
            # Every batch reaches the operating system at once (one write of up to 256
            # records): a killed process loses only records not yet taken off the queue.
            self._write(batch)

    def _write(self, batch: list[dict[str, Any]]) -> None:
        """Write ``batch`` in as few system calls as rotation allows, each ending at a record's
        end.

        Encoding happens outside the lock; the size check, the appends and any rotation happen
        inside it, as one step among all writers. Checked outside the lock, two workers could
        both see room for a batch and together overfill the file, or one could append to the
        file another had just renamed away."""
        lines = [jsonfast.dumps(rec) + b"\n" for rec in batch]
        with self._locked():
            self._follow()
            size = os.fstat(self._fd).st_size  # every writer's appends so far
            start = n = 0
            for i, line in enumerate(lines):
                if size + n + len(line) > self.max_bytes and size + n > 0:
                    self._append(lines[start:i])
                    self._rotate()
                    start, size, n = i, 0, 0
                n += len(line)
            self._append(lines[start:])

    def _append(self, lines: list[bytes]) -> None:
        if not lines:
            return
        data = memoryview(b"".join(lines))
        while data:  # a short write (rare: a signal, a full disk) goes on where it stopped
            data = data[os.write(self._fd, data) :]

    def _follow(self) -> None:
        """Another worker rotated: write to the new file, not the renamed one."""
        try:
            current = os.stat(self.path).st_ino
        except FileNotFoundError:
            current = -1
        if current != os.fstat(self._fd).st_ino:
            os.close(self._fd)
            self._fd = self._open()

    def _rotate(self) -> None:
        """Called with the lock held: the file is full, so it is renamed away and a new one
        opened. The other writers follow it at their next batch (``_follow``)."""
        os.close(self._fd)
        self._rotate_files()
        self._fd = self._open()

    def _rotate_files(self) -> None:
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
        if not self._thread.is_alive():
            os.close(self._fd)
            os.close(self._lock_fd)
