"""Standalone modules of the repository that are not packages (scripts, load tests), loaded by
path, without touching ``sys.path``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load(relpath: str, name: str | None = None) -> ModuleType:
    """Import ``ROOT/relpath`` once (cached in ``sys.modules`` under ``name``)."""
    path = ROOT / relpath
    name = name or path.stem
    mod = sys.modules.get(name)
    if mod is not None and getattr(mod, "__file__", None) == str(path):
        return mod
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


#: The tiny chat model's dialogues (labels model output by construction).
def dialogues() -> ModuleType:
    return load("scripts/models/tiny_model/dialogues.py", "dialogues")
