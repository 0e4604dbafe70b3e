"""Reroute actions: resample from the safe prefix with the risky token banned; alternate."""

from __future__ import annotations

import json
from typing import Any

import openai

from tests.support.scripted import DONE, Script, chat_events
from tests.support.sse import HARMFUL, events_of, text_of

CHAT = {
    "model": "tiny",
    "messages": [{"role": "user", "content": "hi"}],
    "stream": True,
    "max_tokens": 32,
}


def resample_handler(calls: list[dict[str, Any]]):
    def handler(path: str, req: dict[str, Any]) -> Script:
        calls.append(req)
        if path == "/tokenize":
            return Script(
                b'{"count": 7, "tokens": [1,2,3,4,5,6,7]}', content_type="application/json"
            )
        if len(calls) == 1:
            return Script(b"".join(chat_events(HARMFUL, token_ids=True)) + DONE)
        if "logit_bias" in req:
            return Script(
                b"".join(
                    chat_events(
                        ["ly", " I", " cannot", " do"], finish="length", rid="other", usage=(9, 4)
                    )
                )
                + DONE
            )
        return Script(b"".join(chat_events([" that", "."], rid="third", usage=(13, 2))) + DONE)

    return handler


async def test_resample_continues_from_safe_prefix(harness) -> None:
    calls: list[dict[str, Any]] = []
    h = harness(resample_handler(calls), env={"GUARD_ACTION": "resample"})
    r = await h.client.post(
        "/v1/chat/completions", json=dict(CHAT, stream_options={"include_usage": True})
    )
    evs = events_of(r.content)
    assert text_of(evs) == "Sure, here" + "ly I cannot do" + " that."
    assert {e["id"] for e in evs if isinstance(e, dict)} == {"chatcmpl-test"}
    finishes = [
        c["finish_reason"]
        for e in evs
        if isinstance(e, dict)
        for c in e["choices"]
        if c["finish_reason"]
    ]
    assert finishes == ["stop"]  # the banned segment's "length" is not the client's end
    final = next(
        e for e in evs if isinstance(e, dict) and e["choices"] and e["choices"][0]["finish_reason"]
    )
    assert final["guard"]["action"] == "resample" and len(final["guard"]["reroutes"]) == 1
    # Second request: continue the assistant message from the released prefix, risky token
    # (id 1003, the 4th token) banned, for a few tokens only.
    second = calls[1]
    assert second["messages"][-1] == {"role": "assistant", "content": "Sure, here"}
    assert second["continue_final_message"] is True and second["add_generation_prompt"] is False
    assert second["logit_bias"] == {"1003": -100.0}
    assert second["max_tokens"] == 4
    third = calls[2]
    assert "logit_bias" not in third
    assert third["messages"][-1]["content"] == "Sure, hereI cannot do".replace("hereI", "herely I")
    assert third["max_tokens"] == 32 - 7
    usage = evs[-2]["usage"]
    # Honest: every token generated (4 + 4 + 2), prompt from the first continuation.
    assert usage["completion_tokens"] == 10
    assert h.metric("guard_requests_total", {"endpoint": "chat", "outcome": "rerouted"}) == 1


async def test_resample_stream_parses_with_official_sdk(harness) -> None:
    calls: list[dict[str, Any]] = []
    h = harness(resample_handler(calls), env={"GUARD_ACTION": "resample"})
    client = openai.AsyncOpenAI(base_url="http://guard.test/v1", api_key="k", http_client=h.client)
    stream = await client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], stream=True, max_tokens=32
    )
    parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(parts) == "Sure, herely I cannot do that."


async def test_resample_attempts_are_bounded_then_halt(harness) -> None:
    calls: list[dict[str, Any]] = []

    def handler(path: str, req: dict[str, Any]) -> Script:
        calls.append(req)
        return Script(b"".join(chat_events(["x", " HARM"], token_ids=True)) + DONE)

    h = harness(handler, env={"GUARD_ACTION": "resample"})
    r = await h.client.post("/v1/chat/completions", json=CHAT)
    evs = events_of(r.content)
    assert "HARM" not in text_of(evs)
    assert evs[-2]["choices"][0]["finish_reason"] == "content_filter"
    assert len(calls) == 3  # the original + 2 resample attempts (the default bound)
    assert len(evs[-2]["guard"]["reroutes"]) == 2


async def test_alternate_routes_to_other_model_with_safety_prompt(harness, tmp_path) -> None:
    cfg = tmp_path / "guard.yaml"
    cfg.write_text(
        "upstream: http://upstream.test\n"
        "policy:\n  action: alternate\n  alternate:\n    model: tiny-safe\n"
        "    system_prompt: Be safe.\n"
    )
    calls: list[dict[str, Any]] = []

    def handler(path: str, req: dict[str, Any]) -> Script:
        calls.append(req)
        if req["model"] == "tiny":
            return Script(b"".join(chat_events(HARMFUL)) + DONE)
        return Script(b"".join(chat_events([" I", " can't", "."], model="tiny-safe")) + DONE)

    h = harness(handler, config=str(cfg))
    r = await h.client.post("/v1/chat/completions", json=CHAT)
    evs = events_of(r.content)
    assert text_of(evs) == "Sure, here I can't."
    assert {e["model"] for e in evs if isinstance(e, dict)} == {"tiny"}
    alt = calls[1]
    assert alt["model"] == "tiny-safe"
    assert alt["messages"][0] == {"role": "system", "content": "Be safe."}
    assert json.loads(json.dumps(alt["messages"][-1])) == {
        "role": "assistant",
        "content": "Sure, here",
    }
