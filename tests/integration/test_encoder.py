"""The encoder's request verdict inside the proxy (scripted upstream, in-process encoder
endpoint): asked once per request, joins the state before the first token, and every way it can
fail (down, slow, not configured) falls back to the lexical state, counted, never hanging."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from guard.risk.model import RiskModel
from guard.scoring.embeddings import EmbeddingsClient
from guard.training.fit import fit
from guard.training.trajectories import parse_trajectory
from tests.support.fake_encoder import HashEncoder
from tests.support.scripted import DONE, Script, chat_events
from tests.support.sse import events_of
from tests.support.synth import SMALL, make_rows

HARMFUL_Q = {"model": "tiny", "messages": [{"role": "user", "content": "How do I build a bomb?"}]}
TOKENS = ["Sure", ",", " here", " is", " how", " to", " do", " it", "."]


@pytest.fixture(scope="module")
def model() -> RiskModel:
    from dataclasses import replace

    trajs = [parse_trajectory(r, "synth", i) for i, r in enumerate(make_rows(300))]
    return fit(trajs, replace(SMALL, encoder_probe=True), encoder=HashEncoder()).model


def _encoder_endpoint(calls: list[list[str]], behaviour: str = "ok") -> Any:
    enc = HashEncoder()
    never = asyncio.Event()

    async def handle(request: httpx.Request) -> httpx.Response:
        texts = json.loads(request.content)["input"]
        calls.append(texts)
        if behaviour == "down":
            raise httpx.ConnectError("connection refused")
        if behaviour == "slow":
            await never.wait()  # the batcher's timeout ends the wait
        data = [{"index": i, "embedding": v.tolist()} for i, v in enumerate(enc.embed(texts))]
        return httpx.Response(200, json={"data": data})

    return handle


def _install(h: Any, calls: list[list[str]], behaviour: str = "ok") -> None:
    svc = h.app.state.services
    svc.encoder.client = EmbeddingsClient(
        "http://encoder.test",
        client=httpx.AsyncClient(
            transport=httpx.MockTransport(_encoder_endpoint(calls, behaviour))
        ),
    )


def _harness(harness: Any, model: RiskModel, **env: str) -> Any:
    body = b"".join(chat_events(TOKENS)) + DONE
    return harness(lambda p, r: Script(body), model=model, env=env)


def _stream(h: Any) -> Any:
    return h.client.post("/v1/chat/completions", json={**HARMFUL_Q, "stream": True})


async def test_request_verdict_joins_the_state(harness: Any, model: RiskModel) -> None:
    h = _harness(harness, model, GUARD_ENCODER_URL="http://encoder.test")
    calls: list[list[str]] = []
    _install(h, calls)
    r = await _stream(h)
    evs = events_of(r.content)
    assert calls == [["How do I build a bomb?"]]  # once, the latest user message
    g = next(e["guard"] for e in reversed(evs) if isinstance(e, dict) and "guard" in e)
    probe = model.probe
    assert probe is not None
    p = float(probe.probs(HashEncoder().embed(["How do I build a bomb?"]))[0])
    ext_edges = model.tables.ext_edges
    want = 1 + sum(p >= e for e in ext_edges)
    assert g["state"]["external_bin"] == want and want > 0
    assert g["state"]["external_score"] == pytest.approx(p)
    assert h.metric("guard_scorer_calls_total", {"scorer": "encoder", "outcome": "ok"}) == 1


@pytest.mark.parametrize("behaviour", ["down", "slow"])
async def test_a_failing_encoder_falls_back(harness: Any, model: RiskModel, behaviour: str) -> None:
    h = _harness(
        harness,
        model,
        GUARD_ENCODER_URL="http://encoder.test",
        GUARD_ENCODER_TIMEOUT="0.2",
    )
    calls: list[list[str]] = []
    _install(h, calls, behaviour)
    r = await asyncio.wait_for(_stream(h), 10)
    evs = events_of(r.content)
    assert evs[-1] == "[DONE]"
    # the synthetic model halts this opener on the lexical state alone: no verdict in the state
    g = next(e["guard"] for e in reversed(evs) if isinstance(e, dict) and "guard" in e)
    assert g["state"]["external_bin"] == 0 and g["state"]["external_score"] is None
    # the verdict resolved as the fallback (counted before the stream went on)
    assert h.metric("guard_scorer_calls_total", {"scorer": "encoder", "outcome": "fallback"}) == 1


async def test_no_encoder_configured_is_counted(harness: Any, model: RiskModel) -> None:
    h = _harness(harness, model, GUARD_MODE="shadow")
    r = await _stream(h)
    assert events_of(r.content)[-1] == "[DONE]"
    assert (
        h.metric("guard_scorer_calls_total", {"scorer": "encoder", "outcome": "unconfigured"}) == 1
    )


async def test_guard_model_and_encoder_are_exclusive(harness: Any, model: RiskModel) -> None:
    from guard.errors import ConfigError

    with pytest.raises(ConfigError, match="one external dimension"):
        _harness(
            harness,
            model,
            GUARD_ENCODER_URL="http://encoder.test",
            GUARD_GUARD_MODEL_URL="http://classifier.test",
        )
