"""The per-choice guard: feeds model output to the tracker and decides when to halt.

Hot path. One instance per choice per request; ``observe`` runs once per streamed chunk.
"""

from __future__ import annotations

import time
from typing import Any

from guard.decision.policy import Policy, TrackerLike

# Reasons a choice is halted (bounded label values for metrics).
REASON_RISK = "risk"
REASON_MODEL_ERROR = "risk_model_error"


class ChoiceGuard:
    __slots__ = (
        "check_ns",
        "checks",
        "crossed_at",
        "debounce",
        "depth",
        "enforce",
        "fail_closed",
        "failed",
        "force_check",
        "last_risk",
        "max_risk",
        "next_sparse",
        "over",
        "pending",
        "pending_n",
        "sparse_every",
        "threshold",
        "tokens",
        "trace",
        "tracker",
    )

    def __init__(self, tracker: TrackerLike, policy: Policy, *, trace: bool = False) -> None:
        self.tracker = tracker
        self.depth = policy.depth
        self.threshold = policy.threshold
        self.debounce = policy.debounce
        self.sparse_every = policy.sparse_every
        self.enforce = policy.enforcing
        self.fail_closed = policy.fail_mode == "closed"
        self.over = 0
        self.checks = 0
        self.check_ns = 0
        self.last_risk = 0.0
        self.max_risk = 0.0
        self.crossed_at = -1  # generated-token count at the first decision to halt
        self.next_sparse = policy.depth + policy.sparse_every if policy.sparse_every else -1
        self.failed = False
        self.force_check = False  # a guard-model verdict arrived: look at the state next chunk
        self.tokens = tracker.tokens  # generated tokens seen (the tracker lags after the depth)
        # After the depth, text waits here until the next sparse check: the state is brought up
        # to date in one feed there, instead of one feed per token that nobody looks at.
        self.pending: list[str] = []
        self.pending_n = 0
        # Per-check (tokens, h) up to the depth, for the decision log only.
        self.trace: list[tuple[int, float]] | None = [] if trace else None

    def observe(self, text: str, n_tokens: int) -> str | None:
        """Feed one chunk of model output; return a halt reason, or None to carry on."""
        if self.failed:
            return None
        t = self.tokens + n_tokens
        self.tokens = t
        if t > self.depth and not self.force_check:
            if self.next_sparse <= 0:
                return None  # sparse checks off: nothing looks at the state any more
            if t < self.next_sparse:
                self.pending.append(text)
                self.pending_n += n_tokens
                return None
            self.next_sparse = t + self.sparse_every
        self.force_check = False
        if self.pending:
            self.pending.append(text)
            text = "".join(self.pending)
            n_tokens += self.pending_n
            self.pending.clear()
            self.pending_n = 0
        t0 = time.perf_counter_ns()
        try:
            tracker = self.tracker
            tracker.feed(text, n_tokens)
            h = tracker.risk()
        except Exception:
            # A broken risk model must not take the stream down with a traceback; the
            # policy decides whether the stream goes on unchecked or is halted.
            self.failed = True
            return REASON_MODEL_ERROR if self.fail_closed else None
        finally:
            self.check_ns += time.perf_counter_ns() - t0
        self.checks += 1
        self.last_risk = h
        if h > self.max_risk:
            self.max_risk = h
        if self.trace is not None and t <= self.depth:
            self.trace.append((t, round(h, 6)))
        if h >= self.threshold:
            self.over += 1
            if self.over >= self.debounce and self.crossed_at < 0:
                self.crossed_at = t
                return REASON_RISK
        else:
            self.over = 0
        return None

    def details(self) -> dict[str, Any]:
        """The decision details that ride in the ``guard`` object (small, JSON-able)."""
        try:
            state = self.tracker.state()
        except Exception:
            state = {}
        return {
            "hitting_probability": round(self.last_risk, 6),
            "max_hitting_probability": round(self.max_risk, 6),
            "threshold": self.threshold,
            "depth": self.depth,
            "tokens": self.tokens,
            "state": state,
        }
