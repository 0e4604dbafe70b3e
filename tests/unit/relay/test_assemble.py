"""The non-streaming assembly against vLLM's own non-streaming responses (recorded, vLLM 0.32).

The recordings in tests/fixtures/vllm hold the same request made streaming (with usage, what the
guard sends upstream for a non-streaming client) and non-streaming; greedy decoding makes the two
generations identical, so the assembly must equal vLLM's own response field by field (id and
created differ per request). The live comparison is tests/e2e/test_nonstreaming_vllm.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from guard.relay.assemble import NON_STREAMING_ONLY, assemble
from guard.upstream.sse import SSEDecoder

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "vllm"


def stream_objects(name: str) -> list[dict[str, Any]]:
    evs = SSEDecoder().feed((FIX / f"{name}.response.bin").read_bytes())
    return [json.loads(e.data) for e in evs if e.data is not None and e.data != b"[DONE]"]


def without_ids(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("id", "created")}


@pytest.mark.parametrize(
    ("stream", "nonstream", "chat", "skip"),
    [
        ("chat_stream_usage", "chat_nonstream", True, ()),
        # The recorded completions stream did not ask for usage.
        ("completions_stream", "completions_nonstream", False, ("usage",)),
    ],
)
def test_assembly_equals_vllms_own_response(
    stream: str, nonstream: str, chat: bool, skip: tuple[str, ...]
) -> None:
    vllm = json.loads((FIX / f"{nonstream}.response.bin").read_bytes())
    ours, guards = assemble(stream_objects(stream), chat)
    assert guards == []
    want = {k: v for k, v in without_ids(vllm).items() if k not in skip}
    got = {k: v for k, v in without_ids(ours).items() if k not in skip}
    assert list(got) == list(want)  # the same fields, in vLLM's order
    assert got == want


def test_stream_only_fields_are_carried_and_non_streaming_ones_documented() -> None:
    objs = stream_objects("chat_stream_token_ids")
    ours, _ = assemble(objs, chat=True)
    choice = ours["choices"][0]
    ids = [i for o in objs for c in o["choices"] for i in (c.get("token_ids") or [])]
    assert choice["token_ids"] == ids and len(ids) > 1  # concatenated across chunks
    assert ours["prompt_token_ids"] == objs[0]["prompt_token_ids"]
    for k in NON_STREAMING_ONLY:
        where = choice if k == "routed_experts" else ours
        assert k in where and where[k] is None
    assert "tool_calls" not in choice["message"]  # vLLM's shape has none without tool calls
