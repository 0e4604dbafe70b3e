"""The guarded relay through the app, against a scripted upstream (recorded-shape vLLM bytes)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.scripted import DONE, Script, chat_events, completion_events
from tests.support.sse import BENIGN, CHAT, HARMFUL, events_of, text_of


@pytest.mark.parametrize("split", [None, 1, 7])
async def test_benign_stream_is_byte_identical(harness, split) -> None:
    body = b"".join(chat_events(BENIGN, usage=(5, 9))) + DONE
    h = harness(lambda path, req: Script(body, split=split))
    r = await h.client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.content == body
    assert h.upstream.closed_early == 0
    assert h.metric("guard_requests_total", {"endpoint": "chat", "outcome": "passed"}) == 1
    assert h.metric("guard_tokens_relayed_total") == len(BENIGN)


async def test_client_body_reaches_upstream_unchanged(harness) -> None:
    body = b"".join(chat_events(BENIGN)) + DONE
    h = harness(lambda path, req: Script(body))
    req = dict(
        CHAT,
        continue_final_message=False,
        return_token_ids=True,
        seed=3,
        response_format={"type": "json_object"},
        some_future_field={"x": [1, 2]},
    )
    await h.client.post("/v1/chat/completions", json=req)
    assert h.upstream.requests[0][1] == req


@pytest.mark.parametrize("split", [None, 1])
async def test_harmful_stream_halted_at_trigger_token(harness, split) -> None:
    body = b"".join(chat_events(HARMFUL)) + DONE
    h = harness(lambda path, req: Script(body, split=split))
    r = await h.client.post("/v1/chat/completions", json=CHAT)
    evs = events_of(r.content)
    assert evs[-1] == "[DONE]"
    text = text_of(evs)
    # Text reached the client before the halt: the safe message starts on its own.
    assert text == "Sure, here" + "\n\n" + "I'm sorry, but I can't help with that."
    assert "HARM" not in r.text.replace('"HARM"', "")
    final = evs[-2]
    assert final["choices"][0]["finish_reason"] == "content_filter"
    assert final["id"] == "chatcmpl-test" and final["model"] == "tiny"
    assert final["guard"]["action"] == "halt"
    assert final["guard"]["halt_token"] == 4
    assert h.upstream.closed_early == 1  # upstream aborted: vLLM frees the slot
    assert h.metric("guard_halts_total", {"action": "halt", "reason": "risk"}) == 1


async def test_halt_usage_is_counted_from_the_stream(harness) -> None:
    body = b"".join(chat_events(HARMFUL, usage=(11, 8))) + DONE

    def handler(path: str, req: dict[str, Any]) -> Script:
        if path == "/tokenize":
            return Script(
                json.dumps({"count": 11, "tokens": list(range(11))}).encode(),
                content_type="application/json",
            )
        return Script(body)

    h = harness(handler)
    r = await h.client.post(
        "/v1/chat/completions", json=dict(CHAT, stream_options={"include_usage": True})
    )
    evs = events_of(r.content)
    usage = evs[-2]
    assert usage["choices"] == [] and usage["usage"] == {
        "prompt_tokens": 11,
        "completion_tokens": 4,
        "total_tokens": 15,
    }
    assert evs[-3]["choices"][0]["finish_reason"] == "content_filter"


async def test_shadow_mode_is_byte_identical_and_counts(harness) -> None:
    body = b"".join(chat_events(HARMFUL)) + DONE
    h = harness(lambda path, req: Script(body, split=3), env={"GUARD_MODE": "shadow"})
    r = await h.client.post("/v1/chat/completions", json=CHAT)
    assert r.content == body
    assert h.metric("guard_shadow_decisions_total", {"reason": "risk"}) == 1
    assert h.upstream.closed_early == 0


async def test_hold_back_never_releases_held_tokens(harness) -> None:
    body = b"".join(chat_events(HARMFUL)) + DONE
    h = harness(
        lambda path, req: Script(body),
        env={"GUARD_HOLD_BACK": "2", "GUARD_SAFE_MESSAGE": "[stopped]"},
    )
    r = await h.client.post("/v1/chat/completions", json=CHAT)
    evs = events_of(r.content)
    # "Sure" "," " here" were generated before HARM; the last 2 were still held back.
    assert text_of(evs) == "Sure\n\n[stopped]"


async def test_hold_back_releases_everything_of_a_benign_stream(harness) -> None:
    body = b"".join(chat_events(BENIGN)) + DONE
    h = harness(lambda path, req: Script(body), env={"GUARD_HOLD_BACK": "3"})
    r = await h.client.post("/v1/chat/completions", json=CHAT)
    assert r.content == body


async def test_n2_each_choice_halted_on_its_own(harness) -> None:
    a = chat_events(BENIGN, index=0)
    b = chat_events(HARMFUL, index=1)
    inter = [x for pair in zip(a, b, strict=False) for x in pair] + a[len(b) :] + b[len(a) :]
    body = b"".join(inter) + DONE
    h = harness(lambda path, req: Script(body))
    r = await h.client.post("/v1/chat/completions", json=dict(CHAT, n=2))
    evs = events_of(r.content)
    assert text_of(evs, 0) == "".join(BENIGN)
    assert text_of(evs, 1).startswith("Sure, here") and "HARM" not in text_of(evs, 1)
    finishes = {
        c["index"]: c["finish_reason"]
        for e in evs
        if isinstance(e, dict)
        for c in e["choices"]
        if c["finish_reason"]
    }
    assert finishes == {0: "stop", 1: "content_filter"}
    assert evs[-1] == "[DONE]"


async def test_completions_route_is_guarded(harness) -> None:
    body = b"".join(completion_events(HARMFUL)) + DONE
    h = harness(lambda path, req: Script(body))
    r = await h.client.post(
        "/v1/completions", json={"model": "tiny", "prompt": "x", "stream": True}
    )
    evs = events_of(r.content)
    texts = "".join(c["text"] for e in evs if isinstance(e, dict) for c in e["choices"])
    assert "HARM" not in texts and texts.startswith("Sure, here")
    assert evs[-2]["choices"][0]["finish_reason"] == "content_filter"
    assert evs[-2]["object"] == "text_completion"


async def test_non_streaming_benign_and_halted(harness) -> None:
    def handler(path: str, req: dict[str, Any]) -> Script:
        if path == "/tokenize":
            return Script(b'{"count": 3}', content_type="application/json")
        assert req["stream"] is True  # streamed internally so it can stop early
        toks = HARMFUL if "bad" in req["messages"][0]["content"] else BENIGN
        return Script(b"".join(chat_events(toks, usage=(3, len(toks)))) + DONE)

    h = harness(handler)
    ok = await h.client.post(
        "/v1/chat/completions",
        json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert ok.status_code == 200
    obj = ok.json()
    assert obj["object"] == "chat.completion"
    assert obj["choices"][0]["message"]["content"] == "".join(BENIGN)
    assert obj["choices"][0]["finish_reason"] == "stop"
    assert obj["usage"]["completion_tokens"] == len(BENIGN)
    assert json.loads(ok.headers["x-guard-decision"])["outcome"] == "passed"
    bad = await h.client.post(
        "/v1/chat/completions",
        json={"model": "tiny", "messages": [{"role": "user", "content": "bad"}]},
    )
    obj = bad.json()
    assert obj["choices"][0]["finish_reason"] == "content_filter"
    assert "HARM" not in obj["choices"][0]["message"]["content"]
    decision = json.loads(bad.headers["x-guard-decision"])
    assert decision["outcome"] == "halted" and decision["choices"][0]["halt_token"] == 4


async def test_partial_tool_call_is_never_released(harness) -> None:
    def tool_chunk(args: str, fin: str | None = None) -> bytes:
        obj = {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "tiny",
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call1",
                                "type": "function",
                                "function": {"name": "f", "arguments": args},
                            }
                        ]
                    },
                    "logprobs": None,
                    "finish_reason": fin,
                }
            ],
        }
        return b"data: " + json.dumps(obj).encode() + b"\n\n"

    events = chat_events([], finish=None) + [
        tool_chunk('{"a": '),
        tool_chunk('"HARM'),
        tool_chunk('"}', "tool_calls"),
    ]
    h = harness(lambda path, req: Script(b"".join(events) + DONE))
    r = await h.client.post("/v1/chat/completions", json=CHAT)
    assert "tool_calls" not in r.text
    assert events_of(r.content)[-2]["choices"][0]["finish_reason"] == "content_filter"

    benign = chat_events([], finish=None) + [tool_chunk('{"a": '), tool_chunk("1}", "tool_calls")]
    h2 = harness(lambda path, req: Script(b"".join(benign) + DONE))
    r2 = await h2.client.post("/v1/chat/completions", json=CHAT)
    assert r2.content == b"".join(benign) + DONE


async def test_reasoning_content_is_checked(harness) -> None:
    obj = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "tiny",
        "choices": [
            {
                "index": 0,
                "delta": {"reasoning_content": "plan: HARM"},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
    }
    events = chat_events([], finish=None) + [b"data: " + json.dumps(obj).encode() + b"\n\n"]
    events += chat_events(["ok"], role_chunk=False)
    h = harness(lambda path, req: Script(b"".join(events) + DONE))
    r = await h.client.post("/v1/chat/completions", json=CHAT)
    assert "plan: HARM" not in r.text
    assert events_of(r.content)[-2]["choices"][0]["finish_reason"] == "content_filter"


@pytest.mark.parametrize(
    ("separator", "expected"),
    [
        (None, "Sure, here\n\n[stopped]"),
        ("", "Sure, here[stopped]"),
        (" -- ", "Sure, here -- [stopped]"),
    ],
)
async def test_halt_separator_streaming(harness, tmp_path, separator, expected) -> None:
    cfg = tmp_path / "guard.yaml"
    policy: dict[str, Any] = {"safe_message": "[stopped]"}
    if separator is not None:
        policy["halt_separator"] = separator
    cfg.write_text(json.dumps({"policy": policy}))  # JSON is YAML
    h = harness(lambda path, req: Script(b"".join(chat_events(HARMFUL)) + DONE), config=str(cfg))
    r = await h.client.post("/v1/chat/completions", json=CHAT)
    evs = events_of(r.content)
    assert text_of(evs) == expected
    # The safe message is one chunk of its own, right before the content_filter finish.
    assert evs[-3]["choices"][0]["delta"]["content"] == expected[len("Sure, here") :]


async def test_halt_separator_non_streaming(harness) -> None:
    h = harness(
        lambda path, req: Script(b"".join(chat_events(HARMFUL)) + DONE),
        env={"GUARD_SAFE_MESSAGE": "[stopped]"},
    )
    r = await h.client.post("/v1/chat/completions", json=dict(CHAT, stream=False))
    choice = r.json()["choices"][0]
    assert choice["message"]["content"] == "Sure, here\n\n[stopped]"
    assert choice["finish_reason"] == "content_filter"


async def test_no_separator_when_nothing_was_delivered(harness) -> None:
    # Halted on the first generated token: nothing reached the client, so nothing is added.
    h = harness(
        lambda path, req: Script(b"".join(chat_events(["HARM", " later"])) + DONE),
        env={"GUARD_SAFE_MESSAGE": "[stopped]"},
    )
    r = await h.client.post("/v1/chat/completions", json=CHAT)
    assert text_of(events_of(r.content)) == "[stopped]"
    r = await h.client.post("/v1/chat/completions", json=dict(CHAT, stream=False))
    assert r.json()["choices"][0]["message"]["content"] == "[stopped]"
