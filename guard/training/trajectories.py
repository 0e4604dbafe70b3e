"""Reading and validating trajectory logs (format: docs/decision-log.md), and one per token."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from guard.errors import DataError
from guard.tracking import tokenize_approx

LABELS = ("harmful", "safe")


@dataclass(frozen=True, slots=True)
class Trajectory:
    id: str
    source: str
    prompt: Any
    prefill: str
    response: str
    tokens: tuple[str, ...] | None
    label: str
    harm_start_char: int | None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def harmful(self) -> bool:
        return self.label == "harmful"

    @property
    def censored(self) -> bool:
        """Halted by the guard: how it would have ended is unknown."""
        return bool(self.meta.get("censored", False))

    @property
    def kind(self) -> str:
        """``harmful``, or the benign kind: ``support`` or ``alarming`` (``meta.kind``)."""
        if self.harmful:
            return "harmful"
        k = self.meta.get("kind")
        return str(k) if isinstance(k, str) and k else "benign"

    def continuation(self) -> str:
        """The model-generated part of the response (response minus the prefill)."""
        if self.prefill and self.response.startswith(self.prefill):
            return self.response[len(self.prefill) :]
        return self.response

    def generated_tokens(self) -> list[str]:
        """Tokens as streamed when logged; otherwise the approximate tokenizer's pieces."""
        if self.tokens is not None:
            return list(self.tokens)
        return tokenize_approx(self.continuation())

    def onset_token(self, tokens: list[str]) -> int | None:
        """Index of the generated token in which harm begins (0 if it begins in the prefill)."""
        if self.harm_start_char is None:
            return None
        offset = len(self.response) - len(self.continuation())
        c = self.harm_start_char - offset
        if c < 0:
            return 0
        end = 0
        for i, tok in enumerate(tokens):
            end += len(tok)
            if end > c:
                return i
        return max(len(tokens) - 1, 0)


def _fail(path: str, line: int, msg: str) -> DataError:
    return DataError(f"{path}:{line}: {msg}")


def parse_trajectory(obj: Any, path: str, line: int) -> Trajectory:
    if not isinstance(obj, dict):
        raise _fail(path, line, "expected a JSON object")
    for key in ("id", "source", "prompt", "response", "label"):
        if key not in obj:
            raise _fail(path, line, f"missing field {key!r}")
    tid, source, prompt, response, label = (
        obj["id"],
        obj["source"],
        obj["prompt"],
        obj["response"],
        obj["label"],
    )
    if not isinstance(tid, (str, int)) or isinstance(tid, bool):
        raise _fail(path, line, "'id' must be a string")
    if not isinstance(source, str):
        raise _fail(path, line, "'source' must be a string")
    if isinstance(prompt, list):
        for m in prompt:
            if not isinstance(m, dict) or "role" not in m:
                raise _fail(path, line, "'prompt' messages must be objects with a 'role'")
    elif prompt is None and obj.get("response") is None:
        raise _fail(
            path,
            line,
            "this record has no request or response text: a decision log written with "
            "decision_log.include_content: false cannot be fitted on. Set "
            "decision_log.include_content: true (GUARD_DECISION_LOG_CONTENT=true), "
            "collect logs in shadow mode, label them, then fit",
        )
    elif not isinstance(prompt, str):
        raise _fail(path, line, "'prompt' must be a string or a list of messages")
    if not isinstance(response, str):
        raise _fail(path, line, "'response' must be a string")
    if label not in LABELS:
        raise _fail(path, line, f"unknown label {label!r} (expected 'harmful' or 'safe')")
    prefill = obj.get("prefill") or ""
    if not isinstance(prefill, str):
        raise _fail(path, line, "'prefill' must be a string")
    tokens = obj.get("tokens")
    if tokens is not None:
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise _fail(path, line, "'tokens' must be null or a list of strings")
        tokens = tuple(tokens)
    hs = obj.get("harm_start_char")
    if hs is not None:
        if not isinstance(hs, int) or isinstance(hs, bool) or not 0 <= hs <= len(response):
            raise _fail(path, line, "'harm_start_char' must be null or an offset into 'response'")
        if label != "harmful":
            raise _fail(path, line, "'harm_start_char' given on a 'safe' trajectory")
    meta = obj.get("meta") or {}
    if not isinstance(meta, dict):
        raise _fail(path, line, "'meta' must be an object")
    return Trajectory(
        id=str(tid),
        source=source,
        prompt=prompt,
        prefill=prefill,
        response=response,
        tokens=tokens,
        label=label,
        harm_start_char=hs,
        meta=meta,
    )


def _open(path: Path) -> TextIO:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


@dataclass(slots=True)
class ReadReport:
    """What reading produced: how many lines were skipped and why (never a silent drop)."""

    n_read: int = 0
    n_skipped: int = 0
    skipped: list[str] = field(default_factory=list)
    #: files whose last line was cut off mid-write (no newline, not valid JSON): skipped always
    torn: list[str] = field(default_factory=list)


def iter_trajectories(
    paths: Iterable[str | Path], *, skip_invalid: bool = False, report: ReadReport | None = None
) -> Iterator[Trajectory]:
    rep = report if report is not None else ReadReport()
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        n_here = 0
        try:
            with _open(path) as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        try:
                            obj = json.loads(line)
                        except json.JSONDecodeError as exc:
                            if not line.endswith("\n"):
                                # The last line of a log whose writer was killed mid-record
                                # (SIGKILL, power loss): what came before is whole, only this
                                # record is lost. Said, skipped, never fatal.
                                rep.torn.append(f"{path}:{lineno}")
                                continue
                            raise _fail(str(path), lineno, f"malformed JSON ({exc.msg})") from exc
                        traj = parse_trajectory(obj, str(path), lineno)
                    except DataError as exc:
                        if not skip_invalid:
                            raise
                        rep.n_skipped += 1
                        if len(rep.skipped) < 20:
                            rep.skipped.append(exc.message)
                        continue
                    n_here += 1
                    rep.n_read += 1
                    yield traj
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from exc
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: cannot read ({exc})") from exc
        if n_here == 0:
            raise DataError(f"{path}: no valid trajectories (empty file or every line invalid)")


def read_trajectories(
    paths: Iterable[str | Path], *, skip_invalid: bool = False
) -> tuple[list[Trajectory], ReadReport]:
    rep = ReadReport()
    trajs = list(iter_trajectories(paths, skip_invalid=skip_invalid, report=rep))
    return trajs, rep
