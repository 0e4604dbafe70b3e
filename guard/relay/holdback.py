"""The hold-back window of one choice: chunks wait here until enough later tokens were checked.

With a window of W tokens the client lags W tokens behind the model; what is still held when the
guard halts never reaches the client. Payloads are whatever the relay emits (the event's bytes
when streaming, the chunk object when assembling a non-streaming response).
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

P = TypeVar("P")


class HoldBack(Generic[P]):
    __slots__ = ("_items", "tokens")

    def __init__(self) -> None:
        self._items: deque[tuple[P, int, str]] = deque()
        self.tokens = 0  # tokens held

    def __bool__(self) -> bool:
        return bool(self._items)

    def push(self, payload: P, n_tokens: int, text: str) -> None:
        self._items.append((payload, n_tokens, text))
        self.tokens += n_tokens

    def release(self, window: int) -> list[tuple[P, int, str]]:
        """Pop the oldest chunks while at least ``window`` tokens stay held after them."""
        out = []
        items = self._items
        while items and self.tokens - items[0][1] >= window:
            item = items.popleft()
            self.tokens -= item[1]
            out.append(item)
        return out

    def flush(self) -> list[tuple[P, int, str]]:
        """Everything held, oldest first (the choice ended: nothing is left to check)."""
        out = list(self._items)
        self.clear()
        return out

    def clear(self) -> None:
        """Drop everything held (a halt or a reroute: it never reaches the client)."""
        self._items.clear()
        self.tokens = 0
