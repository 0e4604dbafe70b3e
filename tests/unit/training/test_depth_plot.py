"""`guard depth --out DIR` always writes depth.png with a plain `pip install .`: matplotlib is a
base dependency; if it cannot be imported anyway, the command says so in one line and exits
non-zero (never a silent omission)."""

from __future__ import annotations

import builtins
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from guard.errors import GuardError
from guard.training.depth import write_depth_outputs

ROOT = Path(__file__).resolve().parents[3]
RES: dict[str, Any] = {
    "threshold": 0.5,
    "depth_for_coverage": 2,
    "curves": {
        "depth": [1, 2, 4],
        "coverage": [0.5, 1.0, 1.0],
        "recall": [0.4, 0.8, 0.8],
        "false_halt": [0.0, 0.0, 0.1],
    },
}


def test_matplotlib_is_a_base_dependency() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.split(">")[0].split("=")[0].strip() == "matplotlib" for d in deps), deps


def test_writes_png_and_json(tmp_path: Path) -> None:
    written = write_depth_outputs(RES, tmp_path)
    assert [p.name for p in written] == ["depth.json", "depth.png"]
    assert (tmp_path / "depth.png").read_bytes()[:4] == b"\x89PNG"


def test_without_matplotlib_it_fails_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(GuardError, match=r"not depth\.png: matplotlib cannot be imported"):
        write_depth_outputs(RES, tmp_path)
    assert (tmp_path / "depth.json").is_file()
    assert not (tmp_path / "depth.png").exists()
