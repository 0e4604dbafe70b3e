"""Fitting recipes of the shipped risk model, by name, and the data they are fitted on.

``shipped`` is what ``build.py`` fits ``guard/data/default_model.npz`` with; the others are the
alternatives measured against it with the leave-one-family-out protocol (``lofo.py``), kept so the
comparison in docs/evaluation.md can be rerun. ``cb96e4601149`` is the recipe of the model shipped
before (old data and settings): the "before" of the before/after.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sources import FAMILIES, load_corpus

from guard.risk.model import RiskModel
from guard.training.embeddings import WordVectors, load_glove
from guard.training.fit import FitConfig, RequestExample, fit
from guard.training.trajectories import Trajectory, parse_trajectory

#: the false-halt budgets the default threshold must meet: support 1 %, general 1 % (coding and
#: role-play answers are general answers), alarming-but-benign 5 %
BUDGETS = (("support", 0.01), ("general", 0.01), ("alarming", 0.05))
#: kinds held to another kind's budget when choosing the threshold (pooled with it: a 1 % budget
#: measured on a few dozen held-back answers of one kind is noise)
POOLED_KINDS = {"coding": "general", "roleplay": "general"}
#: the scorer rule s* gets half of each budget
RULE_BUDGETS = tuple((k, b / 2) for k, b in BUDGETS if k != "support")
#: kind of a safe reply to a harmful request, or in a family that is not benign-side (a refusal, or
#: a harmless answer, to a harmful or adversarial request): reported, but no false-halt budget
#: applies to it (halting a refusal replaces it by the safe message: nothing a user needed is lost)
ADVERSARIAL_SAFE = "adversarial"
#: benign texts that are not assistant answers (OpenAI moderation samples: user/web prose used as
#: "responses"): reported, but not held to the general-answer budget
WEB_TEXT = {"moderation": "web-text"}


@dataclass(frozen=True, slots=True)
class Recipe:
    name: str
    config: FitConfig
    embeddings: bool = False
    #: the request probe on the sentence encoder (served by vLLM: ``encoder()``)
    encoder: bool = False
    #: trajectories (and request examples) per family it is built and measured with (None: the
    #: build script's default); the leave-one-family-out run uses the same, so its figures
    #: describe the shipped model's data size
    max_per_family: int | None = None
    #: families whose data the recipe may use (None: all)
    families: frozenset[str] | None = None
    #: families whose data the recipe never fits on (they stay in the evaluation)
    exclude: frozenset[str] = frozenset()
    description: str = ""

    def select(
        self, trajs: Sequence[Trajectory], reqs: Sequence[RequestExample]
    ) -> tuple[list[Trajectory], list[RequestExample]]:
        """The trajectories and request examples this recipe fits on."""

        def keep(family: str) -> bool:
            return (self.families is None or family in self.families) and (
                family not in self.exclude
            )

        return (
            [t for t in trajs if keep(str(t.meta.get("family")))],
            [r for r in reqs if keep(r.source)],
        )


_OLD_FAMILIES = frozenset(
    {
        "jbb-pair",
        "jbb-gcg",
        "jbb-jbc",
        "gptfuzz",
        "bitext",
        "self-instruct",
        "toxigen",
        "advbench-refusal",
        "moderation",
        "constructed-support",
        "advbench",
        "mt-bench",
    }
)

_OLD = FitConfig(
    depth=32,
    n_risk_bins=10,
    n_request_bins=3,
    kappa=20.0,
    holdout=0.15,
    bin_mode="top",
    request_bin_mode="probability",
    iterations=400,
    threshold_kind="support",
    harm_rules=True,
    harm_score_fpr=0.005,
    harm_score_budgets=(("alarming", 0.025),),
)

_NEW = replace(
    _OLD,
    n_request_bins=6,
    harm_rules=True,
    certain_rule=False,
    harm_score_min_features=True,
    n_risk_bins=8,
    request_bin_mode="benign-tail",
    req_char_ngrams=(3, 5),
    req_buckets_log2=18,
    req_max_chars=1000,
    req_last_user=True,
    req_norm="l2",
    req_l2=1e-5,
    iterations=150,
    threshold_kind="support",
    threshold_budgets=BUDGETS,
    threshold_pooled=tuple(POOLED_KINDS.items()),
    # no scorer rule s*: a response-only h = 1 ignores the request, and off-distribution it fired
    # on compliant openers of ordinary answers ("Sure! Here is a simple JavaScript snippet")
    harm_score_fpr=None,
)

#: the encoder recipes' common settings: the shipped recipe's, cross-fitted by text, plus the
#: request probe (3 style variants per request, 16 phrasing directions projected out)
_ENCODER = replace(
    _NEW,
    req_embed=True,
    cross_fit=5,
    cross_fit_by="text",
    encoder_probe=True,
    probe_styles=3,
    probe_style_dims=16,
)

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "cb96e4601149",
            _OLD,
            families=_OLD_FAMILIES,
            description="the model shipped before: its 9 sources and settings",
        ),
        Recipe("old-config-all-data", _OLD, description="old settings on every family"),
        Recipe("lexical", _NEW, description="all data, request char n-grams, 5 request bins"),
        Recipe(
            "glove",
            replace(_NEW, resp_embed=True, req_embed=True),
            embeddings=True,
            description="as lexical + GloVe read-out in both scorers",
        ),
        Recipe(
            "glove-request-with-sstar",
            replace(_NEW, req_embed=True, harm_score_fpr=0.005, harm_score_budgets=RULE_BUDGETS),
            embeddings=True,
            description="as glove-request, plus the scorer rule s* (lost: see docs/evaluation.md)",
        ),
        Recipe(
            "glove-request-xfit-source",
            replace(_NEW, req_embed=True, cross_fit=5, cross_fit_by="source"),
            embeddings=True,
            description="as glove-request, bins and counts from scores cross-fitted by whole "
            "sources (5 folds; lost: see docs/evaluation.md)",
        ),
        Recipe(
            "glove-request-risky4",
            replace(_NEW, req_embed=True, resp_risky_weight=4.0, resp_risky_bins=2),
            embeddings=True,
            description="as glove-request, the response scorer trained with 4x weight on "
            "non-refusing replies to requests in the top two request bins",
        ),
        Recipe(
            "glove-request-xfit-text",
            replace(_NEW, req_embed=True, cross_fit=5, cross_fit_by="text"),
            embeddings=True,
            exclude=frozenset({"constructed-alarming"}),
            description="all data; request scorer l2 (words, char 3-5-grams, GloVe read-out); "
            "response scorer word uni+bigrams; request bins, response bins and counts from "
            "out-of-fold scores (5 folds of hashed request texts / trajectories)",
        ),
        Recipe(
            "intent",
            replace(
                _NEW,
                req_embed=True,
                cross_fit=5,
                cross_fit_by="text",
                req_styles=3,
                req_content_only=True,
                monotone_request=True,
                n_request_bins=9,
                request_bin_mode="two-sided",
            ),
            embeddings=True,
            exclude=frozenset({"constructed-alarming"}),
            description="as glove-request-xfit-text, the request scorer trained on every request "
            "also in 3 other styles (of imperative, question, first person, polite, role-play; "
            "variants in their request's fold), 9 request bins on both sides of the label "
            "(benign and harmful out-of-fold quantiles), request features of content words only "
            "(style words skipped), h non-decreasing in the request bin; compliance = no "
            "refusal in the first words",
        ),
        Recipe(
            "encoder",
            _ENCODER,
            embeddings=True,
            encoder=True,
            max_per_family=300,
            exclude=frozenset({"constructed-alarming"}),
            description="as glove-request-xfit-text, plus the request-intent probe on "
            "all-MiniLM-L6-v2 (served by vLLM, /v1/embeddings) as the external dimension: 7 "
            "bins (none + 6 at out-of-fold quantiles of both classes), one chain per bin, a "
            "verdict replacing the lexical request bin (which stays for the fallback); the probe "
            "trained on every request also in 3 other styles (variants in their request's "
            "fold) and blind to the 16 directions those variants differ in (the phrasing "
            "subspace projected out); compliance = no refusal in the first words",
        ),
        Recipe(
            "encoder-mix",
            replace(_ENCODER, probe_lexical_mix=True),
            embeddings=True,
            encoder=True,
            max_per_family=300,
            exclude=frozenset({"constructed-alarming"}),
            description="as encoder, the verdict's bin of the mean of the probe's and the "
            "lexical request scorer's logits, each standardised on benign training requests "
            "(the encoder's meaning and the n-grams' explicit words, two views of one request)",
        ),
        Recipe(
            "encoder-mix-fine",
            replace(
                _ENCODER,
                probe_lexical_mix=True,
                probe_benign_levels=(0.5, 0.9, 0.98, 0.995, 0.999),
                probe_harmful_levels=(0.25, 0.5, 0.75, 0.9),
            ),
            embeddings=True,
            encoder=True,
            max_per_family=300,
            exclude=frozenset({"constructed-alarming"}),
            description="as encoder-mix, with finer verdict bins at the top (edges also at the "
            "0.999 benign and the 0.75 / 0.9 harmful quantiles of the mixed verdict)",
        ),
        Recipe(
            "glove-request-xfit-text-win40",
            replace(_NEW, req_embed=True, cross_fit=5, cross_fit_by="text", req_window=40),
            embeddings=True,
            exclude=frozenset({"constructed-alarming"}),
            description="as glove-request-xfit-text, the request score of a text over 40 words "
            "also the maximum over half-overlapping 40-word windows",
        ),
        Recipe(
            "glove-request-7bins",
            replace(_NEW, req_embed=True, n_request_bins=7),
            embeddings=True,
            exclude=frozenset({"constructed-alarming"}),
            description="as glove-request, with a 7th request bin (edge at the 1 - 1/6250 "
            "quantile of benign requests)",
        ),
        Recipe(
            "glove-request-alarming",
            replace(_NEW, req_embed=True),
            embeddings=True,
            description="as glove-request, also fitted on the constructed alarming-but-benign "
            "family (lost: see docs/evaluation.md)",
        ),
        Recipe(
            "glove-request",
            replace(_NEW, req_embed=True),
            embeddings=True,
            # measured and lost as training data (docs/evaluation.md): kept as a left-out
            # alarming-but-benign family of the evaluation only
            exclude=frozenset({"constructed-alarming"}),
            description="the model shipped before glove-request-xfit-text: the same, with "
            "in-sample scores for bins and counts",
        ),
    )
}
SHIPPED = "glove-request-xfit-text"
#: the leave-one-family-out run of the shipped recipe that sets its default τ: ``build.py`` with
#: no threshold option applies it. ``SHIPPED_THRESHOLD`` None: the lowest τ that kept every
#: left-out benign family within its false-halt budget (if above the fit's own choice), so the
#: default holds on data the model never saw (docs/evaluation.md)
SHIPPED_THRESHOLD: float | None = None
SHIPPED_LOFO = "benchmarks/results/lofo/glove-request-xfit-text.json"


def trajectories(rows: Sequence[dict[str, Any]]) -> list[Trajectory]:
    """Parsed rows; safe replies of families that are not benign-side get kind ``adversarial``."""
    out = []
    for i, r in enumerate(rows):
        meta = r["meta"]
        side = FAMILIES.get(meta.get("family", ""), {}).get("side")
        if r["label"] == "safe" and (side != "benign" or meta.get("request_label") == "harmful"):
            r = {**r, "meta": {**meta, "kind": ADVERSARIAL_SAFE}}
        elif meta.get("family") in WEB_TEXT:
            r = {**r, "meta": {**meta, "kind": WEB_TEXT[meta["family"]]}}
        out.append(parse_trajectory(r, "corpus", i))
    return out


#: the answer a request-only family's requests are measured with (``request_probes``): compliant
#: and generic, so what decides is the request
PROBE_ANSWER = (
    "Sure, here is how to do that. Step 1: get everything you need ready. Step 2: follow the "
    "method carefully and check the result."
)


def request_probes(reqs: Sequence[RequestExample]) -> dict[str, list[Trajectory]]:
    """Evaluation-only trajectories of the request-only families: each request with
    ``PROBE_ANSWER`` (harmful requests: harmful; benign ones: a safe answer of kind
    ``alarming``). Never fitted on."""
    out: dict[str, list[Trajectory]] = {}
    for i, r in enumerate(reqs):
        if FAMILIES.get(r.source, {}).get("kind") != "requests":
            continue
        row = {
            "id": f"probe/{r.source}/{i}",
            "source": r.source,
            "prompt": [{"role": "user", "content": r.text}],
            "prefill": "",
            "response": PROBE_ANSWER,
            "label": "harmful" if r.harmful else "safe",
            "meta": {"family": r.source, "kind": "harmful" if r.harmful else "alarming"},
        }
        out.setdefault(r.source, []).append(parse_trajectory(row, "probe", i))
    return out


def request_examples(rows: Sequence[dict[str, Any]]) -> list[RequestExample]:
    return [RequestExample(r["text"], r["label"] == "harmful", r["family"]) for r in rows]


def load(
    data: Path, max_per_family: int | None, progress: Callable[[str], None] | None = None
) -> tuple[list[Trajectory], list[RequestExample]]:
    corpus = load_corpus(data, max_per_family=max_per_family, progress=progress)
    return trajectories(corpus.trajectories), request_examples(corpus.requests)


ROOT = Path(__file__).resolve().parents[2]


def default_data_dir() -> Path:
    """The public data, verified against the shipped manifest: ``$GUARD_DATA_DIR``, else
    ``shared/data`` beside the checkout, else where ``guard data fetch`` put it (a clear error
    naming ``guard data fetch`` when none has it)."""
    from guard.training.datasets import data_dir

    return data_dir()


_GLOVE: list[WordVectors] = []


def glove() -> WordVectors:
    if not _GLOVE:
        _GLOVE.append(load_glove())
    return _GLOVE[0]


_ENCODER: list[Any] = []


def encoder() -> Any:
    """The sentence encoder the ``encoder`` recipes fit with: vLLM at ``$GUARD_ENCODER_URL``
    (default ``http://127.0.0.1:8002``, as ``scripts/vllm/encoder_server.sh start`` serves it),
    embeddings cached under ``$GUARD_CACHE/embeddings``. One per process."""
    if not _ENCODER:
        import os

        from guard.scoring.embeddings import make_encoder

        cache = Path(os.environ.get("GUARD_CACHE", Path.home() / ".cache" / "guard"))
        _ENCODER.append(
            make_encoder(
                os.environ.get("GUARD_ENCODER_URL", "http://127.0.0.1:8002"),
                cache_dir=cache / "embeddings",
            )
        )
    return _ENCODER[0]


def fitter(
    recipe: Recipe,
    info: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Callable[[Sequence[Trajectory], Sequence[RequestExample]], RiskModel]:
    """A function (trajectories, request examples) -> fitted model for ``recipe``."""

    cache: dict[tuple[int, int], RiskModel] = {}

    def run(trajs: Sequence[Trajectory], reqs: Sequence[RequestExample]) -> RiskModel:
        trajs, reqs = recipe.select(trajs, reqs)
        # a recipe restricted to some families fits the same data for every other left-out
        # family: fit once
        key = (hash(tuple(t.id for t in trajs)), hash(tuple(r.text for r in reqs)))
        if key in cache:
            return cache[key]
        res = fit(
            trajs,
            recipe.config,
            requests=reqs,
            info=info,
            progress=progress,
            embeddings=glove() if recipe.embeddings else None,
            encoder=encoder() if recipe.encoder else None,
        )
        cache[key] = res.model
        return res.model

    return run


__all__ = [
    "FAMILIES",
    "RECIPES",
    "SHIPPED",
    "SHIPPED_LOFO",
    "SHIPPED_THRESHOLD",
    "Recipe",
    "fitter",
    "load",
    "request_probes",
]
