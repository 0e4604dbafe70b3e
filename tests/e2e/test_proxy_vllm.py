"""The guard in front of a real vLLM (tiny model), driven by the official openai SDK.

Fidelity: at a fixed seed, what comes through the guard equals what vLLM sends directly. The
compared requests run one at a time (vLLM is not batch-invariant). These run against a guard in
shadow mode (full tracking, stream untouched) so a false halt cannot hide a protocol bug; the
enforcing guard has its own tests in test_guarding_vllm.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.guard_proc import guard_server
from tests.support.vllm_metrics import settle

BENIGN = [{"role": "user", "content": "Where is my order 12345678? It has not arrived."}]


@pytest.fixture(scope="module")
def guard_url(vllm_url: str) -> Iterator[str]:
    with guard_server(vllm_url, "--mode", "shadow") as url:
        yield url


@pytest.fixture(scope="module")
def direct(vllm_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=vllm_url + "/v1", api_key="x", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def guarded(guard_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=guard_url + "/v1", api_key="x", max_retries=0, timeout=120)


def both(direct: openai.OpenAI, guarded: openai.OpenAI, fn: Any) -> tuple[Any, Any]:
    return fn(direct), fn(guarded)


def chat_text(stream: Any) -> tuple[dict[int, str], list[Any]]:
    chunks = list(stream)
    texts: dict[int, str] = {}
    for c in chunks:
        for ch in c.choices:
            texts[ch.index] = texts.get(ch.index, "") + (ch.delta.content or "")
    return texts, chunks


def test_models(direct: openai.OpenAI, guarded: openai.OpenAI) -> None:
    a, b = both(direct, guarded, lambda c: [m.id for m in c.models.list()])
    assert a == b and "tiny" in b


def test_chat_non_streaming_equal(direct: openai.OpenAI, guarded: openai.OpenAI) -> None:
    a, b = both(
        direct,
        guarded,
        lambda c: c.chat.completions.create(
            model="tiny", messages=BENIGN, max_tokens=32, temperature=0, seed=1
        ),
    )
    assert b.choices[0].message.content == a.choices[0].message.content
    assert b.choices[0].finish_reason == a.choices[0].finish_reason
    assert b.usage.completion_tokens == a.usage.completion_tokens
    assert b.usage.prompt_tokens == a.usage.prompt_tokens


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": BENIGN, "return_token_ids": True}),
        (
            "/v1/completions",
            {"prompt": "<|user|>\nHow do I reset my password?<|end|>\n<|assistant|>\n"},
        ),
    ],
)
def test_non_streaming_response_field_by_field(
    vllm_url: str, guard_url: str, path: str, body: dict[str, Any]
) -> None:
    """The guard assembles a non-streaming response from a stream; it must be vLLM's own shape,
    every field, every value (id and created are per request)."""
    req = {"model": "tiny", "max_tokens": 24, "temperature": 0, "seed": 1, **body}
    a = httpx.post(vllm_url + path, json=req, timeout=120).json()
    r = httpx.post(guard_url + path, json=req, timeout=120)
    b = r.json()
    assert r.status_code == 200 and "x-guard-decision" in r.headers
    for obj in (a, b):
        obj.pop("id")
        obj.pop("created")
    assert list(b) == list(a)
    assert list(b["choices"][0]) == list(a["choices"][0])
    if "message" in a["choices"][0]:
        assert b["choices"][0]["message"] == a["choices"][0]["message"]
    assert b == a


def test_chat_streaming_equal_with_usage(direct: openai.OpenAI, guarded: openai.OpenAI) -> None:
    def run(c: openai.OpenAI) -> Any:
        return chat_text(
            c.chat.completions.create(
                model="tiny",
                messages=BENIGN,
                max_tokens=32,
                temperature=0,
                seed=1,
                stream=True,
                stream_options={"include_usage": True},
            )
        )

    (ta, ca), (tb, cb) = both(direct, guarded, run)
    assert ta == tb and ta[0]
    assert cb[-1].choices == [] and cb[-1].usage.total_tokens == ca[-1].usage.total_tokens


def test_chat_n2_with_seed(direct: openai.OpenAI, guarded: openai.OpenAI) -> None:
    def run(c: openai.OpenAI) -> Any:
        return chat_text(
            c.chat.completions.create(
                model="tiny",
                messages=BENIGN,
                max_tokens=24,
                temperature=0.8,
                seed=7,
                n=2,
                stream=True,
            )
        )[0]

    a, b = both(direct, guarded, run)
    assert set(b) == {0, 1} and a == b


def test_logprobs_pass_through(direct: openai.OpenAI, guarded: openai.OpenAI) -> None:
    def run(c: openai.OpenAI) -> Any:
        chunks = list(
            c.chat.completions.create(
                model="tiny",
                messages=BENIGN,
                max_tokens=12,
                temperature=0,
                seed=1,
                stream=True,
                logprobs=True,
                top_logprobs=3,
            )
        )
        return [
            (t.token, len(t.top_logprobs))
            for ch in chunks
            for c_ in ch.choices
            if c_.logprobs and c_.logprobs.content
            for t in c_.logprobs.content
        ]

    a, b = both(direct, guarded, run)
    assert a == b and a and all(n == 3 for _, n in b)


def test_structured_output(direct: openai.OpenAI, guarded: openai.OpenAI) -> None:
    a, b = both(
        direct,
        guarded,
        lambda c: (
            c.chat.completions.create(
                model="tiny",
                messages=BENIGN,
                max_tokens=24,
                temperature=0,
                seed=1,
                response_format={"type": "json_object"},
            )
            .choices[0]
            .message.content
        ),
    )
    assert a == b


def test_prefill_continue_final_message(direct: openai.OpenAI, guarded: openai.OpenAI) -> None:
    msgs = BENIGN + [{"role": "assistant", "content": "Thank you for reaching out"}]
    a, b = both(
        direct,
        guarded,
        lambda c: chat_text(
            c.chat.completions.create(
                model="tiny",
                messages=msgs,
                max_tokens=24,
                temperature=0,
                seed=1,
                stream=True,
                extra_body={"continue_final_message": True, "add_generation_prompt": False},
            )
        )[0],
    )
    assert a == b and a[0]


def test_completions_streaming_and_not(direct: openai.OpenAI, guarded: openai.OpenAI) -> None:
    a, b = both(
        direct,
        guarded,
        lambda c: (
            c.completions.create(
                model="tiny",
                prompt="Customer: my parcel is late.\nAgent:",
                max_tokens=24,
                temperature=0,
                seed=1,
            )
            .choices[0]
            .text
        ),
    )
    assert a == b and a
    a, b = both(
        direct,
        guarded,
        lambda c: "".join(
            ch.choices[0].text
            for ch in c.completions.create(
                model="tiny",
                prompt="Customer: my parcel is late.\nAgent:",
                max_tokens=24,
                temperature=0,
                seed=1,
                stream=True,
                logprobs=2,
            )
            if ch.choices
        ),
    )
    assert a == b and a


def test_upstream_errors_pass_through(guarded: openai.OpenAI, direct: openai.OpenAI) -> None:
    def run(c: openai.OpenAI) -> int:
        with pytest.raises(openai.BadRequestError) as info:
            c.chat.completions.create(model="tiny", messages=BENIGN, max_tokens=100000)
        return info.value.status_code

    a, b = both(direct, guarded, run)
    assert a == b == 400


def test_client_disconnect_stops_generation(guard_url: str, vllm_url: str) -> None:
    max_tokens = 450
    body = {
        "model": "tiny",
        "messages": BENIGN,
        "max_tokens": max_tokens,
        "stream": True,
        "ignore_eos": True,
        "temperature": 0,
    }
    # Warm-up: the same request to the end, so the measured one pays no first-request costs.
    httpx.post(guard_url + "/v1/chat/completions", json=dict(body, max_tokens=8), timeout=60)
    # The tiny model generates 450 tokens in well under a second on CPU, and vLLM's abort goes
    # from its API process to its engine process: on 2 loaded cores the engine can finish first
    # (a direct client disconnect shows the same). So: up to 3 tries, one must stop far short.
    generated: list[float] = []
    for _ in range(3):
        before = settle(vllm_url)
        with (
            httpx.Client(timeout=60) as c,
            c.stream("POST", guard_url + "/v1/chat/completions", json=body) as r,
        ):
            for got, _chunk in enumerate(r.iter_raw(), 1):
                if got >= 3:
                    break
        generated.append(settle(vllm_url) - before)
        # ignore_eos would run to max_tokens: stopping far short shows vLLM aborted the request.
        if 0 < generated[-1] < max_tokens / 2:
            break
    assert 0 < generated[-1] < max_tokens / 2, f"vLLM generated {generated} of {max_tokens}"
    # And the guard's own books are clean.
    metrics = httpx.get(guard_url + "/metrics").text
    assert re.search(r"^guard_active_streams 0\.0$", metrics, re.M)
    assert re.search(r"^guard_client_disconnects_total [1-9]", metrics, re.M)
