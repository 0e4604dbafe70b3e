"""External scores (a guard classifier's P(unsafe)) as one more state dimension — no I/O here.

The core never talks to a classifier. Fitting and evaluation receive an object implementing
``ExternalScorer`` (the HTTP client lives in ``guard.scoring.http`` and is passed in by the CLI);
serving code calls ``Tracker.set_external_score(p)`` when a verdict arrives.

Verdict schedule, identical in fit, eval and (by convention) serving: the response prefix after
``t = k, 2k, 3k, ...`` generated tokens (``k = every``; prefill included in the text, up to
``max_tokens``) is scored, and the verdict joins the state ``delay`` tokens later (0: at once), and
stays until the next verdict. Before the first verdict the external bin is ``none`` (bin 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from guard.errors import DataError
from guard.risk.verdict_text import (
    DEFAULT_MAX_CHARS,
    DEFAULT_PROMPT_CHARS,
    DEFAULT_RESPONSE_TEMPLATE,
    prompt_of,
    prompt_summary,
    render_response,
)

SCORER_MODES = ("lexical", "external", "combined")


@runtime_checkable
class ExternalScorer(Protocol):
    """Synchronous, batched P(unsafe) of texts (one float in [0, 1] per text, same order)."""

    def score_batch(self, texts: list[str]) -> list[float]: ...


@dataclass(frozen=True, slots=True)
class ExternalSpec:
    """How verdicts are scheduled and binned (stored in the artifact as ``meta.external``)."""

    edges: tuple[float, ...] = (0.2, 0.5, 0.8)
    every: int = 8
    delay: int = 0
    max_tokens: int = 256

    @property
    def n_bins(self) -> int:
        """``none`` + one bin per interval between edges."""
        return len(self.edges) + 2

    def to_meta(self) -> dict[str, object]:
        return {
            "edges": list(self.edges),
            "every": self.every,
            "delay": self.delay,
            "max_tokens": self.max_tokens,
            "none_bin": True,
        }

    @staticmethod
    def from_meta(meta: dict[str, Any]) -> ExternalSpec:
        edges = meta.get("edges", ())
        return ExternalSpec(
            edges=tuple(float(x) for x in edges),
            every=int(meta.get("every", 8)),
            delay=int(meta.get("delay", 0)),
            max_tokens=int(meta.get("max_tokens", 256)),
        )

    def validate(self) -> None:
        if self.every < 1:
            raise DataError("external scorer: --scorer-every must be >= 1 token")
        if self.delay < 0 or self.max_tokens < 1:
            raise DataError("external scorer: delay must be >= 0 and max_tokens >= 1")
        e = list(self.edges)
        if not e or any(not 0.0 < x < 1.0 for x in e) or e != sorted(set(e)):
            raise DataError("external scorer: bin edges must be increasing, inside (0, 1)")


def verdict_points(n_tokens: int, spec: ExternalSpec) -> list[int]:
    """Token counts ``t`` after which the prefix is scored."""
    last = min(n_tokens, spec.max_tokens)
    return list(range(spec.every, last + 1, spec.every))


def prefix_texts(
    prefill: str, tokens: Sequence[str], points: Sequence[int], prompt: Any = None
) -> list[str]:
    """What the guard model is sent after ``t`` tokens, ``t`` in ``points``: the same text
    serving sends (``guard.risk.verdict_text``, default verdict policy) for this prompt."""
    summary = prompt_summary(prompt_of(prompt), DEFAULT_PROMPT_CHARS)
    out = []
    acc = [prefill]
    pos = 0
    for t in points:
        acc.extend(tokens[pos:t])
        pos = t
        out.append(
            render_response(summary, "".join(acc), DEFAULT_RESPONSE_TEMPLATE, DEFAULT_MAX_CHARS)
        )
    return out


def score_all(
    scorer: ExternalScorer,
    texts: Sequence[str],
    *,
    batch: int = 64,
    progress: Callable[[str], None] | None = None,
) -> list[float]:
    """Scores of ``texts`` (duplicates scored once), validated: finite probabilities."""
    uniq = list(dict.fromkeys(texts))
    got: dict[str, float] = {}
    for i in range(0, len(uniq), batch):
        chunk = uniq[i : i + batch]
        res = list(scorer.score_batch(list(chunk)))
        if len(res) != len(chunk):
            raise DataError(f"external scorer returned {len(res)} scores for {len(chunk)} texts")
        for text, p in zip(chunk, res, strict=True):
            p = float(p)
            if not math.isfinite(p) or not 0.0 <= p <= 1.0:
                raise DataError(f"external scorer returned {p!r}: not a probability in [0, 1]")
            got[text] = p
        if progress and (i // batch) % 50 == 49:
            progress(f"  external scores: {i + len(chunk)}/{len(uniq)}")
    return [got[t] for t in texts]


def ext_bin_series(
    n_steps: int, points: Sequence[int], scores: Sequence[float], spec: ExternalSpec
) -> npt.NDArray[np.int8]:
    """External bin after ``t`` tokens for ``t = 0..n_steps-1`` (0 = no verdict yet)."""
    out = np.zeros(n_steps, dtype=np.int8)
    edges = np.asarray(spec.edges)
    for t, p in zip(points, scores, strict=True):
        at = t + spec.delay
        if at < n_steps:
            out[at:] = 1 + int(np.searchsorted(edges, p, side="right"))
    return out


class CachedScorer:
    """Wraps an ``ExternalScorer`` so a text is scored once (e.g. several models compared on the
    same data, or fit then eval in one process)."""

    def __init__(self, inner: ExternalScorer) -> None:
        self.inner = inner
        self.cache: dict[str, float] = {}
        self.calls = 0

    def score_batch(self, texts: list[str]) -> list[float]:
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            self.calls += 1
            res = list(self.inner.score_batch(todo))
            if len(res) != len(todo):
                raise DataError(f"external scorer returned {len(res)} scores for {len(todo)} texts")
            self.cache.update(zip(todo, (float(p) for p in res), strict=True))
        return [self.cache[t] for t in texts]


def model_external_spec(raw_meta: dict[str, object]) -> ExternalSpec | None:
    """The verdict schedule a model was fitted with, or None for a lexical-only model."""
    ext = raw_meta.get("external")
    if not isinstance(ext, dict) or ext.get("target") == "request":
        # the encoder's request verdict is not a response schedule (``guard.training.probe_fit``)
        return None
    return ExternalSpec.from_meta(ext)
