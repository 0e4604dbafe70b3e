"""Building the guard-model scorer from settings, with its calls counted in Prometheus."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from guard.config import GuardModelConfig
from guard.observability.metrics import Metrics
from guard.scoring.batcher import MicroBatcher
from guard.scoring.http import ClassifyClient, GenerativeScoringClient
from guard.scoring.verdicts import VerdictPolicy, VerdictSchedule, last_user_message


class _MetricsObserver:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def on_call(self, scorer: str, outcome: str, latency_s: float, size: int) -> None:
        self.metrics.scorer_calls.labels(scorer, outcome).inc()
        self.metrics.scorer_latency_seconds.labels(scorer).observe(latency_s)

    def on_drop(self, scorer: str, reason: str) -> None:
        self.metrics.scorer_calls.labels(scorer, "fallback").inc()


@dataclass(frozen=True, slots=True)
class GuardModel:
    """The guard-model service of one app: the batcher, the verdict policy, the client."""

    batcher: MicroBatcher
    policy: VerdictPolicy
    client: ClassifyClient | GenerativeScoringClient
    hold_until_verdict: int

    def schedule(self, prompt: Any, prefill: str) -> VerdictSchedule:
        """A choice's verdict schedule (asks are made by the batcher)."""
        text = prompt if isinstance(prompt, str) else last_user_message(prompt)
        return VerdictSchedule(self.policy, text, prefill)

    async def aclose(self) -> None:
        await self.batcher.aclose()
        await self.client.aclose()


def build_guard_model(cfg: GuardModelConfig, metrics: Metrics) -> GuardModel:
    client: ClassifyClient | GenerativeScoringClient
    if cfg.kind == "classify":
        client = ClassifyClient(
            cfg.url, model=cfg.model, unsafe_index=cfg.unsafe_index, timeout=cfg.timeout_s
        )
    else:
        assert cfg.unsafe_token_id is not None
        client = GenerativeScoringClient(
            cfg.url,
            unsafe_token_id=cfg.unsafe_token_id,
            safe_token_id=cfg.safe_token_id,
            model=cfg.model,
            query=cfg.query,
            item_template=cfg.item_template,
            timeout=cfg.timeout_s,
        )
    batcher = MicroBatcher(
        client.score,
        name=cfg.kind,
        max_batch=cfg.max_batch,
        window_ms=cfg.window_ms,
        timeout_s=cfg.timeout_s,
        observer=_MetricsObserver(metrics),
    )
    policy = VerdictPolicy(
        every_k_tokens=cfg.every_k_tokens,
        first_at_tokens=cfg.first_at_tokens,
        at_sentence_end=cfg.at_sentence_end,
        score_request=False,
    )
    return GuardModel(batcher, policy, client, cfg.hold_until_verdict)
