from __future__ import annotations

from guard.relay.holdback import HoldBack


def test_release_keeps_the_window_and_flush_empties() -> None:
    h = HoldBack()
    assert not h
    for i, n in enumerate([1, 2, 1, 1]):
        h.push(b"%d" % i, n, str(i))
    assert h.tokens == 5
    # Release the oldest while at least 3 tokens stay held: "0" (1) and "1" (2) go.
    assert [p for p, _, _ in h.release(2)] == [b"0", b"1"]
    assert h.tokens == 2 and h
    assert h.release(2) == []  # exactly the window is held: nothing more leaves
    assert [t for _, _, t in h.flush()] == ["2", "3"]
    assert not h and h.tokens == 0


def test_clear_drops_everything() -> None:
    h = HoldBack()
    h.push("a", 3, "a")
    h.clear()
    assert not h and h.tokens == 0 and h.flush() == []
