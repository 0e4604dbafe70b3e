"""The fit report as text and as JSON-safe data (what ``guard fit`` prints and writes)."""

from __future__ import annotations

import math
from typing import Any


def json_safe(x: Any) -> Any:
    """Replace non-finite floats (not JSON) by None, recursively."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "counts": report["counts"],
        "held_back": {k: v for k, v in report["held_back"].items() if k != "calibration"},
        "markov_test": report["markov_test"],
        "config": report["config"],
    }


def format_report(report: dict[str, Any]) -> str:
    c = report["counts"]
    s = report["sparsity"]
    h = report["held_back"]
    m = report["markov_test"]
    lines = [
        "fit report",
        f"  trajectories: {c['trajectories']} (train {c['train']}: {c['train_harmful']} harmful, "
        f"{c['train_safe']} safe; held back {c['held_back']}); censored {c['censored']}, "
        f"with harm onset {c['with_onset']}",
        f"  request examples: {c['request_examples']}; transitions counted: {c['transitions']:.0f}"
        f"; augmented rotations: {c['augmented_rotations']} from {c['augmented_orbits']} orbits",
        f"  states: {s['states']} transient (+HARM, END); rows (depth x state): {s['rows']}, "
        f"empty {s['empty_rows']}, under kappa {s['rows_under_kappa']}; non-zero cells "
        f"{s['nonzero_cells']}/{s['cells']}",
        f"  held back ({'TRAINING data, no holdout' if h['on_training_data'] else 'held-back'}):"
        f" n={h['n']} harmful={h['harmful']} threshold={h['suggested_threshold']:.3f} "
        f"recall={h['recall_at_threshold']:.3f} false-halt={h['false_halt_rate_at_threshold']:.3f}"
        f" ECE={h['ece']:.3f}",
        "  held-back operating points: "
        + (
            "; ".join(
                f"{k} recall {v['recall']:.3f} at {v['fpr_target']:.0%} FPR (n={v['n_benign']})"
                for k, v in h.get("recall_at_fpr", {}).items()
            )
            or "-"
        ),
        "  scorer rule s*: "
        + (
            f"logit {h['harm_score_logit']:.3f} (sigmoid "
            f"{1 / (1 + math.exp(-h['harm_score_logit'])):.3f}); alone: recall "
            f"{h['harm_score_recall'] if h['harm_score_recall'] is not None else float('nan'):.3f}"
            ", benign reaching it "
            + ", ".join(f"{k} {v:.3f}" for k, v in h["harm_score_false_halt_by_kind"].items())
            if h.get("harm_score_logit") is not None
            else "off"
        ),
        "  calibration (h at depth min(T, D) vs observed harmful):",
        "    bin        n      mean_pred  observed",
    ]
    for row in h["calibration"]:
        lines.append(
            f"    {row['bin']:<9} {row['n']:>6}  {row['mean_pred']:>9.3f}  {row['obs']:>8.3f}"
        )
    if m.get("n_transitions"):
        lines.append(
            f"  Markov test (held-out log-likelihood per transition, n={m['n_transitions']}): "
            f"1st order {m['loglik_first_order']:.4f}, 2nd order {m['loglik_second_order']:.4f}"
            f" (gain {m['gain_per_transition']:+.4f}); on state changes only "
            f"({m['n_state_changes']}): {m['loglik_first_order_changes']:.3f} vs "
            f"{m['loglik_second_order_changes']:.3f}"
        )
    return "\n".join(lines)
