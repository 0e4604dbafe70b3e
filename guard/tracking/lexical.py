"""The built-in lexical scorer: a hashed word uni/bigram linear model, updated incrementally.

The score of a text is ``logit = bias + (sum of the weights of its features) / (number of
features)``: a logistic model over the l1-normalised bag of hashed features. Feeding text in pieces
adds only the new features, so the per-token work is O(new words), and the value after any split
of the text into pieces equals the value for the whole text (tested).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import Final, Protocol

from guard.tracking.text import (
    ABUSE_WORDS,
    ADDRESSEE_WORDS,
    CARD_GROUPS,
    LINE_OPENER_WORDS,
    MARKERS,
    NEUTRAL_AFTER_WORDS,
    OPENER_WORDS,
    PHASE_COMPLYING,
    PHASE_NEUTRAL,
    PHASE_REFUSED_COMPLYING,
    PHASE_REFUSING,
    PHASE_START,
    WORD_RE,
)

#: characters after which opener markers count again (start of a line / of a role-play turn)
_LINE_BREAK = re.compile(r"([\n:])")

BOS: Final = "<s>"


class ScoreStream(Protocol):
    """Incremental state of one scorer over one growing text."""

    def feed(self, text: str) -> None: ...

    def logit(self) -> float: ...

    def copy(self) -> ScoreStream: ...


class Scorer(Protocol):
    """A text scorer that can be run incrementally (the lexical one) or asked now and then
    (an external guard classifier, whose results arrive via ``Tracker.set_external_score``)."""

    @property
    def name(self) -> str: ...

    def stream(self) -> ScoreStream: ...

    def score_text(self, text: str) -> float: ...


def feature_ids(prev: str, word: str, mask: int) -> tuple[int, int]:
    """Bucket ids of the unigram ``word`` and the bigram ``prev word``."""
    return (
        zlib.crc32(word.encode("utf-8")) & mask,
        zlib.crc32(f"{prev} {word}".encode()) & mask,
    )


def split_words(text: str) -> list[str]:
    """Complete words of a whole text (lowercased, apostrophes stripped at the ends)."""
    text = text.lower().replace("\u2019", "'")
    out = []
    for w in WORD_RE.findall(text):
        w = w.strip("'")
        if w:
            out.append(w)
    return out


def text_feature_ids(text: str, mask: int) -> list[int]:
    """All feature ids of a whole text, in order (unigram then bigram for each word)."""
    ids: list[int] = []
    prev = BOS
    for w in split_words(text):
        ids.extend(feature_ids(prev, w, mask))
        prev = w
    return ids


class LexicalScorer:
    """Weights of a hashed-feature linear model (``weights`` has a power-of-two length)."""

    __slots__ = ("_name", "bias", "mask", "weights")

    def __init__(self, weights: Sequence[float], bias: float, name: str = "lexical") -> None:
        n = len(weights)
        if n == 0 or n & (n - 1):
            raise ValueError("weights length must be a power of two")
        self.weights: list[float] = [float(x) for x in weights]
        self.bias = float(bias)
        self.mask = n - 1
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def stream(self) -> LexicalStream:
        return LexicalStream(self)

    def score_text(self, text: str) -> float:
        """Logit of a whole text (all its words count, including the last)."""
        ids = text_feature_ids(text, self.mask)
        if not ids:
            return self.bias
        w = self.weights
        return self.bias + sum(w[i] for i in ids) / len(ids)


class LexicalStream:
    """Incremental lexical score plus the response *phase* (refusal/compliance markers).

    A word counts once it is complete, i.e. once a non-word character follows it; ``flush``
    completes the trailing word at the end of a text. Opener markers ("Sure", "Okay") count in the
    first words of the response and in the first words after a newline or a colon.
    """

    __slots__ = (
        "_mask",
        "_partial",
        "_w",
        "abuse",
        "bias",
        "digits",
        "harm_flag",
        "line_words",
        "n_feat",
        "n_words",
        "phase",
        "prev",
        "record",
        "since_you",
        "sum_w",
        "words3",
    )

    def __init__(self, scorer: LexicalScorer) -> None:
        self._w = scorer.weights
        self._mask = scorer.mask
        self.bias = scorer.bias
        self._partial = ""
        self.prev = BOS
        self.words3: tuple[str, str] = ("", "")
        self.sum_w = 0.0
        self.n_feat = 0
        self.n_words = 0
        self.phase = PHASE_START
        self.line_words = 0
        self.abuse = 0
        self.digits = 0
        self.since_you = 99
        #: set once a harm rule fires (see guard.tracking.text.ABUSE_WORDS / CARD_DIGITS)
        self.harm_flag = False
        #: when a list, every feature id is appended to it (used by fitting)
        self.record: list[int] | None = None

    def copy(self) -> LexicalStream:
        new = LexicalStream.__new__(LexicalStream)
        new._w = self._w
        new._mask = self._mask
        new.bias = self.bias
        new._partial = self._partial
        new.prev = self.prev
        new.words3 = self.words3
        new.sum_w = self.sum_w
        new.n_feat = self.n_feat
        new.n_words = self.n_words
        new.phase = self.phase
        new.line_words = self.line_words
        new.abuse = self.abuse
        new.digits = self.digits
        new.since_you = self.since_you
        new.harm_flag = self.harm_flag
        new.record = None
        return new

    def logit(self) -> float:
        n = self.n_feat
        return self.bias + self.sum_w / n if n else self.bias

    def feed(self, text: str) -> None:
        if not text:
            return
        if "\n" in text or ":" in text:
            for i, piece in enumerate(_LINE_BREAK.split(text)):
                if i % 2:
                    self._feed(piece)  # completes the word before the break
                    self.line_words = 0
                elif piece:
                    self._feed(piece)
            return
        self._feed(text)

    def _feed(self, text: str) -> None:
        buf = self._partial + text.lower()
        if "\u2019" in buf:
            buf = buf.replace("\u2019", "'")
        last = buf[-1]
        words = WORD_RE.findall(buf)
        if last.isalnum() or last == "_" or last == "'":
            self._partial = words.pop() if words else ""
        else:
            self._partial = ""
        for w in words:
            self._word(w)

    def flush(self) -> None:
        """Complete a trailing word (end of text)."""
        if self._partial:
            p = self._partial
            self._partial = ""
            self._word(p)

    def _word(self, w: str) -> None:
        w = w.strip("'")
        if not w:
            return
        mask = self._mask
        wt = self._w
        i1 = zlib.crc32(w.encode()) & mask
        i2 = zlib.crc32(f"{self.prev} {w}".encode()) & mask
        self.sum_w += wt[i1] + wt[i2]
        if self.record is not None:
            self.record.append(i1)
            self.record.append(i2)
        self.n_feat += 2
        self.n_words += 1
        self.line_words += 1
        # harm rules (cheap: a set lookup and an isdigit per word)
        if w.isdigit():
            # payment-card layout: consecutive 4-digit groups ("4111 1111 1111 1111")
            self.digits = self.digits + 1 if len(w) == 4 else 0
            if self.digits >= CARD_GROUPS:
                self.harm_flag = True
        else:
            self.digits = 0
            if w in ABUSE_WORDS:
                self.abuse += 1
                if self.abuse >= 2 or self.since_you <= 3:
                    self.harm_flag = True
            self.since_you = 0 if w in ADDRESSEE_WORDS else self.since_you + 1
        marks = MARKERS.get(w)
        if marks is not None:
            p1, p2 = self.words3  # p2 is the previous word, p1 the one before
            for before, phase, opener in marks:
                if opener and self.n_words > OPENER_WORDS and self.line_words > LINE_OPENER_WORDS:
                    continue
                k = len(before)
                if k == 0 or (k == 1 and before[0] == p2) or (k == 2 and before == (p1, p2)):
                    cur = self.phase
                    if (
                        phase == PHASE_COMPLYING
                        and cur
                        in (
                            PHASE_REFUSING,
                            PHASE_REFUSED_COMPLYING,
                        )
                    ) or cur == PHASE_REFUSED_COMPLYING:
                        phase = PHASE_REFUSED_COMPLYING
                    self.phase = phase
                    break
        if self.phase == PHASE_START and self.n_words >= NEUTRAL_AFTER_WORDS:
            self.phase = PHASE_NEUTRAL
        self.words3 = (self.words3[1], w)
        self.prev = w
