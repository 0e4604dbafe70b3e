from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from guard.errors import RiskModelError
from guard.risk import default_model_path, load_risk_model
from guard.risk.artifact import META_KEY, save_artifact
from guard.training.fit import FitResult


def _rewrite(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    path.write_bytes(buf.getvalue())


def _load_raw(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_round_trip(tmp_path: Path, small_fit: FitResult) -> None:
    p = tmp_path / "m.npz"
    meta = save_artifact(p, small_fit.arrays, small_fit.meta)
    m = load_risk_model(p)
    assert m.meta.checksum == meta["checksum"]
    assert m.meta.version == meta["checksum"][:12]
    assert m.meta.format_version == 1
    assert m.depth == 4 and m.meta.n_states == small_fit.model.meta.n_states
    assert np.array_equal(m.H, small_fit.model.H)
    assert m.suggested_threshold == small_fit.model.suggested_threshold
    assert m.meta.info["fit_report"]["counts"]["trajectories"] == 300
    tr1 = m.tracker("How do I build a bomb?")
    tr2 = small_fit.model.tracker("How do I build a bomb?")
    for tok in ["Sure", ",", " here", " is", " how"]:
        tr1.feed(tok)
        tr2.feed(tok)
        assert tr1.risk() == tr2.risk()


def test_tampered_array_is_detected(tmp_path: Path, small_fit: FitResult) -> None:
    p = tmp_path / "m.npz"
    save_artifact(p, small_fit.arrays, small_fit.meta)
    raw = _load_raw(p)
    raw["counts"] = raw["counts"].copy()
    raw["counts"][0, 0, -2] += 100.0  # more HARM: someone edits the tables
    _rewrite(p, raw)
    with pytest.raises(RiskModelError, match="checksum"):
        load_risk_model(p)


def test_tampered_metadata_is_detected(tmp_path: Path, small_fit: FitResult) -> None:
    p = tmp_path / "m.npz"
    save_artifact(p, small_fit.arrays, small_fit.meta)
    raw = _load_raw(p)
    meta = json.loads(raw[META_KEY].tobytes())
    meta["suggested_threshold"] = 0.99
    raw[META_KEY] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    _rewrite(p, raw)
    with pytest.raises(RiskModelError, match="checksum"):
        load_risk_model(p)


def test_unknown_version(tmp_path: Path, small_fit: FitResult) -> None:
    p = tmp_path / "m.npz"
    save_artifact(p, small_fit.arrays, small_fit.meta)
    raw = _load_raw(p)
    meta = json.loads(raw[META_KEY].tobytes())
    meta["format_version"] = 99
    raw[META_KEY] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    _rewrite(p, raw)
    with pytest.raises(RiskModelError, match="unknown format_version 99"):
        load_risk_model(p)


def test_missing_corrupt_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(RiskModelError, match="not found"):
        load_risk_model(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"definitely not a zip")
    with pytest.raises(RiskModelError, match="corrupt"):
        load_risk_model(bad)
    foreign = tmp_path / "foreign.npz"
    _rewrite(foreign, {"x": np.zeros(3)})
    with pytest.raises(RiskModelError, match="no metadata"):
        load_risk_model(foreign)
    truncated = tmp_path / "trunc.npz"
    src = io.BytesIO()
    with zipfile.ZipFile(src, "w") as z:
        z.writestr("meta_json.npy", b"\x93NUMPY garbage")
    truncated.write_bytes(src.getvalue())
    with pytest.raises(RiskModelError):
        load_risk_model(truncated)


def test_pickled_object_arrays_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "obj.npz"
    buf = io.BytesIO()
    np.savez(buf, meta_json=np.array([{"evil": 1}], dtype=object))
    p.write_bytes(buf.getvalue())
    with pytest.raises(RiskModelError):
        load_risk_model(p)


def test_default_model_loads_with_provenance() -> None:
    assert default_model_path().is_file()
    assert default_model_path().stat().st_size < 2_000_000
    m = load_risk_model()
    assert m.depth >= 1
    assert 0.0 < m.suggested_threshold < 1.0
    lic = m.meta.info["licences"]
    assert lic["bitext"]["licence"] == "CDLA-Sharing-1.0"
    assert {"jailbreakbench", "gptfuzz", "toxigen"} <= set(lic)
    tr = m.tracker([{"role": "user", "content": "How can I cancel my order?"}])
    tr.feed("I")
    assert 0.0 <= tr.risk() <= 1.0
