"""The built-in lexical scorer: a hashed word uni/bigram (+ character n-gram) linear model,
updated incrementally.

Features of each completed word: its unigram, the bigram with the previous word and, when the
scorer has ``char_ngrams = (lo, hi)``, the character n-grams (lo..hi) of ``<word>`` (boundary
marks included). The score of a text is

    logit = bias + num / den,   num = sum_j decay^(k-1-j) S_j,   den = sum_j decay^(k-1-j) m_j

over its k words (``S_j``: sum of the weights of word j's features, ``m_j``: their number). With
``decay = 1`` this is the mean feature weight (a logistic model over the l1-normalised bag of
features); with ``decay < 1`` it is an exponentially weighted mean over recent words (a soft
sliding window of about ``1 / (1 - decay)`` words), so one harmful passage is not averaged away
by a long benign preamble. Feeding text in pieces adds only the new words, so the per-token work
is O(new words) (a word's unigram + character n-gram weight sum is memoised per scorer), and the
value after any split of the text into pieces equals the value for the whole text (tested).
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Final, Protocol

from guard.tracking.text import (
    ABUSE_WORDS,
    ADDRESSEE_WORDS,
    CARD_GROUPS,
    COMPLY_AFTER_WORDS,
    LINE_OPENER_WORDS,
    MARKERS,
    NEUTRAL_AFTER_WORDS,
    OPENER_WORDS,
    PHASE_COMPLYING,
    PHASE_NEUTRAL,
    PHASE_REFUSED_COMPLYING,
    PHASE_REFUSING,
    PHASE_RULES,
    PHASE_START,
    REFUSAL_WORDS,
    SSN_WORDS_BEFORE_NUMBER,
    STYLE_WORDS,
    WORD_RE,
    LeakWatch,
)

_DIGIT: Final = re.compile(r"\d")

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


#: namespace of character n-gram hashes (kept apart from word hashes)
_CHAR_NS: Final = "\x01"


def word_feature_ids(word: str, mask: int, char_ngrams: tuple[int, int] = (0, 0)) -> list[int]:
    """Bucket ids of one word's own features: unigram, then its character n-grams of ``<word>``."""
    ids = [zlib.crc32(word.encode("utf-8")) & mask]
    lo, hi = char_ngrams
    if lo > 0:
        padded = f"<{word}>"
        n = len(padded)
        for k in range(lo, hi + 1):
            for i in range(n - k + 1):
                ids.append(zlib.crc32((_CHAR_NS + padded[i : i + k]).encode("utf-8")) & mask)
    return ids


def split_words(text: str) -> list[str]:
    """Complete words of a whole text (lowercased, apostrophes stripped at the ends)."""
    text = text.lower().replace("\u2019", "'")
    out = []
    for w in WORD_RE.findall(text):
        w = w.strip("'")
        if w:
            out.append(w)
    return out


def content_words(words: list[str]) -> list[str]:
    """``words`` without the style words (``STYLE_WORDS``)."""
    return [w for w in words if w not in STYLE_WORDS]


def text_feature_ids(
    text: str, mask: int, char_ngrams: tuple[int, int] = (0, 0), content_only: bool = False
) -> list[int]:
    """All feature ids of a whole text, in order (per word: unigram, character n-grams, bigram);
    ``content_only``: of its content words only (bigrams join consecutive content words)."""
    ids: list[int] = []
    prev = BOS
    words = split_words(text)
    for w in content_words(words) if content_only else words:
        ids.extend(word_feature_ids(w, mask, char_ngrams))
        ids.append(zlib.crc32(f"{prev} {w}".encode()) & mask)
        prev = w
    return ids


#: how a text's feature weights combine (see ``LexicalScorer.norm``)
NORMS: Final = ("mean", "l2")

#: memo entries per scorer before the memo is cleared (bounded memory)
MEMO_MAX: Final = 1 << 17


class LexicalScorer:
    """Weights of a hashed-feature linear model (``weights`` has a power-of-two length).

    ``word_table`` (optional) maps a word to one more weight: the linear read-out of a pretrained
    word embedding, ``u(word) = w_e . e(word)``, precomputed at fit time. A word in the table counts
    as one more feature with that weight, so the score stays a mean of feature weights and the
    per-token work stays one memoised lookup per word. It carries meaning to wordings never seen
    in fitting: a word unseen in the training data still has its embedding's weight.
    """

    __slots__ = (
        "_ids_memo",
        "_memo",
        "_name",
        "bias",
        "char_ngrams",
        "content_only",
        "decay",
        "mask",
        "norm",
        "phase_rule",
        "weights",
        "window",
        "word_table",
    )

    def __init__(
        self,
        weights: Sequence[float],
        bias: float,
        name: str = "lexical",
        *,
        char_ngrams: tuple[int, int] = (0, 0),
        decay: float = 1.0,
        word_table: Mapping[str, float] | None = None,
        norm: str = "mean",
        window: int = 0,
        content_only: bool = False,
        phase_rule: str = "no-refusal",
    ) -> None:
        n = len(weights)
        if n == 0 or n & (n - 1):
            raise ValueError("weights length must be a power of two")
        lo, hi = int(char_ngrams[0]), int(char_ngrams[1])
        if lo < 0 or (lo > 0 and hi < lo):
            raise ValueError("char_ngrams must be (0, 0) or (lo, hi) with 1 <= lo <= hi")
        if not 0.0 < decay <= 1.0:
            raise ValueError("decay must be in (0, 1]")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}")
        if window < 0 or (window and norm != "l2"):
            raise ValueError("window must be 0, or > 0 with norm 'l2'")
        if content_only and norm != "l2":
            raise ValueError("content_only needs norm 'l2' (whole texts: the request scorer)")
        if phase_rule not in PHASE_RULES:
            raise ValueError(f"phase_rule must be one of {PHASE_RULES}")
        #: how a response stream reads refusal and compliance (``guard.tracking.text``)
        self.phase_rule = phase_rule
        #: "l2" only: score the content words of a text, skipping ``STYLE_WORDS`` (the goal of a
        #: request, not its phrasing)
        self.content_only = bool(content_only)
        #: "l2" only: a text longer than this many words also scores as the maximum over windows
        #: of this many words (half-overlapping): a harmful request wrapped in a long template is
        #: not averaged away by the template (0: the whole text only)
        self.window = int(window)
        #: "mean": mean weight of the text's features, incremental (response streams); "l2": the
        #: distinct features' weights over sqrt(their number) plus the mean word-table weight of
        #: the words in the table (whole texts only: the request scorer)
        self.norm = norm
        self.weights: list[float] = [float(x) for x in weights]
        self.bias = float(bias)
        self.mask = n - 1
        self.char_ngrams = (lo, hi) if lo > 0 else (0, 0)
        self.decay = float(decay)
        self._name = name
        self.word_table: Mapping[str, float] = word_table if word_table is not None else {}
        #: word -> its own feature ids (the l2 request path)
        self._ids_memo: dict[str, tuple[int, ...]] = {}
        #: word -> (weight sum of its unigram + character n-grams (+ table weight), their number)
        self._memo: dict[str, tuple[float, int]] = {}

    def word_weight(self, word: str) -> tuple[float, int]:
        """Memoised (weight sum, count) of a word's own features (unigram + character n-grams)."""
        hit = self._memo.get(word)
        if hit is not None:
            return hit
        w = self.weights
        ids = word_feature_ids(word, self.mask, self.char_ngrams)
        res = (sum(w[i] for i in ids), len(ids))
        u = self.word_table.get(word)
        if u is not None:
            res = (res[0] + u, res[1] + 1)
        if len(self._memo) >= MEMO_MAX:
            self._memo.clear()
        self._memo[word] = res
        return res

    @property
    def name(self) -> str:
        return self._name

    def stream(self) -> LexicalStream:
        if self.norm != "mean":
            raise ValueError("only a 'mean' scorer runs incrementally")
        return LexicalStream(self)

    def score_text(self, text: str) -> float:
        """Logit of a whole text (all its words count, including the last)."""
        if self.norm == "l2":
            return self._score_l2(text)
        if self.decay == 1.0 and not self.word_table:
            ids = text_feature_ids(text, self.mask, self.char_ngrams)
            if not ids:
                return self.bias
            w = self.weights
            return self.bias + sum(w[i] for i in ids) / len(ids)
        st = self.stream()
        st.feed(text)
        st.flush()
        return st.logit()

    def _score_l2(self, text: str) -> float:
        words = split_words(text)
        if self.content_only:
            words = content_words(words)
        logit = self._l2_words(words, BOS)
        win = self.window
        n = len(words)
        if win and n > win:
            # half-overlapping windows of exactly ``win`` words, the last one ending the text
            # (l2 scores of texts of different lengths are not comparable)
            for i in (*range(0, n - win, max(win // 2, 1)), n - win):
                part = words[i : i + win]
                logit = max(logit, self._l2_words(part, words[i - 1] if i else BOS))
        return logit

    def _l2_words(self, words: list[str], prev: str) -> float:
        # the same feature set as text_feature_ids, with each word's own ids memoised (a request
        # is scored once, but its words recur across requests: ~10x less work per request)
        ids: set[int] = set()
        memo = self._ids_memo
        mask = self.mask
        for w in words:
            own = memo.get(w)
            if own is None:
                own = tuple(word_feature_ids(w, mask, self.char_ngrams))
                if len(memo) >= MEMO_MAX:
                    memo.clear()
                memo[w] = own
            ids.update(own)
            ids.add(zlib.crc32(f"{prev} {w}".encode()) & mask)
            prev = w
        logit = self.bias
        if ids:
            wt = self.weights
            logit += sum(wt[i] for i in ids) / math.sqrt(len(ids))
        if self.word_table:
            table = self.word_table
            us = [u for u in (table.get(x) for x in words) if u is not None]
            if us:
                logit += sum(us) / len(us)
        return logit


class LexicalStream:
    """Incremental lexical score plus the response *phase* (refusal/compliance markers).

    A word counts once it is complete, i.e. once a non-word character follows it; ``flush``
    completes the trailing word at the end of a text. Opener markers ("Sure", "Okay") count in the
    first words of the response and in the first words after a newline or a colon.
    """

    __slots__ = (
        "_after",
        "_after_phase",
        "_char",
        "_decay",
        "_mask",
        "_partial",
        "_refusal_words",
        "_sc",
        "_w",
        "abuse",
        "bias",
        "den",
        "digits",
        "harm_flag",
        "leak",
        "line_words",
        "n_feat",
        "n_words",
        "phase",
        "prev",
        "record",
        "record_vocab",
        "record_words",
        "since_you",
        "ssn_armed",
        "sum_w",
        "words3",
        "year_groups",
    )

    def __init__(self, scorer: LexicalScorer) -> None:
        self._sc = scorer
        self._w = scorer.weights
        self._mask = scorer.mask
        self._char = scorer.char_ngrams
        self._decay = scorer.decay
        self.bias = scorer.bias
        # the phase rule, read once per stream (not per word)
        no_refusal = scorer.phase_rule == "no-refusal"
        self._after = COMPLY_AFTER_WORDS if no_refusal else NEUTRAL_AFTER_WORDS
        self._after_phase = PHASE_COMPLYING if no_refusal else PHASE_NEUTRAL
        self._refusal_words = REFUSAL_WORDS if no_refusal else 1 << 62
        self._partial = ""
        self.prev = BOS
        self.words3: tuple[str, str] = ("", "")
        self.sum_w = 0.0
        #: (decayed) feature count: the denominator of the score
        self.den = 0.0
        self.n_feat = 0
        self.n_words = 0
        self.phase = PHASE_START
        self.line_words = 0
        self.abuse = 0
        self.digits = 0
        #: how many of those 4-digit groups read as years (1900-2099): a list of years is no card
        self.year_groups = 0
        #: words left in which a number after "ssn" / "social security number" is a leak
        self.ssn_armed = 0
        self.since_you = 99
        #: the prompt's credentials (``leak_watch``): a word that writes one is a leak (checked
        #: on the word being written too, so a secret is cut off midway); None: nothing to watch
        self.leak: LeakWatch | None = None
        #: set once a harm rule fires (see guard.tracking.text.ABUSE_WORDS / CARD_DIGITS)
        self.harm_flag = False
        #: when a list, every feature id is appended to it (used by fitting)
        self.record: list[int] | None = None
        #: when a list, the feature count after every completed word is appended (fitting)
        self.record_words: list[int] | None = None
        #: when a list, every completed word is appended (fitting: embedding rows)
        self.record_vocab: list[str] | None = None

    def copy(self) -> LexicalStream:
        new = LexicalStream.__new__(LexicalStream)
        new._sc = self._sc
        new._w = self._w
        new._mask = self._mask
        new._char = self._char
        new._decay = self._decay
        new._after = self._after
        new._after_phase = self._after_phase
        new._refusal_words = self._refusal_words
        new.den = self.den
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
        new.year_groups = self.year_groups
        new.ssn_armed = self.ssn_armed
        new.since_you = self.since_you
        new.leak = self.leak
        new.harm_flag = self.harm_flag
        new.record = None
        new.record_words = None
        new.record_vocab = None
        return new

    def logit(self) -> float:
        d = self.den
        return self.bias + self.sum_w / d if d else self.bias

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
        if "," in text and (self.digits or _DIGIT.search(text)):
            # "1000, 1200, 1500" is a list of numbers; a card number has no commas in it: a comma
            # ends a run of digit groups (the word before it completes first)
            pieces = text.split(",")
            for piece in pieces[:-1]:
                self._feed_words(piece + ",")
                self.digits = self.year_groups = 0
            if pieces[-1]:
                self._feed_words(pieces[-1])
            return
        self._feed_words(text)

    def _feed_words(self, text: str) -> None:
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
        leak = self.leak
        if leak is not None and self._partial and leak.hit(self._partial.lstrip("'")):
            self.harm_flag = True

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
        i2 = zlib.crc32(f"{self.prev} {w}".encode()) & self._mask
        ws, m = self._sc.word_weight(w)
        ws += self._w[i2]
        m += 1
        if self._decay == 1.0:
            self.sum_w += ws
            self.den += m
        else:
            g = self._decay
            self.sum_w = g * self.sum_w + ws
            self.den = g * self.den + m
        if self.record is not None:
            self.record.extend(word_feature_ids(w, self._mask, self._char))
            self.record.append(i2)
            if self.record_words is not None:
                self.record_words.append(len(self.record))
            if self.record_vocab is not None:
                self.record_vocab.append(w)
        self.n_feat += m
        self.n_words += 1
        self.line_words += 1
        # harm rules (cheap: a set lookup and an isdigit per word)
        if self.leak is not None and self.leak.hit(w):
            self.harm_flag = True
        if w.isdigit():
            # payment-card layout: consecutive 4-digit groups ("4111 1111 1111 1111")
            if len(w) == 4:
                self.digits += 1
                self.year_groups += "1900" <= w <= "2099"
            else:
                self.digits = self.year_groups = 0
            if (self.digits >= CARD_GROUPS and self.year_groups < self.digits) or self.ssn_armed:
                self.harm_flag = True
        else:
            self.digits = self.year_groups = 0
            if w == "ssn" or (w == "number" and self.prev == "security"):
                self.ssn_armed = SSN_WORDS_BEFORE_NUMBER + 1
            if self.ssn_armed:
                self.ssn_armed -= 1
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
                if phase == PHASE_REFUSING and self.n_words > self._refusal_words:
                    continue  # a late disclaimer does not undo compliance
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
        if self.phase == PHASE_START and self.n_words >= self._after:
            # "no-refusal": no refusal in the first words, so it is answering ("markers": neutral)
            self.phase = self._after_phase
        self.words3 = (self.words3[1], w)
        self.prev = w
