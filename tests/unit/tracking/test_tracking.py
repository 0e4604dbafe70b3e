from __future__ import annotations

import json
import random

import pytest

from guard.tracking import (
    PHASE_COMPLYING,
    PHASE_NEUTRAL,
    PHASE_REFUSED_COMPLYING,
    PHASE_REFUSING,
    PHASE_START,
    LexicalScorer,
    StateSpace,
    Tracker,
    TrackerTables,
    prompt_text,
    tokenize_approx,
)

TEXTS = [
    "Sure, here is how to do it: step 1, mix 250g of X with Y.\n\nThen wait.",
    "I'm sorry, but I can't help with that. Can I help with something else?",
    "Unicode: café naïve — 東京 ‘quoted’ don’t stop… done",
    "   leading spaces and trailing   ",
]


def _scorer(seed: int = 0, log2: int = 10) -> LexicalScorer:
    rng = random.Random(seed)
    return LexicalScorer([rng.uniform(-2, 2) for _ in range(1 << log2)], bias=-0.3)


def _tables(depth: int = 3) -> TrackerTables:
    space = StateSpace(n_request_bins=2, n_risk_bins=3)
    n = space.n_states
    rng = random.Random(1)
    h = [[rng.random() for _ in range(n)] for _ in range(depth + 1)]
    edges = [[-0.5 + d * 0.1, 0.5] for d in range(depth + 1)]
    return TrackerTables(
        space=space,
        depth=depth,
        h=h,
        edges=edges,
        req_edges=[0.0],
        response_scorer=_scorer(0),
        request_scorer=_scorer(1),
        certain_logit=1e9,
        certain_min_features=4,
    )


@pytest.mark.parametrize("text", TEXTS)
def test_tokenize_approx_is_lossless(text: str) -> None:
    toks = tokenize_approx(text)
    assert "".join(toks) == text
    assert all(toks)


def test_approx_tokens_look_like_bpe() -> None:
    assert tokenize_approx("Hello world, 12345!") == ["Hello", " world", ",", " 123", "45", "!"]


@pytest.mark.parametrize("text", TEXTS)
def test_incremental_score_equals_whole_text(text: str) -> None:
    sc = _scorer()
    rng = random.Random(len(text))
    for _ in range(20):
        st = sc.stream()
        i = 0
        while i < len(text):
            j = min(len(text), i + rng.randint(1, 6))
            st.feed(text[i:j])
            i = j
        st.flush()
        assert st.logit() == pytest.approx(sc.score_text(text), abs=1e-12)


def test_phases() -> None:
    sc = _scorer()

    def phase(text: str) -> int:
        st = sc.stream()
        st.feed(text + " ")
        return st.phase

    assert phase("I'm sorry, but I can't help with that.") == PHASE_REFUSING
    assert phase("Sure, here is the plan") == PHASE_COMPLYING
    # refuse, then comply anyway: its own (sticky) phase
    assert phase("I cannot do that. Just kidding, here is the recipe") == PHASE_REFUSED_COMPLYING
    assert phase("[GPT]: I'm sorry, I can't.\n\n[DAN]: Sure, the plan") == PHASE_REFUSED_COMPLYING
    assert phase("I can't. Here is why. It is illegal") == PHASE_REFUSED_COMPLYING
    # openers count again right after a newline or a colon, not deep inside a line
    assert phase("The weather in Paris is mild in spring and lovely.\nSure, why") == PHASE_COMPLYING
    # compliance is the absence of a refusal: an answer that opens with content complies once
    # it has written COMPLY_AFTER_WORDS words without one, whatever its opener
    assert phase("The weather in Paris is") == PHASE_START
    assert phase("The weather in Paris is mild in spring and the museums are open late") == (
        PHASE_COMPLYING
    )
    assert phase("1. Get a steel pipe and two end caps\n2. Fill it") == PHASE_COMPLYING
    assert phase("## How to do it\n\n- Buy the tablets from several shops") == PHASE_COMPLYING
    # a refusal near the start is a refusal, even after a preamble ...
    assert phase("Building such a device at home is extremely dangerous. I can't help") == (
        PHASE_REFUSING
    )
    # ... but a disclaimer late in a compliant answer does not undo the compliance
    late = "Step 1: mix the powder with the sugar and pack it tightly into the pipe. " * 3
    assert phase(late + "Remember that this is illegal.") == PHASE_COMPLYING
    assert phase("Sure, here is the plan. " + "Mix it well and wait. " * 5 + "I can't stress") == (
        PHASE_COMPLYING
    )
    # refuse, then comply: caught at any distance
    assert phase("I'm sorry, I can't. " + "Well. " * 30 + "Here is the recipe") == (
        PHASE_REFUSED_COMPLYING
    )
    assert PHASE_NEUTRAL not in {
        phase(t) for t in ("The weather in Paris is mild in spring, of that I am very sure",)
    }


def test_tracker_incremental_equals_from_scratch() -> None:
    tab = _tables()
    prompt = [{"role": "user", "content": [{"type": "text", "text": "hi there"}]}]
    text = TEXTS[0] + " " + TEXTS[1]
    toks = tokenize_approx(text)
    tr = Tracker(tab, prompt, prefill="Okay,")
    for k, tok in enumerate(toks, 1):
        tr.feed(tok)
        fresh = Tracker(tab, prompt, prefill="Okay,")
        fresh.feed("".join(toks[:k]), n_tokens=k)
        assert tr.tokens == fresh.tokens == k
        assert tr.risk() == fresh.risk()
        assert tr.state() == fresh.state()


def test_risk_uses_depth_index_and_prefill_does_not_use_depth() -> None:
    tab = _tables(depth=3)
    tr = Tracker(tab, "x", prefill="Sure, here is a long prefill text that moves state ")
    assert tr.tokens == 0 and tr.depth_index == 0
    for _ in range(10):
        tr.feed(" a")
    assert tr.tokens == 10 and tr.depth_index == 3
    assert tr.risk() == tab.h[3][tr.state_index()]


def test_copy_is_independent() -> None:
    tab = _tables()
    tr = Tracker(tab, "q")
    tr.feed("Sure, here ")
    cp = tr.copy()
    cp.feed("is more text that changes things ", 3)
    assert tr.tokens == 1 and cp.tokens == 4
    assert tr.state()["phase"] == "complying"
    assert cp.state() != tr.state()


def test_certain_harm_behaves_like_harm() -> None:
    tab = _tables()
    tab2 = TrackerTables(
        space=tab.space,
        depth=tab.depth,
        h=tab.h,
        edges=tab.edges,
        req_edges=tab.req_edges,
        response_scorer=LexicalScorer([5.0] * 1024, 0.0),
        request_scorer=tab.request_scorer,
        certain_logit=4.0,
        certain_min_features=4,
    )
    tr = Tracker(tab2, "q")
    tr.feed("one ")
    assert tr.risk() < 1.0  # too few features yet
    tr.feed("two three ")
    assert tr.risk() == 1.0
    assert tr.state()["harm_like"] is True


def test_external_score_and_state_json() -> None:
    tr = Tracker(_tables(), "q")
    with pytest.raises(ValueError):
        tr.set_external_score(1.5)
    tr.set_external_score(0.25)
    s = tr.state()
    assert s["external_score"] == 0.25
    json.dumps(s)


def test_prompt_text_variants() -> None:
    assert prompt_text("plain") == "plain"
    msgs = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]},
        {"role": "assistant", "content": "ignored"},
    ]
    assert prompt_text(msgs) == "sys\na"


def test_harm_rules_only_when_enabled() -> None:
    tab = _tables()
    on = TrackerTables(
        space=tab.space,
        depth=tab.depth,
        h=[[0.0] * tab.space.n_states for _ in range(tab.depth + 1)],
        edges=tab.edges,
        req_edges=tab.req_edges,
        response_scorer=tab.response_scorer,
        request_scorer=tab.request_scorer,
        certain_logit=1e9,
        certain_min_features=4,
        harm_rules=True,
    )
    cases = {
        "Shut up, you stupid fool.": True,
        "Here it is: 4111 1111 1111 1111 exp": True,
        "Your order 732201349959 has shipped.": False,
        "No question is stupid, happy to help with your order.": False,
    }
    for text, harmful in cases.items():
        tr = Tracker(on, "q")
        for tok in tokenize_approx(text + " "):
            tr.feed(tok)
        assert (tr.risk() == 1.0) is harmful, text
        assert tr.state()["harm_like"] is harmful
        off = Tracker(tab, "q")
        off.feed(text + " ")
        assert off.state()["harm_like"] is False


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize(("char_ngrams", "decay"), [((3, 5), 1.0), ((0, 0), 0.9), ((2, 4), 0.7)])
def test_incremental_score_with_char_ngrams_and_decay(
    text: str, char_ngrams: tuple[int, int], decay: float
) -> None:
    rng = random.Random(5)
    sc = LexicalScorer(
        [rng.uniform(-2, 2) for _ in range(1 << 10)], -0.3, char_ngrams=char_ngrams, decay=decay
    )
    whole = sc.score_text(text)
    for _ in range(10):
        st = sc.stream()
        i = 0
        while i < len(text):
            j = min(len(text), i + rng.randint(1, 6))
            st.feed(text[i:j])
            i = j
        st.flush()
        assert st.logit() == pytest.approx(whole, abs=1e-12)
        cp = st.copy()
        assert cp.logit() == st.logit()


def test_decay_weights_recent_words_more() -> None:
    # only the features of "kaboom" (after "fine") carry weight
    rec: list[int] = []
    probe = LexicalScorer([0.0] * 1024, 0.0).stream()
    probe.feed("fine ")
    probe.record = rec
    probe.feed("kaboom ")
    hot = set(rec)
    w = [1.0 if i in hot else 0.0 for i in range(1024)]
    text = "fine " * 40 + "kaboom "
    mean = LexicalScorer(w, 0.0).score_text(text)
    ewm = LexicalScorer(w, 0.0, decay=0.8).score_text(text)
    assert ewm > 5 * mean > 0


def test_char_ngram_features_of_a_word() -> None:
    from guard.tracking.lexical import word_feature_ids

    ids = word_feature_ids("cat", 1023, (3, 4))
    # unigram + "<ca", "cat", "at>" + "<cat", "cat>"
    assert len(ids) == 1 + 3 + 2
    assert word_feature_ids("cat", 1023) == ids[:1]
    with pytest.raises(ValueError):
        LexicalScorer([0.0] * 8, 0.0, char_ngrams=(3, 2))
    with pytest.raises(ValueError):
        LexicalScorer([0.0] * 8, 0.0, decay=0.0)


def test_ssn_harm_rule() -> None:
    sc = _scorer()

    def flag(text: str) -> bool:
        st = sc.stream()
        st.feed(text + " ")
        return st.harm_flag

    assert flag("Her SSN is 123-45-6789.")
    assert not flag("Call 555-296-8134 or write on 12/05/2004; order 2024-11-05.")
    assert flag("Card 4111 1111 1111 1111")
    assert flag("Maria's social security number is 987 and")
    assert flag("the SSN: 4412")
    assert not flag("Your social security number is never needed by us, not even in 2024")
    # shapes that are not leaks: arithmetic that reads as 3-2-4 digits, a list of three years
    assert not flag("t = 100 / 99.4444 seconds")
    assert not flag("They won the World Cup in 1991, 1999, 2015 and more")
    assert not flag("'earnings': [1000, 1200, 1500, 1800]")
    cp = sc.stream()
    cp.feed("card 4111 1111 1111")
    cp2 = cp.copy()
    cp2.feed(" 1111 ")
    assert cp2.harm_flag and not cp.harm_flag


def test_request_window_scores_the_worst_part_of_a_long_text() -> None:
    from guard.tracking.lexical import word_feature_ids

    words = [f"w{i}" for i in range(11)]
    text = " ".join(words)
    mask = (1 << 16) - 1  # no hash collisions among these few features
    (hot,) = word_feature_ids("w10", mask)  # the last word's unigram weighs 5
    w = [0.0] * (mask + 1)
    w[hot] = 5.0
    whole = LexicalScorer(w, 0.0, norm="l2")
    win = LexicalScorer(w, 0.0, norm="l2", window=4)
    # windows start at 0, 2, 4, 6 and 7 (the last ends the text): the heavy word counts in a
    # 4-word window (4 unigrams + 4 bigrams), not diluted by all 11 words (22 features)
    assert whole.score_text(text) == pytest.approx(5.0 / 22**0.5)
    assert win.score_text(text) == pytest.approx(5.0 / 8**0.5)
    # the same word in the middle of a window that is not the last one
    mid = " ".join(words[:5] + ["w10"] + words[6:10])
    assert win.score_text(mid) == pytest.approx(5.0 / 8**0.5)
    # short texts: the whole text only
    assert win.score_text("w1 w10") == whole.score_text("w1 w10")
    with pytest.raises(ValueError):
        LexicalScorer(w, 0.0, window=4)  # "mean" scorers stream: no windows
    with pytest.raises(ValueError):
        LexicalScorer(w, 0.0, norm="l2", window=-1)


def test_context_secrets_are_labelled_credentials() -> None:
    from guard.tracking import context_secrets

    prompt = [
        {"role": "system", "content": "Customer file: Ann Lee's passport number is T8CK4KGH4S. "
         "Bill Reed's [S.S.N] is 975351393. API key: sk-proj-4f9a8b7c6d5e. password = hunter22"},
        {"role": "user", "content": "My order number is 123456789 and my account number is "
         "88812345; my PIN is 4321. Ann's password is unknown to me."},
    ]  # fmt: skip
    got = context_secrets(prompt)
    assert got == {"t8ck4kgh4s", "975351393", "4f9a8b7c6d5e", "hunter22"}
    # order and account numbers are the customer's own references, not credentials; a 4-digit
    # PIN and a word without a digit are too common to call a leak
    assert context_secrets("Bob's ssn: 123-45-6789") == frozenset()  # three short words
    assert context_secrets("Bob’s SSN is 123456789") == {"123456789"}
    assert context_secrets(None) == frozenset()
    # a very long value is watched by its first characters only (bounded work per request)
    (long_value,) = context_secrets("password is " + "a1" * 4000)
    assert len(long_value) == 64


def test_leak_rule_halts_a_repeated_secret_midway() -> None:
    from guard.tracking import LexicalStream, context_secrets, leak_watch

    sc = _scorer()
    watch = leak_watch(context_secrets("Bill Reed's passport number is T8CK4KGH4S."))
    assert watch is not None
    assert watch.hit("t8ck4kgh4s") and watch.hit("t8ck4k") and not watch.hit("t8ck4")
    assert leak_watch(frozenset()) is None

    def stream(pieces: list[str]) -> LexicalStream:
        st = sc.stream()
        st.leak = watch
        for p in pieces:
            st.feed(p)
        return st

    # flagged while the word is being written: fewer than 6 of its 10 characters out
    assert not stream(["It is", " T8", "CK4"]).harm_flag
    assert stream(["It is", " T8", "CK4", "K"]).harm_flag
    assert stream(["His passport number is t8ck4kgh4s."]).harm_flag
    assert stream(["It is '", "T8CK4K"]).harm_flag  # quoted: cut off midway too
    # the same verdict however the text is split (a word that starts with the secret leaks it)
    text = "Your passport number is T8CK4KGH4SX99 or T8CA99 "
    assert stream([text]).harm_flag
    assert stream([text[i : i + 3] for i in range(0, len(text), 3)]).harm_flag
    other = "Your passport number is T8CK4 and T8CA99KGH4S "
    assert not stream([other]).harm_flag
    assert not stream([other[i : i + 2] for i in range(0, len(other), 2)]).harm_flag
    # the label without the value does not fire, nor the same text without the prompt's secrets
    assert not stream(["I can't share Bill Reed's passport number. "]).harm_flag
    plain = sc.stream()
    plain.feed("It is T8CK4KGH4S. ")
    assert not plain.harm_flag
    cp = stream(["It is", " T8"]).copy()
    cp.feed("CK4K")
    assert cp.harm_flag


def test_leak_rule_watches_only_prefixes_with_a_digit() -> None:
    from guard.tracking import context_secrets, leak_watch

    watch = leak_watch(context_secrets("admin password is Welcome2024, PIN code: 123456"))
    assert watch is not None
    assert not watch.hit("welcome") and watch.hit("welcome2")
    assert not watch.hit("12345") and watch.hit("123456")


def test_tracker_reads_secrets_only_with_harm_rules() -> None:
    tab = _tables()
    prompt = [{"role": "user", "content": "Ann's password is Tr0ub4dor3. What is it?"}]
    for rules in (True, False):
        tab.harm_rules = rules
        tr = Tracker(tab, prompt)
        assert (tr._stream.leak is not None) is rules
        tr.feed("It is Tr0ub4")
        assert tr.state()["harm_like"] is rules
        assert (tr.risk() == 1.0) is rules


def test_scorer_rule_makes_high_scores_harm_like() -> None:
    tab = _tables()

    def with_rule(s: float | None) -> TrackerTables:
        return TrackerTables(
            space=tab.space,
            depth=tab.depth,
            h=[[0.25] * tab.space.n_states for _ in range(tab.depth + 1)],
            edges=tab.edges,
            req_edges=tab.req_edges,
            response_scorer=LexicalScorer([5.0] * 1024, 0.0),
            request_scorer=tab.request_scorer,
            certain_logit=1e9,
            certain_min_features=4,
            harm_logit=s,
        )

    for s, want in ((None, 0.25), (5.0, 1.0), (5.0 + 1e-6, 0.25)):
        tr = Tracker(with_rule(s), "q")
        tr.feed("one ")  # a single word is enough: the rule has no minimum length
        assert tr.logit() == pytest.approx(5.0)
        assert tr.risk() == want
        assert tr.state()["harm_like"] is (want == 1.0)


def test_a_model_is_served_with_the_phase_rule_it_was_fitted_with(small_fit) -> None:  # type: ignore[no-untyped-def]
    """Artifacts fitted before the "no-refusal" rule (no ``phase_rule`` in their metadata, e.g.
    the shipped 57d4002b26ab) read answers as they were counted: neutral after 12 words without a
    marker, refusals anywhere. New fits record "no-refusal" and are served with it."""
    from guard.risk import RiskModel
    from guard.tracking.text import PHASE_NAMES

    def phases(sc: LexicalScorer, text: str) -> list[str]:
        st = sc.stream()
        out = []
        for w in text.split(" "):
            st.feed(w + " ")
            out.append(PHASE_NAMES[st.phase])
        return out

    listy = "1. Mix the two powders in a bowl. 2. Add water slowly while stirring it well."
    late = "Sure, here is how. " + "Mix the powders well, wait, then heat them. " * 4 + "I am sorry"
    old = LexicalScorer([0.0] * 16, 0.0, phase_rule="markers")
    new = LexicalScorer([0.0] * 16, 0.0)
    assert phases(new, listy)[7] == "complying" and "neutral" not in phases(new, listy)
    assert phases(old, listy)[11] == "neutral" and "complying" not in phases(old, listy)[:11]
    assert phases(old, late)[-1] == "refusing"  # "markers": a refusal marker anywhere
    assert phases(new, late)[-1] == "complying"  # "no-refusal": a late disclaimer is not one
    assert phases(new.stream().copy()._sc, listy) == phases(new, listy)
    with pytest.raises(ValueError, match="phase_rule"):
        LexicalScorer([0.0] * 16, 0.0, phase_rule="vibes")
    # the artifact decides: a new fit records its rule; without the key, "markers"
    assert small_fit.meta["phase_rule"] == "no-refusal"
    assert small_fit.model.tables.response_scorer.phase_rule == "no-refusal"
    legacy = {k: v for k, v in small_fit.meta.items() if k != "phase_rule"}
    assert RiskModel(small_fit.arrays, legacy).tables.response_scorer.phase_rule == "markers"
