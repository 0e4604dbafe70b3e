from __future__ import annotations

from pathlib import Path

import pytest

from guard.risk.fit import FitConfig, FitResult, fit
from guard.risk.trajectories import parse_trajectory

from .synth import make_rows

SMALL = FitConfig(
    depth=4,
    n_risk_bins=3,
    n_request_bins=2,
    kappa=5.0,
    holdout=0.2,
    resp_buckets_log2=12,
    req_buckets_log2=10,
    iterations=60,
)


@pytest.fixture(scope="session")
def small_fit() -> FitResult:
    trajs = [parse_trajectory(r, "synth", i) for i, r in enumerate(make_rows(300))]
    return fit(trajs, SMALL)


@pytest.fixture()
def logs(tmp_path: Path) -> Path:
    from .synth import write_rows

    return write_rows(tmp_path / "logs.jsonl", make_rows(200, seed=1))
