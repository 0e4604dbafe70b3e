from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from guard.errors import DataError
from guard.training.chain_fit import transition_keys
from guard.training.fit import Walk
from guard.training.trajectories import parse_trajectory, read_trajectories
from tests.support.synth import make_rows

GOOD = make_rows(3)[0]


def _write(tmp_path: Path, lines: list[str], name: str = "x.jsonl") -> Path:
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


@pytest.mark.parametrize(
    ("bad", "msg"),
    [
        ("{not json", "malformed JSON"),
        (
            json.dumps({k: v for k, v in GOOD.items() if k != "response"}),
            "missing field 'response'",
        ),
        (json.dumps({**GOOD, "label": "unsafe"}), "unknown label 'unsafe'"),
        (json.dumps({**GOOD, "tokens": [1, 2]}), "'tokens'"),
        (json.dumps({**GOOD, "label": "harmful", "harm_start_char": 10_000}), "harm_start_char"),
        (json.dumps([1, 2]), "expected a JSON object"),
        (json.dumps({**GOOD, "prompt": [{"content": "x"}]}), "'role'"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, bad: str, msg: str) -> None:
    p = _write(tmp_path, [json.dumps(GOOD), "", bad])
    with pytest.raises(DataError, match=msg) as ei:
        read_trajectories([p])
    assert f"{p}:3:" in ei.value.message


def test_skip_invalid_counts_and_reports(tmp_path: Path) -> None:
    p = _write(tmp_path, [json.dumps(GOOD), "{bad", json.dumps({**GOOD, "label": "?"})])
    trajs, rep = read_trajectories([p], skip_invalid=True)
    assert len(trajs) == 1
    assert rep.n_skipped == 2
    assert any(":2:" in m for m in rep.skipped) and any(":3:" in m for m in rep.skipped)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match=r"empty\.jsonl: no valid trajectories"):
        read_trajectories([empty])
    with pytest.raises(DataError, match="no such file"):
        read_trajectories([tmp_path / "missing.jsonl"])
    only_bad = _write(tmp_path, ["{bad"], "bad.jsonl")
    with pytest.raises(DataError, match="no valid trajectories"):
        read_trajectories([only_bad], skip_invalid=True)


def test_onset_token_and_prefill() -> None:
    row = {
        **GOOD,
        "prefill": "Sure, ",
        "response": "Sure, here is the bomb recipe",
        "tokens": ["here", " is", " the", " bomb", " recipe"],
        "label": "harmful",
        "harm_start_char": len("Sure, here is the "),
    }
    t = parse_trajectory(row, "f", 1)
    toks = t.generated_tokens()
    assert t.continuation() == "here is the bomb recipe"
    assert t.onset_token(toks) == 3  # " bomb"
    early = parse_trajectory({**row, "harm_start_char": 2}, "f", 1)
    assert early.onset_token(toks) == 0  # harm already in the prefill


def test_censored_walk_has_no_terminal_transition() -> None:
    states = np.array([0, 1, 1, 2])
    base = {
        "ids": np.zeros(0, np.int32),
        "nf": np.zeros(4, np.int32),
        "phase": np.zeros(4, np.int8),
        "weight": 1.0,
        "harmful": True,
        "kind": "harmful",
        "req_text": "",
    }
    n, depth = 5, 2
    d, fr, to = transition_keys(Walk(end="censored", **base), states, depth, n)
    assert list(to) == [1, 1, 2] and list(d) == [0, 1, 2]
    d, fr, to = transition_keys(Walk(end="harm", **base), states, depth, n)
    assert to[-1] == n and fr[-1] == 2 and d[-1] == 2
    _, _, to = transition_keys(Walk(end="end", **base), states, depth, n)
    assert to[-1] == n + 1
