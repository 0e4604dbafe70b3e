"""Kubernetes manifests: render the kustomizations with the real kustomize (`kubectl kustomize`,
the same tool `kubectl apply -k` deploys with), validate core objects with kubernetes-validate
(pip install kubernetes-validate) and Prometheus Operator objects with the JSON schemas in
deploy/k8s/schemas."""

from __future__ import annotations

import functools
import json
import subprocess
from typing import Any

import jsonschema
import pytest
import yaml

from .conftest import DEPLOY, require_tool

K8S = DEPLOY / "k8s"
OVERLAYS = ["base", "overlays/dev", "overlays/prod"]
K8S_VERSION = "1.30.0"  # oldest version we claim to support (HPA v2 behavior, PDB policy/v1)

try:
    import kubernetes_validate
except ImportError:  # pragma: no cover - reported as a failure below
    kubernetes_validate = None


SCHEMAS = {
    "ServiceMonitor": json.loads((K8S / "schemas/servicemonitor_v1.json").read_text()),
    "PrometheusRule": json.loads((K8S / "schemas/prometheusrule_v1.json").read_text()),
}


_KUSTOMIZE_INSTALL = (
    "kubectl >= 1.27 (kustomize v5): the 'kubectl' package from pkgs.k8s.io or the Google Cloud"
    " SDK apt repository (Debian's own kubernetes-client 1.20 is too old)"
)


def _objs(overlay: str) -> list[dict[str, Any]]:
    return [o for o in yaml.safe_load_all(_kustomize(overlay)) if o]


@functools.cache
def _kustomize(overlay: str) -> str:
    kubectl = require_tool("kubectl", _KUSTOMIZE_INSTALL)
    r = subprocess.run(
        [kubectl, "kustomize", str(K8S / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def _one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    hits = [o for o in objs if o["kind"] == kind]
    assert len(hits) == 1, f"{kind}: {len(hits)}"
    return hits[0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_validate_all_objects(overlay: str) -> None:
    if kubernetes_validate is None:
        pytest.fail("kubernetes-validate is missing: .venv/bin/pip install kubernetes-validate")
    objs = _objs(overlay)
    kinds = {o["kind"] for o in objs}
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ConfigMap",
        "ServiceMonitor",
        "PrometheusRule",
        "ServiceAccount",
    } <= kinds
    for o in objs:
        if o["kind"] in SCHEMAS:
            jsonschema.validate(o, SCHEMAS[o["kind"]])
        else:
            kubernetes_validate.validate(o, K8S_VERSION, strict=True)


def test_validator_rejects_bad_objects() -> None:
    """Both validators can fail."""
    if kubernetes_validate is None:
        pytest.fail("kubernetes-validate is missing: .venv/bin/pip install kubernetes-validate")
    dep = _one(_objs("base"), "Deployment")
    dep["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pathh"] = "/x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)
    sm = _one(_objs("base"), "ServiceMonitor")
    sm["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(sm, SCHEMAS["ServiceMonitor"])
    pr = _one(_objs("base"), "PrometheusRule")
    del pr["spec"]["groups"][0]["rules"][0]["expr"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(pr, SCHEMAS["PrometheusRule"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployment_shape(overlay: str) -> None:
    objs = _objs(overlay)
    dep = _one(objs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    assert env.get("GUARD_UPSTREAM")
    # the policy ConfigMap (hash-suffixed) is the one mounted
    cms = {o["metadata"]["name"] for o in objs if o["kind"] == "ConfigMap"}
    mounted = {v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v}
    assert mounted <= cms and any(n.startswith("guard-policy-") for n in mounted)
    # selectors agree: Service, PDB and the pod template
    labels = dep["spec"]["template"]["metadata"]["labels"]
    for sel in (
        _one(objs, "Service")["spec"]["selector"],
        _one(objs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        dep["spec"]["selector"]["matchLabels"],
    ):
        assert sel.items() <= labels.items()
    sm = _one(objs, "ServiceMonitor")
    svc = _one(objs, "Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] in {p["name"] for p in svc["spec"]["ports"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_multiprocess_dir_when_workers(overlay: str) -> None:
    dep = _one(_objs(overlay), "Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    args = c["args"]
    workers = int(args[args.index("--workers") + 1]) if "--workers" in args else 1
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    if workers > 1:
        d = env.get("PROMETHEUS_MULTIPROC_DIR")
        assert d, "workers > 1 needs PROMETHEUS_MULTIPROC_DIR"
        mount = [m for m in c["volumeMounts"] if m["mountPath"] == d]
        assert mount, "PROMETHEUS_MULTIPROC_DIR must be a mounted volume"
        vol = [v for v in pod["volumes"] if v["name"] == mount[0]["name"]]
        assert vol and "emptyDir" in vol[0]
    assert overlay != "overlays/prod" or workers > 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hpa_scales_on_active_streams_and_cpu(overlay: str) -> None:
    objs = _objs(overlay)
    hpa = _one(objs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == _one(objs, "Deployment")["metadata"]["name"]
    pods = [m for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert pods and pods[0]["pods"]["metric"]["name"] == "guard_active_streams"
    assert any(
        m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"]
    )
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_dashboards_configmap_matches_grafana_dir() -> None:
    cm = next(o for o in _objs("base") if o["metadata"]["name"] == "guard-dashboards")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    for name, text in cm["data"].items():
        assert text == (DEPLOY / "grafana/dashboards" / name).read_text()


def test_policy_configmap_loads_with_guard_settings(tmp_path) -> None:
    """The shipped policy is valid for guard's own config loader."""
    from guard.config import load_settings

    dep = _one(_objs("overlays/prod"), "Deployment")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    args = c["args"]
    assert args[args.index("--config") + 1] == "/etc/guard/guard.yaml"
    s = load_settings(K8S / "base/guard.yaml", env=env)
    assert s.upstream.startswith("http://")
    assert s.decision_log.path == "/var/log/guard/decisions.jsonl"
