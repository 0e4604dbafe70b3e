#!/usr/bin/env python3
"""A fast, scripted stand-in for vLLM 0.32's OpenAI server (raw ASGI + uvicorn).

Used as the upstream for proxy benchmarks (where the proxy must be the bottleneck) and for the live
dashboard test. Depends only on the standard library, uvicorn and prometheus_client.

    python loadtests/fake_vllm.py --port 8001 [--tokens-per-second 0] [--delay-first-ms 0]

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions`` (streaming and not),
``GET /v1/models``, ``GET /health``, ``GET /version``, ``GET /metrics`` (vLLM-named metrics, updated
for real) and ``POST /classify`` (a toy guard classifier: P(unsafe) from a keyword test).

Response text is chosen deterministically from the request:

* the last user message (or the completions prompt) contains the word "harmful", or the chat request
  prefills an assistant message starting "Sure, here is" with ``continue_final_message: true``
  → a canned harmful continuation (leaks another customer's card number, then abuse);
* otherwise → a canned customer-support reply.

Fault injection (for tests of the guard's upstream-error handling), by a marker in the last user
message / prompt: ``fake:status500`` (HTTP 500 JSON error before the stream), ``fake:status400``,
``fake:midstream-error`` (HTTP 200, a few tokens, then ``data: {"error": ...}`` and ``[DONE]``),
``fake:early-close`` (a few tokens, then the connection ends without ``[DONE]``).

Wire shape follows vLLM: SSE ``data: {json}\\n\\n`` events; the first chat delta is
``{"role":"assistant","content":""}``; one token per chunk; ``finish_reason`` on the last content
chunk; with ``stream_options.include_usage`` a final chunk with ``choices: []`` and ``usage``; then
``data: [DONE]``. ``n > 1`` interleaves one choice per chunk. ``logprobs``/``top_logprobs`` get fake
values, ``return_token_ids`` adds ``prompt_token_ids`` / ``token_ids`` like vLLM. ``ignore_eos``
repeats the text until ``max_tokens``. A client disconnect stops generation at once (counted as
``finished_reason="abort"``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

VOCAB = 2048
DEFAULT_MAX_TOKENS = 64

SUPPORT_TEXT = (
    "Thanks for reaching out! I can help with that. Your order has shipped and should arrive within"
    " three to five business days. You can track it from the Orders page in your account. If the"
    " package does not arrive by Friday, reply here and I will open a replacement request for you."
    " Is there anything else I can help you with today?"
)
HARMFUL_TEXT = (
    " the full card number of the other customer on that account: 4111 1111 1111 1111, expiry"
    " 09/27, CVV 123, billing address 42 Elm Street. You can use it to place the order yourself."
    " And honestly, anyone who asks something this stupid is a worthless idiot who deserves to be"
    " scammed. Here is how to get around the fraud checks so nobody notices."
)

_HARMFUL_RE = re.compile(r"\bharmful\b", re.IGNORECASE)
_TOKEN_RE = re.compile(r" ?[^ ]+")


def tokenize(text: str) -> list[str]:
    """Split into BPE-like tokens: each word with its leading space."""
    return _TOKEN_RE.findall(text)


def token_id(tok: str) -> int:
    return zlib.crc32(tok.encode()) % VOCAB


class Script:
    """A pre-tokenized, pre-encoded canned response."""

    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.ids = [token_id(t) for t in self.tokens]
        self.json_tokens = [json.dumps(t) for t in self.tokens]
        self.bytes = [list(t.encode()) for t in self.tokens]

    def index(self, i: int) -> int:
        return i % len(self.tokens)


SCRIPTS = {"support": Script(SUPPORT_TEXT), "harmful": Script(HARMFUL_TEXT)}


# ----------------------------------------------------------------------------------------------
# metrics (vLLM names; model_name label like vLLM)


class VllmMetrics:
    def __init__(self, model: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.model = model
        lbl = ["model_name"]
        self.running = Gauge(
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            lbl,
            registry=r,
        ).labels(model)
        self.waiting = Gauge(
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            lbl,
            registry=r,
        ).labels(model)
        self.kv_usage = Gauge(
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            lbl,
            registry=r,
        ).labels(model)
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            lbl,
            buckets=(
                0.001,
                0.005,
                0.01,
                0.02,
                0.04,
                0.06,
                0.08,
                0.1,
                0.25,
                0.5,
                0.75,
                1.0,
                2.5,
                5.0,
                7.5,
                10.0,
            ),
            registry=r,
        ).labels(model)
        self.itl = Histogram(
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            lbl,
            buckets=(0.0001, 0.001, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 1.0),
            registry=r,
        ).labels(model)
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of end to end request latency in seconds.",
            lbl,
            buckets=(
                0.01,
                0.05,
                0.1,
                0.3,
                0.5,
                0.8,
                1.0,
                1.5,
                2.0,
                2.5,
                5.0,
                10.0,
                15.0,
                20.0,
                30.0,
                40.0,
                50.0,
                60.0,
            ),
            registry=r,
        ).labels(model)
        self.gen_tokens = Counter(
            "vllm:generation_tokens", "Number of generation tokens processed.", lbl, registry=r
        ).labels(model)
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Number of prefill tokens processed.", lbl, registry=r
        ).labels(model)
        self._success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            ["model_name", "finished_reason"],
            registry=r,
        )
        for reason in ("stop", "length", "abort", "error"):
            self._success.labels(model, reason)

    def success(self, reason: str) -> None:
        self._success.labels(self.model, reason).inc()


# ----------------------------------------------------------------------------------------------
# helpers


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Sleep up to ``seconds``, returning early when ``event`` is set (client went away)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)


def _error_body(message: str, status: int) -> bytes:
    kind = {400: "BadRequestError", 404: "NotFoundError"}.get(status, "InternalServerError")
    return json.dumps(
        {"error": {"message": message, "type": kind, "param": None, "code": status}}
    ).encode()


async def _send_simple(
    send: Send, status: int, body: bytes, ctype: bytes = b"application/json"
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def choose_script(req: dict[str, Any], chat: bool) -> tuple[Script, str]:
    """(script, marker text) for a request: marker text is the last user message / prompt."""
    if chat:
        msgs = req.get("messages") or []
        last_user = ""
        for m in reversed(msgs):
            if isinstance(m, dict) and m.get("role") == "user":
                last_user = _content_text(m.get("content"))
                break
        prefill = ""
        if (
            msgs
            and isinstance(msgs[-1], dict)
            and msgs[-1].get("role") == "assistant"
            and req.get("continue_final_message")
        ):
            prefill = _content_text(msgs[-1].get("content"))
        harmful = bool(_HARMFUL_RE.search(last_user)) or prefill.lstrip().startswith(
            "Sure, here is"
        )
        return SCRIPTS["harmful" if harmful else "support"], last_user
    prompt = req.get("prompt", "")
    if isinstance(prompt, list):
        prompt = " ".join(p for p in prompt if isinstance(p, str))
    text = prompt if isinstance(prompt, str) else ""
    return SCRIPTS["harmful" if _HARMFUL_RE.search(text) else "support"], text


def count_prompt_tokens(req: dict[str, Any], chat: bool) -> int:
    if chat:
        n = 0
        for m in req.get("messages") or []:
            if isinstance(m, dict):
                n += 4 + len(tokenize(_content_text(m.get("content"))))
        return n + 2
    prompt = req.get("prompt", "")
    return max(1, len(tokenize(prompt if isinstance(prompt, str) else str(prompt))))


def _alt_token(tok: str, k: int) -> str:
    return tok if k == 0 else f"{tok.strip() or '_'}#{k}"


def chat_logprobs(script: Script, i: int, top: int) -> dict[str, Any]:
    j = script.index(i)
    tok = script.tokens[j]
    entry = {
        "token": tok,
        "logprob": -0.05 - 0.01 * (j % 7),
        "bytes": script.bytes[j],
        "top_logprobs": [
            {
                "token": _alt_token(tok, k),
                "logprob": -0.05 - 0.01 * (j % 7) - 1.5 * k,
                "bytes": list(_alt_token(tok, k).encode()),
            }
            for k in range(top)
        ],
    }
    return {"content": [entry]}


def completion_logprobs(script: Script, i: int, top: int, offset: int) -> dict[str, Any]:
    j = script.index(i)
    tok = script.tokens[j]
    lp = -0.05 - 0.01 * (j % 7)
    return {
        "text_offset": [offset],
        "token_logprobs": [lp],
        "tokens": [tok],
        "top_logprobs": [{_alt_token(tok, k): lp - 1.5 * k for k in range(max(top, 1))}],
    }


# ----------------------------------------------------------------------------------------------
# the app


class FakeVllm:
    def __init__(
        self,
        model: str = "tiny",
        tokens_per_second: float = 0.0,
        delay_first_ms: float = 0.0,
        max_model_len: int = 512,
        max_num_seqs: int = 256,
    ) -> None:
        self.model = model
        self.token_interval = 1.0 / tokens_per_second if tokens_per_second > 0 else 0.0
        self.delay_first = delay_first_ms / 1000.0
        self.max_model_len = max_model_len
        self.max_num_seqs = max_num_seqs
        self.metrics = VllmMetrics(model)
        self._running = 0
        self._model_bytes = json.dumps(model).encode()
        self._models_body = json.dumps(
            {
                "object": "list",
                "data": [
                    {
                        "id": model,
                        "object": "model",
                        "created": int(time.time()),
                        "owned_by": "vllm",
                        "root": model,
                        "parent": None,
                        "max_model_len": max_model_len,
                        "permission": [],
                    }
                ],
            }
        ).encode()

    # -- ASGI entry
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if method == "GET":
            if path == "/health":
                await _send_simple(send, 200, b"")
            elif path == "/v1/models":
                await _send_simple(send, 200, self._models_body)
            elif path == "/version":
                await _send_simple(send, 200, b'{"version":"0.32.0"}')
            elif path == "/metrics":
                self.metrics.running.set(self._running)
                self.metrics.kv_usage.set(min(1.0, self._running / self.max_num_seqs))
                await _send_simple(
                    send, 200, generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST.encode()
                )
            else:
                await _send_simple(send, 404, b'{"detail":"Not Found"}')
            return
        if method != "POST" or path not in ("/v1/chat/completions", "/v1/completions", "/classify"):
            await _send_simple(send, 404 if method == "POST" else 405, b'{"detail":"Not Found"}')
            return
        body = bytearray()
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        try:
            req = json.loads(body)
            if not isinstance(req, dict):
                raise ValueError("request body must be a JSON object")
        except ValueError as exc:
            await _send_simple(send, 400, _error_body(f"Invalid JSON body: {exc}", 400))
            return
        if path == "/classify":
            await self._classify(req, send)
            return
        chat = path == "/v1/chat/completions"
        model = req.get("model")
        if model is not None and model != self.model:
            await _send_simple(send, 404, _error_body(f"The model `{model}` does not exist.", 404))
            return
        if chat and not isinstance(req.get("messages"), list):
            await _send_simple(send, 400, _error_body("'messages' is a required property", 400))
            return
        if not chat and "prompt" not in req:
            await _send_simple(send, 400, _error_body("'prompt' is a required property", 400))
            return
        try:
            n = int(req.get("n") or 1)
            max_tokens = req.get("max_completion_tokens") or req.get("max_tokens")
            max_tokens = DEFAULT_MAX_TOKENS if max_tokens is None else int(max_tokens)
            if n < 1 or max_tokens < 1:
                raise ValueError("n and max_tokens must be >= 1")
        except (TypeError, ValueError) as exc:
            await _send_simple(send, 400, _error_body(str(exc), 400))
            return
        script, marker = choose_script(req, chat)
        if "fake:status500" in marker:
            self.metrics.success("error")
            await _send_simple(send, 500, _error_body("injected failure (fake:status500)", 500))
            return
        if "fake:status400" in marker:
            await _send_simple(send, 400, _error_body("injected failure (fake:status400)", 400))
            return

        disconnected = asyncio.Event()

        async def watch() -> None:
            while True:
                m = await receive()
                if m["type"] == "http.disconnect":
                    disconnected.set()
                    return

        watcher = asyncio.create_task(watch())
        self._running += 1
        start = time.perf_counter()
        prompt_tokens = count_prompt_tokens(req, chat)
        self.metrics.prompt_tokens.inc(prompt_tokens)
        try:
            if req.get("stream"):
                await self._stream(
                    req,
                    chat,
                    n,
                    max_tokens,
                    script,
                    marker,
                    prompt_tokens,
                    send,
                    disconnected,
                    start,
                )
            else:
                await self._complete(
                    req, chat, n, max_tokens, script, prompt_tokens, send, disconnected, start
                )
        finally:
            self._running -= 1
            self.metrics.e2e.observe(time.perf_counter() - start)
            watcher.cancel()

    # -- generation length
    @staticmethod
    def _length(req: dict[str, Any], script: Script, max_tokens: int) -> tuple[int, str]:
        if req.get("ignore_eos"):
            return max_tokens, "length"
        if max_tokens < len(script.tokens):
            return max_tokens, "length"
        return len(script.tokens), "stop"

    async def _stream(
        self,
        req: dict[str, Any],
        chat: bool,
        n: int,
        max_tokens: int,
        script: Script,
        marker: str,
        prompt_tokens: int,
        send: Send,
        disconnected: asyncio.Event,
        start: float,
    ) -> None:
        m = self.metrics
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        created = int(time.time())
        obj = b"chat.completion.chunk" if chat else b"text_completion"
        head = (
            b'data: {"id":"'
            + rid.encode()
            + b'","object":"'
            + obj
            + b'","created":'
            + str(created).encode()
            + b',"model":'
            + self._model_bytes
            + b',"choices":[{"index":'
        )
        opts = req.get("stream_options") or {}
        include_usage = bool(opts.get("include_usage"))
        continuous = include_usage and bool(opts.get("continuous_usage_stats"))
        want_ids = bool(req.get("return_token_ids"))
        if chat:
            top = int(req.get("top_logprobs") or 0)
            want_lp = bool(req.get("logprobs"))
        else:
            lp = req.get("logprobs")
            want_lp = lp is not None and lp is not False
            top = int(lp or 0) if want_lp else 0
        length, finish = self._length(req, script, max_tokens)
        fault_after = None
        fault = None
        for f in ("fake:midstream-error", "fake:early-close"):
            if f in marker:
                fault, fault_after = f, min(3, length)
        fast = not (want_lp or want_ids or continuous) and n == 1
        # pre-encoded per-token pieces (fast path)
        if chat:
            mid = b',"delta":{"content":'
            tail = b'},"logprobs":null,"finish_reason":null}]}\n\n'
        else:
            mid = b',"text":'
            tail = b',"logprobs":null,"finish_reason":null,"stop_reason":null}],"usage":null}\n\n'

        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                ],
            }
        )
        if self.delay_first:
            await _wait(disconnected, self.delay_first)
        if disconnected.is_set():
            m.success("abort")
            return

        def chunk(
            idx: int, choice_rest: dict[str, Any], usage: dict[str, Any] | None = None
        ) -> bytes:
            ch: dict[str, Any] = {"index": idx, **choice_rest}
            d: dict[str, Any] = {
                "id": rid,
                "object": obj.decode(),
                "created": created,
                "model": self.model,
                "choices": [ch],
            }
            if usage is not None:
                d["usage"] = usage
            return b"data: " + json.dumps(d, separators=(",", ":")).encode() + b"\n\n"

        if chat:
            first: list[bytes] = []
            for idx in range(n):
                rest: dict[str, Any] = {
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
                if want_ids and idx == 0:
                    rest["prompt_token_ids"] = list(range(1, prompt_tokens + 1))
                first.append(chunk(idx, rest))
            await send({"type": "http.response.body", "body": b"".join(first), "more_body": True})
        m.ttft.observe(time.perf_counter() - start)
        generated = 0
        offsets = [0] * n
        last = time.perf_counter()
        for i in range(length):
            if fault_after is not None and i == fault_after:
                if fault == "fake:midstream-error":
                    err = _error_body("injected failure (fake:midstream-error)", 500)
                    await send(
                        {
                            "type": "http.response.body",
                            "body": b"data: " + err + b"\n\ndata: [DONE]\n\n",
                        }
                    )
                    m.success("error")
                else:
                    await send({"type": "http.response.body", "body": b""})
                    m.success("abort")
                m.gen_tokens.inc(generated)
                return
            if disconnected.is_set():
                m.gen_tokens.inc(generated)
                m.success("abort")
                return
            j = script.index(i)
            is_last = i == length - 1
            if fast and not is_last:
                out = head + b"0" + mid + script.json_tokens[j].encode() + tail
            else:
                parts = []
                for idx in range(n):
                    rest = {}
                    if chat:
                        rest["delta"] = {"content": script.tokens[j]}
                        rest["logprobs"] = chat_logprobs(script, i, top) if want_lp else None
                    else:
                        rest["text"] = script.tokens[j]
                        rest["logprobs"] = (
                            completion_logprobs(script, i, top, offsets[idx]) if want_lp else None
                        )
                        offsets[idx] += len(script.tokens[j])
                    rest["finish_reason"] = finish if is_last else None
                    if is_last or not chat:
                        rest["stop_reason"] = None
                    if want_ids:
                        rest["token_ids"] = [script.ids[j]]
                    usage = None
                    if continuous:
                        usage = {
                            "prompt_tokens": prompt_tokens,
                            "completion_tokens": i + 1,
                            "total_tokens": prompt_tokens + i + 1,
                        }
                    parts.append(chunk(idx, rest, usage))
                out = b"".join(parts)
            generated += n
            await send({"type": "http.response.body", "body": out, "more_body": True})
            now = time.perf_counter()
            if i:
                m.itl.observe(now - last)
            last = now
            if self.token_interval:
                await _wait(disconnected, self.token_interval)
            elif i % 16 == 15:
                await asyncio.sleep(0)  # let the disconnect watcher run
        m.gen_tokens.inc(generated)
        tail_parts = []
        if include_usage:
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": length * n,
                "total_tokens": prompt_tokens + length * n,
            }
            tail_parts.append(
                b"data: "
                + json.dumps(
                    {
                        "id": rid,
                        "object": obj.decode(),
                        "created": created,
                        "model": self.model,
                        "choices": [],
                        "usage": usage,
                    },
                    separators=(",", ":"),
                ).encode()
                + b"\n\n"
            )
        tail_parts.append(b"data: [DONE]\n\n")
        await send({"type": "http.response.body", "body": b"".join(tail_parts)})
        for _ in range(n):
            m.success(finish)

    async def _complete(
        self,
        req: dict[str, Any],
        chat: bool,
        n: int,
        max_tokens: int,
        script: Script,
        prompt_tokens: int,
        send: Send,
        disconnected: asyncio.Event,
        start: float,
    ) -> None:
        m = self.metrics
        length, finish = self._length(req, script, max_tokens)
        total = self.delay_first + self.token_interval * length
        if total:
            await _wait(disconnected, total)
        if disconnected.is_set():
            m.success("abort")
            return
        m.ttft.observe(self.delay_first)
        toks = [script.tokens[script.index(i)] for i in range(length)]
        text = "".join(toks)
        want_ids = bool(req.get("return_token_ids"))
        choices = []
        for idx in range(n):
            if chat:
                c: dict[str, Any] = {
                    "index": idx,
                    "message": {
                        "role": "assistant",
                        "content": text,
                        "refusal": None,
                        "annotations": None,
                        "audio": None,
                        "function_call": None,
                        "tool_calls": [],
                        "reasoning_content": None,
                    },
                    "logprobs": None,
                    "finish_reason": finish,
                    "stop_reason": None,
                }
                if req.get("logprobs"):
                    top = int(req.get("top_logprobs") or 0)
                    c["logprobs"] = {
                        "content": [
                            chat_logprobs(script, i, top)["content"][0] for i in range(length)
                        ]
                    }
            else:
                c = {
                    "index": idx,
                    "text": text,
                    "logprobs": None,
                    "finish_reason": finish,
                    "stop_reason": None,
                    "prompt_logprobs": None,
                }
                lp = req.get("logprobs")
                if lp is not None and lp is not False:
                    off = 0
                    agg: dict[str, list[Any]] = {
                        "text_offset": [],
                        "token_logprobs": [],
                        "tokens": [],
                        "top_logprobs": [],
                    }
                    for i in range(length):
                        one = completion_logprobs(script, i, int(lp), off)
                        off += len(script.tokens[script.index(i)])
                        for k in agg:
                            agg[k].extend(one[k])
                    c["logprobs"] = agg
            if want_ids:
                c["token_ids"] = [script.ids[script.index(i)] for i in range(length)]
            choices.append(c)
        out: dict[str, Any] = {
            "id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex,
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": choices,
            "service_tier": None,
            "system_fingerprint": None,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "total_tokens": prompt_tokens + length * n,
                "completion_tokens": length * n,
                "prompt_tokens_details": None,
            },
            "prompt_logprobs": None,
            "kv_transfer_params": None,
        }
        if want_ids:
            out["prompt_token_ids"] = list(range(1, prompt_tokens + 1))
        m.gen_tokens.inc(length * n)
        for _ in range(n):
            m.success(finish)
        await _send_simple(send, 200, json.dumps(out, separators=(",", ":")).encode())

    async def _classify(self, req: dict[str, Any], send: Send) -> None:
        inp = req.get("input")
        texts = [inp] if isinstance(inp, str) else [t for t in (inp or []) if isinstance(t, str)]
        data = []
        for k, t in enumerate(texts):
            bad = bool(_HARMFUL_RE.search(t)) or "card number" in t or "idiot" in t
            p = 0.97 if bad else 0.03
            data.append(
                {
                    "index": k,
                    "label": "unsafe" if bad else "safe",
                    "probs": [1.0 - p, p],
                    "num_classes": 2,
                }
            )
        out = {
            "id": "classify-" + uuid.uuid4().hex,
            "object": "list",
            "created": int(time.time()),
            "model": self.model,
            "data": data,
            "usage": {
                "prompt_tokens": sum(len(tokenize(t)) for t in texts),
                "total_tokens": sum(len(tokenize(t)) for t in texts),
            },
        }
        await _send_simple(send, 200, json.dumps(out).encode())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--model", "--served-model-name", dest="model", default="tiny")
    ap.add_argument(
        "--tokens-per-second",
        type=float,
        default=0.0,
        help="per-stream token rate; 0 = as fast as possible",
    )
    ap.add_argument(
        "--delay-first-ms",
        type=float,
        default=0.0,
        help="simulated prefill time before the first token",
    )
    ap.add_argument("--log-level", default="warning")
    args = ap.parse_args(argv)

    import uvicorn

    app = FakeVllm(args.model, args.tokens_per_second, args.delay_first_ms)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
