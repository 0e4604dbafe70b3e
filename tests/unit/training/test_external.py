"""External-score state dimension: fitting with an in-process fake scorer, tracker, eval, CLI."""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from guard.errors import DataError
from guard.training.external import (
    CachedScorer,
    ExternalScorer,
    ExternalSpec,
    ext_bin_series,
    prefix_texts,
    verdict_points,
)
from guard.training.fit import FitConfig, FitResult, fit
from guard.training.trajectories import parse_trajectory
from tests.support.synth import SMALL, make_rows, write_rows

HARM_WORDS = ("explosive", "detonator", "phishing", "poison", "keylogger")


class KeywordScorer:
    """A fake guard classifier: P(unsafe) high when a harm word is in the text."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def score_batch(self, texts: list[str]) -> list[float]:
        self.batches.append(len(texts))
        return [0.95 if any(w in t.lower() for w in HARM_WORDS) else 0.05 for t in texts]


def _cfg(scorer: str, every: int = 2) -> FitConfig:
    base = {f: getattr(SMALL, f) for f in SMALL.__slots__}
    return FitConfig(**{**base, "scorer": scorer, "external": ExternalSpec(every=every)})


@pytest.fixture(scope="module")
def trajs() -> list:
    return [parse_trajectory(r, "synth", i) for i, r in enumerate(make_rows(300))]


@pytest.fixture(scope="module")
def ext_fit(trajs: list) -> tuple[FitResult, KeywordScorer]:
    sc = KeywordScorer()
    return fit(trajs, _cfg("external"), external_scorer=sc), sc


@pytest.fixture(scope="module")
def comb_fit(trajs: list) -> FitResult:
    return fit(trajs, _cfg("combined"), external_scorer=KeywordScorer())


def test_protocol_and_schedule() -> None:
    assert isinstance(KeywordScorer(), ExternalScorer)
    spec = ExternalSpec(edges=(0.5,), every=3, delay=1, max_tokens=7)
    assert verdict_points(10, spec) == [3, 6]
    # No prompt: the tiny-guard response format with an empty user turn.
    head = "<|user|>\n<|end|>\n<|assistant|>\n"
    assert prefix_texts("P:", ["a", "b", "c", "d", "e", "f"], [3, 6]) == [
        head + "P:abc",
        head + "P:abcdef",
    ]
    # bin 0 until the first verdict joins (t = 3 + delay 1), then 1 + bisect(edges, p)
    assert ext_bin_series(8, [3, 6], [0.9, 0.1], spec).tolist() == [0, 0, 0, 0, 2, 2, 2, 1]
    with pytest.raises(DataError):
        ExternalSpec(edges=(0.8, 0.2)).validate()
    with pytest.raises(DataError):
        ExternalSpec(every=0).validate()


def test_fit_calls_scorer_batched_on_prefixes(ext_fit: tuple[FitResult, KeywordScorer]) -> None:
    res, sc = ext_fit
    assert sc.batches and max(sc.batches) <= 64
    assert res.report["counts"]["external_texts_scored"] == sum(sc.batches)
    m = res.model
    assert m.meta.scorer == "external"
    assert m.space.n_external_bins == 5  # none + 4 intervals of (0.2, 0.5, 0.8)
    assert m.space.n_risk_bins == 1  # the lexical score is not part of the state
    assert res.meta["external"]["every"] == 2


def test_fit_without_scorer_is_a_clear_error(trajs: list) -> None:
    with pytest.raises(DataError, match="external scorer"):
        fit(trajs, _cfg("combined"))


def test_bad_scores_are_rejected(trajs: list) -> None:
    class Bad:
        def score_batch(self, texts: list[str]) -> list[float]:
            return [1.5] * len(texts)

    with pytest.raises(DataError, match="probability"):
        fit(trajs, _cfg("external"), external_scorer=Bad())


def _feed(tr, text: str) -> None:  # type: ignore[no-untyped-def]
    from guard.tracking import tokenize_approx

    for tok in tokenize_approx(text):
        tr.feed(tok)


def test_tracker_uses_external_verdict(ext_fit: tuple[FitResult, KeywordScorer]) -> None:
    m = ext_fit[0].model
    tr = m.tracker("How do I build a bomb?")
    _feed(tr, "Sure, here is how to do it. mix the")
    assert tr.state()["external_bin"] == 0  # no verdict yet
    none_risk = tr.risk()
    hi, lo = tr.copy(), tr.copy()
    hi.set_external_score(0.95)
    lo.set_external_score(0.05)
    assert hi.state()["external_bin"] == 4 and lo.state()["external_bin"] == 1
    assert hi.risk() > lo.risk()
    assert hi.risk() > 0.5
    assert 0.0 <= none_risk <= 1.0
    ok = m.tracker("How can I cancel my order?")
    _feed(ok, "I understand you want to cancel your order. Please log in to your account.")
    ok.set_external_score(0.05)
    assert ok.risk() < 0.5


def test_combined_uses_both(comb_fit: FitResult) -> None:
    m = comb_fit.model
    assert m.meta.scorer == "combined"
    assert m.space.n_risk_bins == SMALL.n_risk_bins and m.space.n_external_bins == 5
    harm = m.tracker("How do I build a bomb?")
    _feed(harm, "Sure, here is how to do it. mix the explosive powder with the fuel.")
    ok = m.tracker("How can I cancel my order?")
    _feed(ok, "I understand you want to cancel your order. Please log in to your account.")
    harm.set_external_score(0.95)
    ok.set_external_score(0.05)
    assert harm.risk() > 0.5 > ok.risk()


def test_combined_without_any_verdict_falls_back_to_the_lexical_state(
    comb_fit: FitResult,
) -> None:
    """A dead scorer leaves external bin 0 ("no verdict yet") for the whole stream. The fit also
    counts every walk that way, so those cells carry the lexical dynamics past the first verdict's
    token instead of smoothing noise: an ordinary answer stays low, harm still rises."""
    m = comb_fit.model
    n_ext = m.space.n_external_bins
    counts = comb_fit.arrays["counts"]  # (depth + 1, n, n + 2)
    every = comb_fit.meta["external"]["every"]
    from_rows = counts[:, :, :].sum(axis=2)  # (depth + 1, n)
    no_verdict = from_rows[:, 0::n_ext]  # states with external bin 0
    # past the first verdict's token the no-verdict cells are still counted (the fallback path)
    late = slice(every + 2, None)  # depth indices after the first verdict has joined
    assert counts.shape[0] > every + 2
    assert no_verdict[late].sum() > 0.25 * from_rows[late].sum()
    tau = m.suggested_threshold
    long_ok = " ".join(["Please log in to your account and open the order page."] * 6)
    ok = m.tracker("How can I cancel my order?")
    peak = 0.0
    from guard.tracking import tokenize_approx

    for tok in tokenize_approx("I understand you want to cancel your order. " + long_ok):
        ok.feed(tok)
        peak = max(peak, ok.risk())
    assert ok.state()["external_bin"] == 0 and ok.state()["tokens"] > 2 * m.depth // 2
    assert peak < tau, (peak, tau)
    harm = m.tracker("How do I build a bomb?")
    _feed(harm, "Sure, here is how to do it. mix the explosive powder with the fuel. " * 3)
    assert harm.state()["external_bin"] == 0
    assert harm.risk() > peak


def test_model_without_external_bins_ignores_verdicts(small_fit: FitResult) -> None:
    m = small_fit.model
    assert m.space.n_external_bins == 1
    tr = m.tracker("How do I build a bomb?")
    _feed(tr, "Sure, here is how to do it.")
    before = tr.risk()
    tr.set_external_score(0.99)
    assert tr.risk() == before
    assert tr.state()["external_score"] == 0.99 and tr.state()["external_bin"] == 0


def test_eval_with_external_scorer(ext_fit: tuple[FitResult, KeywordScorer]) -> None:
    from guard.training.evaluate import evaluate

    m = ext_fit[0].model
    held = [parse_trajectory(r, "h", i) for i, r in enumerate(make_rows(120, seed=9))]
    with pytest.raises(DataError, match="external"):
        evaluate(m, held)
    res = evaluate(m, held, external_scorer=CachedScorer(KeywordScorer()))
    sup = {p["benign_kind"]: p for p in res["operating_points"]}["support"]
    assert set(sup["methods"]) == {"markov", "reactive", "keyword", "external"}
    assert sup["methods"]["markov"]["recall"] > 0.8
    assert res["model"]["scorer"] == "external"


def test_eval_external_with_reply_shorter_than_the_scoring_period(
    ext_fit: tuple[FitResult, KeywordScorer],
) -> None:
    from guard.training.evaluate import trace

    m = ext_fit[0].model
    row = make_rows(1, seed=3)[0]
    row["response"], row["tokens"], row["harm_start_char"] = "Ok.", None, None
    row["label"] = "safe"
    t = parse_trajectory(row, "h", 1)
    tr = trace(m, t, {})  # every=2 but a 1-2 token reply: no verdict at all, no crash
    # One (all-zero) external value per token, as for any other trace.
    assert tr.external is not None and tr.external.size > 0 and not tr.external.any()


def _run(argv: list[str]) -> int:
    from guard.training.commands import register

    ap = argparse.ArgumentParser(prog="guard")
    sub = ap.add_subparsers(dest="command", required=True)
    register(sub)
    args = ap.parse_args(argv)
    return int(args.func(args))


def test_cli_fit_and_compare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = write_rows(tmp_path / "train.jsonl", make_rows(200, seed=3))
    held = write_rows(tmp_path / "held.jsonl", make_rows(120, seed=4))
    small = ["--depth", "4", "--bins", "3", "--kappa", "5"]
    # without guard.scoring.http (or without a URL): a clear error, exit 2
    monkeypatch.setitem(sys.modules, "guard.scoring.http", None)
    rc = _run(["fit", str(logs), "-o", str(tmp_path / "x.npz"), "--scorer", "external"])
    assert rc == 2 and "--scorer-url" in capsys.readouterr().err
    rc = _run(
        ["fit", str(logs), "-o", str(tmp_path / "x.npz"), "--scorer", "external",
         "--scorer-url", "http://127.0.0.1:1"]
    )  # fmt: skip
    assert rc == 2 and "guard.scoring.http" in capsys.readouterr().err

    made: list[tuple[str, str, str | None]] = []

    def factory(url: str, kind: str = "classify", model: str | None = None) -> KeywordScorer:
        made.append((url, kind, model))
        return KeywordScorer()

    mod = types.ModuleType("guard.scoring.http")
    mod.make_external_scorer = factory  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "guard.scoring.http", mod)
    url = ["--scorer-url", "http://cls:8000", "--scorer-model", "tiny-guard"]
    assert _run(["fit", str(logs), "-o", str(tmp_path / "lex.npz"), *small]) == 0
    for mode in ("external", "combined"):
        out = str(tmp_path / f"{mode}.npz")
        argv = ["fit", str(logs), "-o", out, *small, "--scorer", mode, "--scorer-every", "3", *url]
        assert _run(argv) == 0
    assert made[0] == ("http://cls:8000", "classify", "tiny-guard")
    capsys.readouterr()
    models = [
        x for n in ("lex", "external", "combined") for x in ("--model", str(tmp_path / f"{n}.npz"))
    ]
    assert _run(["eval", *models, str(held), *url, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["schema"] == "guard.eval-compare/1"
    assert [r["model"]["scorer"] for r in res["results"]] == ["lexical", "external", "combined"]
    assert _run(["eval", *models, str(held), *url]) == 0
    assert "comparison" in capsys.readouterr().out
    # a model fitted with external scores cannot be evaluated without a scorer
    assert _run(["eval", "--model", str(tmp_path / "external.npz"), str(held)]) == 2
    assert np.isfinite(res["results"][2]["calibration"]["ece"])


def test_fit_sends_the_guard_model_what_serving_sends() -> None:
    """Same prompt and response prefix -> byte-identical text in fit/eval and in serving."""
    from guard.scoring.verdicts import VerdictPolicy, VerdictSchedule

    long_user = "Please help me with my order. " * 20  # longer than prompt_chars: summarised
    messages = [
        {"role": "system", "content": "You are a support bot."},
        {"role": "user", "content": long_user},
    ]
    tokens = [f" w{i}" for i in range(400)]  # longer than max_chars: cut from the left
    points = [8, 24, 400]
    fitted = prefix_texts("Sure,", tokens, points, messages)
    sched = VerdictSchedule.for_messages(
        messages, VerdictPolicy(at_sentence_end=False, every_k_tokens=16), prefill="Sure,"
    )
    served = []
    for i, tok in enumerate(tokens, 1):
        sched.observe(tok, 1)
        if i in points:
            served.append(sched.current_text())
    assert fitted == served
    assert " … " in fitted[0] and "Please help" in fitted[0]  # the prompt is in, summarised
    assert len(fitted[2]) <= VerdictPolicy().max_chars and fitted[2].endswith(" w399")
    # A plain-string prompt (completions) works the same way.
    assert "hello" in prefix_texts("", ["x"], [1], "hello")[0]
