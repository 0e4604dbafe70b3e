"""Request schemas of the generation routes: validation at the edge, unknown fields allowed.

Only what the guard itself depends on is constrained (shapes it reads, and limits on ``n``,
``max_tokens``, ``top_logprobs`` that the policy sets); everything else is vLLM's to judge, and the
body is forwarded as the client sent it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChatMessage(_Open):
    role: str
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(_Open):
    include_usage: StrictBool | None = None
    continuous_usage_stats: StrictBool | None = None


class _Common(_Open):
    model: str | None = None
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    n: StrictInt | None = Field(default=1, ge=1)
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    seed: StrictInt | None = None


class ChatCompletionRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    logprobs: StrictBool | None = False
    top_logprobs: StrictInt | None = Field(default=None, ge=0)
    continue_final_message: StrictBool | None = False
    add_generation_prompt: StrictBool | None = True


class CompletionRequest(_Common):
    prompt: str | list[str] | list[StrictInt] | list[list[StrictInt]]
    logprobs: StrictInt | None = Field(default=None, ge=0)
    echo: StrictBool | None = False
