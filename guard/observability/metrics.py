"""Every Prometheus metric guard exports, in one place, on an injected registry.

Conventions: ``guard_`` prefix, ``_total`` counters, ``_seconds`` histograms, bounded label values
only (endpoint, outcome, action, reason, model *name of the risk model* — never per-request values).

Multi-worker: with ``PROMETHEUS_MULTIPROC_DIR`` set, prometheus_client writes per-process files
and ``/metrics`` aggregates them. Multiprocess mode has no Info metric, so the risk-model info is a
gauge with labels (``guard_risk_model_info``) set to 1, with ``multiprocess_mode="liveall"``.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Hitting probabilities are in [0, 1]; buckets dense near typical thresholds.
_H_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
_DEPTH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128, 256, 512, 1024)
_CHECK_BUCKETS = (1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 5e-3)
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
_ADDED_BUCKETS = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


@dataclass(frozen=True, slots=True)
class Metrics:
    registry: CollectorRegistry
    requests: Counter  # labels: endpoint, outcome
    active_streams: Gauge
    tokens_relayed: Counter
    tokens_checked: Counter
    halts: Counter  # labels: action, reason
    reroutes: Counter  # labels: action, outcome
    shadow_decisions: Counter  # labels: reason
    decision_risk: Histogram
    halt_depth: Histogram
    check_seconds: Histogram
    added_ttft_seconds: Histogram
    upstream_latency_seconds: Histogram  # time to upstream response headers
    upstream_errors: Counter  # labels: kind
    client_disconnects: Counter
    risk_model_info: Gauge  # labels: version, depth, threshold
    risk_model_loaded: Gauge
    risk_model_reloads: Counter  # labels: outcome
    risk_model_failures: Counter  # labels: mode (fail_open | fail_closed)
    scorer_calls: Counter  # labels: scorer, outcome
    scorer_latency_seconds: Histogram  # labels: scorer
    decision_log_dropped: Counter


def create_metrics(registry: CollectorRegistry | None = None) -> Metrics:
    """Create all metrics on ``registry`` (a fresh one when None: never the global default)."""
    reg = registry if registry is not None else CollectorRegistry(auto_describe=True)
    return Metrics(
        registry=reg,
        requests=Counter(
            "guard_requests_total",
            "Requests handled, by endpoint and outcome.",
            ["endpoint", "outcome"],
            registry=reg,
        ),
        active_streams=Gauge(
            "guard_active_streams",
            "Generations in flight through the guard.",
            registry=reg,
            multiprocess_mode="livesum",
        ),
        tokens_relayed=Counter(
            "guard_tokens_relayed_total", "Model tokens relayed to clients.", registry=reg
        ),
        tokens_checked=Counter(
            "guard_tokens_checked_total",
            "Model tokens whose hitting probability was looked up.",
            registry=reg,
        ),
        halts=Counter(
            "guard_halts_total",
            "Generations halted, by action taken and reason.",
            ["action", "reason"],
            registry=reg,
        ),
        reroutes=Counter(
            "guard_reroutes_total",
            "Reroute attempts (resample or alternate), by action and outcome.",
            ["action", "outcome"],
            registry=reg,
        ),
        shadow_decisions=Counter(
            "guard_shadow_decisions_total",
            "Decisions that would have halted, taken in shadow mode (stream unchanged).",
            ["reason"],
            registry=reg,
        ),
        decision_risk=Histogram(
            "guard_decision_risk",
            "Hitting probability of harm at each generation's final decision point.",
            buckets=_H_BUCKETS,
            registry=reg,
        ),
        halt_depth=Histogram(
            "guard_halt_depth_tokens",
            "Generated tokens into the response when a halt was decided.",
            buckets=_DEPTH_BUCKETS,
            registry=reg,
        ),
        check_seconds=Histogram(
            "guard_check_seconds",
            "CPU time of one risk check (state update + table lookup).",
            buckets=_CHECK_BUCKETS,
            registry=reg,
        ),
        added_ttft_seconds=Histogram(
            "guard_added_ttft_seconds",
            "Time the guard adds before the first content delta reaches the client.",
            buckets=_ADDED_BUCKETS,
            registry=reg,
        ),
        upstream_latency_seconds=Histogram(
            "guard_upstream_latency_seconds",
            "Time from sending a request upstream to its response headers.",
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        ),
        upstream_errors=Counter(
            "guard_upstream_errors_total",
            "Upstream failures, by kind (unreachable, timeout, status_4xx, status_5xx, protocol,"
            " error_event, early_close).",
            ["kind"],
            registry=reg,
        ),
        client_disconnects=Counter(
            "guard_client_disconnects_total",
            "Clients that went away before their response was complete.",
            registry=reg,
        ),
        risk_model_info=Gauge(
            "guard_risk_model_info",
            "The risk model in use (value 1), with its version, depth and threshold as labels.",
            ["version", "depth", "threshold"],
            registry=reg,
            multiprocess_mode="liveall",
        ),
        risk_model_loaded=Gauge(
            "guard_risk_model_loaded",
            "1 while a valid risk model is loaded.",
            registry=reg,
            multiprocess_mode="livemin",
        ),
        risk_model_reloads=Counter(
            "guard_risk_model_reloads_total",
            "Risk-model reloads, by outcome (ok, error).",
            ["outcome"],
            registry=reg,
        ),
        risk_model_failures=Counter(
            "guard_risk_model_failures_total",
            "Run-time risk-model failures, by the policy's failure mode.",
            ["mode"],
            registry=reg,
        ),
        scorer_calls=Counter(
            "guard_scorer_calls_total",
            "Calls to an external scorer (guard model), by scorer and outcome (ok, error,"
            " timeout, fallback).",
            ["scorer", "outcome"],
            registry=reg,
        ),
        scorer_latency_seconds=Histogram(
            "guard_scorer_latency_seconds",
            "Latency of external scorer calls.",
            ["scorer"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        ),
        decision_log_dropped=Counter(
            "guard_decision_log_dropped_total",
            "Decision-log records dropped because the writer queue was full.",
            registry=reg,
        ),
    )
