"""CLI subcommands ``fit``, ``eval``, ``depth``, ``augment`` (registered by ``guard.cli``).

Each handler takes the parsed ``argparse.Namespace`` and returns an exit code: 0 success, 2 bad
input (``DataError``/``RiskModelError``, message on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from guard.errors import DataError, GuardError

EXIT_OK = 0
EXIT_BAD_INPUT = 2


def _err(msg: str) -> None:
    print(f"guard: error: {msg}", file=sys.stderr)


def _progress(n: int) -> Callable[[str], None] | None:
    if n < 2000:
        return None
    return lambda m: print(m, file=sys.stderr, flush=True)


def _read(args: argparse.Namespace) -> list[Any]:
    from guard.training.trajectories import read_trajectories

    trajs, rep = read_trajectories(args.logs, skip_invalid=args.skip_invalid)
    for where in rep.torn:
        print(
            f"warning: {where}: the last line is cut off (its writer stopped mid-record, e.g. "
            "killed): skipped",
            file=sys.stderr,
        )
    if rep.n_skipped:
        print(f"skipped {rep.n_skipped} invalid lines (--skip-invalid):", file=sys.stderr)
        for m in rep.skipped:
            print(f"  {m}", file=sys.stderr)
    return trajs


def _guarded(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except GuardError as exc:
            _err(exc.message)
            return EXIT_BAD_INPUT

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


def _read_requests(path: str) -> list[Any]:
    from guard.training.fit import RequestExample

    out = []
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    for lineno, line in enumerate(p.open(encoding="utf-8"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{p}:{lineno}: malformed JSON ({exc.msg})") from exc
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise DataError(f"{p}:{lineno}: expected an object with a string 'text'")
        if obj.get("label") not in ("harmful", "benign"):
            raise DataError(f"{p}:{lineno}: 'label' must be 'harmful' or 'benign'")
        src = obj.get("source")
        out.append(
            RequestExample(
                obj["text"], obj["label"] == "harmful", src if isinstance(src, str) else p.name
            )
        )
    if not out:
        raise DataError(f"{p}: no request examples")
    return out


def _budgets(text: str) -> tuple[tuple[str, float], ...]:
    """``support:0.01,general:0.01`` -> ((kind, share), ...)."""
    out = []
    for part in filter(None, (x.strip() for x in text.split(","))):
        kind, sep, share = part.partition(":")
        try:
            value = float(share)
        except ValueError:
            value = -1.0
        if not sep or not kind or not 0.0 <= value < 1.0:
            raise DataError(
                f"--threshold-budget: expected KIND:SHARE with 0 <= SHARE < 1: {part!r}"
            )
        out.append((kind, value))
    return tuple(out)


def _ngrams(text: str) -> tuple[int, int]:
    """``3,5`` -> (3, 5); ``0`` or ``off`` -> (0, 0)."""
    if text in ("0", "off", ""):
        return (0, 0)
    lo, sep, hi = text.partition(",")
    if not sep or not lo.isdigit() or not hi.isdigit() or not 1 <= int(lo) <= int(hi):
        raise DataError(f"--request-char-ngrams: expected LO,HI (e.g. 3,5) or off: {text!r}")
    return (int(lo), int(hi))


def make_scorer(args: argparse.Namespace, needed: bool) -> Any:
    """The external scorer for ``--scorer external|combined`` (or a model that needs one).

    The HTTP client lives outside the core: ``guard.scoring.http.make_external_scorer(url,
    kind=..., model=...)``, imported only here, only when needed.
    """
    if not needed:
        return None
    url = getattr(args, "scorer_url", None)
    if not url:
        raise DataError(
            "an external scorer is needed (--scorer external|combined, or a model fitted with "
            "external scores): give --scorer-url URL of the guard classifier"
        )
    try:
        from guard.scoring.http import make_external_scorer
    except ImportError as exc:
        raise DataError(
            "external scorers need guard.scoring.http.make_external_scorer (the HTTP client for "
            f"the guard classifier), which cannot be imported here: {exc}"
        ) from exc
    from guard.training.external import CachedScorer

    return CachedScorer(make_external_scorer(url, kind=args.scorer_kind, model=args.scorer_model))


def _external_spec(args: argparse.Namespace) -> Any:
    from guard.training.external import ExternalSpec

    try:
        edges = tuple(float(x) for x in args.external_bins.split(",") if x.strip())
    except ValueError as exc:
        raise DataError(f"--external-bins: expected comma-separated probabilities ({exc})") from exc
    spec = ExternalSpec(
        edges=edges,
        every=args.scorer_every,
        delay=args.scorer_delay,
        max_tokens=args.scorer_max_tokens,
    )
    spec.validate()
    return spec


@_guarded
def cmd_fit(args: argparse.Namespace) -> int:
    """Fit a risk model from labelled trajectory logs."""
    from guard.risk.artifact import save_artifact
    from guard.training.fit import FitConfig, fit
    from guard.training.report_text import format_report, json_safe

    trajs = _read(args)
    reqs = _read_requests(args.requests) if args.requests else []
    cfg = FitConfig(
        depth=args.depth,
        n_risk_bins=args.bins,
        n_request_bins=args.request_bins,
        kappa=args.kappa,
        augment=args.augment,
        holdout=args.holdout,
        seed=args.seed,
        bin_mode=args.bin_mode,
        request_bin_mode=args.request_bin_mode,
        cross_fit=args.cross_fit,
        cross_fit_by=args.cross_fit_by,
        threshold_kind=args.threshold_kind or None,
        threshold_budgets=_budgets(args.threshold_budget),
        threshold_pooled=(("coding", "general"), ("roleplay", "general")),
        req_norm=args.request_features,
        req_char_ngrams=_ngrams(args.request_char_ngrams),
        req_buckets_log2=18 if args.request_features == "l2" else 16,
        req_max_chars=args.request_max_chars,
        req_last_user=True,
        req_l2=1e-5 if args.request_features == "l2" else None,
        req_embed=args.glove in ("request", "both"),
        resp_embed=args.glove == "both",
        harm_rules=args.harm_rules,
        req_styles=args.request_styles,
        scorer=args.scorer,
        external=_external_spec(args) if args.scorer != "lexical" else FitConfig().external,
        encoder_probe=bool(getattr(args, "encoder_url", None)),
    )
    if not _enough_held_back(trajs, args.holdout, args.seed, args.force):
        return EXIT_BAD_INPUT
    embeddings = None
    if args.glove != "off":
        from guard.training.embeddings import load_glove

        embeddings = load_glove()
    scorer = make_scorer(args, args.scorer != "lexical")
    encoder = make_encoder_arg(args)
    t0 = time.perf_counter()
    info = {"inputs": [str(p) for p in args.logs], "licences": {}}
    if scorer is not None:
        info["external_scorer"] = {
            "url": args.scorer_url,
            "kind": args.scorer_kind,
            "model": args.scorer_model,
        }
    from guard.progress import ProgressBars

    with ProgressBars("count") as steps:
        res = fit(
            trajs,
            cfg,
            requests=reqs,
            info=info,
            progress=None if steps is not None else _progress(len(trajs)),
            external_scorer=scorer,
            steps=steps,
            embeddings=embeddings,
            encoder=encoder,
        )
    meta = save_artifact(args.output, res.arrays, res.meta)
    print(format_report(res.report))
    print(
        f"wrote {args.output} (version {meta['version']}, {time.perf_counter() - t0:.1f} s)",
        file=sys.stderr,
    )
    if args.report_json:
        Path(args.report_json).write_text(json.dumps(json_safe(res.report), indent=2) + "\n")
    return EXIT_OK


#: held-back safe trajectories below which the suggested τ is noise: at a 1 % budget, fewer
#: than 100 means a single false halt already exceeds it (a warning) ...
WARN_HELD_BACK_SAFE = 100
#: ... and below which it is meaningless (refused without ``--force``), as is a split with no
#: harmful record (recall cannot be measured)
MIN_HELD_BACK_SAFE = 10


def _enough_held_back(trajs: list[Any], holdout: float, seed: int, force: bool) -> bool:
    """Is the held-back split large enough to choose τ on? Refuse (or, with ``--force``, warn)
    when it is not: a τ read off a handful of records is noise."""
    from guard.training.fit import _is_holdout, holdout_key

    held = [t for t in trajs if _is_holdout(holdout_key(t), holdout, seed)]
    n_safe = sum(not t.harmful for t in held)
    n_harm = len(held) - n_safe
    msg = (
        f"the held-back split ({holdout:.0%} of {len(trajs)} trajectories) has {n_safe} safe and "
        f"{n_harm} harmful records"
    )
    advice = (
        "label more logs, raise --holdout, or pick τ yourself with guard eval on your own traffic"
    )
    if n_safe >= WARN_HELD_BACK_SAFE and n_harm >= 1:
        return True
    if n_safe >= MIN_HELD_BACK_SAFE and n_harm >= 1:
        print(
            f"warning: {msg}: the suggested threshold is coarse (under {WARN_HELD_BACK_SAFE} "
            f"safe records one false halt is over a 1 % budget); {advice}",
            file=sys.stderr,
        )
        return True
    msg += (
        f": too few to choose the threshold (at least {MIN_HELD_BACK_SAFE} safe and 1 harmful "
        f"are needed); {advice}"
    )
    if force:
        print(f"warning: {msg} (--force: fitting anyway)", file=sys.stderr)
        return True
    _err(msg + " (--force fits anyway)")
    return False


def _model(args: argparse.Namespace) -> Any:
    from guard.risk.model import load_risk_model

    return load_risk_model(args.model)


@_guarded
def cmd_eval(args: argparse.Namespace) -> int:
    """Detection quality vs a keyword filter and the reactive scorer (no chain).

    Several ``--model`` options compare models (e.g. lexical / external / combined) on the same
    data: one table each, then a side-by-side summary (JSON: ``guard.eval-compare/1``).
    """
    from guard.risk.model import load_risk_model
    from guard.training.evaluate import evaluate, format_compare, format_eval
    from guard.training.report_text import json_safe

    paths = args.model or [None]
    models = [load_risk_model(p) for p in paths]
    if args.scorer is not None:
        for p, m in zip(paths, models, strict=True):
            if m.meta.scorer != args.scorer:
                raise DataError(
                    f"model {p or 'default'} uses scorer {m.meta.scorer!r}, not {args.scorer!r}"
                )
    needs = any(m.meta.scorer != "lexical" for m in models)
    scorer = make_scorer(args, needs)
    encoder = make_encoder_arg(args)
    trajs = _read(args)
    results = []
    for m in models:
        results.append(
            evaluate(
                m,
                trajs,
                progress=_progress(len(trajs)),
                external_scorer=scorer if m.meta.scorer != "lexical" else None,
                external_every=args.scorer_every,
                encoder=encoder,
            )
        )
    if len(results) == 1:
        res: Any = results[0]
        text = format_eval(res)
    else:
        res = {
            "schema": "guard.eval-compare/1",
            "models": [str(p) if p else "default" for p in paths],
            "results": results,
        }
        text = (
            "\n\n".join(format_eval(r) for r in results)
            + "\n\n"
            + format_compare([str(p) if p else "default" for p in paths], results)
        )
    if args.json:
        print(json.dumps(json_safe(res), indent=2))
    else:
        print(text)
    return EXIT_OK


@_guarded
def cmd_depth(args: argparse.Namespace) -> int:
    """Where the risk first crosses τ; coverage and false-halt curves by depth."""
    from guard.training.depth import analyze_depth, format_depth, write_depth_outputs

    model = _model(args)
    trajs = _read(args)
    res = analyze_depth(
        model,
        trajs,
        threshold=args.threshold,
        coverage=args.coverage,
        progress=_progress(len(trajs)),
    )
    print(format_depth(res))
    if args.out:
        for p in write_depth_outputs(res, Path(args.out)):
            print(f"wrote {p}", file=sys.stderr)
    return EXIT_OK


@_guarded
def cmd_augment(args: argparse.Namespace) -> int:
    """Safety-recovery fine-tuning examples (chat JSONL) from harmful/halted trajectories."""
    from guard.training.augment import format_summary, make_examples

    model = _model(args)
    trajs = _read(args)
    rows, summary = make_examples(
        model,
        trajs,
        threshold=args.threshold,
        max_depth=args.max_depth,
        rotations=args.rotations,
        progress=_progress(len(trajs)),
    )
    if summary["input_harmful_or_halted"] == 0:
        raise DataError("no harmful or halted trajectories in the input: nothing to augment")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(format_summary(summary))
    print(f"wrote {len(rows)} examples to {out}", file=sys.stderr)
    return EXIT_OK


def _common(p: argparse.ArgumentParser, *, model: bool) -> None:
    p.add_argument("logs", nargs="+", metavar="LOGS.jsonl", help="trajectory JSONL (.gz ok)")
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip malformed lines (the count and first messages go to stderr) instead of failing",
    )
    if model:
        p.add_argument("--model", default=None, help="risk model .npz (default: shipped model)")


def make_encoder_arg(args: argparse.Namespace) -> Any:
    """The sentence encoder of ``--encoder-url`` (None without it): vLLM's ``/v1/embeddings``,
    embeddings cached on disk under ``$GUARD_CACHE/embeddings`` (by weights and text hash)."""
    url = getattr(args, "encoder_url", None)
    if not url:
        return None
    import os

    from guard.scoring.embeddings import make_encoder

    cache = Path(os.environ.get("GUARD_CACHE", Path.home() / ".cache" / "guard")) / "embeddings"
    try:
        return make_encoder(
            url,
            model=args.encoder_model,
            sha256=args.encoder_sha256,
            dim=args.encoder_dim,
            cache_dir=cache,
        )
    except ValueError as exc:
        raise DataError(str(exc)) from exc


def _encoder_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sentence encoder (request-intent probe)")
    g.add_argument(
        "--encoder-url",
        default=None,
        help="base URL of vLLM serving the sentence encoder (--runner pooling): fit the "
        "request probe on it; its verdict becomes the state's external dimension",
    )
    g.add_argument("--encoder-model", default="all-MiniLM-L6-v2", help="served model name")
    g.add_argument("--encoder-sha256", default=None, help="its weights' SHA-256 (MiniLM: known)")
    g.add_argument("--encoder-dim", type=int, default=None, help="its dimension (MiniLM: 384)")


def _scorer_options(p: argparse.ArgumentParser, *, fit: bool) -> None:
    g = p.add_argument_group("external scorer (guard classifier)")
    g.add_argument(
        "--scorer",
        choices=("lexical", "external", "combined"),
        default="lexical" if fit else None,
        help="state from the lexical scorer, the external classifier's verdicts, or both"
        + ("" if fit else " (eval: check that every model uses this mode)"),
    )
    g.add_argument("--scorer-url", default=None, help="base URL of the guard classifier")
    g.add_argument(
        "--scorer-kind",
        default="classify",
        help="endpoint kind passed to guard.scoring.http.make_external_scorer (default classify)",
    )
    g.add_argument("--scorer-model", default=None, help="classifier model name on that server")
    g.add_argument(
        "--scorer-every",
        type=int,
        default=8 if fit else None,
        metavar="K",
        help="score the response prefix every K tokens"
        + (" (default 8)" if fit else " (default: as the model was fitted)"),
    )
    if fit:
        g.add_argument(
            "--scorer-delay",
            type=int,
            default=0,
            help="tokens between a prefix and its verdict joining the state (default 0)",
        )
        g.add_argument(
            "--scorer-max-tokens", type=int, default=256, help="no verdicts after this many tokens"
        )
        g.add_argument(
            "--external-bins",
            default="0.2,0.5,0.8",
            help="P(unsafe) bin edges (default 0.2,0.5,0.8; plus a 'no verdict yet' bin)",
        )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fit``, ``eval``, ``depth`` and ``augment`` to the main CLI."""
    p = subparsers.add_parser("fit", help="fit a risk model from labelled trajectory logs")
    _common(p, model=False)
    p.add_argument("-o", "--output", required=True, metavar="MODEL", help="output .npz")
    p.add_argument("--depth", type=int, default=32, help="alignment depth D (tokens)")
    p.add_argument("--bins", type=int, default=8, help="response risk bins per depth")
    p.add_argument("--kappa", type=float, default=20.0, help="Dirichlet back-off strength")
    p.add_argument("--augment", action="store_true", help="cyclic phrase rotations (off)")
    p.add_argument("--holdout", type=float, default=0.1, help="fraction held back for the report")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-back split")
    p.add_argument("--requests", default=None, help="extra request examples JSONL {text,label}")
    p.add_argument("--report-json", default=None, help="also write the fit report as JSON")
    p.add_argument("--request-bins", type=int, default=6, help="request risk bins")
    p.add_argument(
        "--request-features",
        choices=("l2", "mean"),
        default="l2",
        help="request scorer: distinct features over sqrt(count) (l2, generalises to unseen "
        "request families) or the l1 mean of earlier models",
    )
    p.add_argument(
        "--request-char-ngrams", default="3,5", help="character n-grams of the request (or off)"
    )
    p.add_argument(
        "--request-max-chars",
        type=int,
        default=1000,
        help="the request scorer reads the last N characters of the prompt (0: all)",
    )
    p.add_argument(
        "--glove",
        choices=("off", "request", "both"),
        default="off",
        help="GloVe read-out in the request scorer (and the response scorer); needs "
        "pip install 'guard[embeddings]'",
    )
    p.add_argument(
        "--threshold-budget",
        default="support:0.01,general:0.01,alarming:0.05",
        help="false-halt budgets per benign meta.kind the suggested τ meets on held-back data "
        "(coding and roleplay count as general; '' : --threshold-kind at 1 %%)",
    )
    p.add_argument(
        "--harm-rules", action="store_true", help="serve-time harm rules (insults, card, SSN)"
    )
    p.add_argument(
        "--bin-mode",
        choices=("quantile", "benign-tail", "top"),
        default="top",
        help="risk-bin edges per depth: quantiles of all prefixes, of benign ones' upper tail, or "
        "quantiles of all prefixes fine at the top (the shipped model)",
    )
    p.add_argument(
        "--request-bin-mode",
        choices=("probability", "benign-tail"),
        default="benign-tail",
        help="request-bin edges: scorer probabilities 1/n.., or benign requests' upper tail",
    )
    p.add_argument(
        "--cross-fit",
        type=int,
        default=5,
        help="K-fold out-of-fold scores for bins/counts (0 off; 5 as the shipped model: it wins "
        "leave-one-family-out, docs/evaluation.md)",
    )
    p.add_argument(
        "--cross-fit-by",
        choices=("text", "source"),
        default="text",
        help="what a cross-fit fold is: hashed texts, or whole sources (scores as on unseen ones)",
    )
    p.add_argument(
        "--threshold-kind",
        default=None,
        help="benign meta.kind whose held-back false-halt rate sets τ (default: all benign)",
    )
    p.add_argument(
        "--request-styles",
        type=int,
        default=3,
        help="train the request scorer on every request also in this many other phrasings "
        "(imperative, question, first person, polite, role-play), both labels alike, so it "
        "learns the goal and not the style (0: off; 3 as the shipped model)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="fit even when the held-back split is too small to choose the threshold",
    )
    _scorer_options(p, fit=True)
    _encoder_options(p)
    p.set_defaults(func=cmd_fit)

    p = subparsers.add_parser("eval", help="recall at fixed FPR vs baselines, calibration")
    _common(p, model=False)
    p.add_argument(
        "--model",
        action="append",
        default=None,
        help="risk model .npz (default: shipped model); repeat to compare models on the same data",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (guard.eval/1; guard.eval-compare/1 with several models)",
    )
    _scorer_options(p, fit=False)
    _encoder_options(p)
    p.set_defaults(func=cmd_eval)

    p = subparsers.add_parser("depth", help="depth at which risk crosses τ; coverage curve")
    _common(p, model=True)
    p.add_argument("--out", default=None, help="directory for depth.png and depth.json")
    p.add_argument("--threshold", type=float, default=None, help="τ (default: model's)")
    p.add_argument("--coverage", type=float, default=0.99, help="target coverage")
    p.set_defaults(func=cmd_depth)

    p = subparsers.add_parser("augment", help="safety-recovery fine-tuning data (chat JSONL)")
    _common(p, model=True)
    p.add_argument("-o", "--output", required=True, help="output JSONL")
    p.add_argument("--threshold", type=float, default=None, help="τ (default: model's)")
    p.add_argument("--max-depth", type=int, default=None, help="longest prefix (default: D)")
    p.add_argument("--rotations", type=int, default=3, help="cyclic rotations per prefix (0: off)")
    p.set_defaults(func=cmd_augment)
