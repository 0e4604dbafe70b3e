"""Guard-model scorers: a guard classifier (or generative guard) served by vLLM, asked every k
tokens and at sentence ends, whose verdict joins the Markov state as an extra dimension.

* :mod:`guard.scoring.http`: ``ClassifyClient`` (``POST /classify``), ``GenerativeScoringClient``
  (``POST /generative_scoring``), ``ScorerError``, ``make_external_scorer`` (offline fit).
* :mod:`guard.scoring.batcher`: ``MicroBatcher`` coalescing concurrent streams' requests.
* :mod:`guard.scoring.verdicts`: ``VerdictPolicy`` / ``VerdictSchedule`` (pure: when and what).
"""

from guard.scoring.batcher import CountingObserver, MicroBatcher, ScorerObserver
from guard.scoring.http import (
    DEFAULT_REQUEST_TEMPLATE,
    DEFAULT_RESPONSE_TEMPLATE,
    BatchedHTTPScorer,
    ClassifyClient,
    GenerativeScoringClient,
    ScorerError,
    ScoringClient,
    make_external_scorer,
)
from guard.scoring.verdicts import VerdictPolicy, VerdictSchedule, verdict_bin

__all__ = [
    "DEFAULT_REQUEST_TEMPLATE",
    "DEFAULT_RESPONSE_TEMPLATE",
    "BatchedHTTPScorer",
    "ClassifyClient",
    "CountingObserver",
    "GenerativeScoringClient",
    "MicroBatcher",
    "ScorerError",
    "ScorerObserver",
    "ScoringClient",
    "VerdictPolicy",
    "VerdictSchedule",
    "make_external_scorer",
    "verdict_bin",
]
