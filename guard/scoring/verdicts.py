"""When to ask the guard model, and what to send (pure: no I/O, no clock).

The proxy's I/O loop keeps one :class:`VerdictSchedule` per stream and calls
``observe(text_chunk, n_tokens)`` for every chunk of generated text. It returns the text to score
NOW (hand it to the micro-batcher, don't wait) or None. When the batcher's future resolves, the
loop calls ``on_verdict(p)`` (p is None on fallback); ``verdict_bin`` maps the latest verdict to
the extra Markov-state dimension.

Policy (:class:`VerdictPolicy`):

* ask first after ``first_at_tokens`` generated tokens (alignment is decided early), then every
  ``every_k_tokens`` tokens, and at sentence ends (``.``, ``!``, ``?`` followed by a space or the
  chunk's end, or a newline) when at least ``min_gap_tokens`` tokens passed since the last ask;
* at most one request in flight per stream: a trigger that fires while one is in flight is
  remembered and served by the first ``observe`` after the verdict arrives;
* response text = ``response_template`` with ``{prompt}`` = a summary of the last user message
  (``prompt_chars`` at most: head and tail) and ``{response}`` = the response so far (prefill
  included), cut from the LEFT to fit ``max_chars`` (the newest text is what matters; vLLM also
  truncates from the left as a backstop);
* request text (request risk, once per request): ``request_template`` with the last user message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from guard.risk import verdict_text as _text
from guard.risk.verdict_text import (
    DEFAULT_MAX_CHARS,
    DEFAULT_PROMPT_CHARS,
    DEFAULT_REQUEST_TEMPLATE,
    DEFAULT_RESPONSE_TEMPLATE,
    last_user_message,
    prompt_summary,
)

__all__ = [
    "VerdictPolicy",
    "VerdictSchedule",
    "last_user_message",
    "prompt_summary",
    "render_request",
    "render_response",
    "verdict_bin",
]

_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")


@dataclass(frozen=True)
class VerdictPolicy:
    every_k_tokens: int = 16
    first_at_tokens: int = 8
    at_sentence_end: bool = True
    min_gap_tokens: int = 4
    max_chars: int = DEFAULT_MAX_CHARS
    prompt_chars: int = DEFAULT_PROMPT_CHARS
    response_template: str = DEFAULT_RESPONSE_TEMPLATE
    request_template: str = DEFAULT_REQUEST_TEMPLATE
    score_request: bool = True

    def __post_init__(self) -> None:
        if self.every_k_tokens < 1 or self.first_at_tokens < 1 or self.min_gap_tokens < 0:
            raise ValueError("every_k_tokens and first_at_tokens must be >= 1")
        if "{response}" not in self.response_template:
            raise ValueError("response_template must contain '{response}'")
        if "{prompt}" not in self.request_template:
            raise ValueError("request_template must contain '{prompt}'")
        if self.max_chars < 32 or self.prompt_chars < 0:
            raise ValueError("max_chars must be >= 32 and prompt_chars >= 0")

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> VerdictPolicy:
        known = set(cls.__dataclass_fields__)
        unknown = set(cfg) - known
        if unknown:
            raise ValueError(f"unknown verdict policy field(s): {sorted(unknown)}")
        return cls(**dict(cfg))


def render_request(prompt: str, policy: VerdictPolicy) -> str:
    return _text.render_request(prompt, policy.request_template, policy.max_chars)


def render_response(summary: str, response: str, policy: VerdictPolicy) -> str:
    """Template with the prompt summary and the response cut from the left to fit max_chars."""
    return _text.render_response(summary, response, policy.response_template, policy.max_chars)


def verdict_bin(p: float | None, edges: Sequence[float] = (0.25, 0.5, 0.8)) -> int:
    """Extra Markov-state dimension: 0 = no verdict yet (or fallback), 1..len(edges)+1 by P."""
    if p is None:
        return 0
    b = 1
    for e in edges:
        if p >= e:
            b += 1
    return b


@dataclass
class VerdictSchedule:
    """Per-stream state of the verdict policy. Not thread-safe; one per stream."""

    policy: VerdictPolicy = field(default_factory=VerdictPolicy)
    prompt: str = ""
    prefill: str = ""
    tokens: int = 0
    in_flight: bool = False
    due: bool = False
    asked: int = 0
    answered: int = 0
    fallbacks: int = 0
    last_verdict: float | None = None
    last_verdict_tokens: int | None = None
    _last_ask_tokens: int | None = None
    _asked_at_tokens: int | None = None
    _next_k: int = 0
    _response: list[str] = field(default_factory=list)
    _summary: str = ""
    _request_sent: bool = False

    def __post_init__(self) -> None:
        self._summary = prompt_summary(self.prompt, self.policy.prompt_chars)
        if self.prefill:
            self._response.append(self.prefill)
        self._next_k = self.policy.first_at_tokens

    @classmethod
    def for_messages(
        cls,
        messages: Sequence[Mapping[str, Any]],
        policy: VerdictPolicy | None = None,
        prefill: str = "",
    ) -> VerdictSchedule:
        return cls(
            policy=policy or VerdictPolicy(), prompt=last_user_message(messages), prefill=prefill
        )

    # -- request risk -------------------------------------------------------------------------
    def request_text(self) -> str | None:
        """The request-risk text, once per request (None after the first call or if disabled)."""
        if self._request_sent or not self.policy.score_request or not self.prompt.strip():
            return None
        self._request_sent = True
        return render_request(self.prompt, self.policy)

    # -- response -----------------------------------------------------------------------------
    @property
    def response(self) -> str:
        return "".join(self._response)

    def current_text(self) -> str:
        """What would be sent now (prompt summary + response so far, fitted to max_chars)."""
        return render_response(self._summary, self.response, self.policy)

    def observe(self, text_chunk: str, n_tokens: int = 1) -> str | None:
        """Account a generated chunk; return the text to score now, or None."""
        prev_tail = self._response[-1][-1:] if self._response else ""
        if text_chunk:
            self._response.append(text_chunk)
            if len(self._response) > 64:  # keep the join cheap
                self._response = ["".join(self._response)]
        self.tokens += max(0, n_tokens)
        p = self.policy
        if self.tokens >= self._next_k:
            self.due = True
            while self._next_k <= self.tokens:
                self._next_k += p.every_k_tokens
        if (
            p.at_sentence_end
            and text_chunk
            and self.tokens > 0
            and _SENTENCE_END.search(prev_tail + text_chunk, 1 if prev_tail else 0)
        ):
            gap = self.tokens - (self._last_ask_tokens or 0)
            if self._last_ask_tokens is None or gap >= p.min_gap_tokens:
                self.due = True
        if not self.due or self.in_flight:
            return None
        if self._last_ask_tokens == self.tokens:  # nothing new since the last ask
            self.due = False
            return None
        self.due = False
        self.in_flight = True
        self.asked += 1
        self._last_ask_tokens = self.tokens
        self._asked_at_tokens = self.tokens
        return self.current_text()

    def on_verdict(self, p: float | None) -> None:
        """The in-flight verdict arrived (p) or fell back (None). Keeps the last real verdict."""
        self.in_flight = False
        if p is None:
            self.fallbacks += 1
            return
        self.answered += 1
        self.last_verdict = p
        self.last_verdict_tokens = self._asked_at_tokens

    def state_bin(self, edges: Sequence[float] = (0.25, 0.5, 0.8)) -> int:
        return verdict_bin(self.last_verdict, edges)
