"""What text the guard model scores: one definition for fitting and for serving (pure).

Serving (``guard.scoring.verdicts``) and fitting/evaluation (``guard.training.external``) must
send the guard model the same text for the same prompt and response prefix, or the verdict bins a
model was fitted on are not the ones it sees in production. Both render through these functions:

* response text = ``response_template`` with ``{prompt}`` = a summary of the last user message
  (``prompt_chars`` at most: head and tail) and ``{response}`` = the response so far (prefill
  included), cut from the LEFT to fit ``max_chars``;
* request text = ``request_template`` with the last user message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from guard import wire

__all__ = [
    "DEFAULT_MAX_CHARS",
    "DEFAULT_PROMPT_CHARS",
    "DEFAULT_REQUEST_TEMPLATE",
    "DEFAULT_RESPONSE_TEMPLATE",
    "content_text",
    "last_user_message",
    "prompt_of",
    "prompt_summary",
    "render_request",
    "render_response",
]

# Input format of the test model built by scripts/models/guard_classifier/build.py (tiny-guard).
DEFAULT_RESPONSE_TEMPLATE = "<|user|>\n{prompt}<|end|>\n<|assistant|>\n{response}"
DEFAULT_REQUEST_TEMPLATE = "<|user|>\n{prompt}<|end|>\n"
DEFAULT_MAX_CHARS = 1200
DEFAULT_PROMPT_CHARS = 240


def content_text(content: object) -> str:
    return wire.content_text(content, " ", typed_only=True)


def last_user_message(messages: Sequence[Mapping[str, Any]]) -> str:
    return wire.last_user_message(messages, " ")


def prompt_of(prompt: Any) -> str:
    """The user text of a trajectory's ``prompt``: chat messages (last user one) or a string."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Sequence):
        return last_user_message([m for m in prompt if isinstance(m, Mapping)])
    return ""


def prompt_summary(prompt: str, max_chars: int) -> str:
    """``prompt`` if short, else its head and tail around `` … `` (``max_chars`` in total)."""
    prompt = prompt.strip()
    if len(prompt) <= max_chars:
        return prompt
    if max_chars < 8:
        return prompt[:max_chars]
    head = (max_chars - 3) * 2 // 3
    tail = max_chars - 3 - head
    return prompt[:head] + " … " + (prompt[-tail:] if tail > 0 else "")


def render_request(prompt: str, template: str, max_chars: int) -> str:
    return template.replace("{prompt}", prompt_summary(prompt, max(max_chars - 32, 0)))


def render_response(summary: str, response: str, template: str, max_chars: int) -> str:
    """Template with the prompt summary and the response cut from the left to fit max_chars."""
    head = template.replace("{prompt}", summary)
    room = max(0, max_chars - (len(head) - len("{response}")))
    return head.replace("{response}", response[-room:] if room else "")
