from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import pytest

from tests.support.synth import make_rows, write_rows


def _run(argv: list[str]) -> int:
    from guard.training.commands import register

    ap = argparse.ArgumentParser(prog="guard")
    sub = ap.add_subparsers(dest="command", required=True)
    register(sub)
    args = ap.parse_args(argv)
    return int(args.func(args))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("cmd")
    logs = write_rows(d / "train.jsonl", make_rows(250, seed=3))
    model = d / "model.npz"
    rc = _run(["fit", str(logs), "-o", str(model), "--depth", "4", "--bins", "3", "--kappa", "5"])
    assert rc == 0 and model.is_file()
    held = write_rows(d / "held.jsonl", make_rows(150, seed=4))
    return model, held


def test_fit_prints_report(fitted: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    model, _ = fitted
    from guard.risk import load_risk_model

    m = load_risk_model(model)
    assert m.depth == 4
    assert m.meta.info["fit_report"]["counts"]["trajectories"] == 250


def test_eval_json_schema(fitted: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    model, held = fitted
    capsys.readouterr()
    assert _run(["eval", "--model", str(model), str(held), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["schema"] == "guard.eval/1"
    kinds = {p["benign_kind"]: p for p in res["operating_points"]}
    assert kinds["support"]["fpr_target"] == 0.01
    assert kinds["alarming"]["fpr_target"] == 0.05
    for p in kinds.values():
        assert set(p["methods"]) == {"markov", "reactive", "keyword"}
        for r in p["methods"].values():
            assert r["fpr"] <= p["fpr_target"] + 1e-9
    # synthetic classes are easy: the chain must find them at the support operating point
    assert kinds["support"]["methods"]["markov"]["recall"] > 0.8
    assert 0.0 <= res["calibration"]["ece"] <= 1.0
    assert "leave-one-family-out" in res["protocol"]
    fam = res["by_family"]["synthetic"]  # no meta.family: the source
    assert fam["harmful"] > 0 and fam["safe"] > 0
    assert fam["recall"] == pytest.approx(res["at_suggested_threshold"]["recall"])


def test_eval_table(fitted: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    model, held = fitted
    assert _run(["eval", "--model", str(model), str(held)]) == 0
    out = capsys.readouterr().out
    assert "markov" in out and "reactive" in out and "keyword" in out
    assert out.startswith("protocol: ")
    assert "by family at the suggested" in out and "synthetic" in out


def test_depth_writes_outputs(fitted: tuple[Path, Path], tmp_path: Path) -> None:
    model, held = fitted
    out = tmp_path / "depth"
    assert _run(["depth", str(held), "--model", str(model), "--out", str(out)]) == 0
    res = json.loads((out / "depth.json").read_text())
    assert res["schema"] == "guard.depth/1"
    cov = res["curves"]["coverage"]
    assert all(a <= b for a, b in itertools.pairwise(cov))  # monotone
    assert cov[-1] == pytest.approx(1.0) or res["harmful_crossed"] == 0
    assert (out / "depth.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # always written
    assert (out / "depth.png").stat().st_size > 1000


def test_augment_cuts_before_harm(fitted: tuple[Path, Path], tmp_path: Path) -> None:
    model, held = fitted
    out = tmp_path / "train.jsonl"
    assert _run(["augment", str(held), "--model", str(model), "-o", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert rows
    keys = {json.dumps(r["messages"], sort_keys=True) for r in rows}
    assert len(keys) == len(rows)  # deduplicated
    for r in rows:
        assert r["messages"][-1]["role"] == "assistant"
        assert r["messages"][0]["role"] == "user"
        assert r["meta"]["depth"] <= 4
        content = r["messages"][-1]["content"]
        assert len(content) > r["meta"]["prefix_chars"]  # a recovery follows the prefix


def test_augment_onset_and_rotations(fitted: tuple[Path, Path], tmp_path: Path) -> None:
    model, _ = fitted
    resp = "Sure. Here it is. Step one: get the stuff. Mix the explosive powder with the fuel."
    row = {
        **make_rows(1)[0],
        "response": resp,
        "label": "harmful",
        "harm_start_char": resp.index("Mix"),
        "meta": {"category": "Explosives"},
    }
    logs = write_rows(tmp_path / "onset.jsonl", [row])
    out = tmp_path / "o.jsonl"
    rc = _run(["augment", str(logs), "--model", str(model), "-o", str(out), "--max-depth", "40"])
    assert rc == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert {r["meta"]["cut"] for r in rows} == {"onset"}
    full = [
        r
        for r in rows
        if r["meta"]["rotation"] == 0
        and r["meta"]["depth"] == max(x["meta"]["depth"] for x in rows)
    ]
    assert len(full) == 1
    text = full[0]["messages"][-1]["content"]
    assert text.startswith("Sure. Here it is. Step one: get the stuff. ")
    assert "explosive" not in text.split("stuff.")[1][:20]  # cut before the harmful phrase
    assert any(r["meta"]["rotation"] > 0 for r in rows)
    assert {r["meta"]["category"] for r in rows} == {"Explosives"}


def test_bad_logs_exit_2_with_file_and_line(
    tmp_path: Path, fitted: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model, _ = fitted
    bad = tmp_path / "bad.jsonl"
    rows = make_rows(3)
    bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps({**rows[1], "label": "meh"}) + "\n")
    assert _run(["eval", "--model", str(model), str(bad)]) == 2
    assert f"{bad}:2: unknown label" in capsys.readouterr().err
    assert _run(["eval", "--model", str(model), str(bad), "--skip-invalid"]) == 2  # 1 safe only
    err = capsys.readouterr().err
    assert "skipped 1 invalid lines" in err and "no harmful" in err
    assert _run(["fit", str(bad), "-o", str(tmp_path / "m.npz")]) == 2
    assert _run(["eval", "--model", str(tmp_path / "missing.npz"), str(bad)]) == 2
    assert "not found" in capsys.readouterr().err


def test_augment_without_harmful_is_an_error(
    tmp_path: Path, fitted: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model, _ = fitted
    safe = write_rows(tmp_path / "safe.jsonl", [r for r in make_rows(40) if r["label"] == "safe"])
    rc = _run(["augment", str(safe), "--model", str(model), "-o", str(tmp_path / "o.jsonl")])
    assert rc == 2
    assert "no harmful or halted" in capsys.readouterr().err


def test_fit_defaults_are_the_shipped_recipe_shape(fitted: tuple[Path, Path]) -> None:
    from guard.risk import load_risk_model

    model = load_risk_model(fitted[0])
    assert model.raw_meta["req_norm"] == "l2"
    assert model.raw_meta["req_max_chars"] == 1000
    assert model.space.n_request_bins == 6
    assert model.tables.request_scorer.norm == "l2"


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--threshold-budget", "support=0.01"), ("--threshold-budget", "general:2"),
     ("--request-char-ngrams", "5,3")],
)  # fmt: skip
def test_fit_rejects_malformed_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    logs = write_rows(tmp_path / "t.jsonl", make_rows(60, seed=5))
    rc = _run(["fit", str(logs), "-o", str(tmp_path / "m.npz"), flag, value])
    assert rc == 2
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "m.npz").exists()


def test_fit_cross_fit_by_source_reaches_the_fit(tmp_path: Path) -> None:
    logs = write_rows(tmp_path / "t.jsonl", make_rows(200, seed=6))
    out = tmp_path / "m.npz"
    rc = _run(["fit", str(logs), "-o", str(out), "--depth", "4", "--bins", "3", "--kappa", "5",
               "--cross-fit", "2", "--cross-fit-by", "source"])  # fmt: skip
    assert rc == 0
    from guard.risk import load_risk_model

    report = load_risk_model(out).raw_meta["info"]["fit_report"]
    assert report["config"]["cross_fit"] == 2
    assert report["config"]["cross_fit_by"] == "source"


def test_fit_refuses_a_held_back_split_too_small_to_choose_tau(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = write_rows(tmp_path / "t.jsonl", make_rows(30, seed=5))
    out = tmp_path / "m.npz"
    assert _run(["fit", str(logs), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "held-back split" in err and "--force" in err and not out.exists()
    assert _run(["fit", str(logs), "-o", str(out), "--force", "--depth", "4"]) == 0
    assert "warning" in capsys.readouterr().err and out.is_file()


def test_fitting_a_log_without_content_says_what_to_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A decision log written with include_content: false has no prompt or response."""
    rec = {"id": "r1", "source": "guard", "prompt": None, "prefill": None, "response": None,
           "label": "safe", "meta": {}}  # fmt: skip
    p = tmp_path / "decisions.jsonl"
    p.write_text(json.dumps(rec) + "\n")
    assert _run(["fit", str(p), "-o", str(tmp_path / "m.npz")]) == 2
    assert "include_content: true" in capsys.readouterr().err


def test_a_torn_last_line_is_said_and_skipped_by_every_reader(
    fitted: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A decision log whose writer was SIGKILLed mid-record ends in a cut-off line: fit, eval and
    depth say so and use every whole record before it (a torn line elsewhere is still an error)."""
    model, held = fitted
    whole = held.read_text()
    torn = tmp_path / "torn.jsonl"
    torn.write_text(whole + whole.splitlines()[0][:37])  # the last record cut off, no newline
    capsys.readouterr()
    for argv in (
        ["depth", str(torn), "--model", str(model)],
        ["eval", str(torn), "--model", str(model), "--json"],
        ["fit", str(torn), "-o", str(tmp_path / "m.npz"), "--depth", "4", "--bins", "3", "--force"],
    ):
        assert _run(argv) == 0, argv
        err = capsys.readouterr().err
        assert f"{torn}:{len(whole.splitlines()) + 1}: the last line is cut off" in err, argv
    inner = tmp_path / "inner.jsonl"
    inner.write_text(whole.splitlines()[0][:37] + "\n" + whole)  # cut off, then more records
    assert _run(["depth", str(inner), "--model", str(model)]) == 2
    assert "malformed JSON" in capsys.readouterr().err
