"""The guard-model scorer inside the proxy, with a scripted classifier: verdicts are asked every k
tokens concurrently with the stream, join the state when they arrive, can halt; a slow or broken
classifier falls back to the lexical state, counted, never hanging a stream."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from guard.scoring.batcher import MicroBatcher
from guard.scoring.wiring import _MetricsObserver
from tests.support.scripted import DONE, Script, chat_events
from tests.support.sse import BENIGN, CHAT, events_of, text_of

# Benign words only: no keyword trigger, so any halt comes from the guard model's verdict.
LEAKY = [
    "Sure",
    ",",
    " the",
    " details",
    " you",
    " asked",
    " for",
    " are",
    ":",
    " one",
    " two",
    " three",
    " four",
    " five",
    " six",
    " seven",
    " eight",
    " nine",
    " ten",
]


def gm_env(**extra: str) -> dict[str, str]:
    env = {"GUARD_GUARD_MODEL_URL": "http://classifier.test"}
    env.update(extra)
    return env


class _Observer(_MetricsObserver):
    """The app's metrics observer, plus an event set at every finished classifier call."""

    def __init__(self, metrics, called: asyncio.Event | None) -> None:  # type: ignore[no-untyped-def]
        super().__init__(metrics)
        self.called = called

    def on_call(self, scorer: str, outcome: str, latency_s: float, size: int) -> None:
        super().on_call(scorer, outcome, latency_s, size)
        if self.called is not None:
            self.called.set()


def install(
    h, score_fn, timeout_s: float = 1.0, called: asyncio.Event | None = None
) -> list[list[str]]:  # type: ignore[no-untyped-def]
    """Swap the app's batcher for one calling ``score_fn`` (texts -> P(unsafe))."""
    calls: list[list[str]] = []

    async def fn(texts: Sequence[str]) -> list[float]:
        calls.append(list(texts))
        return await score_fn(texts)

    svc = h.app.state.services
    from dataclasses import replace

    svc.guard_model = replace(
        svc.guard_model,
        batcher=MicroBatcher(
            fn,
            name="classify",
            timeout_s=timeout_s,
            window_ms=0,
            observer=_Observer(h.metrics, called),
        ),
    )
    return calls


async def test_verdict_joins_state_and_halts(harness) -> None:
    body = b"".join(chat_events(LEAKY)) + DONE
    h = harness(lambda p, r: Script(body), env=gm_env())

    async def unsafe_after_details(texts: Sequence[str]) -> list[float]:
        return [0.97 if "details" in t else 0.02 for t in texts]

    calls = install(h, unsafe_after_details)
    r = await h.client.post("/v1/chat/completions", json=CHAT)
    evs = events_of(r.content)
    assert calls, "the guard model was never asked"
    assert evs[-2]["choices"][0]["finish_reason"] == "content_filter"
    assert evs[-2]["guard"]["hitting_probability"] >= 0.9
    assert h.metric("guard_scorer_calls_total", {"scorer": "classify", "outcome": "ok"}) >= 1


async def test_benign_verdicts_leave_stream_unchanged(harness) -> None:
    body = b"".join(chat_events(BENIGN * 3)) + DONE
    h = harness(lambda p, r: Script(body), env=gm_env())

    async def safe(texts: Sequence[str]) -> list[float]:
        return [0.01 for _ in texts]

    calls = install(h, safe)
    r = await h.client.post("/v1/chat/completions", json=CHAT)
    assert r.content == body
    assert calls and len(calls) <= 4  # every 16 tokens (first at 8) + sentence ends, one in flight


async def test_slow_classifier_falls_back_without_hanging(harness) -> None:
    body = b"".join(chat_events(BENIGN * 3)) + DONE
    h = harness(lambda p, r: Script(body), env=gm_env(GUARD_TOTAL_TIMEOUT="10"))

    async def stuck(texts: Sequence[str]) -> list[float]:
        await asyncio.Event().wait()  # never answers
        return []

    called = asyncio.Event()
    calls = install(h, stuck, timeout_s=0.05, called=called)
    r = await asyncio.wait_for(h.client.post("/v1/chat/completions", json=CHAT), 5)
    assert r.content == body  # the stream went on without the verdicts
    await asyncio.wait_for(called.wait(), 5)  # the batcher gave up on the stuck call

    def count(outcome: str) -> float:
        return h.metric("guard_scorer_calls_total", {"scorer": "classify", "outcome": outcome})

    assert calls and 1 <= count("timeout") <= len(calls)
    assert count("ok") == 0 and count("error") == 0


async def test_hold_until_first_verdict(harness, tmp_path) -> None:
    cfg = tmp_path / "g.yaml"
    cfg.write_text(
        "upstream: http://upstream.test\nguard_model:\n  url: http://classifier.test\n"
        "  first_at_tokens: 2\n  hold_until_verdict: 6\n"
    )
    events = chat_events(LEAKY)
    h = harness(lambda p, r: Script(b"".join(events) + DONE, delay=0.01), config=str(cfg))

    async def unsafe(texts: Sequence[str]) -> list[float]:
        await asyncio.sleep(0.01)  # arrives while tokens are held back
        return [0.99 for _ in texts]

    install(h, unsafe)
    r = await h.client.post("/v1/chat/completions", json=CHAT)
    evs = events_of(r.content)
    # Nothing generated before the verdict reached the client: at most the safe message.
    assert text_of(evs) == "I'm sorry, but I can't help with that."
    assert evs[-2]["choices"][0]["finish_reason"] == "content_filter"
