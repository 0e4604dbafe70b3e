"""The encoder client (vLLM ``/v1/embeddings`` wire shape), the probe scorer, the disk cache.

The shapes are vLLM 0.32's (checked against the real server in tests/e2e/test_encoder_vllm.py);
here an in-process transport answers, so the contracts fail fast and deterministically.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import httpx
import numpy as np
import pytest

from guard.errors import ScorerError
from guard.risk.probe import CANARY, EncoderSpec, RequestProbe
from guard.scoring.embeddings import CachedEncoder, EmbeddingsClient, ProbeScorer, make_encoder

DIM = 4


def _vec(text: str) -> list[float]:
    v = np.asarray([len(text), text.count("a") + 1, text.count(" ") + 1, 1.0])
    return (v / np.linalg.norm(v)).tolist()


class Server:
    def __init__(self) -> None:
        self.bodies: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        data = [
            {"index": i, "object": "embedding", "embedding": _vec(t)}
            for i, t in enumerate(body["input"])
        ]
        return httpx.Response(200, json={"object": "list", "data": data[::-1]})


def _client(server: Server) -> EmbeddingsClient:
    return EmbeddingsClient(
        "http://enc/v1",
        model="m",
        max_tokens=64,
        sync_client=httpx.Client(transport=httpx.MockTransport(server)),
        client=httpx.AsyncClient(transport=httpx.MockTransport(server)),
    )


def test_request_shape_and_order_by_index() -> None:
    srv = Server()
    c = _client(srv)
    out = c.embed_sync(["a b", "ccc"])
    assert c.url == "http://enc/v1/embeddings"
    assert srv.bodies[0] == {
        "input": ["a b", "ccc"],
        "truncate_prompt_tokens": 64,
        "truncation_side": "right",
        "model": "m",
    }
    assert out == [_vec("a b"), _vec("ccc")]  # data came back reversed: put in order


@pytest.mark.parametrize(
    "payload",
    [
        {"data": []},
        {"data": [{"index": 0, "embedding": "nope"}]},
        {"data": [{"index": 0, "embedding": [1.0, None]}]},
        {"data": [{"index": 0, "embedding": [1.0, 2.0]}, {"index": 1, "embedding": [1.0]}]},
    ],
)
def test_malformed_answers_are_scorer_errors(payload: dict) -> None:
    def bad(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=payload)

    transport = httpx.MockTransport(bad)
    c = EmbeddingsClient("http://enc", sync_client=httpx.Client(transport=transport))
    with pytest.raises(ScorerError):
        c.embed_sync(["x", "y"][: max(1, len(payload["data"]))])


def test_http_error_is_a_scorer_error() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, text="loading")

    transport = httpx.MockTransport(down)
    c = EmbeddingsClient("http://enc", sync_client=httpx.Client(transport=transport))
    with pytest.raises(ScorerError, match="HTTP 503"):
        c.embed_sync(["x"])


def _probe() -> RequestProbe:
    spec = EncoderSpec("m", "a" * 64, DIM, 64, tuple(_vec(CANARY)))
    return RequestProbe(spec, (1.0, -1.0, 0.5, 0.0), -0.2)


async def test_probe_scorer_scores_and_checks_the_fingerprint() -> None:
    srv = Server()
    ps = ProbeScorer(_client(srv), _probe())
    (p,) = await ps.score(["hello there"])
    z = float(np.dot(_probe().w, _vec("hello there"))) - 0.2
    assert p == pytest.approx(1 / (1 + math.exp(-z)))
    assert await ps.check() == pytest.approx(1.0)


def test_cache_embeds_each_text_once_across_instances(tmp_path: Path) -> None:
    srv = Server()
    enc = CachedEncoder(_client(srv), name="m", sha256="b" * 64, dim=DIM, cache_dir=tmp_path)
    a = enc.embed(["one", "two", "one"])
    assert a.shape == (3, DIM) and enc.n_embedded == 2
    again = CachedEncoder(_client(srv), name="m", sha256="b" * 64, dim=DIM, cache_dir=tmp_path)
    n_calls = len(srv.bodies)
    b = again.embed(["two", "one"])
    assert len(srv.bodies) == n_calls  # from disk: the server was not asked
    assert np.allclose(b, a[[1, 0]])
    other = CachedEncoder(_client(srv), name="m", sha256="c" * 64, dim=DIM, cache_dir=tmp_path)
    other.embed(["one"])
    assert len(srv.bodies) == n_calls + 1  # other weights: another cache


def test_make_encoder_needs_sha_and_dim_for_other_models() -> None:
    with pytest.raises(ValueError, match="sha256"):
        make_encoder("http://enc", model="another-encoder")
    enc = make_encoder("http://enc")
    assert enc.dim == 384 and enc.sha256.startswith("53aa5117")
