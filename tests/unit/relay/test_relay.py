"""The relay's transitions, driven without a server: events in, bytes and status out (as h11)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from guard.config import load_settings
from guard.decision.policy import Policy, PolicyBook
from guard.errors import UpstreamProtocolError
from guard.relay.assemble import assemble
from guard.relay.relay import Relay, Status
from guard.request.parse import parse_generation
from guard.upstream.sse import SSEDecoder, SSEEvent
from tests.support.scripted import DONE, KeywordRiskModel, chat_events

BENIGN = ["Hello", ",", " how", " can", " I", " help", "?"]
HARMFUL = ["Sure", ",", " here", " HARM", " is", " the", " card"]
CHAT: dict[str, Any] = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}


def policy(**env: str) -> Policy:
    base = {"GUARD_UPSTREAM": "http://upstream.test", "GUARD_SAFE_MESSAGE": "[stopped]"}
    base.update({f"GUARD_{k.upper()}": v for k, v in env.items()})
    return PolicyBook(load_settings(env=base), KeywordRiskModel()).default


def relay(body: dict[str, Any] | None = None, pol: Policy | None = None, **kw: Any) -> Relay:
    req = parse_generation("chat", dict(CHAT, stream=True, **(body or {})))
    return Relay(req, pol or policy(), KeywordRiskModel(), **kw)


def events(raw: list[bytes]) -> list[SSEEvent]:
    return SSEDecoder().feed(b"".join(raw))


def feed(r: Relay, evs: list[SSEEvent]) -> tuple[list[bytes], list[Status]]:
    """Feed until the relay stops reading; (bytes out per event, status after each)."""
    outs, states = [], []
    for ev in evs:
        outs.append(r.on_event(ev))
        states.append(r.status)
        if r.status not in (Status.RUNNING, Status.UPSTREAM_ERROR):
            break
    return outs, states


def objs(data: bytes) -> list[Any]:
    out = []
    for ev in SSEDecoder().feed(data):
        assert ev.data is not None
        out.append("[DONE]" if ev.data == b"[DONE]" else json.loads(ev.data))
    return out


def test_benign_stream_is_relayed_byte_for_byte() -> None:
    raw = [*chat_events(BENIGN, usage=(5, 7)), DONE]
    r = relay({"stream_options": {"include_usage": True}})
    outs, states = feed(r, events(raw))
    assert outs == raw  # every event leaves as its own bytes, untouched
    assert states[:-1] == [Status.RUNNING] * (len(raw) - 1) and states[-1] is Status.DONE
    assert r.on_event(events([b"data: {}\n\n"])[0]) == b""  # nothing after [DONE]
    rep = r.report()
    assert rep.outcome == "passed" and rep.choices[0].generated == len(BENIGN)
    assert rep.choices[0].released_tokens == len(BENIGN) and r.prompt_tokens == 5


def test_halt_writes_safe_message_on_its_own_then_content_filter() -> None:
    r = relay()
    outs, states = feed(r, events([*chat_events(HARMFUL), DONE]))
    assert states[-1] is Status.GUARD_ENDED  # abort the upstream now
    relayed = b"".join(outs[:-1])
    assert b"HARM" not in relayed and b"Sure" in relayed
    halt = objs(outs[-1])
    assert halt[0]["choices"][0]["delta"]["content"] == "\n\n[stopped]"
    fin = halt[1]["choices"][0]
    assert fin["finish_reason"] == "content_filter" and halt[1]["guard"]["halt_token"] == 4
    assert r.finish().endswith(DONE) and r.status is Status.DONE
    rep = r.report()
    assert rep.outcome == "halted" and rep.choices[0].halted and rep.choices[0].reason == "risk"


def test_no_separator_when_nothing_was_delivered_and_none_when_empty() -> None:
    r = relay()
    outs, _ = feed(r, events(chat_events(["HARM"])))
    assert objs(outs[-1])[0]["choices"][0]["delta"]["content"] == "[stopped]"
    r = relay(pol=replace(policy(), halt_separator=""))
    outs, _ = feed(r, events(chat_events(HARMFUL)))
    assert objs(outs[-1])[0]["choices"][0]["delta"]["content"] == "[stopped]"


def test_hold_back_lags_and_drops_what_is_held_at_a_halt() -> None:
    r = relay(pol=policy(hold_back="2"))
    outs, _ = feed(r, events(chat_events(HARMFUL)))
    # role chunk (0 tokens) and "Sure" leave; "," and " here" were still held when HARM came.
    released = [o for o in outs[:-1] if o]
    text = "".join(c["choices"][0]["delta"].get("content", "") for o in released for c in objs(o))
    assert text == "Sure"
    assert r.report().choices[0].released_tokens == 1


def test_shadow_mode_counts_but_never_changes_a_byte() -> None:
    raw = [*chat_events(HARMFUL), DONE]
    r = relay(pol=policy(mode="shadow"))
    outs, states = feed(r, events(raw))
    assert outs == raw and states[-1] is Status.DONE
    rep = r.report()
    assert rep.shadow_halts == 1 and rep.outcome == "passed"


def test_resample_reroutes_from_the_released_prefix() -> None:
    r = relay(pol=policy(action="resample"))
    outs, states = feed(r, events(chat_events(HARMFUL, token_ids=True)))
    assert states[-1] is Status.REROUTE and outs[-1] == b""
    plan = r.reroute_plan()
    assert plan.prefix == "Sure, here" and plan.prefix_tokens == 3
    assert plan.crossing_text == " HARM" and plan.crossing_ids == (1003,)
    r.begin_attempt("resample", segment_limited=True, detail={"banned_token_ids": [1003]})
    assert r.status is Status.RUNNING
    # The new attempt: its role chunk is swallowed, its segment's "length" end is not the end.
    seg = chat_events([" there"], finish="length", rid="chatcmpl-2")
    outs, states = feed(r, events([*seg, DONE]))
    assert outs[0] == b"" and states[-1] is Status.SEGMENT_END
    cont = objs(outs[1])[0]
    assert cont["id"] == "chatcmpl-test" and cont["choices"][0]["finish_reason"] is None
    assert r.on_event(events([DONE])[0]) == b""  # the segment's [DONE] is not the client's
    assert r.report().reroutes[0]["at_token"] == 3


def test_upstream_error_event_is_relayed_then_done() -> None:
    err = b'data: {"error": {"message": "boom", "code": 500}}\n\n'
    r = relay()
    outs, states = feed(r, events([*chat_events(["Hi"], finish=None), err, DONE]))
    assert outs[-2] == err and states[-2] is Status.UPSTREAM_ERROR
    assert states[-1] is Status.DONE and r.error == {"message": "boom", "code": 500}


@pytest.mark.parametrize("data", [b"data: {not json\n\n", b"data: [1, 2]\n\n"])
def test_malformed_events_are_protocol_errors(data: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        relay().on_event(events([data])[0])


def test_each_choice_is_halted_on_its_own() -> None:
    r = relay({"n": 2})
    a = chat_events(HARMFUL, index=0, finish=None)
    b = chat_events(BENIGN, index=1)
    mixed = [x for pair in zip(a, b, strict=False) for x in pair]
    _, states = feed(r, events(mixed))
    assert Status.GUARD_ENDED not in states[:-1]
    assert states[-1] is Status.GUARD_ENDED  # both ended, one halted
    rep = r.report()
    assert [c.halted for c in rep.choices] == [True, False]


def test_a_partial_tool_call_is_never_released() -> None:
    def tool_chunk(args: str, fin: str | None) -> bytes:
        delta = {"tool_calls": [{"index": 0, "function": {"arguments": args}}]}
        obj = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "tiny",
               "choices": [{"index": 0, "delta": delta, "finish_reason": fin}]}  # fmt: skip
        return b"data: " + json.dumps(obj).encode() + b"\n\n"

    r = relay()
    outs, _ = feed(r, events([tool_chunk('{"a": ', None), tool_chunk('"HARM"}', None)]))
    assert outs[0] == b""  # held until the call is complete
    assert b"HARM" not in b"".join(outs) and r.report().choices[0].halted


def test_verdicts_are_asked_and_join_the_state() -> None:
    class Schedule:
        answered = 0
        fallbacks = 0

        def observe(self, text: str, n: int = 1) -> str | None:
            return "ask" if text == " how" else None

        def on_verdict(self, p: float | None) -> None:
            self.answered += 1

    r = relay(verdicts=lambda prompt, prefill: Schedule())
    feed(r, events(chat_events(BENIGN[:3], finish=None)))
    assert r.wants_verdicts and r.take_verdict_asks() == [(0, "ask")]
    assert not r.wants_verdicts
    r.on_verdict(0, 0.99)  # the tracker takes the verdict; the next chunk is checked and halts
    outs, states = feed(r, events(chat_events([" can"], role_chunk=False, finish=None)))
    assert states[-1] is Status.GUARD_ENDED and b"content_filter" in outs[-1]


def test_collect_mode_keeps_objects_for_the_assembly() -> None:
    req = parse_generation("chat", dict(CHAT, stream=False))
    r = Relay(req, policy(), KeywordRiskModel(), collect=True)
    outs, states = feed(r, events(chat_events(HARMFUL)))
    assert all(o == b"" for o in outs) and states[-1] is Status.GUARD_ENDED
    assert r.finish() == b""
    assert r.collected is not None
    completion, guards = assemble(r.collected, chat=True)
    msg = completion["choices"][0]["message"]
    assert msg["content"] == "Sure, here\n\n[stopped]"
    assert completion["choices"][0]["finish_reason"] == "content_filter"
    assert guards[0]["action"] == "halt"
