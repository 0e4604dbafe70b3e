"""Progress bars for long CLI steps: rich, on stderr, and only when stderr is a terminal.

``with ProgressBars("count") as update:`` gives ``update(label, done, total)`` (one bar per label)
or ``None`` off a terminal, so CI logs and pipes stay quiet. ``"count"`` shows done/total and the
time left (fitting); ``"bytes"`` shows sizes and speed (downloads).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Update = Callable[[str, int, "int | None"], None]


class ProgressBars:
    def __init__(self, kind: str = "count", *, transient: bool = False) -> None:
        self._kind = kind
        self._transient = transient
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> Update | None:
        from rich import progress as rp
        from rich.console import Console

        console = Console(stderr=True)
        if not console.is_terminal:
            return None
        cols: list[Any] = [rp.TextColumn("{task.description}"), rp.BarColumn()]
        if self._kind == "bytes":
            cols += [rp.DownloadColumn(), rp.TransferSpeedColumn()]
        else:
            cols += [rp.MofNCompleteColumn(), rp.TimeRemainingColumn()]
        self._bar = rp.Progress(*cols, console=console, transient=self._transient)
        self._bar.__enter__()
        return self._update

    def _update(self, label: str, done: int, total: int | None) -> None:
        if label not in self._tasks:
            self._tasks[label] = self._bar.add_task(label, total=total)
        self._bar.update(self._tasks[label], completed=done, total=total)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
