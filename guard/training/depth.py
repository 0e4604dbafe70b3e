"""``guard depth``: at which depth does the risk first cross τ, and what does checking less save."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from guard.errors import DataError, GuardError
from guard.risk.model import RiskModel
from guard.training.evaluate import Trace, trace
from guard.training.trajectories import Trajectory

SCHEMA = "guard.depth/1"


def first_crossing(t: Trace, tau: float) -> int | None:
    """Tokens seen when ``h >= tau`` first holds (1-based), or None."""
    idx = np.flatnonzero(t.risk >= tau)
    return int(idx[0]) + 1 if idx.size else None


def analyze_depth(
    model: RiskModel,
    trajs: Sequence[Trajectory],
    *,
    threshold: float | None = None,
    coverage: float = 0.99,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    if not trajs:
        raise DataError("no trajectories given")
    tau = model.suggested_threshold if threshold is None else float(threshold)
    traces = []
    for i, tj in enumerate(trajs):
        traces.append(trace(model, tj))
        if progress and (i + 1) % 2000 == 0:
            progress(f"  traced {i + 1}/{len(trajs)}")
    harm = [t for t in traces if t.traj.harmful]
    benign = [t for t in traces if not t.traj.harmful]
    if not harm:
        raise DataError("no harmful trajectories: depth coverage is undefined")
    h_first = [first_crossing(t, tau) for t in harm]
    b_first = [first_crossing(t, tau) for t in benign]
    crossed = [x for x in h_first if x is not None]
    lengths = np.asarray([max(t.n_tokens, 1) for t in traces], dtype=np.int64)
    max_len = int(lengths.max())
    depths = list(range(1, max_len + 1))
    hf = np.asarray(crossed, dtype=np.int64)
    bf = np.asarray([x for x in b_first if x is not None], dtype=np.int64)
    cov = [float((hf <= d).sum() / max(hf.size, 1)) for d in depths]
    rec = [float((hf <= d).sum() / len(harm)) for d in depths]
    fh = [float((bf <= d).sum() / max(len(benign), 1)) for d in depths]
    total_checks = int(lengths.sum())
    best = next((d for d, c in zip(depths, cov, strict=True) if c >= coverage), None)

    def saving(d: int) -> float:
        return 1.0 - float(np.minimum(lengths, d).sum()) / total_checks

    saved = [saving(d) for d in depths]

    hist: dict[str, int] = {}
    for x in crossed:
        hist[str(x)] = hist.get(str(x), 0) + 1
    return {
        "schema": SCHEMA,
        "model": {"version": model.meta.version, "depth": model.depth},
        "threshold": tau,
        "coverage_target": coverage,
        "n_harmful": len(harm),
        "n_benign": len(benign),
        "harmful_crossed": len(crossed),
        "harmful_first_crossing_hist": dict(sorted(hist.items(), key=lambda kv: int(kv[0]))),
        "harmful_first_crossing_median": float(np.median(hf)) if hf.size else None,
        "benign_crossed": int(bf.size),
        "depth_for_coverage": best,
        "checks_total": total_checks,
        "checks_saved_at_depth_for_coverage": saving(best) if best else None,
        "checks_saved_at_model_depth": saving(model.depth),
        "curves": {
            "depth": depths,
            "coverage": cov,
            "recall": rec,
            "false_halt": fh,
            "checks_saved": saved,
        },
    }


def format_depth(res: dict[str, Any]) -> str:
    c = res["curves"]
    lines = [
        f"threshold τ={res['threshold']:.3f}; {res['n_harmful']} harmful ({res['harmful_crossed']}"
        f" ever cross τ), {res['n_benign']} benign ({res['benign_crossed']} ever cross)",
        "",
        f"{'depth':>6} {'coverage':>9} {'recall':>7} {'false-halt':>10} {'checks saved':>12}",
    ]
    total = res["checks_total"]
    ds = c["depth"]
    marks = sorted(
        {d for d in (1, 2, 3, 5, 8, 10, 16, 20, 32, 40, 64, 128, 256) if d <= len(ds)}
        | ({res["depth_for_coverage"]} if res["depth_for_coverage"] else set())
    )
    for d in marks:
        i = d - 1
        lines.append(
            f"{d:>6} {c['coverage'][i]:>9.3f} {c['recall'][i]:>7.3f} {c['false_halt'][i]:>10.3f}"
            f" {c['checks_saved'][i]:>12.1%}"
        )
    best = res["depth_for_coverage"]
    if best:
        lines.append(
            f"\nsmallest depth reaching {res['coverage_target']:.0%} coverage of what checking "
            f"every token catches: {best} tokens; it skips "
            f"{res['checks_saved_at_depth_for_coverage']:.1%} of {total} per-token checks"
        )
    else:
        lines.append(f"\ncoverage {res['coverage_target']:.0%} is not reached at any depth")
    lines.append(
        f"checking only the model's D={res['model']['depth']} tokens skips "
        f"{res['checks_saved_at_model_depth']:.1%} of the checks"
    )
    return "\n".join(lines)


def write_depth_outputs(res: dict[str, Any], out: Path) -> list[Path]:
    """Write ``depth.json`` and ``depth.png`` into ``out``; both, always.

    matplotlib is a base dependency (``pip install .`` has it): the plot is what ``--out`` asks
    for. If it cannot be imported anyway (a broken environment), this raises a ``GuardError``
    after writing ``depth.json``, so the command exits non-zero with a one-line message instead of
    silently leaving the picture out.
    """
    out.mkdir(parents=True, exist_ok=True)
    jp = out / "depth.json"
    jp.write_text(json.dumps(res, indent=2) + "\n")
    written = [jp]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise GuardError(
            f"wrote {jp} but not depth.png: matplotlib cannot be imported ({exc}); "
            "it is a dependency of guard: reinstall with `pip install .`"
        ) from exc
    c = res["curves"]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(c["depth"], c["coverage"], label="coverage of harmful (vs checking all)")
    ax.plot(c["depth"], c["recall"], label="recall on harmful", linestyle="--")
    ax.plot(c["depth"], c["false_halt"], label="false halts on benign")
    if res["depth_for_coverage"]:
        ax.axvline(res["depth_for_coverage"], color="grey", linestyle=":", label="depth for target")
    ax.set_xscale("log")
    ax.set_xlabel("tokens checked (depth)")
    ax.set_ylabel("fraction")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"guard depth (τ={res['threshold']:.2f})")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    pp = out / "depth.png"
    fig.savefig(pp, dpi=110)
    plt.close(fig)
    written.append(pp)
    return written
