from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from guard.app import create_app
from guard.config import load_settings
from guard.observability.metrics import create_metrics
from tests.support.scripted import KeywordRiskModel, Script, ScriptedUpstream


class Harness:
    def __init__(
        self,
        handler: Callable[[str, dict[str, Any]], Script],
        model: Any = None,
        env: dict[str, str] | None = None,
        config: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.upstream = ScriptedUpstream(handler)
        base = {"GUARD_UPSTREAM": "http://upstream.test"}
        base.update(env or {})
        self.settings = load_settings(config, env=base)
        self.metrics = create_metrics()
        self.app = create_app(
            self.settings,
            risk_model=model if model is not None else KeywordRiskModel(),
            transport=self.upstream.transport(),
            metrics=self.metrics,
            reload_poll_seconds=0,
            **kwargs,
        )
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://guard.test"
        )

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        v = self.metrics.registry.get_sample_value(name, labels or {})
        return 0.0 if v is None else v


@pytest.fixture
def harness() -> Callable[..., Harness]:
    return Harness
