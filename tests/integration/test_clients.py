"""How a halt looks from the official openai Python SDK (docs/clients.md): what a chatbot developer
reads and what raises. The guard runs in-process against a scripted upstream that streams a
harmful continuation; the SDK talks to it through httpx's ASGI transport."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from tests.support.scripted import DONE, Script, chat_events

HARMFUL = ["Sure", ",", " here", " HARM", " is", " the", " card", " number"]
# the same as structured output (JSON), as a client with response_format would get it
HARMFUL_JSON = ['{"', "text", '":', ' "', "Sure", ",", " here", " HARM", " is", " the", " card"]
MESSAGES: Any = [{"role": "user", "content": "hi"}]


def _client(harness: Any, tokens: list[str] = HARMFUL) -> tuple[Any, openai.AsyncOpenAI]:
    h = harness(lambda path, req: Script(b"".join(chat_events(tokens)) + DONE))
    client = openai.AsyncOpenAI(
        base_url="http://guard.test/v1", api_key="k", http_client=h.client, max_retries=0
    )
    return h, client


async def test_stream_ends_with_content_filter_and_a_guard_object(harness) -> None:
    _, client = _client(harness)
    stream = await client.chat.completions.create(model="tiny", messages=MESSAGES, stream=True)
    finish, guard, text = None, None, ""
    async for chunk in stream:
        for ch in chunk.choices:
            text += ch.delta.content or ""
            finish = ch.finish_reason or finish
        guard = (chunk.model_extra or {}).get("guard", guard)
    assert finish == "content_filter"
    assert guard is not None and guard["hitting_probability"] >= 0.5, guard
    assert "HARM" not in text.split("Sure, here")[-1] or guard["halt_token"] >= 1


async def test_non_stream_has_finish_reason_and_decision_header(harness) -> None:
    _, client = _client(harness)
    raw = await client.chat.completions.with_raw_response.create(model="tiny", messages=MESSAGES)
    decision = json.loads(raw.headers["x-guard-decision"])
    assert decision["outcome"] == "halted", decision
    assert decision["choices"][0]["action"] == "halt"
    completion = raw.parse()
    assert completion.choices[0].finish_reason == "content_filter"


class Answer(BaseModel):
    text: str


async def test_parse_helper_raises_on_a_halt(harness) -> None:
    _, client = _client(harness)
    with pytest.raises(openai.ContentFilterFinishReasonError):
        await client.chat.completions.parse(model="tiny", messages=MESSAGES, response_format=Answer)


async def test_stream_helper_final_completion_raises_on_a_halt(harness) -> None:
    _, client = _client(harness)
    seen = []
    with pytest.raises(openai.ContentFilterFinishReasonError) as ei:
        async with client.chat.completions.stream(model="tiny", messages=MESSAGES) as stream:
            async for event in stream:  # the events before the halt arrive normally
                seen.append(event.type)
            await stream.get_final_completion()
    assert "content.delta" in seen
    assert ei.value.completion.choices[0].finish_reason == "content_filter"


async def test_stream_helper_with_response_format_raises_on_a_halt(harness) -> None:
    _, client = _client(harness, HARMFUL_JSON)
    with pytest.raises(openai.ContentFilterFinishReasonError):
        async with client.chat.completions.stream(
            model="tiny", messages=MESSAGES, response_format=Answer
        ) as stream:
            await stream.get_final_completion()
