from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from guard.upstream.sse import SSEDecoder

STREAM = (
    b'data: {"a":1}\n\n'
    b": keep-alive\n\n"
    b"data: x\r\ndata: y\r\n\r\n"
    b"event: ping\rdata: z\r\r" + 'data: {"t":"line\u2028sep"}\n\n'.encode() + b"data: [DONE]\n\n"
)
EXPECTED = [b'{"a":1}', None, b"x\ny", b"z", '{"t":"line\u2028sep"}'.encode(), b"[DONE]"]


def decode_all(pieces: list[bytes]) -> list[tuple[bytes, bytes | None]]:
    d = SSEDecoder()
    out = []
    for p in pieces:
        out += [(e.raw, e.data) for e in d.feed(p)]
    tail = d.close()
    assert tail is None
    return out


def test_whole_stream() -> None:
    evs = decode_all([STREAM])
    assert [data for _, data in evs] == EXPECTED
    # Original bytes are kept: concatenated raws give back the stream.
    assert b"".join(raw for raw, _ in evs) == STREAM


def test_one_byte_reads() -> None:
    evs = decode_all([STREAM[i : i + 1] for i in range(len(STREAM))])
    assert [data for _, data in evs] == EXPECTED
    assert b"".join(raw for raw, _ in evs) == STREAM


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(STREAM)), max_size=20))
def test_any_split_gives_same_events(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    pieces, prev = [], 0
    for p in points:
        pieces.append(STREAM[prev:p])
        prev = p
    pieces.append(STREAM[prev:])
    evs = decode_all([p for p in pieces if p])
    assert [data for _, data in evs] == EXPECTED


def test_cr_at_read_boundary_waits_for_lf() -> None:
    d = SSEDecoder()
    assert d.feed(b"data: a\r\n\r") == []
    evs = d.feed(b"\ndata: b\n\n")
    assert [e.data for e in evs] == [b"a", b"b"]


def test_incomplete_event_surfaces_at_close() -> None:
    d = SSEDecoder()
    assert d.feed(b'data: {"cut') == []
    tail = d.close()
    assert tail is not None and tail.data == b'{"cut'


def test_done_flag() -> None:
    (ev,) = SSEDecoder().feed(b"data: [DONE]\n\n")
    assert ev.is_done
