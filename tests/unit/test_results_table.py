"""The README's results table is generated from benchmarks/results/ and describes the shipped
model: a result file measured with another model, or a README edited by hand, fails here."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _table() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "results_table", ROOT / "benchmarks/results_table.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_the_readme_table_is_current_and_describes_the_shipped_model(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc = _table().main(["--check"])
    err = capsys.readouterr().err
    assert rc == 0, err  # stale rows name the command that regenerates them


def test_a_result_of_another_model_is_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = _table()
    model = t.load_risk_model()
    res = tmp_path / "results"
    res.mkdir()
    row = {"window": 0, "attacks": 30, "halted": 30, "attacks_with_harm_delivered": 0,
           "harmful_tokens_leaked_mean": 0, "harmful_tokens_leaked_max": 0,
           "benign_halted": 0, "benign": 30}  # fmt: skip
    doc = {"risk_model": "0123456789ab", "date": "2026-01-01", "rows": [row]}
    (res / "holdback.json").write_text(json.dumps(doc))
    monkeypatch.setattr(t, "RESULTS", res)
    got = t.holdback_row(model)
    assert got.stale and "0123456789ab" in got.stale and model.meta.version in got.stale
    assert "**stale**" in t.render([got])
    doc["risk_model"] = model.meta.version
    (res / "holdback.json").write_text(json.dumps(doc))
    assert not t.holdback_row(model).stale
    assert t.must_row(model).stale == "no run"  # a missing result is never a silent pass
