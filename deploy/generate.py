#!/usr/bin/env python3
"""Generate the deploy artefacts that are derived from one source, so they cannot drift.

    python deploy/generate.py          # (re)write the files
    python deploy/generate.py --check  # exit 1 if any file is out of date (run by tests/deploy)

Writes:
  deploy/grafana/dashboards/guard-overview.json   the Grafana dashboard (built below)
  deploy/k8s/base/dashboards/guard-overview.json  copy for the k8s dashboards ConfigMap
  deploy/k8s/base/prometheusrule.yaml             PrometheusRule wrapping
                                                  deploy/prometheus/alerts.yml

(kustomize cannot read files outside a kustomization's directory, hence the copies.)
Standard library + PyYAML only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parent

DS = {"type": "prometheus", "uid": "${datasource}"}
# Selectors for the template variables.
G = 'job="$job", instance=~"$instance"'
V = 'model_name=~"$model_name"'
RI = "$__rate_interval"

# Panels on metrics that only move when an optional feature is configured (reroute actions, shadow
# mode, an external scorer, hot reloads). Their queries end with this fallback so that the panel
# shows 0 instead of "No data" when the feature is off; tests/deploy checks the queries without it.
ZERO = " or on() vector(0)"


class Builder:
    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.next_id = 1
        self.y = 0
        self.x = 0
        self.row_h = 0

    def _pos(self, w: int, h: int) -> dict[str, int]:
        if self.x + w > 24:
            self.x = 0
            self.y += self.row_h
            self.row_h = 0
        pos = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def row(self, title: str) -> None:
        if self.x:
            self.x = 0
            self.y += self.row_h
            self.row_h = 0
        self.panels.append(
            {
                "id": self.next_id,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1},
                "panels": [],
            }
        )
        self.next_id += 1
        self.y += 1

    def panel(
        self,
        title: str,
        targets: list[tuple[str, str]],
        unit: str,
        *,
        kind: str = "timeseries",
        w: int = 12,
        h: int = 8,
        description: str = "",
        fmt: str = "time_series",
        extra_defaults: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        refs = "ABCDEFGH"
        defaults: dict[str, Any] = {"unit": unit}
        if extra_defaults:
            defaults.update(extra_defaults)
        p: dict[str, Any] = {
            "id": self.next_id,
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": self._pos(w, h),
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": options or {},
            "targets": [
                {
                    "refId": refs[i],
                    "datasource": DS,
                    "expr": expr,
                    "legendFormat": legend,
                    "format": fmt,
                    "range": True,
                    "instant": False,
                }
                for i, (expr, legend) in enumerate(targets)
            ],
        }
        self.next_id += 1
        self.panels.append(p)


def q(expr: str) -> str:
    return " ".join(expr.split())


def hq(quantile: str, metric: str, sel: str, by: str = "le") -> str:
    return q(
        f"histogram_quantile({quantile}, sum by ({by}) (rate({metric}_bucket{{{sel}}}[{RI}])))"
    )


STAT_OPTS: dict[str, Any] = {
    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
    "colorMode": "value",
    "graphMode": "area",
    "textMode": "auto",
}


def _traffic(b: Builder) -> None:
    """The "Traffic" row."""
    b.row("Traffic")
    b.panel(
        "Requests / s",
        [(f"sum(rate(guard_requests_total{{{G}}}[{RI}]))", "requests/s")],
        "reqps",
        kind="stat",
        w=6,
        h=4,
        options=STAT_OPTS,
        description="All requests handled by the selected guard replicas.",
    )
    b.panel(
        "Active streams",
        [(f"sum(guard_active_streams{{{G}}})", "active")],
        "short",
        kind="stat",
        w=6,
        h=4,
        options=STAT_OPTS,
        description="Generations in flight through guard (the HPA scales on this per pod).",
    )
    b.panel(
        "Halt rate",
        [
            (
                q(f"""sum(rate(guard_halts_total{{{G}}}[{RI}]))
                               / sum(rate(guard_requests_total{{{G}}}[{RI}]))"""),
                "halt rate",
            )
        ],
        "percentunit",
        kind="stat",
        w=6,
        h=4,
        options=STAT_OPTS,
        extra_defaults={
            "thresholds": {
                "mode": "absolute",
                "steps": [
                    {"color": "green", "value": None},
                    {"color": "orange", "value": 0.05},
                    {"color": "red", "value": 0.2},
                ],
            }
        },
        description="Share of requests halted (alert GuardHaltRateSpike above 20%).",
    )
    b.panel(
        "Risk model loaded (min over replicas)",
        [(f"min(guard_risk_model_loaded{{{G}}})", "loaded")],
        "none",
        kind="stat",
        w=6,
        h=4,
        options=STAT_OPTS,
        extra_defaults={
            "mappings": [
                {
                    "type": "value",
                    "options": {
                        "0": {"text": "NOT LOADED", "color": "red"},
                        "1": {"text": "loaded", "color": "green"},
                    },
                }
            ]
        },
        description="0 on any replica means it runs its failure mode (fail_open/fail_closed).",
    )
    b.panel(
        "Requests by endpoint and outcome",
        [
            (
                f"sum by (endpoint, outcome) (rate(guard_requests_total{{{G}}}[{RI}]))",
                "{{endpoint}} {{outcome}}",
            )
        ],
        "reqps",
    )
    b.panel(
        "Active streams per replica",
        [(f"sum by (instance) (guard_active_streams{{{G}}})", "{{instance}}")],
        "short",
    )
    b.panel(
        "Tokens relayed and checked / s",
        [
            (f"sum(rate(guard_tokens_relayed_total{{{G}}}[{RI}]))", "relayed"),
            (f"sum(rate(guard_tokens_checked_total{{{G}}}[{RI}]))", "checked"),
            (f"sum(rate(vllm:generation_tokens_total{{{V}}}[{RI}]))", "vLLM generated"),
        ],
        "suffix: tok/s",
        w=24,
        description="Checked < relayed once streams pass the alignment depth D (checks thin out"
        " after D). vLLM generated > relayed when halts abort generations.",
    )


def _halts(b: Builder) -> None:
    """The "Halts and reroutes" row."""
    b.row("Halts and reroutes")
    b.panel(
        "Halts by action and reason",
        [
            (
                f"sum by (action, reason) (rate(guard_halts_total{{{G}}}[{RI}]))",
                "{{action}} / {{reason}}",
            )
        ],
        "ops",
    )
    b.panel(
        "Halt rate and shadow-decision rate",
        [
            (
                q(f"""sum(rate(guard_halts_total{{{G}}}[{RI}]))
                  / sum(rate(guard_requests_total{{{G}}}[{RI}]))"""),
                "halted",
            ),
            (
                q(f"""(sum(rate(guard_shadow_decisions_total{{{G}}}[{RI}]))
                   / sum(rate(guard_requests_total{{{G}}}[{RI}])))""")
                + ZERO,
                "would halt (shadow)",
            ),
        ],
        "percentunit",
        description="Shadow decisions only move in shadow mode (stream unchanged).",
    )
    b.panel(
        "Reroutes by action and outcome",
        [
            (
                f"sum by (action, outcome) (rate(guard_reroutes_total{{{G}}}[{RI}]))" + ZERO,
                "{{action}} {{outcome}}",
            )
        ],
        "ops",
        description="Resample / alternate-upstream reroutes; 0 when no reroute action is set.",
    )
    b.panel(
        "Shadow decisions by reason",
        [
            (
                f"sum by (reason) (rate(guard_shadow_decisions_total{{{G}}}[{RI}]))" + ZERO,
                "{{reason}}",
            )
        ],
        "ops",
    )
    b.panel(
        "Halt depth distribution (tokens into the response)",
        [(f"sum by (le) (increase(guard_halt_depth_tokens_bucket{{{G}}}[{RI}]))", "{{le}}")],
        "short",
        kind="heatmap",
        fmt="heatmap",
        options={
            "calculate": False,
            "yAxis": {"unit": "short"},
            "cellGap": 1,
            "color": {"scheme": "Oranges", "mode": "scheme"},
        },
        description="Where halts happen. Most should fall inside the alignment depth D.",
    )
    b.panel(
        "Halt depth p50 / p90",
        [
            (hq("0.5", "guard_halt_depth_tokens", G), "p50"),
            (hq("0.9", "guard_halt_depth_tokens", G), "p90"),
        ],
        "short",
    )


def _risk(b: Builder) -> None:
    """The "Risk" row."""
    b.row("Risk")
    b.panel(
        "Risk distribution (hitting probability at the final decision)",
        [(f"sum by (le) (increase(guard_decision_risk_bucket{{{G}}}[{RI}]))", "{{le}}")],
        "percentunit",
        kind="heatmap",
        fmt="heatmap",
        options={
            "calculate": False,
            "yAxis": {"unit": "percentunit"},
            "cellGap": 1,
            "color": {"scheme": "Blues", "mode": "scheme"},
        },
    )
    b.panel(
        "Risk p50 / p90 / p99",
        [
            (hq("0.5", "guard_decision_risk", G), "p50"),
            (hq("0.9", "guard_decision_risk", G), "p90"),
            (hq("0.99", "guard_decision_risk", G), "p99"),
        ],
        "percentunit",
        extra_defaults={"min": 0, "max": 1},
    )


def _overhead(b: Builder) -> None:
    """The "Guard overhead" row."""
    b.row("Guard overhead")
    b.panel(
        "Risk check cost p50 / p99",
        [
            (hq("0.5", "guard_check_seconds", G), "p50"),
            (hq("0.99", "guard_check_seconds", G), "p99"),
        ],
        "s",
        description="CPU time of one per-token check (state update + table lookup).",
    )
    b.panel(
        "Added time-to-first-token p50 / p99",
        [
            (hq("0.5", "guard_added_ttft_seconds", G), "p50"),
            (hq("0.99", "guard_added_ttft_seconds", G), "p99"),
        ],
        "s",
        description="What guard adds before the first content delta; alert above 10 ms p99.",
    )


def _upstream(b: Builder) -> None:
    """The "Upstream (vLLM as seen by guard)" row."""
    b.row("Upstream (vLLM as seen by guard)")
    b.panel(
        "Upstream latency to response headers p50 / p99",
        [
            (hq("0.5", "guard_upstream_latency_seconds", G), "p50"),
            (hq("0.99", "guard_upstream_latency_seconds", G), "p99"),
        ],
        "s",
    )
    b.panel(
        "Upstream errors by kind",
        [(f"sum by (kind) (rate(guard_upstream_errors_total{{{G}}}[{RI}]))", "{{kind}}")],
        "ops",
        extra_defaults={"noValue": "0"},
    )
    b.panel(
        "Client disconnects / s",
        [(f"sum(rate(guard_client_disconnects_total{{{G}}}[{RI}]))", "disconnects")],
        "ops",
    )
    b.panel(
        "Decision-log records dropped / s",
        [(f"sum(rate(guard_decision_log_dropped_total{{{G}}}[{RI}]))", "dropped")],
        "ops",
        description="Non-zero: the decision-log writer cannot keep up (disk or queue size).",
    )


def _models(b: Builder) -> None:
    """The "Risk model and scorers" row."""
    b.row("Risk model and scorers")
    b.panel(
        "Risk model in use",
        [
            (
                # == 1: the model in use (a replaced one stays at 0 in multiprocess mode)
                f"max by (version, depth, threshold) (guard_risk_model_info{{{G}}} == 1)",
                "{{version}} D={{depth}} τ={{threshold}}",
            )
        ],
        "none",
        kind="table",
        w=8,
        fmt="table",
        options={"showHeader": True},
    )
    b.panel(
        "Risk model loaded per replica",
        [(f"max by (instance) (guard_risk_model_loaded{{{G}}})", "{{instance}}")],
        "none",
        w=8,
        extra_defaults={"min": 0, "max": 1},
    )
    b.panel(
        "Risk model reloads and failures",
        [
            (
                f"sum by (outcome) (rate(guard_risk_model_reloads_total{{{G}}}[{RI}]))" + ZERO,
                "reload {{outcome}}",
            ),
            (
                f"sum by (mode) (rate(guard_risk_model_failures_total{{{G}}}[{RI}]))" + ZERO,
                "failure {{mode}}",
            ),
        ],
        "ops",
        w=8,
    )
    b.panel(
        "Guard-model scorer calls by outcome",
        [
            (
                f"sum by (scorer, outcome) (rate(guard_scorer_calls_total{{{G}}}[{RI}]))" + ZERO,
                "{{scorer}} {{outcome}}",
            )
        ],
        "ops",
        description="External scorer (a guard classifier served by vLLM); 0 when not used.",
    )
    b.panel(
        "Guard-model scorer latency p50 / p99",
        [
            (hq("0.5", "guard_scorer_latency_seconds", G, "le, scorer") + ZERO, "{{scorer}} p50"),
            (hq("0.99", "guard_scorer_latency_seconds", G, "le, scorer") + ZERO, "{{scorer}} p99"),
        ],
        "s",
    )


def _vllm(b: Builder) -> None:
    """The "vLLM" row."""
    b.row("vLLM")
    b.panel(
        "vLLM requests running / waiting",
        [
            (f"sum(vllm:num_requests_running{{{V}}})", "running"),
            (f"sum(vllm:num_requests_waiting{{{V}}})", "waiting"),
        ],
        "short",
    )
    b.panel(
        "vLLM time to first token p50 / p99",
        [
            (hq("0.5", "vllm:time_to_first_token_seconds", V), "p50"),
            (hq("0.99", "vllm:time_to_first_token_seconds", V), "p99"),
        ],
        "s",
    )
    b.panel(
        "vLLM generation tokens / s",
        [(f"sum(rate(vllm:generation_tokens_total{{{V}}}[{RI}]))", "generated")],
        "suffix: tok/s",
    )
    b.panel(
        "vLLM end-to-end request latency p50 / p99",
        [
            (hq("0.5", "vllm:e2e_request_latency_seconds", V), "p50"),
            (hq("0.99", "vllm:e2e_request_latency_seconds", V), "p99"),
        ],
        "s",
    )
    b.panel(
        "vLLM finished requests by reason",
        [
            (
                f"sum by (finished_reason) (rate(vllm:request_success_total{{{V}}}[{RI}]))",
                "{{finished_reason}}",
            )
        ],
        "reqps",
        w=24,
    )


def overview() -> dict[str, Any]:
    b = Builder()
    _traffic(b)
    _halts(b)
    _risk(b)
    _overhead(b)
    _upstream(b)
    _models(b)
    _vllm(b)
    return {
        "uid": "guard-overview",
        "title": "guard — overview",
        "description": "guard safety proxy: traffic, halts, risk, overhead, upstream, risk model,"
        " with vLLM's own metrics beside.",
        "tags": ["guard", "vllm", "safety"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                    "regex": "",
                },
                {
                    "name": "job",
                    "label": "guard job",
                    "type": "query",
                    "datasource": DS,
                    "query": {"query": "label_values(guard_active_streams, job)", "refId": "job"},
                    "definition": "label_values(guard_active_streams, job)",
                    "current": {"text": "guard", "value": "guard"},
                    "refresh": 2,
                    "hide": 0,
                    "includeAll": False,
                    "multi": False,
                    "sort": 1,
                },
                {
                    "name": "instance",
                    "label": "guard replica",
                    "type": "query",
                    "datasource": DS,
                    "query": {
                        "query": 'label_values(guard_active_streams{job="$job"}, instance)',
                        "refId": "instance",
                    },
                    "definition": 'label_values(guard_active_streams{job="$job"}, instance)',
                    "current": {"text": "All", "value": "$__all"},
                    "refresh": 2,
                    "hide": 0,
                    "includeAll": True,
                    "allValue": ".*",
                    "multi": True,
                    "sort": 1,
                },
                {
                    "name": "model_name",
                    "label": "vLLM model",
                    "type": "query",
                    "datasource": DS,
                    "query": {
                        "query": "label_values(vllm:num_requests_running, model_name)",
                        "refId": "model_name",
                    },
                    "definition": "label_values(vllm:num_requests_running, model_name)",
                    "current": {"text": "All", "value": "$__all"},
                    "refresh": 2,
                    "hide": 0,
                    "includeAll": True,
                    "allValue": ".*",
                    "multi": True,
                    "sort": 1,
                },
            ]
        },
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                },
            ]
        },
        "panels": b.panels,
    }


class _Dumper(yaml.SafeDumper):
    pass


def _str_repr(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_repr)


def prometheus_rule() -> str:
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "guard",
            "labels": {
                "app.kubernetes.io/name": "guard",
                "app.kubernetes.io/part-of": "guard",
                "release": "prometheus",
            },
        },
        "spec": {"groups": alerts["groups"]},
    }
    head = (
        "# GENERATED by deploy/generate.py from deploy/prometheus/alerts.yml - edit that file,"
        " then run `python deploy/generate.py`.\n"
    )
    return head + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)


def outputs() -> dict[Path, str]:
    dash = json.dumps(overview(), indent=2, ensure_ascii=False) + "\n"
    return {
        DEPLOY / "grafana" / "dashboards" / "guard-overview.json": dash,
        DEPLOY / "k8s" / "base" / "dashboards" / "guard-overview.json": dash,
        DEPLOY / "k8s" / "base" / "prometheusrule.yaml": prometheus_rule(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if any output is out of date")
    args = ap.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(str(path.relative_to(DEPLOY.parent)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(DEPLOY.parent)}")
    if stale:
        print("out of date (run `python deploy/generate.py`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
