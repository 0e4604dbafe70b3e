"""promtool checks of deploy/prometheus (Debian: `apt-get install -y prometheus`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from .conftest import DEPLOY, require_tool

PROM = DEPLOY / "prometheus"
INSTALL = "apt-get install -y prometheus   (Debian/Ubuntu; provides promtool)"
REQUIRED_ALERTS = {
    "GuardHaltRateSpike",
    "GuardUpstreamErrors",
    "GuardOverheadOverBudget",
    "GuardRiskModelNotLoaded",
    "GuardAllReplicasDown",
}


def _run(*args: str, cwd: Path = PROM) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=120)


def test_promtool_check_rules() -> None:
    promtool = require_tool("promtool", INSTALL)
    r = _run(promtool, "check", "rules", "alerts.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_promtool_test_rules() -> None:
    promtool = require_tool("promtool", INSTALL)
    r = _run(promtool, "test", "rules", "alerts_test.yml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_required_alerts_present_and_tested_both_ways() -> None:
    rules = yaml.safe_load((PROM / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert alerts >= REQUIRED_ALERTS
    tests = yaml.safe_load((PROM / "alerts_test.yml").read_text())["tests"]
    fired, quiet = set(), set()
    for t in tests:
        for case in t.get("alert_rule_test", []):
            (fired if case["exp_alerts"] else quiet).add(case["alertname"])
    assert alerts <= fired, f"alerts never shown firing: {alerts - fired}"
    assert alerts <= quiet, f"alerts never shown quiet: {alerts - quiet}"


def test_promtool_catches_a_broken_rule(tmp_path: Path) -> None:
    """The check above can fail: a rule file with a PromQL error is rejected."""
    promtool = require_tool("promtool", INSTALL)
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n- name: x\n  rules:\n  - alert: X\n    expr: sum(rate(guard_x[5m])\n")
    r = _run(promtool, "check", "rules", str(bad), cwd=tmp_path)
    assert r.returncode != 0


def test_prometheus_config_checks(tmp_path: Path) -> None:
    promtool = require_tool("promtool", INSTALL)
    # The compose config points at /etc/prometheus/alerts.yml: check it with local paths.
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
    assert {j["job_name"] for j in cfg["scrape_configs"]} >= {"guard", "vllm"}
    shutil.copy(PROM / "alerts.yml", tmp_path / "alerts.yml")
    cfg["rule_files"] = [str(tmp_path / "alerts.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    r = _run(promtool, "check", "config", str(tmp_path / "prometheus.yml"), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_prometheusrule_matches_alerts() -> None:
    pr = yaml.safe_load((DEPLOY / "k8s/base/prometheusrule.yaml").read_text())
    alerts = yaml.safe_load((PROM / "alerts.yml").read_text())
    assert pr["spec"]["groups"] == alerts["groups"]
