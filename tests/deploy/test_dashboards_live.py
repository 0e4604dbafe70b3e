"""Every dashboard query returns data from a real Prometheus scraping a real guard under load.

Starts: loadtests/fake_vllm.py (upstream), `<venv>/bin/guard serve` in front of it, and the
Debian `prometheus` binary (apt-get install -y prometheus) scraping both every second with the
shipped alert rules loaded. Drives a short bounded load (benign, harmful -> halts, upstream faults,
client disconnects, a completions policy that resamples), waits for scrapes, then runs every
dashboard panel's PromQL, every template-variable query and every alert expression through
Prometheus's HTTP API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from .conftest import (
    DASHBOARDS,
    DEPLOY,
    METRIC_RE,
    ROOT,
    ZERO_FALLBACK,
    load_dashboard,
    require_tool,
    substitute,
    targets,
)

pytestmark = pytest.mark.slow

# Metrics that only move when an optional feature is configured or exercised (external scorer,
# shadow mode, run-time risk-model failure, hot reload). Their panels carry a `or on() vector(0)`
# fallback; for every other metric the query must return data *without* the fallback.
FEATURE_GATED = {
    "guard_shadow_decisions_total",
    "guard_scorer_calls_total",
    "guard_scorer_latency_seconds_bucket",
    "guard_risk_model_failures_total",
    "guard_risk_model_reloads_total",
    "guard_reroutes_total",
}
N_BENIGN, N_HARMFUL, N_FAULT, N_DISCONNECT, N_COMPLETIONS = 30, 16, 6, 4, 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = getattr(proc, "log_path", None)
            out = log.read_text(errors="replace") if log else ""
            pytest.fail(
                f"{what} exited with {proc.returncode} before becoming ready:\n{out[-4000:]}"
            )
        try:
            r = httpx.get(url, timeout=1)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)
    pytest.fail(f"{what} not ready at {url} after {timeout}s ({last})")


@contextlib.contextmanager
def _process(args: list[str], log: Path, **kw: object) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as fh:
        proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, **kw)  # type: ignore[call-overload]
        proc.log_path = log  # type: ignore[attr-defined]
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def stack() -> Iterator[dict[str, str]]:
    prom_bin = require_tool("prometheus", "apt-get install -y prometheus   (Debian/Ubuntu)")
    guard_bin = Path(sys.executable).parent / "guard"
    if not guard_bin.exists():
        pytest.fail(f"{guard_bin} missing: install the project into the venv (pip install -e .)")
    # a pytest-style temp folder that is removed afterwards, whatever happens
    tmp_ctx = tempfile.TemporaryDirectory(prefix="guard-live-")
    tmp = Path(tmp_ctx.name)
    fake_port, guard_port, prom_port = _free_port(), _free_port(), _free_port()
    guard_cfg = tmp / "guard.yaml"
    guard_cfg.write_text(
        yaml.safe_dump(
            {
                # a threshold low enough that fake_vllm's canned harmful text always halts
                "policy": {"mode": "enforce", "action": "halt", "threshold": 0.3},
                # completions: resample before halting, so reroutes are exercised too
                "policies": [{"match": {"route": "completions"}, "policy": {"action": "resample"}}],
                "decision_log": {"path": str(tmp / "decisions.jsonl")},
            }
        )
    )
    prom_cfg = tmp / "prometheus.yml"
    prom_cfg.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(DEPLOY / "prometheus" / "alerts.yml")],
                "scrape_configs": [
                    {
                        "job_name": "guard",
                        "static_configs": [{"targets": [f"127.0.0.1:{guard_port}"]}],
                    },
                    {
                        "job_name": "vllm",
                        "static_configs": [{"targets": [f"127.0.0.1:{fake_port}"]}],
                    },
                ],
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARD_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with contextlib.ExitStack() as stack_:
        stack_.callback(tmp_ctx.cleanup)  # first in, so it runs last: after every process
        fake = stack_.enter_context(
            _process(
                [
                    sys.executable,
                    str(ROOT / "loadtests" / "fake_vllm.py"),
                    "--port",
                    str(fake_port),
                    "--tokens-per-second",
                    "400",
                ],
                tmp / "fake_vllm.log",
            )
        )
        _wait_http(f"http://127.0.0.1:{fake_port}/health", fake, "fake_vllm")
        guard = stack_.enter_context(
            _process(
                [
                    str(guard_bin),
                    "serve",
                    "--upstream",
                    f"http://127.0.0.1:{fake_port}",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(guard_port),
                    "--config",
                    str(guard_cfg),
                ],
                tmp / "guard.log",
                env=env,
                cwd=tmp,
            )
        )
        _wait_http(f"http://127.0.0.1:{guard_port}/health", guard, "guard serve")
        prom = stack_.enter_context(
            _process(
                [
                    prom_bin,
                    f"--config.file={prom_cfg}",
                    f"--storage.tsdb.path={tmp / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                    "--log.level=warn",
                ],
                tmp / "prometheus.log",
                cwd=tmp,
            )
        )
        _wait_http(f"http://127.0.0.1:{prom_port}/-/ready", prom, "prometheus")
        yield {
            "guard": f"http://127.0.0.1:{guard_port}",
            "fake": f"http://127.0.0.1:{fake_port}",
            "prom": f"http://127.0.0.1:{prom_port}",
            "tmp": str(tmp),
        }


async def _drive(base: str) -> dict[str, int]:
    stats = {"ok": 0, "halted": 0, "error": 0, "disconnected": 0}
    sem = asyncio.Semaphore(8)

    async def chat(client: httpx.AsyncClient, text: str, disconnect: bool = False) -> None:
        body = {
            "model": "tiny",
            "stream": True,
            "max_tokens": 48,
            "messages": [{"role": "user", "content": text}],
            "stream_options": {"include_usage": True},
        }
        async with sem, client.stream("POST", "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                await r.aread()
                stats["error"] += 1
                return
            data = b""
            async for chunk in r.aiter_bytes():
                data += chunk
                if disconnect and data.count(b"data:") >= 3:
                    stats["disconnected"] += 1
                    return  # leaving the context closes the connection mid-stream
            if b"content_filter" in data:
                stats["halted"] += 1
            elif b"[DONE]" in data:
                stats["ok"] += 1

    async def completion(client: httpx.AsyncClient, text: str) -> None:
        async with sem:
            r = await client.post(
                "/v1/completions",
                json={"model": "tiny", "prompt": text, "max_tokens": 32, "stream": False},
            )
            stats["ok" if r.status_code == 200 else "error"] += 1

    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        jobs = [chat(client, f"Where is my order #{i}?") for i in range(N_BENIGN)]
        jobs += [
            chat(client, f"Tell me something harmful about customer {i}") for i in range(N_HARMFUL)
        ]
        jobs += [chat(client, "fake:status500 please") for _ in range(N_FAULT // 2)]
        jobs += [chat(client, "fake:midstream-error please") for _ in range(N_FAULT // 2)]
        jobs += [
            chat(client, "Tell me a long story about shipping", disconnect=True)
            for _ in range(N_DISCONNECT)
        ]
        jobs += [
            completion(client, "Write something harmful about the customer")
            for _ in range(N_COMPLETIONS)
        ]
        await asyncio.gather(*jobs)
        with contextlib.suppress(httpx.HTTPError):
            await client.post("/admin/reload")  # exercises reloads when no admin key is set
    return stats


def _query(prom: str, expr: str) -> list[dict[str, object]]:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10)
    body = r.json()
    assert r.status_code == 200 and body.get("status") == "success", (
        f"query failed: {expr}\n{json.dumps(body)[:1000]}"
    )
    return body["data"]["result"]


@pytest.fixture(scope="module")
def loaded(stack: dict[str, str]) -> dict[str, str]:
    stats = asyncio.run(_drive(stack["guard"]))
    total = sum(stats.values())
    assert stats["halted"] >= 1, f"no halts from harmful requests: {stats}"
    assert stats["disconnected"] == N_DISCONNECT, stats
    # Wait until Prometheus has scraped the final counts, plus two more scrapes so rates exist.
    deadline = time.monotonic() + 30
    seen = 0.0
    while time.monotonic() < deadline:
        res = _query(stack["prom"], 'sum(guard_requests_total{job="guard"})')
        seen = float(res[0]["value"][1]) if res else 0.0
        if seen >= total - N_DISCONNECT:
            break
        time.sleep(0.5)
    assert seen >= total - N_DISCONNECT, f"guard_requests_total={seen}, sent {total}: {stats}"
    time.sleep(2.5)
    return stack


def _all_targets() -> list[tuple[str, str, str]]:
    out = []
    for path in DASHBOARDS:
        for panel, t in targets(load_dashboard(path)):
            out.append((path.name, f"{panel['title']} [{t['refId']}]", t["expr"]))
    return out


@pytest.mark.parametrize(
    "dash,title,expr", _all_targets(), ids=[f"{d}:{t}" for d, t, _ in _all_targets()]
)
def test_panel_query_returns_data(loaded: dict[str, str], dash: str, title: str, expr: str) -> None:
    q = substitute(expr)
    assert "$" not in q, f"unsubstituted template variable in {q}"
    assert _query(loaded["prom"], q), f"{dash} / {title}: no data for\n{q}"
    strict = q.replace(ZERO_FALLBACK, "")
    if not set(METRIC_RE.findall(strict)) & FEATURE_GATED:
        assert _query(loaded["prom"], strict), f"{dash} / {title}: only the fallback returned"


def test_template_variables_resolve(loaded: dict[str, str]) -> None:
    for path in DASHBOARDS:
        for v in load_dashboard(path)["templating"]["list"]:
            if v["type"] != "query":
                continue
            definition = v["definition"]
            assert definition.startswith("label_values(") and definition.endswith(")")
            inner = definition[len("label_values(") : -1]
            match, _, label = inner.rpartition(",")
            r = httpx.get(
                f"{loaded['prom']}/api/v1/label/{label.strip()}/values",
                params={"match[]": substitute(match.strip())},
                timeout=10,
            )
            assert r.status_code == 200, r.text
            values = r.json()["data"]
            assert values, f"variable {v['name']}: no values for {definition}"
            if v["name"] == "job":
                assert "guard" in values


def test_alert_expressions_parse_and_run(loaded: dict[str, str]) -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    for g in rules["groups"]:
        for rule in g["rules"]:
            _query(loaded["prom"], rule["expr"])  # asserts status success
    # Prometheus itself loaded the same rule file without errors.
    r = httpx.get(f"{loaded['prom']}/api/v1/rules", timeout=10).json()
    loaded_rules = {x["name"] for grp in r["data"]["groups"] for x in grp["rules"]}
    wanted = {x["alert"] for grp in rules["groups"] for x in grp["rules"] if "alert" in x}
    assert wanted <= loaded_rules
    health = {x["name"]: x["health"] for grp in r["data"]["groups"] for x in grp["rules"]}
    time.sleep(1.5)  # at least one evaluation (evaluation_interval 1s)
    r = httpx.get(f"{loaded['prom']}/api/v1/rules", timeout=10).json()
    health = {
        x["name"]: (x["health"], x.get("lastError", ""))
        for grp in r["data"]["groups"]
        for x in grp["rules"]
    }
    bad = {k: v for k, v in health.items() if v[0] == "err"}
    assert not bad, bad


def test_guard_and_vllm_targets_up(loaded: dict[str, str]) -> None:
    res = _query(loaded["prom"], "up")
    up = {r["metric"]["job"]: r["value"][1] for r in res}  # type: ignore[index]
    assert up.get("guard") == "1" and up.get("vllm") == "1", up
    # The quiet stack should not have GuardAllReplicasDown / GuardRiskModelNotLoaded firing.
    for alert in ("GuardAllReplicasDown", "GuardRiskModelNotLoaded"):
        groups = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())["groups"]
        rule = next(x for g in groups for x in g["rules"] if x.get("alert") == alert)
        assert _query(loaded["prom"], rule["expr"]) == [], alert
