#!/usr/bin/env python3
"""A small kustomize subset, in Python, for validating deploy/k8s without the kustomize binary.

    python deploy/k8s/render.py deploy/k8s/overlays/prod   # prints the rendered YAML stream

Supports what deploy/k8s uses: ``resources`` (files and directories), ``namespace``, ``labels``
(with ``includeSelectors``), ``images``, ``configMapGenerator`` (files; name hash suffix unless
``disableNameSuffixHash``; references from Deployment volumes/envFrom updated), and ``patches``
(inline JSON6902 with ``target``, or a strategic-merge file via ``path``: maps merge, lists of
named items merge by ``name``, other lists are replaced). Anything else is an error, so a new
kustomize feature in deploy/k8s fails loudly here instead of being ignored. The real tool
(`kubectl kustomize` / `kubectl apply -k`) is what deploys; this is for tests.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

_KNOWN_KEYS = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "labels",
    "images",
    "configMapGenerator",
    "patches",
}
# Where kustomize's label transformer writes selectors (includeSelectors: true).
_SELECTOR_PATHS = {
    "Deployment": [("spec", "selector", "matchLabels"), ("spec", "template", "metadata", "labels")],
    "Service": [("spec", "selector")],
    "PodDisruptionBudget": [("spec", "selector", "matchLabels")],
}
_CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


class RenderError(Exception):
    pass


def _setdefault_path(obj: Obj, path: tuple[str, ...]) -> Obj:
    cur = obj
    for key in path:
        nxt = cur.get(key)
        if nxt is None:
            nxt = {}
            cur[key] = nxt
        cur = nxt
    return cur


def _config_map(gen: Obj, base: Path) -> Obj:
    data: dict[str, str] = {}
    for f in gen.get("files", []):
        key, _, rel = f.partition("=") if "=" in f else (Path(f).name, "", f)
        path = (base / rel).resolve()
        if base.resolve() not in path.parents:
            raise RenderError(f"{f}: kustomize refuses files outside the kustomization dir")
        data[key] = path.read_text()
    for lit in gen.get("literals", []):
        k, _, v = lit.partition("=")
        data[k] = v
    unknown = set(gen) - {"name", "files", "literals", "options"}
    if unknown:
        raise RenderError(f"configMapGenerator: unsupported keys {sorted(unknown)}")
    opts = gen.get("options", {})
    cm: Obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": gen["name"]},
        "data": data,
    }
    if opts.get("labels"):
        cm["metadata"]["labels"] = dict(opts["labels"])
    if not opts.get("disableNameSuffixHash"):
        digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]
        cm["metadata"]["x-kustomize-original-name"] = gen["name"]
        cm["metadata"]["name"] = f"{gen['name']}-{digest}"
    return cm


def _smp(base: Any, patch: Any) -> Any:
    """Strategic-merge subset: maps merge, lists of dicts with 'name' merge by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = _smp(out[k], v)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and patch
        and all(isinstance(x, dict) and "name" in x for x in base + patch)
    ):
        out_list = [copy.deepcopy(x) for x in base]
        index = {x["name"]: i for i, x in enumerate(out_list)}
        new = []
        for item in patch:
            if item["name"] in index:
                out_list[index[item["name"]]] = _smp(out_list[index[item["name"]]], item)
            else:
                new.append(copy.deepcopy(item))
        return new + out_list  # kustomize puts patch-only items first
    return copy.deepcopy(patch)


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise RenderError(f"bad JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _json6902(obj: Obj, ops: list[Obj]) -> None:
    for op in ops:
        parts = _pointer(op["path"])
        parent: Any = obj
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        kind = op["op"]
        if isinstance(parent, list):
            idx = len(parent) if last == "-" else int(last)
            if kind == "add":
                parent.insert(idx, copy.deepcopy(op["value"]))
            elif kind == "replace":
                parent[idx] = copy.deepcopy(op["value"])
            elif kind == "remove":
                del parent[idx]
            else:
                raise RenderError(f"unsupported op {kind}")
        else:
            if kind in ("replace", "remove") and last not in parent:
                raise RenderError(f"{kind} {op['path']}: path does not exist")
            if kind in ("add", "replace"):
                parent[last] = copy.deepcopy(op["value"])
            elif kind == "remove":
                del parent[last]
            else:
                raise RenderError(f"unsupported op {kind}")


def _matches(obj: Obj, target: Obj) -> bool:
    return all(
        (k == "kind" and obj.get("kind") == v) or (k == "name" and obj["metadata"]["name"] == v)
        for k, v in target.items()
    ) and set(target) <= {"kind", "name"}


def render(directory: str | Path) -> list[Obj]:
    base = Path(directory)
    kfile = base / "kustomization.yaml"
    if not kfile.exists():
        raise RenderError(f"{base}: no kustomization.yaml")
    k = yaml.safe_load(kfile.read_text())
    unknown = set(k) - _KNOWN_KEYS
    if unknown:
        raise RenderError(f"{kfile}: unsupported kustomization keys {sorted(unknown)}")

    objs: list[Obj] = []
    for res in k.get("resources", []):
        p = base / res
        if p.is_dir():
            objs.extend(render(p))
        else:
            objs.extend(d for d in yaml.safe_load_all(p.read_text()) if d)
    renames: dict[str, str] = {}
    for gen in k.get("configMapGenerator", []):
        cm = _config_map(gen, base)
        original = cm["metadata"].pop("x-kustomize-original-name", None)
        if original:
            renames[original] = cm["metadata"]["name"]
        objs.append(cm)

    for patch in k.get("patches", []):
        if "path" in patch:
            doc = yaml.safe_load((base / patch["path"]).read_text())
            hits = [
                o
                for o in objs
                if o["kind"] == doc["kind"] and o["metadata"]["name"] == doc["metadata"]["name"]
            ]
            if len(hits) != 1:
                raise RenderError(f"patch {patch['path']}: matched {len(hits)} objects")
            merged = _smp(hits[0], doc)
            objs[objs.index(hits[0])] = merged
        else:
            hits = [o for o in objs if _matches(o, patch["target"])]
            if not hits:
                raise RenderError(f"patch target {patch['target']} matched nothing")
            ops = yaml.safe_load(patch["patch"])
            for o in hits:
                _json6902(o, ops)

    for lab in k.get("labels", []):
        pairs = lab["pairs"]
        for o in objs:
            o["metadata"].setdefault("labels", {}).update(pairs)
            if lab.get("includeSelectors"):
                for path in _SELECTOR_PATHS.get(o["kind"], []):
                    _setdefault_path(o, path).update(pairs)
                if o["kind"] == "Deployment":
                    for tsc in o["spec"]["template"]["spec"].get("topologySpreadConstraints", []):
                        tsc.setdefault("labelSelector", {}).setdefault("matchLabels", {}).update(
                            pairs
                        )

    for img in k.get("images", []):
        for o in objs:
            if o["kind"] != "Deployment":
                continue
            for c in o["spec"]["template"]["spec"]["containers"]:
                name, _, _tag = c["image"].partition(":")
                if name == img["name"]:
                    c["image"] = f"{img.get('newName', name)}:{img.get('newTag', 'latest')}"

    for o in objs:
        if o["kind"] == "Deployment" and renames:
            spec = o["spec"]["template"]["spec"]
            for v in spec.get("volumes", []):
                cm = v.get("configMap")
                if cm and cm.get("name") in renames:
                    cm["name"] = renames[cm["name"]]
            for c in spec["containers"]:
                for ef in c.get("envFrom", []):
                    ref = ef.get("configMapRef")
                    if ref and ref.get("name") in renames:
                        ref["name"] = renames[ref["name"]]

    ns = k.get("namespace")
    if ns:
        for o in objs:
            if o["kind"] not in _CLUSTER_SCOPED:
                o["metadata"]["namespace"] = ns
    return objs


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    print(yaml.safe_dump_all(render(argv[0]), sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
