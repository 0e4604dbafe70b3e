"""Reading a real vLLM's own Prometheus counters (end-to-end tests)."""

from __future__ import annotations

import time

import httpx


def generation_tokens(vllm_url: str) -> float:
    text = httpx.get(vllm_url + "/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("vllm:generation_tokens_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def settle(vllm_url: str) -> float:
    last = generation_tokens(vllm_url)
    for _ in range(50):
        time.sleep(0.3)
        cur = generation_tokens(vllm_url)
        if cur == last:
            return cur
        last = cur
    return last
