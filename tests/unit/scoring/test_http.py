"""Request/response JSON shapes of both endpoint styles, against shapes recorded from vLLM 0.32."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from guard.scoring import (
    ClassifyClient,
    GenerativeScoringClient,
    ScorerError,
    make_external_scorer,
)

REC = json.loads((Path(__file__).parent / "recorded_vllm_0_32.json").read_text())


def _transport(handler_rec: dict[str, Any], seen: list[dict[str, Any]]) -> httpx.MockTransport:
    def handler(req: httpx.Request) -> httpx.Response:
        seen.append({"path": req.url.path, "body": json.loads(req.content)})
        return httpx.Response(handler_rec["status"], json=handler_rec["response"])

    return httpx.MockTransport(handler)


def test_classify_request_shape_matches_recorded() -> None:
    rec = REC["classify"]
    c = ClassifyClient("http://x", model="tiny-guard")
    assert c.build_request(rec["request"]["input"]) == rec["request"]
    assert c.url == "http://x/classify"


def test_classify_parses_recorded_response() -> None:
    rec = REC["classify"]
    c = ClassifyClient("http://x", model="tiny-guard")
    p = c.parse_response(rec["response"], 2)
    assert p == [d["probs"][1] for d in rec["response"]["data"]]
    assert p[0] > 0.5 > p[1]


def test_classify_unsafe_index_and_reordered_data() -> None:
    payload = {
        "data": [
            {"index": 1, "probs": [0.1, 0.2, 0.7], "num_classes": 3},
            {"index": 0, "probs": [0.6, 0.3, 0.1], "num_classes": 3},
        ]
    }
    assert ClassifyClient("http://x", unsafe_index=0).parse_response(payload, 2) == [0.6, 0.1]
    with pytest.raises(ScorerError):
        ClassifyClient("http://x", unsafe_index=3).parse_response(payload, 2)


@pytest.mark.parametrize(
    "payload",
    [
        [],
        {"data": []},
        {"data": [{"index": 0, "probs": "x"}]},
        {"data": [{"index": 5, "probs": [0.5, 0.5]}]},
        {"data": [{"index": 0, "probs": [0.5, 1.7]}]},
        {"data": [{"index": 0, "probs": [0.5, None]}]},
    ],
)
def test_classify_malformed_raises(payload: object) -> None:
    with pytest.raises(ScorerError):
        ClassifyClient("http://x").parse_response(payload, 1)


def test_classify_no_truncation_fields_when_disabled() -> None:
    body = ClassifyClient("http://x/v1", truncate_prompt_tokens=None).build_request(["a"])
    assert body == {"input": ["a"]}


def test_generative_request_shape_matches_recorded() -> None:
    rec = REC["generative_scoring"]
    c = GenerativeScoringClient(
        "http://x", model="tiny", query="<|user|>\n", unsafe_token_id=395, safe_token_id=45
    )
    assert c.url == "http://x/generative_scoring"
    assert c.build_request(rec["request"]["items"]) == rec["request"]
    p = c.parse_response(rec["response"], 2)
    assert p == [d["score"] for d in rec["response"]["data"]]


def test_generative_item_template_and_validation() -> None:
    c = GenerativeScoringClient(
        "http://x", unsafe_token_id=7, safe_token_id=8, item_template="[C]{text}[/C] verdict:"
    )
    body = c.build_request(["hi"])
    assert body["items"] == ["[C]hi[/C] verdict:"]
    assert body["label_token_ids"] == [7, 8]
    with pytest.raises(ValueError):
        GenerativeScoringClient("http://x", unsafe_token_id=7)  # softmax over one token
    raw = GenerativeScoringClient("http://x", unsafe_token_id=7, apply_softmax=False)
    assert raw.build_request(["a"])["label_token_ids"] == [7]


async def test_async_and_sync_roundtrip_with_mock_transport() -> None:
    seen: list[dict[str, Any]] = []
    rec = REC["classify"]
    t = _transport(rec, seen)
    async with httpx.AsyncClient(transport=t) as ac:
        c = ClassifyClient(
            "http://x", model="tiny-guard", client=ac, sync_client=httpx.Client(transport=t)
        )
        texts = rec["request"]["input"]
        a = await c.score(texts)
        s = c.score_sync(texts)
        c.close()
    assert a == s and len(a) == 2
    assert [x["path"] for x in seen] == ["/classify", "/classify"]
    assert seen[0]["body"]["input"] == texts


@pytest.mark.parametrize("rec_key", ["classify_unknown_model", "generative_scoring_bad_label"])
async def test_http_errors_raise_scorer_error(rec_key: str) -> None:
    rec = REC[rec_key]
    assert rec["status"] in (400, 404)
    seen: list[dict[str, Any]] = []
    async with httpx.AsyncClient(transport=_transport(rec, seen)) as ac:
        c = GenerativeScoringClient("http://x", unsafe_token_id=1, safe_token_id=2, client=ac)
        with pytest.raises(ScorerError, match=str(rec["status"])):
            await c.score(["a"])


async def test_connect_error_raises_scorer_error() -> None:
    def boom(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=req)

    async with httpx.AsyncClient(transport=httpx.MockTransport(boom)) as ac:
        with pytest.raises(ScorerError, match="ConnectError"):
            await ClassifyClient("http://x", client=ac).score(["a"])
    with pytest.raises(ScorerError):
        ClassifyClient(
            "http://x", sync_client=httpx.Client(transport=httpx.MockTransport(boom))
        ).score_sync(["a"])


def test_non_json_body_raises_scorer_error() -> None:
    t = httpx.MockTransport(lambda r: httpx.Response(200, text="<html>"))
    with pytest.raises(ScorerError, match="not JSON"):
        ClassifyClient("http://x", sync_client=httpx.Client(transport=t)).score_sync(["a"])


def test_empty_input_makes_no_call() -> None:
    t = httpx.MockTransport(lambda r: pytest.fail("no call expected"))  # type: ignore[arg-type]
    assert ClassifyClient("http://x", sync_client=httpx.Client(transport=t)).score_sync([]) == []


def test_make_external_scorer_chunks_templates_and_progress() -> None:
    bodies: list[list[str]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        texts = json.loads(req.content)["input"]
        bodies.append(texts)
        data = [
            {"index": i, "probs": [0.0, min(1.0, len(t) / 1000)], "num_classes": 2}
            for i, t in enumerate(texts)
        ]
        return httpx.Response(200, json={"data": data})

    progress: list[tuple[int, int]] = []
    sc = make_external_scorer(
        "http://x",
        "classify",
        model="tiny-guard",
        batch_size=32,
        sync_client=httpx.Client(transport=httpx.MockTransport(handler)),
        progress=lambda d, n: progress.append((d, n)),
    )
    texts = [f"t{i}" for i in range(70)]
    out = sc.score_batch(texts)
    assert len(out) == 70
    assert [len(b) for b in bodies] == [32, 32, 6]
    assert progress == [(32, 70), (64, 70), (70, 70)]
    # Texts go as given: fit/eval render them the way serving does (guard.risk.verdict_text).
    assert bodies[0][0] == "t0"
    assert sc.calls == 3


def test_make_external_scorer_retries_then_raises() -> None:
    n = {"calls": 0}

    def handler(req: httpx.Request) -> httpx.Response:
        n["calls"] += 1
        if n["calls"] == 1:
            return httpx.Response(503, text="busy")
        return httpx.Response(200, json={"data": [{"index": 0, "score": 0.25}]})

    sc = make_external_scorer(
        "http://x",
        "generative",
        unsafe_token_id=3,
        safe_token_id=4,
        retries=1,
        sync_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    assert sc.score_batch(["a"]) == [0.25]
    assert n["calls"] == 2
    dead = make_external_scorer(
        "http://x",
        retries=0,
        sync_client=httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(500))),
    )
    with pytest.raises(ScorerError):
        dead.score_batch(["a"])


def test_make_external_scorer_rejects_bad_kind() -> None:
    with pytest.raises(ValueError):
        make_external_scorer("http://x", "llama")
    with pytest.raises(ValueError):
        make_external_scorer("http://x", "generative")  # no unsafe_token_id
