"""Take the next item of an async iterator at once when it is already there.

httpx hands a streamed body over one HTTP chunk at a time. Under load many chunks arrive in one
network read: the ones after the first are parsed and buffered already, and asking for them
completes without waiting for anything. Knowing which case a read is lets the proxy send all that
is already there to the client in one write, and write *before* it waits for the network, not
after: fewer system calls per token, and never a byte held while the guard waits.

``step_now(it.__anext__())`` runs the read up to its first suspension. Either it completed (the
item is returned) or it is waiting for the network (a ``Pending`` is returned: ``await`` it to
get the item, exactly as if the read had been awaited in the first place, or ``cancel`` it).
Only the coroutine protocol (``send``/``throw``) is used, so any event loop and any awaitable
work.

Between ``step_now`` and awaiting the ``Pending``, the read is suspended *inside* the iterator,
with whatever context it entered (httpcore's read timeout is an anyio cancel scope). Do nothing in
that window that enters or exits a cancel scope; if what is done there fails, ``cancel`` the read
first (``cancel(exc)``), so its context exits before any outer one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Generator
from typing import Any, Protocol, TypeVar, cast

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Step(Protocol[T_co]):
    """A not-yet-started awaitable seen through the coroutine protocol (what ``__anext__``
    returns at run time)."""

    def send(self, value: None, /) -> Any: ...

    def throw(self, exc: BaseException, /) -> Any: ...

    def close(self) -> None: ...


class Pending:
    """The rest of a read that is waiting for the network. Await it once, or ``cancel`` it."""

    __slots__ = ("_first", "_step")

    def __init__(self, step: Step[Any], first: Any) -> None:
        self._step = step
        self._first = first  # what the read yielded to the event loop (a future, or None)

    def __await__(self) -> Generator[Any, Any, Any]:
        # What ``yield from`` does, for a delegate that has already yielded once: hand its
        # yields to the event loop, and the loop's results and exceptions back to it.
        step = self._step
        out = self._first
        while True:
            try:
                value = yield out
            except GeneratorExit:
                # The awaiting coroutine is being closed: close the read the same way a plain
                # ``await`` would have.
                self._step.close()
                raise
            except BaseException as exc:  # cancellation and the like: the read decides
                try:
                    out = step.throw(exc)
                except StopIteration as done:
                    return done.value
                continue
            try:
                out = step.send(value)
            except StopIteration as done:
                return done.value

    def cancel(self, exc: BaseException) -> None:
        """Unwind the read now with ``exc`` (what interrupted the caller): its context managers
        exit, innermost first, and it ends there.

        The exception itself is thrown in, not ``GeneratorExit``: closing a suspended
        ``__anext__`` with ``GeneratorExit`` stops at the outermost async generator and leaves
        the ones it awaits marked running (CPython 3.11), so they could never be closed.
        """
        with contextlib.suppress(BaseException):  # whatever it ends with, it has ended
            self._step.throw(exc)


def step_now(awaitable: Awaitable[T]) -> T | Pending:
    """The result of ``step`` if it completes without waiting, else a ``Pending`` for the rest.

    Exceptions of the step (``StopAsyncIteration`` at the end of an iterator included) are
    raised here when they happen before its first suspension.
    """
    step = cast("Step[T]", awaitable)  # a coroutine, or the like (``__anext__``'s result)
    try:
        first = step.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    return Pending(step, first)
