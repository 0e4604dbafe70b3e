"""Static checks of the shipped Grafana dashboards (the live test runs their queries)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from .conftest import (
    DASHBOARDS,
    DEPLOY,
    KNOWN_VLLM_METRICS,
    METRIC_RE,
    ROOT,
    guard_metric_names,
    load_dashboard,
    panels,
    targets,
)


def test_dashboards_exist() -> None:
    names = {p.name for p in DASHBOARDS}
    assert "guard-overview.json" in names


def test_generated_files_up_to_date() -> None:
    r = subprocess.run(
        [sys.executable, str(DEPLOY / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
class TestDashboard:
    def test_valid_json_with_uid(self, path) -> None:
        dash = json.loads(path.read_text())
        assert dash["uid"] and dash["title"]
        assert isinstance(dash["panels"], list) and dash["panels"]

    def test_unique_panel_ids(self, path) -> None:
        ids = [p["id"] for p in panels(load_dashboard(path))]
        assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
        assert all(isinstance(i, int) for i in ids)

    def test_datasource_variable_used_everywhere(self, path) -> None:
        dash = load_dashboard(path)
        var = [v for v in dash["templating"]["list"] if v["name"] == "datasource"]
        assert var and var[0]["type"] == "datasource" and var[0]["query"] == "prometheus"
        for p in panels(dash):
            if p["type"] == "row":
                continue
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            for t in p["targets"]:
                assert t["datasource"]["uid"] == "${datasource}", p["title"]
        for v in dash["templating"]["list"]:
            if v["type"] == "query":
                assert v["datasource"]["uid"] == "${datasource}", v["name"]

    def test_units_set(self, path) -> None:
        for p in panels(load_dashboard(path)):
            if p["type"] == "row":
                continue
            unit = p["fieldConfig"]["defaults"].get("unit")
            assert unit, f"panel {p['title']!r} has no unit"

    def test_panels_have_targets_and_no_overlap(self, path) -> None:
        dash = load_dashboard(path)
        cells = set()
        for p in panels(dash):
            g = p["gridPos"]
            assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, f"panel {p['title']!r} overlaps another"
                    cells.add((x, y))
            if p["type"] != "row":
                assert p["targets"], p["title"]

    def test_every_metric_exists(self, path) -> None:
        known = guard_metric_names() | KNOWN_VLLM_METRICS
        dash = load_dashboard(path)
        exprs = [t["expr"] for _, t in targets(dash)]
        exprs += [v["definition"] for v in dash["templating"]["list"] if v["type"] == "query"]
        used = {m for e in exprs for m in METRIC_RE.findall(e)}
        unknown = used - known
        assert not unknown, f"metrics not exported by guard/vLLM: {sorted(unknown)}"


def test_overview_covers_every_guard_metric() -> None:
    dash = load_dashboard(DEPLOY / "grafana" / "dashboards" / "guard-overview.json")
    used = {m for _, t in targets(dash) for m in METRIC_RE.findall(t["expr"])}
    families = {n.removesuffix("_bucket").removesuffix("_total") for n in used}
    all_families = {
        n.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count").removesuffix("_total")
        for n in guard_metric_names()
    }
    missing = all_families - families
    assert not missing, f"guard metrics on no dashboard panel: {sorted(missing)}"


def test_vllm_metrics_beside() -> None:
    dash = load_dashboard(DEPLOY / "grafana" / "dashboards" / "guard-overview.json")
    used = {m for _, t in targets(dash) for m in METRIC_RE.findall(t["expr"])}
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:generation_tokens_total",
        "vllm:e2e_request_latency_seconds_bucket",
    ):
        assert name in used, name


def test_grafana_provisioning() -> None:
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert ds["apiVersion"] == 1
    assert [d["type"] for d in ds["datasources"]] == ["prometheus"]
    prov = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/guard.yaml").read_text())
    assert prov["providers"][0]["type"] == "file"
    assert prov["providers"][0]["options"]["path"].startswith("/var/lib/grafana/dashboards")
