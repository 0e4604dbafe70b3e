"""Per-token Markov state tracking (pure core: numpy-free, stdlib only)."""

from guard.tracking.lexical import (
    LexicalScorer,
    LexicalStream,
    Scorer,
    ScoreStream,
    split_words,
    text_feature_ids,
)
from guard.tracking.text import (
    N_PHASES,
    PHASE_COMPLYING,
    PHASE_NAMES,
    PHASE_NEUTRAL,
    PHASE_REFUSED_COMPLYING,
    PHASE_REFUSING,
    PHASE_START,
    LeakWatch,
    content_text,
    context_secrets,
    leak_watch,
    prompt_text,
    request_text,
    tokenize_approx,
)
from guard.tracking.tracker import StateSpace, Tracker, TrackerTables

__all__ = [
    "N_PHASES",
    "PHASE_COMPLYING",
    "PHASE_NAMES",
    "PHASE_NEUTRAL",
    "PHASE_REFUSED_COMPLYING",
    "PHASE_REFUSING",
    "PHASE_START",
    "LeakWatch",
    "LexicalScorer",
    "LexicalStream",
    "ScoreStream",
    "Scorer",
    "StateSpace",
    "Tracker",
    "TrackerTables",
    "content_text",
    "context_secrets",
    "leak_watch",
    "prompt_text",
    "request_text",
    "split_words",
    "text_feature_ids",
    "tokenize_approx",
]
