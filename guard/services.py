"""What one app's request handlers share: built by ``create_app``, passed explicitly."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from guard.config import Settings
from guard.decision.policy import RiskModelLike
from guard.models import ModelHolder
from guard.observability.decision_log import DecisionLog
from guard.observability.metrics import Metrics, create_metrics
from guard.observability.tracing import Tracer, create_tracer
from guard.request.auth import Auth
from guard.scoring.wiring import GuardModel, RequestIntent
from guard.upstream.client import Upstream, create_clients


@dataclass(slots=True)
class Services:
    settings: Settings
    upstream: Upstream
    metrics: Metrics
    models: ModelHolder
    auth: Auth
    decision_log: DecisionLog | None
    tracer: Tracer | None = None
    guard_model: GuardModel | None = None
    #: the sentence encoder (request verdicts of a risk model with a probe)
    encoder: RequestIntent | None = None
    active: int = 0  # generations in flight
    #: admission slots taken (``guard.generation.admission``): a generation request takes one
    #: at the ASGI edge, before any await, and gives it back when its response has ended
    admitted: int = 0
    draining: bool = False  # shutting down: new generations get 503


def build_services(
    settings: Settings,
    risk_model: RiskModelLike | None,
    transport: httpx.AsyncBaseTransport | None,
    metrics: Metrics | None,
    decision_log: DecisionLog | None,
    config_path: str | None,
    config_overrides: Mapping[tuple[str, ...], Any] | None,
    span_exporter: Any,
) -> Services:
    """The app's dependencies: given ones are used, the others built from the settings."""
    metrics = metrics if metrics is not None else create_metrics()
    models = ModelHolder(settings, metrics, risk_model, config_path, config_overrides)
    if decision_log is None and settings.decision_log.path:
        dl = settings.decision_log
        decision_log = DecisionLog(
            dl.path,  # type: ignore[arg-type]
            max_bytes=dl.max_bytes,
            backups=dl.backups,
            retention_days=dl.retention_days,
            queue_size=dl.queue_size,
            on_drop=metrics.decision_log_dropped.inc,
        )
    clients = create_clients(settings, transport)
    key = settings.upstream_api_key.get_secret_value() if settings.upstream_api_key else None
    tracer = None
    if settings.tracing.enabled:
        tracer = create_tracer(
            settings.tracing.endpoint, settings.tracing.service_name, span_exporter
        )
    guard_model = None
    if settings.guard_model is not None:
        from guard.scoring.wiring import build_guard_model

        guard_model = build_guard_model(settings.guard_model, metrics)
    encoder = RequestIntent(settings.encoder, metrics) if settings.encoder is not None else None
    svc = Services(
        settings,
        Upstream(clients, settings.upstream, key),
        metrics,
        models,
        Auth(settings),
        decision_log,
        tracer,
        guard_model,
        encoder,
    )

    def _swap_keys(fresh: Settings) -> None:
        # Keys (client and admin) rotate with a reload, like policies: no restart.
        svc.auth = Auth(fresh, previous=svc.auth)

    models.on_reload.append(_swap_keys)
    return svc
