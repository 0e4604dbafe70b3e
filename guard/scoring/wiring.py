"""Building the guard-model scorer from settings, with its calls counted in Prometheus."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from guard.config import EncoderConfig, GuardModelConfig
from guard.observability.metrics import Metrics
from guard.scoring.batcher import MicroBatcher
from guard.scoring.embeddings import EmbeddingsClient
from guard.scoring.http import ClassifyClient, GenerativeScoringClient
from guard.scoring.verdicts import VerdictPolicy, VerdictSchedule, last_user_message
from guard.tracking.text import request_text


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


class RequestIntent:
    """The encoder service of one app: the request verdict of a risk model with a probe.

    ``submit(model, prompt)`` embeds the request text exactly as the probe was fitted on
    (``request_text`` with the model's own cut) through the micro-batcher, and returns the
    future P(harmful request) (None on fallback: timeout, error, overload), or None when the
    model has no probe. The probe is the model's at submit time, so a hot reload takes effect
    on the next request.
    """

    def __init__(self, cfg: EncoderConfig, metrics: Metrics) -> None:
        self.cfg = cfg
        self.client = EmbeddingsClient(
            cfg.url, model=cfg.model, timeout=cfg.timeout_s, name="encoder"
        )
        self.batcher = MicroBatcher(
            self._score,
            name="encoder",
            max_batch=cfg.max_batch,
            window_ms=cfg.window_ms,
            timeout_s=cfg.timeout_s,
            observer=_MetricsObserver(metrics),
        )
        self._probes: dict[str, Any] = {}

    async def _score(self, items: Sequence[str]) -> list[float]:
        # items are "<probe key>\x00<text>": one batch may mix models across a reload
        probes = [self._probes[i.split("\x00", 1)[0]] for i in items]
        vecs = await self.client.embed([i.split("\x00", 1)[1] for i in items])
        return [p.prob(v) for p, v in zip(probes, vecs, strict=True)]

    def submit(self, model: Any, prompt: Any) -> asyncio.Future[float | None] | None:
        probe = getattr(model, "probe", None)
        if probe is None:
            return None
        tab = model.tables
        text = request_text(prompt, tab.req_max_chars, tab.req_last_user)
        if not text.strip():
            return None
        key = str(id(probe))
        self._probes[key] = probe
        if len(self._probes) > 8:  # old models' probes, after many reloads
            self._probes = {key: probe}
        if self.client.model is None:
            self.client.model = probe.encoder.name
        self.client.max_tokens = probe.encoder.max_tokens
        return self.batcher.submit(f"{key}\x00{text}")

    async def check(self, model: Any) -> float | None:
        """The fingerprint check of ``model``'s probe against the served encoder (None: no
        probe). Raises ``RiskModelError`` on a mismatch, ``ScorerError`` when unreachable."""
        from guard.risk.probe import CANARY

        probe = getattr(model, "probe", None)
        if probe is None:
            return None
        if self.client.model is None:
            self.client.model = probe.encoder.name
        (vec,) = await self.client.embed([CANARY])
        cos: float = probe.encoder.check_fingerprint(vec, f"the encoder at {self.client.url}")
        return cos

    async def aclose(self) -> None:
        await self.batcher.aclose()
        await self.client.aclose()
