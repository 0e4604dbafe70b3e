from __future__ import annotations

from pathlib import Path

import pytest

from guard.training.fit import FitResult, fit
from guard.training.trajectories import parse_trajectory
from tests.support.synth import SMALL, make_rows


@pytest.fixture(scope="session")
def small_fit() -> FitResult:
    trajs = [parse_trajectory(r, "synth", i) for i, r in enumerate(make_rows(300))]
    return fit(trajs, SMALL)


@pytest.fixture()
def logs(tmp_path: Path) -> Path:
    from tests.support.synth import write_rows

    return write_rows(tmp_path / "logs.jsonl", make_rows(200, seed=1))
