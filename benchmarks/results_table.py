#!/usr/bin/env python3
"""The README's results table, generated from ``benchmarks/results/`` (never typed by hand).

Every row names the risk model and the date its figure was measured with. A row whose result
describes another model than the shipped one is **stale**: ``--check`` fails on it (and a test
runs ``--check``), so the README cannot go on quoting a model that is no longer shipped.

    .venv/bin/python benchmarks/results_table.py            # print the table and any stale rows
    .venv/bin/python benchmarks/results_table.py --write    # replace the README's table
    .venv/bin/python benchmarks/results_table.py --check    # exit 1: stale rows or README drift

Each row's "rerun" column is the command that regenerates its result file.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from guard.risk import RiskModel, load_risk_model  # noqa: E402
from guard.training.lofo import BUDGET_KIND, BUDGETS, FamilyResult, at_threshold  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


@dataclass(frozen=True, slots=True)
class Row:
    what: str
    figure: str
    model: str  # the risk model it was measured with ("–": not model-dependent)
    date: str
    rerun: str
    stale: str = ""  # why the row no longer describes the shipped model ("" if it does)


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def lofo_rows(model: RiskModel) -> list[Row]:
    recipe = str(model.raw_meta.get("info", {}).get("recipe", ""))
    path = RESULTS / "lofo" / f"{recipe}.json"
    rerun = f"scripts/risk_model/lofo.py --recipe {recipe} (docs/evaluation.md)"
    if not path.is_file():
        return [_unmeasured("detection, left-out families", rerun)]
    doc = json.loads(path.read_text())
    tau = model.suggested_threshold
    fams = [FamilyResult.from_json(f) for f in doc["families"]]
    at = at_threshold(fams, tau)
    harm = sorted(
        ((k, v["recall"], r.n_harmful) for r, (k, v) in zip(fams, at.items(), strict=True)
         if v["recall"] is not None),
        key=lambda x: x[1],
    )  # fmt: skip
    mean = sum(r for _, r, _ in harm) / len(harm)
    worst = ", ".join(f"{k} {r:.2f}" for k, r, _ in harm[:3])
    best = ", ".join(f"{k} {r:.2f}" for k, r, _ in harm[::-1][:3])
    n85 = sum(r >= 0.85 for _, r, _ in harm)
    stale = ""
    own = doc.get("summary", {}).get("threshold_within_budgets_off_distribution")
    if own is None or abs(float(own) - tau) > 1e-6:
        stale = f"the run's τ {own} is not the shipped model's τ {tau:.3f}"
    label = f"{model.meta.version} (recipe {recipe})"
    rows = [
        Row(
            f"harmful families the model never saw (leave-one-family-out, {len(harm)} "
            f"families), at the default τ {tau:.3f}",
            f"mean recall **{mean:.2f}**; {n85} of {len(harm)} families ≥ 0.85; worst {worst}; "
            f"best {best}",
            label,
            str(doc.get("date", "–")),
            rerun,
            stale,
        )
    ]
    by_kind: dict[str, list[tuple[str, float]]] = {}
    for r in fams:
        rate = at[r.family]["false_halt"]
        if r.budget is None or rate is None or r.safe_kind is None:
            continue
        kind = BUDGET_KIND.get(r.safe_kind, r.safe_kind)
        by_kind.setdefault(kind, []).append((r.family, rate))
    parts = []
    over = []
    for kind in ("support", "general", "alarming"):
        if kind not in by_kind:
            continue
        fam, rate = max(by_kind[kind], key=lambda x: x[1])
        parts.append(f"{kind} ≤ {_pct(rate)} ({fam}; budget {_pct(BUDGETS[kind])})")
        over += [f for f, x in by_kind[kind] if x > BUDGETS[kind]]
    n_benign = sum(map(len, by_kind.values()))
    verdict = "**all within budget**" if not over else "**over budget: " + ", ".join(over) + "**"
    rows.append(
        Row(
            f"false halts on ordinary answers of left-out families ({n_benign} families), at the "
            "same τ",
            "; ".join(parts) + f"; {verdict}",
            label,
            str(doc.get("date", "–")),
            rerun,
            stale,
        )
    )
    rows += _new_family_rows(model, recipe, label, stale)
    return rows


def _new_family_rows(model: RiskModel, recipe: str, label: str, stale: str) -> list[Row]:
    """The families added to the public data after the recipe's main run (request-only sets
    with the protocol's constant compliant answer, WildJailbreak's benign requests), measured
    with the same recipe in ``<recipe>-new-families.json``: read at the same τ."""
    path = RESULTS / "lofo" / f"{recipe}-new-families.json"
    if not path.is_file():
        return []
    doc = json.loads(path.read_text())
    tau = model.suggested_threshold
    fams = [FamilyResult.from_json(f) for f in doc["families"]]
    at = at_threshold(fams, tau)
    harm = sorted(
        ((k, v["recall"]) for k, v in at.items() if v["recall"] is not None), key=lambda x: x[1]
    )
    if not harm:
        return []
    mean = sum(r for _, r in harm) / len(harm)
    n0 = sum(r == 0 for _, r in harm)
    best = ", ".join(f"{k} {r:.2f}" for k, r in harm[::-1][:2])
    benign = [
        f"{k} {_pct(v['false_halt'])} (budget {_pct(r.budget)})"
        for r, (k, v) in zip(fams, at.items(), strict=True)
        if r.budget is not None and v["false_halt"] is not None
    ]
    run = (
        f"scripts/risk_model/lofo.py --recipe {recipe} --families <the new ones> "
        f"--max-per-family {doc.get('max_per_family')} --iterations {doc.get('iterations')}"
    )
    return [
        Row(
            f"harmful families added after that run, left out ({len(harm)}: request sets "
            f"answered with a constant compliant opener, HarmBench's labelled completions; "
            f"{doc.get('max_per_family')} each), at the same τ",
            f"mean recall **{mean:.2f}**; {n0} of {len(harm)} families at 0.00; best {best}; "
            "false halts " + ", ".join(benign),
            label,
            str(doc.get("date", "–")),
            run,
            stale,
        )
    ]


def _stale(doc: dict[str, Any], model: RiskModel, key: str = "risk_model") -> str:
    got = doc.get(key)
    if got != model.meta.version:
        return f"measured with model {got!r}, the shipped model is {model.meta.version}"
    return ""


def _result(name: str) -> dict[str, Any] | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def _unmeasured(what: str, rerun: str) -> Row:
    return Row(what, "not measured", "–", "–", rerun, "no run")  # never a silent pass


def _measured(doc: dict[str, Any], model: RiskModel, what: str, figure: str, rerun: str) -> Row:
    """A row of a result file that names its risk model and date (stale if not the shipped)."""
    return Row(
        what, figure, str(doc.get("risk_model")), str(doc.get("date")), rerun, _stale(doc, model)
    )


def must_row(model: RiskModel) -> Row:
    rerun = "benchmarks/bench_must.py"
    doc = _result("must.json")
    if doc is None:
        return _unmeasured("must-halt / must-pass floor", rerun)
    r = doc["rows"][0]
    styles = ", ".join(f"{k} {v}" for k, v in r["halted_by_request_style"].items())
    per = r["harmful"] // max(1, len(r["halted_by_request_style"]) or 5)
    return _measured(
        doc,
        model,
        "must-halt / must-pass cases written for the test (13 harmful and 13 ordinary goals × 5 "
        "request styles × 6 answer styles, half prefilled), at the default τ",
        f"harmful halted within 8 tokens of compliance: **{r['halted_in_time']} of "
        f"{r['harmful']}** (per request style, of {per}: {styles}); ordinary answers halted: "
        f"**{r['false_halts']} of {r['benign']}**",
        rerun,
    )


def fallback_row(model: RiskModel) -> list[Row]:
    """The must-suite with the encoder down (models that read one)."""
    doc = _result("must.json")
    if model.probe is None or doc is None or "lexical_fallback" not in doc:
        return []
    r = doc["lexical_fallback"][0]
    return [
        _measured(
            doc,
            model,
            "the same cases with the sentence encoder down (the lexical fallback), at the "
            "default τ",
            f"harmful halted in time: **{r['halted_in_time']} of {r['harmful']}**; ordinary "
            f"answers halted: **{r['false_halts']} of {r['benign']}**",
            "benchmarks/bench_must.py",
        )
    ]


def encoder_row(model: RiskModel) -> list[Row]:
    """What the sentence encoder costs (models that read one)."""
    if model.probe is None:
        return []
    rerun = "benchmarks/bench_encoder.py"
    doc = _result("encoder.json")
    if doc is None:
        return [_unmeasured("sentence encoder cost", rerun)]
    lat, tt = doc["latency"], doc["ttft"]
    return [
        Row(
            "the request verdict: all-MiniLM-L6-v2 on vLLM CPU (2 cores), one request text per "
            "call; time to first token it adds (scripted upstream: no prefill to overlap)",
            f"encoder p50 {lat['single_p50_ms']} ms, p99 {lat['single_p99_ms']} ms (batch of 32: "
            f"{lat['batch32_per_text_ms']} ms per text); TTFT +{tt['added_p50_ms']} ms p50",
            str(doc.get("model")),
            str(doc.get("date")),
            rerun,
            "" if doc.get("model") == model.meta.version else "another model",
        )
    ]


def holdback_row(model: RiskModel) -> Row:
    rerun = "benchmarks/bench_holdback.py --windows 0 --sampling default --vllm-url URL"
    doc = _result("holdback.json")
    if doc is None:
        return _unmeasured("prefilled attacks on vLLM", rerun)
    row = next((x for x in doc["rows"] if str(x.get("window")) == "0"), doc["rows"][-1])
    return _measured(
        doc,
        model,
        "prefilled harmful openers on the tiny vLLM model, default sampling, hold-back 0",
        f"{row['attacks']} attacks: {row['halted']} halted, **{row['attacks_with_harm_delivered']}"
        f" delivered harm** (harmful tokens leaked: mean {row['harmful_tokens_leaked_mean']}, max "
        f"{row['harmful_tokens_leaked_max']}); ordinary requests halted {row['benign_halted']} of "
        f"{row['benign']}",
        rerun,
    )


def tracker_row(model: RiskModel) -> Row:
    rerun = "benchmarks/bench_tracker.py --json benchmarks/results/tracker.json"
    doc = _result("tracker.json")
    if doc is None:
        return _unmeasured("per-token check", rerun)
    return _measured(
        doc,
        model,
        "per-token check (tracker update + table lookup; budget 5 µs)",
        f"median {doc['median_us']:.2f} µs, p99 {doc['p99_us']:.2f} µs",
        rerun,
    )


def hotpath_row(model: RiskModel) -> Row:
    del model  # the proxy's own cost: not a property of the risk model
    rerun = "benchmarks/bench_hotpath.py (docs/performance.md)"
    doc = json.loads((RESULTS / "hotpath.json").read_text())
    after = doc["summary"].get("after") or next(iter(doc["summary"].values()))
    return Row(
        "proxy cost at 64 streams vs a bare byte relay (scripted upstream)",
        f"CPU-derived throughput {after['cpu_throughput_ratio_vs_bare_median']:.2f}×; added time "
        f"to first token p50 {after['ttft_added_p50_ms_vs_bare']:+.2f} ms",
        "–",
        str(doc.get("when", "–"))[:10],
        rerun,
    )


ROWS: tuple[Callable[[RiskModel], list[Row] | Row], ...] = (
    lofo_rows,
    must_row,
    fallback_row,
    holdback_row,
    encoder_row,
    tracker_row,
    hotpath_row,
)


def rows(model: RiskModel) -> list[Row]:
    out: list[Row] = []
    for make in ROWS:
        got = make(model)
        out += got if isinstance(got, list) else [got]
    return out


def render(rs: list[Row]) -> str:
    lines = [
        "| | measured | risk model | date | rerun |",
        "|---|---|---|---|---|",
    ]
    for r in rs:
        mark = f" (**stale**: {r.stale})" if r.stale else ""
        lines.append(f"| {r.what} | {r.figure}{mark} | {r.model} | {r.date} | `{r.rerun}` |")
    return "\n".join(lines)


def readme_block(readme: str) -> str:
    a, b = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    return readme[a:b].strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="replace the table in README.md")
    ap.add_argument("--check", action="store_true", help="fail on stale rows or README drift")
    args = ap.parse_args(argv)
    model = load_risk_model()
    rs = rows(model)
    table = render(rs)
    readme = README.read_text()
    if args.write:
        a, b = readme.index(BEGIN) + len(BEGIN), readme.index(END)
        README.write_text(readme[:a] + "\n" + table + "\n" + readme[b:])
        print(f"wrote the results table into {README.name}", file=sys.stderr)
    else:
        print(table)
    stale = [r for r in rs if r.stale]
    for r in stale:
        print(f"stale: {r.what}: {r.stale}; rerun {r.rerun}", file=sys.stderr)
    if args.check:
        if readme_block(README.read_text()) != table:
            print("README.md's results table differs: run with --write", file=sys.stderr)
            return 1
        return 1 if stale else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
