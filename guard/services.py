"""What one app's request handlers share: built by ``create_app``, passed explicitly."""

from __future__ import annotations

from dataclasses import dataclass

from guard.config import Settings
from guard.models import ModelHolder
from guard.observability.decision_log import DecisionLog
from guard.observability.metrics import Metrics
from guard.observability.tracing import Tracer
from guard.request.auth import Auth
from guard.scoring.wiring import GuardModel
from guard.upstream.client import Upstream


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
    active: int = 0  # generations in flight
    draining: bool = False  # shutting down: new generations get 503
