"""A sans-IO Server-Sent Events decoder that works on bytes.

Feed it network reads, get complete events back. Lines end at CR, LF or CRLF — on *bytes*, never
with a text line iterator, since U+2028/U+2029 can appear raw inside the JSON that vLLM streams.
Each event keeps its original bytes so the proxy can forward events it does not change untouched.

The fast path covers what vLLM sends (``data: {...}\\n\\n``, no CR): one ``find`` per event and a
slice; anything else (CR line ends, comments, multi-line data, ``event:``/``id:`` fields) goes
through the general line parser.
"""

from __future__ import annotations

import re

_EOL = re.compile(rb"\r\n|\r|\n")
_DONE = b"[DONE]"


class SSEEvent:
    """One dispatched event (a value: never changed after it is made).

    ``raw`` is the event's bytes as received, blank-line terminator included. ``data`` is the
    joined ``data:`` field (None for a comment-only block, e.g. ``: keep-alive``). A plain slotted
    class, not a frozen dataclass: one is made per streamed token, and a frozen dataclass's
    ``__init__`` costs a ``object.__setattr__`` call per field.
    """

    __slots__ = ("data", "event", "raw")

    def __init__(self, raw: bytes, data: bytes | None, event: str | None = None) -> None:
        self.raw = raw
        self.data = data
        self.event = event

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SSEEvent):
            return NotImplemented
        return (self.raw, self.data, self.event) == (other.raw, other.data, other.event)

    def __hash__(self) -> int:
        return hash((self.raw, self.data, self.event))

    def __repr__(self) -> str:
        return f"SSEEvent(raw={self.raw!r}, data={self.data!r}, event={self.event!r})"

    @property
    def is_done(self) -> bool:
        return self.data == _DONE


class SSEDecoder:
    """Incremental SSE decoder: ``feed(bytes) -> list[SSEEvent]``, then ``close()`` at EOF."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buf = self._buf + chunk if self._buf else chunk
        events: list[SSEEvent] = []
        start = 0
        n = len(buf)
        while start < n:
            end = buf.find(b"\n\n", start)
            cr = buf.find(b"\r", start, end if end != -1 else n)
            if end != -1 and cr == -1:
                block = buf[start : end + 2]
                # vLLM's shape: a single "data: " line.
                if block.startswith(b"data: ") and block.find(b"\n", 6, end - start) == -1:
                    events.append(SSEEvent(block, block[6:-2]))
                else:
                    ev = _parse_block(block, 0, len(block))
                    if ev is not None:
                        events.append(ev)
                start = end + 2
                continue
            # General path: find a blank line with any line-end convention.
            pos = _find_block_end(buf, start)
            if pos == -1:
                break
            ev = _parse_block(buf, start, pos)
            if ev is not None:
                events.append(ev)
            start = pos
        self._buf = buf[start:]
        return events

    def close(self) -> SSEEvent | None:
        """End of stream. Returns a final event if unterminated data was pending (per the SSE
        spec an incomplete event is discarded, but we surface it so callers can tell a stream
        that was cut mid-event from one that ended cleanly)."""
        rest = self._buf
        self._buf = b""
        if not rest.strip():
            return None
        return _parse_block(rest, 0, len(rest), partial=True)

    @property
    def pending(self) -> int:
        """Bytes buffered that do not yet form a complete event."""
        return len(self._buf)


def _find_block_end(buf: bytes, start: int) -> int:
    """Index just past the blank line ending the block at ``start``, or -1 if incomplete.

    A trailing lone CR at the end of the buffer is ambiguous (it may be the first half of CRLF)
    and is treated as incomplete.
    """
    pos = start
    prev_line_empty = True  # the block's own start counts as a line start
    line_start = start
    while True:
        m = _EOL.search(buf, pos)
        if m is None:
            return -1
        if m.group() == b"\r" and m.end() == len(buf):
            return -1
        empty = m.start() == line_start
        if empty and not (prev_line_empty and line_start == start):
            return m.end()
        if empty and line_start == start:
            # Stray blank line before any field: skip it as an empty block.
            return m.end()
        prev_line_empty = empty
        line_start = m.end()
        pos = m.end()


def _parse_block(buf: bytes, start: int, end: int, partial: bool = False) -> SSEEvent | None:
    raw = buf[start:end]
    data_parts: list[bytes] = []
    event: str | None = None
    saw_any = False
    for line in _EOL.split(raw):
        if not line:
            continue
        saw_any = True
        if line.startswith(b":"):
            continue
        field, sep, value = line.partition(b":")
        if sep and value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data_parts.append(value)
        elif field == b"event":
            event = value.decode("utf-8", "replace")
        # id/retry and unknown fields are ignored, as the spec says.
    if not saw_any:
        return None
    if not data_parts:
        return SSEEvent(raw, None, event)
    return SSEEvent(raw, b"\n".join(data_parts), event)
