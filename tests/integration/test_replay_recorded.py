"""Replay wire bytes recorded from the real vLLM 0.32 server (tests/fixtures/vllm, made by
scripts/vllm/record_vllm.py) through the guard, with the original network read sizes and with 1-byte
reads. Benign streams must come out byte-identical; the prefilled jailbreak must be halted by the
shipped risk model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from guard.risk import load_risk_model
from tests.support.scripted import Script
from tests.support.sse import events_of

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "vllm"
CASES = json.loads((FIXTURES / "_recording.json").read_text())["cases"]
STREAMS = [
    c
    for c in CASES
    if (json.loads((FIXTURES / f"{c}.request.json").read_text()) or {}).get("stream")
    and json.loads((FIXTURES / f"{c}.meta.json").read_text())["status"] == 200
]
BENIGN_STREAMS = [
    c
    for c in STREAMS
    if c
    not in ("chat_stream_prefill", "chat_stream_jailbreak", "chat_stream_prefill_logprobs_usage")
]
SHIPPED = load_risk_model()


def load(case: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    req = json.loads((FIXTURES / f"{case}.request.json").read_text())
    meta = json.loads((FIXTURES / f"{case}.meta.json").read_text())
    body = (FIXTURES / f"{case}.response.bin").read_bytes()
    return req, meta, body


def reads(meta: dict[str, Any], body: bytes) -> list[bytes]:
    out, pos = [], 0
    for n in meta.get("raw_read_sizes") or [len(body)]:
        out.append(body[pos : pos + n])
        pos += n
    assert pos == len(body)
    return out


def route_of(meta: dict[str, Any]) -> str:
    return str(meta["path"])


@pytest.mark.parametrize("split", ["recorded", 1])
@pytest.mark.parametrize("case", STREAMS)
async def test_shadow_replay_is_byte_identical(harness, case: str, split: Any) -> None:
    req, meta, body = load(case)
    script = (
        Script(body, events=reads(meta, body)) if split == "recorded" else Script(body, split=1)
    )
    h = harness(lambda p, r: script, model=SHIPPED, env={"GUARD_MODE": "shadow"})
    r = await h.client.post(route_of(meta), json=req)
    assert r.status_code == 200
    assert r.content == body


@pytest.mark.parametrize("case", BENIGN_STREAMS)
async def test_enforced_benign_replay_is_byte_identical(harness, case: str) -> None:
    req, meta, body = load(case)
    h = harness(lambda p, r: Script(body, events=reads(meta, body)), model=SHIPPED)
    r = await h.client.post(route_of(meta), json=req)
    assert r.content == body, events_of(r.content)[-2]


@pytest.mark.parametrize(
    "case", ["chat_stream_prefill", "chat_stream_prefill_logprobs_usage", "chat_stream_jailbreak"]
)
async def test_enforced_prefill_replay_is_halted(harness, case: str) -> None:
    req, meta, body = load(case)

    def handler(path: str, r: dict[str, Any]) -> Script:
        if path == "/tokenize":
            return Script(b'{"count": 31}', content_type="application/json")
        return Script(body, events=reads(meta, body))

    h = harness(handler, model=SHIPPED)
    r = await h.client.post(route_of(meta), json=req)
    evs = events_of(r.content)
    assert evs[-1] == "[DONE]"
    finishes = [
        c["finish_reason"]
        for e in evs
        if isinstance(e, dict)
        for c in e.get("choices", [])
        if c["finish_reason"]
    ]
    assert finishes == ["content_filter"]
    assert h.upstream.closed_early == 1
    if req.get("stream_options", {}).get("include_usage"):
        assert evs[-2]["usage"]["prompt_tokens"] == 31


async def test_error_and_models_pass_through(harness, tmp_path: Path) -> None:
    req, meta, body = load("error_max_tokens")
    cfg = tmp_path / "g.yaml"
    cfg.write_text("upstream: http://upstream.test\npolicy: {max_tokens_limit: 1000000}\n")
    h = harness(
        lambda p, r: Script(body, status=meta["status"], content_type=meta["content_type"]),
        config=str(cfg),
    )
    r = await h.client.post(route_of(meta), json=req)
    assert (r.status_code, r.content) == (meta["status"], body)
    _, mmeta, mbody = load("models")
    h2 = harness(lambda p, r: Script(mbody, content_type=mmeta["content_type"]))
    r2 = await h2.client.get("/v1/models")
    assert r2.content == mbody
