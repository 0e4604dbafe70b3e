"""Shared helpers for the deploy tests."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))

# vLLM metrics the dashboards may use (names as vLLM 0.32 exports them).
KNOWN_VLLM_METRICS = {
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:time_to_first_token_seconds_bucket",
    "vllm:time_to_first_token_seconds_sum",
    "vllm:time_to_first_token_seconds_count",
    "vllm:e2e_request_latency_seconds_bucket",
    "vllm:e2e_request_latency_seconds_sum",
    "vllm:e2e_request_latency_seconds_count",
    "vllm:inter_token_latency_seconds_bucket",
    "vllm:inter_token_latency_seconds_sum",
    "vllm:inter_token_latency_seconds_count",
    "vllm:generation_tokens_total",
    "vllm:prompt_tokens_total",
    "vllm:request_success_total",
}

METRIC_RE = re.compile(r"\b(guard_[a-zA-Z0-9_]+|vllm:[a-zA-Z0-9_:]+)")
ZERO_FALLBACK = " or on() vector(0)"


def require_tool(name: str, install: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not installed; install it with: {install}")
    return path


def load_dashboard(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def targets(dash: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(p, t) for p in panels(dash) if p.get("type") != "row" for t in p.get("targets", [])]


def guard_metric_names() -> set[str]:
    """Every sample name the guard can export, from create_metrics()."""
    from prometheus_client import CollectorRegistry

    from guard.observability.metrics import create_metrics

    m = create_metrics(CollectorRegistry())
    names: set[str] = set()
    for fam in m.registry.collect():
        if fam.type == "counter":
            names |= {fam.name + "_total"}
        elif fam.type == "histogram":
            names |= {fam.name + s for s in ("_bucket", "_sum", "_count")}
        else:
            names.add(fam.name)
    return names


def substitute(expr: str, rate_interval: str = "30s") -> str:
    """Template variables as Grafana would expand them for a live check."""
    return (
        expr.replace("$__rate_interval", rate_interval)
        .replace("$__interval", rate_interval)
        .replace("$__range", "5m")
        .replace('"$job"', '"guard"')
        .replace('"$instance"', '".*"')
        .replace('"$model_name"', '".*"')
    )
