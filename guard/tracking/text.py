"""Text helpers shared by fitting and serving: approximate tokenizer, prompt flattening, phases.

Everything here is deterministic and process-independent (no ``hash()``: it is salted per process).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from guard import wire

#: Approximate BPE-like tokenizer used when a trajectory carries no ``tokens``. It splits text the
#: way GPT-2/Llama byte-level BPE pre-tokenizers do: a leading space sticks to the following word,
#: letters, digit groups of up to three, punctuation runs and whitespace runs are separate pieces.
#: Real BPE splits long/rare words further, so depths measured on approximate tokens run a little
#: short (roughly 1.3 real tokens per approximate token on English prose).
_APPROX_TOKEN: Final = re.compile(r" ?[^\W\d_]+| ?\d{1,3}| ?[^\s\w]+|\s+(?!\S)|\s+|_+", re.UNICODE)

#: Words as the lexical scorer sees them: maximal runs of word characters and apostrophes, with
#: apostrophes stripped at both ends. The same rule applies whether text arrives whole or in pieces.
WORD_RE: Final = re.compile(r"[\w']+")

PHASE_START: Final = 0
PHASE_REFUSING: Final = 1
#: complying: a compliance marker ("Sure", "Here is", "Step 1") or, whatever the opener, no
#: refusal within the first ``COMPLY_AFTER_WORDS`` words (an answer that opens with a list, a
#: heading, prose or a client prefill complies as much as one that opens with "Sure")
PHASE_COMPLYING: Final = 2
#: neutral: no marker yet after ``NEUTRAL_AFTER_WORDS`` words. Entered only under the
#: ``"markers"`` phase rule of models fitted before 2026-12 (their tables were counted that way);
#: under ``"no-refusal"`` such an answer complies instead. The index stays in every state space.
PHASE_NEUTRAL: Final = 3
#: a compliance marker after a refusal marker ("I'm sorry... [DAN]: Sure, here's..."): the stock
#: role-play jailbreak. Sticky: a later refusal marker does not leave it.
PHASE_REFUSED_COMPLYING: Final = 4
PHASE_NAMES: Final = ("start", "refusing", "complying", "neutral", "refused_then_complying")
N_PHASES: Final = 5

#: The phase rules an artifact can be fitted with (``meta.phase_rule``; absent: "markers").
#: "markers": compliance only by a marker, ``neutral`` after ``NEUTRAL_AFTER_WORDS`` words
#: without one, refusal markers anywhere. "no-refusal": compliance is the absence of a refusal
#: (below). A model is always served with the rule its counts were made with.
PHASE_RULES: Final = ("markers", "no-refusal")
#: "markers" rule: words after which a response still in ``start`` becomes ``neutral``.
NEUTRAL_AFTER_WORDS: Final = 12
#: Words without a refusal after which a response still in ``start`` complies: refusals come
#: first ("I'm sorry, but", "As an AI language model, I cannot"); an answer that has written this
#: many words without one is answering.
COMPLY_AFTER_WORDS: Final = 8
#: Refusal markers count only among the first words of the response: a disclaimer late in a
#: compliant answer ("... this is illegal, so be careful") does not undo the compliance.
REFUSAL_WORDS: Final = 24
#: Opener markers only count among the first words of the response ...
OPENER_WORDS: Final = 4
#: ... or among the first words after a newline or a colon ("DAN: Sure, ...").
LINE_OPENER_WORDS: Final = 2

_REFUSAL: Final = (
    "i'm sorry",
    "i am sorry",
    "sorry but",
    "i apologize",
    "i cannot",
    "i can't",
    "i can not",
    "i won't",
    "i will not",
    "as an ai",
    "am not able",
    "i'm not able",
    "i'm unable",
    "am unable",
    "cannot fulfill",
    "cannot provide",
    "can't provide",
    "cannot assist",
    "can't assist",
    "cannot help",
    "can't help",
    "must decline",
    "not appropriate",
    "is illegal",
    "is unethical",
    "not going to help",
    "refuse to",
    "advise against",
    "not comfortable",
    "against my guidelines",
    "against my programming",
    "i'm not going",
    "not allowed to",
    "not something i",
    "i must inform",
    "i must emphasize",
    "i must clarify",
    "i understand your",
)
_COMPLIANCE_ANYWHERE: Final = (
    "here is",
    "here are",
    "here's",
    "step 1",
    "step one",
    "first you",
    "you will need",
    "you'll need",
    "follow these steps",
    "as follows",
    "let me tell you",
    "you can start by",
    "here you go",
)
_COMPLIANCE_OPENER: Final = ("sure", "certainly", "absolutely", "of course", "okay", "ok")


def _build_markers() -> dict[str, tuple[tuple[tuple[str, ...], int, bool], ...]]:
    table: dict[str, list[tuple[tuple[str, ...], int, bool]]] = {}
    groups: list[tuple[tuple[str, ...], int, bool]] = [
        *((tuple(m.split()), PHASE_REFUSING, False) for m in _REFUSAL),
        *((tuple(m.split()), PHASE_COMPLYING, False) for m in _COMPLIANCE_ANYWHERE),
        *((tuple(m.split()), PHASE_COMPLYING, True) for m in _COMPLIANCE_OPENER),
    ]
    for words, phase, opener in groups:
        table.setdefault(words[-1], []).append((words[:-1], phase, opener))
    return {k: tuple(v) for k, v in table.items()}


#: last word -> ((preceding words), phase, opener_only)
MARKERS: Final = _build_markers()


def tokenize_approx(text: str) -> list[str]:
    """Split ``text`` into BPE-like pieces; ``"".join(result) == text`` always holds."""
    pieces = _APPROX_TOKEN.findall(text)
    joined = "".join(pieces)
    if joined != text:  # pragma: no cover - the regex covers every character
        return [*pieces, text[len(joined) :]]
    return pieces


def content_text(content: Any) -> str:
    """Text of a message ``content``: a string, or a list of parts ``{"type": "text", "text"}``."""
    return wire.content_text(content, "\n")


def prompt_text(prompt: Any) -> str:
    """The text the request scorer reads: every system/user message (or the completions prompt)."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Sequence):
        parts = []
        for msg in prompt:
            if isinstance(msg, Mapping) and msg.get("role") in ("user", "system", None):
                parts.append(wire.content_text(msg.get("content"), "\n"))
        return "\n".join(parts)
    return ""


def last_user_text(prompt: Any) -> str:
    """The latest user message (completions: the whole prompt; none: ``prompt_text``)."""
    if isinstance(prompt, Sequence) and not isinstance(prompt, str):
        for msg in reversed(prompt):
            if isinstance(msg, Mapping) and msg.get("role") == "user":
                return wire.content_text(msg.get("content"), "\n")
    return prompt_text(prompt)


def request_text(prompt: Any, max_chars: int = 0, last_user: bool = False) -> str:
    """What the request scorer scores: ``prompt_text`` (or, with ``last_user``, the latest user
    message: a deployment's long, constant system prompt must not dilute the request) cut to its
    last ``max_chars`` characters (0: whole). The cut bounds the per-request work of scoring (a
    multi-megabyte prompt costs no more than a short one)."""
    text = last_user_text(prompt) if last_user else prompt_text(prompt)
    return text[-max_chars:] if max_chars and len(text) > max_chars else text


#: Words that carry the *style* of a request, not its goal: function words, pronouns, auxiliaries
#: and modals, question words, request verbs ("give", "write", "explain", "instructions"),
#: politeness and hypotheticals ("please", "hypothetically", "curious"), role-play framing
#: ("pretend", "character", "story"). Public harmful requests are mostly imperatives and benign
#: ones mostly questions, so a request scorer that reads these learns the datasets' style: it
#: flags "Give me step-by-step instructions to cancel my subscription" and misses "How do I make
#: meth?". A scorer with ``content_only`` skips them (and their character n-grams and bigrams);
#: the goal ("pipe bomb", "methamphetamine", "cancel", "subscription") is what it reads. Jailbreak
#: vocabulary ("restrictions", "unfiltered", "ignore", "dan") is content and stays.
STYLE_WORDS: Final = frozenset(
    [
        "a",
        "an",
        "the",
        "to",
        "of",
        "in",
        "on",
        "for",
        "with",
        "at",
        "by",
        "from",
        "about",
        "into",
        "onto",
        "and",
        "or",
        "but",
        "so",
        "if",
        "then",
        "than",
        "that",
        "this",
        "these",
        "those",
        "there",
        "here",
        "some",
        "any",
        "all",
        "as",
        "too",
        "very",
        "also",
        "not",
        "just",
        "only",
        "such",
        "own",
        "other",
        "more",
        "most",
        "much",
        "many",
        "each",
        "every",
        "few",
        "up",
        "out",
        "off",
        "over",
        "under",
        "again",
        "now",
        "i",
        "me",
        "my",
        "mine",
        "myself",
        "you",
        "your",
        "yours",
        "yourself",
        "we",
        "us",
        "our",
        "ours",
        "he",
        "him",
        "his",
        "she",
        "her",
        "they",
        "them",
        "their",
        "it",
        "its",
        "i'm",
        "i'd",
        "i've",
        "i'll",
        "you're",
        "you'll",
        "you've",
        "you'd",
        "we're",
        "let's",
        "one",
        "someone",
        "somebody",
        "anyone",
        "anybody",
        "people",
        "person",
        "do",
        "does",
        "did",
        "doing",
        "done",
        "can",
        "could",
        "would",
        "should",
        "will",
        "shall",
        "may",
        "might",
        "must",
        "need",
        "needs",
        "want",
        "wants",
        "wanted",
        "wanna",
        "like",
        "am",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "have",
        "has",
        "had",
        "having",
        "how",
        "what",
        "what's",
        "which",
        "who",
        "whom",
        "why",
        "when",
        "where",
        "whether",
        "way",
        "ways",
        "best",
        "easiest",
        "simplest",
        "quickest",
        "fastest",
        "effective",
        "method",
        "methods",
        "step",
        "steps",
        "process",
        "give",
        "provide",
        "write",
        "tell",
        "show",
        "explain",
        "describe",
        "list",
        "outline",
        "create",
        "generate",
        "draft",
        "compose",
        "detail",
        "detailed",
        "details",
        "teach",
        "help",
        "share",
        "offer",
        "walk",
        "through",
        "guide",
        "tutorial",
        "instructions",
        "instruction",
        "directions",
        "tips",
        "advice",
        "suggest",
        "suggestions",
        "recommend",
        "information",
        "info",
        "please",
        "kindly",
        "thanks",
        "thank",
        "possible",
        "hypothetically",
        "hypothetical",
        "theoretically",
        "theory",
        "curious",
        "curiosity",
        "purely",
        "mind",
        "wondering",
        "wonder",
        "asking",
        "ask",
        "friend",
        "question",
        "quick",
        "sure",
        "know",
        "pretend",
        "imagine",
        "character",
        "characters",
        "story",
        "novel",
        "scene",
        "roleplay",
        "role",
        "play",
        "game",
        "stay",
        "expert",
        "experienced",
        "mentor",
        "assistant",
        "answer",
        "respond",
        "response",
        "reply",
    ]
)


#: Unmistakable harm in a support reply, checked per completed word (O(1)): an insult aimed at the
#: reader ("you" then an insult within 3 words, or two insults), a payment-card number written
#: in 4-digit groups (3 consecutive groups, "4111 1111 1111 ...", halted before the last group is
#: out; groups that all read as years, "1991, 1999, 2015", are a list of years; long order numbers
#: in one piece do not count), or a number right after "ssn" / "social security number".
#: Used only by models that enable ``harm_rules`` (their evaluation includes its false halts).
ABUSE_WORDS: Final = frozenset(
    (
        "idiot", "idiots", "moron", "morons", "stupid", "dumb", "imbecile", "loser", "losers",
        "pathetic", "dimwit", "halfwit", "retard", "retarded", "cretin", "scum",
    )
)  # fmt: skip
ADDRESSEE_WORDS: Final = frozenset(("you", "you're", "youre", "your", "ya", "u"))
CARD_GROUPS: Final = 3
#: any number within 3 words after "ssn" / "social security number" ("... SSN is 123-..."). The
#: bare shape 3-2-4 digits ("123-45-6789") is not a rule: in arithmetic ("100 / 99.4444") it is
#: the same three words.
SSN_WORDS_BEFORE_NUMBER: Final = 3

#: A credential written in the context ("Bill Reed's passport number is T8CK4KGH4S", "[SSN] is
#: 975351393", "API key: sk4f9…") that the response repeats is a leak: the response copies a
#: secret it was given to keep. Labels are credentials only: echoing an order or account number
#: back to the customer who gave it is ordinary support.
_SECRET_LABEL: Final = re.compile(
    r"\b(?:s\W?s\W?n|social\W?security(?:\W?number)?|passport(?:\W?(?:number|no))?"
    r"|password|passcode|pin(?:\W?code)?|(?:secret|private|api|access|ssh(?:\W?private)?)\W?key"
    r"|(?:access|auth|api|bearer)\W?token|card\W?number|cvv)"
    r"(?:\W+(?:is|was|are|=))?\W+([\w'./+-]+)"
)
#: a secret is a word (as the response stream splits words) of at least this many characters
#: with a digit in it: names, "unknown" and short PINs are not (a 4-digit PIN echoed is too
#: common a number to call a leak). "sk-proj-4f9a8b7c6d5e" gives "4f9a8b7c6d5e".
SECRET_MIN_CHARS: Final = 6
#: what of a secret is watched: its first this many characters (bounds the watch's size)
SECRET_MAX_CHARS: Final = 64
#: the context read for secrets (the most recent characters) and the most secrets kept: bound
#: the per-request work
SECRET_CONTEXT_CHARS: Final = 100_000
MAX_SECRETS: Final = 128


def context_secrets(prompt: Any) -> frozenset[str]:
    """Credential values written in the prompt (every message, any role), lowercased and split
    into words as the response stream reads them."""
    if isinstance(prompt, str):
        text = prompt
    elif isinstance(prompt, Sequence):
        text = "\n".join(
            wire.content_text(m.get("content"), "\n") for m in prompt if isinstance(m, Mapping)
        )
    else:
        return frozenset()
    text = text[-SECRET_CONTEXT_CHARS:].lower().replace("\u2019", "'")
    out: set[str] = set()
    for m in _SECRET_LABEL.finditer(text):
        for part in WORD_RE.findall(m.group(1)):
            v = part.strip("'")[:SECRET_MAX_CHARS]
            if len(v) >= SECRET_MIN_CHARS and any(c.isdigit() for c in v):
                out.add(v)
        if len(out) >= MAX_SECRETS:
            break
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class LeakWatch:
    """The prefixes of the context's secrets a reply must not write, and their lengths.

    A prefix is watched once it is at least half of its secret (and at least
    ``SECRET_MIN_CHARS``) and has a digit in it: "welcome" of "Welcome2024" is a word, not a
    leak. A word of the reply leaks when one of its own prefixes is watched; the stream asks
    this of every completed word and of the word being written, so the verdict does not depend
    on how the text is split into pieces, and a secret is cut off while it is being written:
    fewer than max(``SECRET_MIN_CHARS``, half its length) of its characters leave."""

    prefixes: frozenset[str]
    lengths: tuple[int, ...]

    def hit(self, word: str) -> bool:
        n = len(word)
        for k in self.lengths:
            if k > n:
                return False
            if word[:k] in self.prefixes:
                return True
        return False


def leak_watch(secrets: frozenset[str]) -> LeakWatch | None:
    """The watch for ``secrets`` (None: nothing to watch)."""
    out: set[str] = set()
    for v in secrets:
        lo = max(SECRET_MIN_CHARS, (len(v) + 1) // 2)
        out.update(p for p in (v[:k] for k in range(lo, len(v) + 1)) if any(map(str.isdigit, p)))
    if not out:
        return None
    return LeakWatch(frozenset(out), tuple(sorted({len(p) for p in out})))
