"""The hold-back window of one choice: chunks wait here until enough later tokens were checked.

With a window of W tokens the client lags W tokens behind the model; what is still held when the
guard halts never reaches the client. Payloads are whatever the relay emits (the event's bytes
when streaming, the chunk object when assembling a non-streaming response). A deque underneath,
so the relay's per-event "anything held?" test is a C-level truth test.
"""

from __future__ import annotations

from collections import deque
from typing import Any


class HoldBack(deque[tuple[Any, int, str]]):
    """Held chunks as (payload, tokens, text), oldest first; ``tokens`` is their sum."""

    __slots__ = ("tokens",)

    def __init__(self) -> None:
        super().__init__()
        self.tokens = 0

    def push(self, payload: Any, n_tokens: int, text: str) -> None:
        self.append((payload, n_tokens, text))
        self.tokens += n_tokens

    def release(self, window: int) -> list[tuple[Any, int, str]]:
        """Pop the oldest chunks while at least ``window`` tokens stay held after them."""
        out = []
        while self and self.tokens - self[0][1] >= window:
            item = self.popleft()
            self.tokens -= item[1]
            out.append(item)
        return out

    def flush(self) -> list[tuple[Any, int, str]]:
        """Everything held, oldest first (the choice ended: nothing is left to check)."""
        out = list(self)
        self.clear()
        return out

    def clear(self) -> None:
        """Drop everything held (a halt or a reroute: it never reaches the client)."""
        super().clear()
        self.tokens = 0
