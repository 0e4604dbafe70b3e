"""The fitted risk model: hitting-probability tables plus the scorers, and trackers over them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from guard.errors import RiskModelError
from guard.risk.artifact import load_artifact
from guard.risk.chain import END_FLOOR, hitting_table, monotone_in_request, smooth_transitions
from guard.risk.probe import RequestProbe
from guard.tracking import LexicalScorer, StateSpace, Tracker, TrackerTables

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ModelMeta:
    version: str
    format_version: int
    depth: int
    suggested_threshold: float
    n_states: int
    created: str
    checksum: str
    scorer: str
    info: dict[str, Any]
    #: scorer threshold s* (a logit): a response score at or above it is HARM-like (h = 1);
    #: None for models without it
    harm_score_logit: float | None = None


def _pair(x: Any) -> tuple[int, int]:
    """A ``[lo, hi]`` character n-gram range from metadata (absent: none)."""
    if not x:
        return (0, 0)
    return (int(x[0]), int(x[1]))


def word_tables(
    arrays: dict[str, npt.NDArray[Any]],
) -> tuple[dict[str, float] | None, dict[str, float] | None]:
    """The response and request scorers' embedding word tables (``None`` where absent).

    Stored as ``vocab`` (the words, UTF-8, newline-separated, as a uint8 array: no pickle) and
    ``resp_u`` / ``req_u`` (one weight per word). Every word stays in the table, weight 0 too: a
    word in the table counts as one feature, exactly as it did in fitting.
    """
    if "vocab" not in arrays:
        return None, None
    words = bytes(np.asarray(arrays["vocab"], dtype=np.uint8)).decode("utf-8").split("\n")
    out: list[dict[str, float] | None] = []
    for key in ("resp_u", "req_u"):
        if key not in arrays:
            out.append(None)
            continue
        u = np.asarray(arrays[key], dtype=np.float64)
        if u.shape != (len(words),):
            raise RiskModelError(f"risk model: {key} does not match the vocabulary")
        out.append(dict(zip(words, u.tolist(), strict=True)))
    return out[0], out[1]


def default_model_path() -> Path:
    """The default model shipped inside the package."""
    return Path(__file__).resolve().parent.parent / "data" / "default_model.npz"


class RiskModel:
    """Tables computed at load: ``P`` (smoothed transitions) and ``H`` (hitting probabilities).

    A model whose external dimension is fixed for the whole generation (the encoder's request
    verdict: ``meta.external.blocks``) stores one chain per external bin, ``counts`` shaped
    ``(n_ext, D + 1, m, m + 2)`` with ``m = n_states / n_ext``: no transition ever changes that
    bin, so the full ``n x n`` chain is block-diagonal and storing it dense would waste
    ``n_ext``-fold. ``H`` is the same ``(D + 1, n_states)`` table either way (the external bin the
    fastest index of a state); ``P`` is then a tuple of the per-block transition tensors.
    """

    __slots__ = ("H", "P", "arrays", "blocks", "meta", "probe", "raw_meta", "space", "tables")

    def __init__(self, arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any]) -> None:
        try:
            space = _state_space(meta)
            depth = int(meta["depth"])
            kappa = float(meta["kappa"])
            ext_meta = meta.get("external")
            blocks = isinstance(ext_meta, dict) and bool(ext_meta.get("blocks"))
            counts, edges, req_edges, ext_edges = _checked_arrays(arrays, space, depth, blocks)
            harm_logit = _harm_logit(meta)
            resp_table, req_table = word_tables(arrays)
            end_floor = float(meta.get("end_floor", END_FLOOR))
            p: Any
            if blocks:
                p = tuple(smooth_transitions(c, kappa, end_floor) for c in counts)
                h = _interleave([hitting_table(pb) for pb in p])
                # a request that looks more harmful never makes harm less likely (bin 0: none)
                h = _monotone_in_external(h, space.n_external_bins)
            else:
                p = smooth_transitions(counts, kappa, end_floor)
                h = hitting_table(p)
            if meta.get("monotone_request"):
                h = monotone_in_request(h, space.n_request_bins)
            probe = None
            if isinstance(meta.get("encoder"), dict):
                probe = RequestProbe.from_artifact(arrays, meta["encoder"])
            resp, req = _scorers(arrays, meta, resp_table, req_table)
            tables = TrackerTables(
                space=space,
                depth=depth,
                h=h.tolist(),
                edges=edges.tolist(),
                req_edges=req_edges.tolist(),
                ext_edges=ext_edges.tolist() if space.n_external_bins > 1 else (),
                response_scorer=resp,
                request_scorer=req,
                certain_logit=float(meta["certain_logit"]),
                certain_min_features=int(meta["certain_min_features"]),
                harm_rules=bool(meta.get("harm_rules", False)),
                harm_logit=harm_logit,
                req_max_chars=int(meta.get("req_max_chars", 0)),
                harm_min_features=int(meta.get("harm_score_min_features", 0)),
                req_last_user=meta.get("req_text") == "last_user",
                ext_replaces_request=blocks
                and isinstance(ext_meta, dict)
                and bool(ext_meta.get("replaces_request")),
                ext_mix=_ext_mix(ext_meta),
            )
            self.meta = _model_meta(meta, depth, space.n_states, harm_logit)
        except RiskModelError:
            raise
        except (KeyError, TypeError, ValueError, np.linalg.LinAlgError) as exc:
            raise RiskModelError(f"risk model is inconsistent: {exc!r}") from exc
        if not np.all(np.isfinite(h)):
            raise RiskModelError("risk model: hitting probabilities are not finite")
        self.arrays = arrays
        self.raw_meta = meta
        self.space = space
        self.blocks = blocks
        self.P = p
        self.H = h
        self.tables = tables
        #: the request-intent probe on a sentence encoder (None: a lexical-only model)
        self.probe = probe

    def transition_probs(
        self, d: npt.ArrayLike, fr: npt.ArrayLike, to: npt.ArrayLike
    ) -> FloatArray:
        """``P[d, fr, to]`` for arrays of depth indices and full state indices (``to`` may be
        ``n_states`` (HARM) or ``n_states + 1`` (END)), block models included."""
        dd, ff, tt = (np.asarray(x, dtype=np.int64) for x in (d, fr, to))
        if not self.blocks:
            return np.asarray(self.P[dd, ff, tt], dtype=np.float64)
        k = self.space.n_external_bins
        n = self.space.n_states
        m = n // k
        out = np.zeros(dd.size)
        blk = ff % k
        # a block's absorbing columns are m, m + 1; its transient targets are base indices
        to_base = np.where(tt >= n, m + (tt - n), tt // k)
        for b in range(k):
            sel = blk == b
            if sel.any():
                out[sel] = self.P[b][dd[sel], ff[sel] // k, to_base[sel]]
        # no transition leaves its block (the external bin is fixed for the generation)
        out[(tt < n) & (tt % k != blk)] = 0.0
        return out

    @property
    def depth(self) -> int:
        return self.meta.depth

    @property
    def suggested_threshold(self) -> float:
        return self.meta.suggested_threshold

    def tracker(self, prompt: Any = "", prefill: str = "") -> Tracker:
        """A tracker for one generation of ``prompt`` (chat messages or a completions string)."""
        return Tracker(self.tables, prompt, prefill)


def _state_space(meta: dict[str, Any]) -> StateSpace:
    ss = meta["state_space"]
    return StateSpace(
        n_request_bins=int(ss["n_request_bins"]),
        n_risk_bins=int(ss["n_risk_bins"]),
        n_external_bins=int(ss.get("n_external_bins", 1)),
        n_phases=int(ss["n_phases"]),
    )


def _interleave(hs: list[FloatArray]) -> FloatArray:
    """Per-block tables ``h_b[d, base]`` -> ``H[d, base * n_blocks + b]``."""
    return np.asarray(np.stack(hs, axis=2).reshape(hs[0].shape[0], -1), dtype=np.float64)


def _ext_mix(ext_meta: Any) -> tuple[float, float, float] | None:
    """The verdict's mix with the lexical request logit (``meta.external.lexical_mix``)."""
    mix = ext_meta.get("lexical_mix") if isinstance(ext_meta, dict) else None
    if mix is None:
        return None
    if not (isinstance(mix, list) and len(mix) == 3):
        raise RiskModelError("risk model: external.lexical_mix must be three numbers [a, c, d]")
    return (float(mix[0]), float(mix[1]), float(mix[2]))


def _monotone_in_external(h: FloatArray, n_ext: int) -> FloatArray:
    """``h`` non-decreasing over the external bins 1..n_ext-1 (bin 0, no verdict, is apart)."""
    rows, n = h.shape
    a = h.reshape(rows, n // n_ext, n_ext).copy()
    if n_ext > 2:
        a[:, :, 1:] = np.maximum.accumulate(a[:, :, 1:], axis=2)
    return np.asarray(a.reshape(rows, n), dtype=np.float64)


def _checked_arrays(
    arrays: dict[str, npt.NDArray[Any]], space: StateSpace, depth: int, blocks: bool = False
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Counts, response edges, request edges and external edges, shapes checked against the state
    space (``RiskModelError`` when one does not fit)."""
    counts = np.asarray(arrays["counts"], dtype=np.float64)
    n = space.n_states
    k = space.n_external_bins
    want = (k, depth + 1, n // k, n // k + 2) if blocks else (depth + 1, n, n + 2)
    if counts.shape != want:
        raise RiskModelError(
            f"risk model: counts shape {counts.shape} does not match depth {depth} and {n} states"
        )
    edges = np.asarray(arrays["edges"], dtype=np.float64)
    if edges.shape != (depth + 1, space.n_risk_bins - 1):
        raise RiskModelError(f"risk model: edges shape {edges.shape} is inconsistent")
    req_edges = np.asarray(arrays["req_edges"], dtype=np.float64)
    if req_edges.shape != (space.n_request_bins - 1,):
        raise RiskModelError("risk model: request edges are inconsistent")
    ext_edges = np.asarray(arrays["ext_edges"], dtype=np.float64)
    if space.n_external_bins > 1 and ext_edges.shape not in (
        (space.n_external_bins - 1,),
        (space.n_external_bins - 2,),  # bin 0 = "no verdict yet"
    ):
        raise RiskModelError("risk model: external-score edges are inconsistent")
    return counts, edges, req_edges, ext_edges


def _harm_logit(meta: dict[str, Any]) -> float | None:
    hs = meta.get("harm_score_logit")
    harm_logit = None if hs is None else float(hs)
    if harm_logit is not None and not np.isfinite(harm_logit):
        raise RiskModelError("risk model: harm_score_logit is not finite")
    return harm_logit


def _scorers(
    arrays: dict[str, npt.NDArray[Any]],
    meta: dict[str, Any],
    resp_table: dict[str, float] | None,
    req_table: dict[str, float] | None,
) -> tuple[LexicalScorer, LexicalScorer]:
    """The response and request scorers."""
    resp = LexicalScorer(
        np.asarray(arrays["resp_w"], dtype=np.float64).tolist(),
        float(meta["resp_bias"]),
        name="lexical",
        char_ngrams=_pair(meta.get("resp_char_ngrams")),
        decay=float(meta.get("resp_decay", 1.0)),
        word_table=resp_table,
        # served with the rule its counts were made with (absent: fitted before the change)
        phase_rule=str(meta.get("phase_rule", "markers")),
    )
    req = LexicalScorer(
        np.asarray(arrays["req_w"], dtype=np.float64).tolist(),
        float(meta["req_bias"]),
        name="lexical-request",
        char_ngrams=_pair(meta.get("req_char_ngrams")),
        word_table=req_table,
        norm=str(meta.get("req_norm", "mean")),
        window=int(meta.get("req_window", 0)),
        content_only=bool(meta.get("req_content_only", False)),
    )
    return resp, req


def _model_meta(
    meta: dict[str, Any], depth: int, n_states: int, harm_logit: float | None
) -> ModelMeta:
    return ModelMeta(
        version=str(meta.get("version", "unsaved")),
        format_version=int(meta.get("format_version", 0)),
        depth=depth,
        suggested_threshold=float(meta["suggested_threshold"]),
        n_states=n_states,
        created=str(meta.get("created", "")),
        checksum=str(meta.get("checksum", "")),
        scorer=str(meta.get("scorer", "lexical")),
        info=dict(meta.get("info", {})),
        harm_score_logit=harm_logit,
    )


def load_risk_model(path: str | Path | None = None) -> RiskModel:
    """Load and verify a model artifact (``None``: the shipped default)."""
    p = default_model_path() if path is None else Path(path)
    arrays, meta = load_artifact(p)
    return RiskModel(arrays, meta)
