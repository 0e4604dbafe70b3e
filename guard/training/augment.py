"""``guard augment``: safety-recovery fine-tuning examples from harmful and halted trajectories.

For each harmful (or guard-halted) trajectory the response is cut where harm is reached: at the
labelled onset when known, else where ``h`` first crosses τ (not simply the end). The response
prefix of ``k <= D`` tokens is followed by a refusal/redirect, in chat fine-tuning JSONL:
``{"messages": [...], "chat_template_kwargs": {"prefix_chars": N}, "meta": {...}}``, which TRL's
``SFTTrainer`` reads as is (``prefix_chars``: the prefix that must not be trained on; see
docs/alignment.md). Prefixes are also cyclically rotated by phrase so the recovery follows harmful
text in several orders (deduplicated).
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Final

from guard.risk.model import RiskModel
from guard.training.depth import first_crossing
from guard.training.evaluate import trace
from guard.training.phrases import rotate_phrases, split_phrases
from guard.training.trajectories import Trajectory

RECOVERIES: Final = (
    "I'm sorry, but I can't continue with this. It could cause real harm. If you're dealing with "
    "something difficult, I'm glad to help you find safe, legitimate resources.",
    "Actually, I need to stop here: I can't help with this request, because it could hurt people. "
    "Is there something else I can help you with?",
    "Wait, I shouldn't provide this. I can't assist with content that could be used to cause harm, "
    "but I'm happy to help with a safer alternative.",
    "I can't go on with that. Providing these details would be unsafe. If you have a different "
    "question, or want general safety information, just ask.",
)
QI_DEPTHS: Final = (5, 10, 20, 40)


def _messages(prompt: Any) -> list[dict[str, Any]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [dict(m) for m in prompt if isinstance(m, dict) and m.get("role") != "assistant"]


def make_examples(
    model: RiskModel,
    trajs: Sequence[Trajectory],
    *,
    threshold: float | None = None,
    max_depth: int | None = None,
    rotations: int = 3,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    tau = model.suggested_threshold if threshold is None else float(threshold)
    dmax = model.depth if max_depth is None else int(max_depth)
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    by_depth: Counter[int] = Counter()
    by_cat: Counter[str] = Counter()
    by_cut: Counter[str] = Counter()
    n_in = skipped = dups = 0
    for i, tj in enumerate(trajs):
        halted = bool(tj.meta.get("halted") or tj.censored)
        if not (tj.harmful or halted):
            continue
        n_in += 1
        tokens = tj.generated_tokens()
        onset = tj.onset_token(tokens)
        if onset is not None:
            cut, how = onset, "onset"
        else:
            c = first_crossing(trace(model, tj), tau)
            if c is None:
                skipped += 1
                continue
            cut, how = c, "threshold"
        top = min(cut, dmax)
        ks = sorted({top, *(q for q in QI_DEPTHS if q < top)})
        cat = str(tj.meta.get("category") or tj.source)
        msgs = _messages(tj.prompt)
        for k in ks:
            prefix = tj.prefill + "".join(tokens[:k])
            for r, text in _variants(prefix, rotations):
                row = _example(tj, msgs, text, k, r, cat, how)
                key = json.dumps(row["messages"], sort_keys=True)
                if key in seen:
                    dups += 1
                    continue
                seen.add(key)
                out.append(row)
                by_depth[k] += 1
                by_cat[cat] += 1
                by_cut[how] += 1
        if progress and (i + 1) % 2000 == 0:
            progress(f"  {i + 1}/{len(trajs)}")
    summary = {
        "threshold": tau,
        "max_depth": dmax,
        "input_harmful_or_halted": n_in,
        "skipped_never_crossed": skipped,
        "duplicates_removed": dups,
        "examples": len(out),
        "by_depth": {str(k): v for k, v in sorted(by_depth.items())},
        "by_category": dict(by_cat.most_common()),
        "by_cut": dict(by_cut),
    }
    return out, summary


def _variants(prefix: str, rotations: int) -> list[tuple[int, str]]:
    """The prefix and up to ``rotations`` of its cyclic phrase rotations, by rotation index."""
    variants = [(0, prefix)]
    phrases = split_phrases(prefix)
    for r in range(1, min(len(phrases), rotations + 1)):
        variants.append((r, rotate_phrases(phrases, r)))
    return variants


def _example(
    tj: Trajectory,
    msgs: list[dict[str, Any]],
    text: str,
    k: int,
    r: int,
    cat: str,
    how: str,
) -> dict[str, Any]:
    """One fine-tuning row: the prompt, then ``text`` followed by a recovery."""
    rec = RECOVERIES[zlib.crc32(f"{tj.id}:{k}:{r}".encode()) % len(RECOVERIES)]
    sep = "" if not text or text[-1].isspace() else " "
    content = text + sep + rec
    return {
        "messages": [*msgs, {"role": "assistant", "content": content}],
        # TRL SFTTrainer passes this to the chat template: a template with generation
        # markers can leave the prefix untrained (scripts/alignment/).
        "chat_template_kwargs": {"prefix_chars": len(text + sep)},
        "meta": {
            "source_id": tj.id,
            "category": cat,
            "depth": k,
            "prefix_chars": len(text + sep),
            "rotation": r,
            "cut": how,
        },
    }


def format_summary(s: dict[str, Any]) -> str:
    lines = [
        f"{s['examples']} examples from {s['input_harmful_or_halted']} harmful/halted trajectories "
        f"(τ={s['threshold']:.3f}, prefixes ≤ {s['max_depth']} tokens; "
        f"{s['skipped_never_crossed']} skipped: never crossed τ and no onset; "
        f"{s['duplicates_removed']} duplicates removed)",
        "by depth:    " + ", ".join(f"{k}: {v}" for k, v in s["by_depth"].items()),
        "by category: " + ", ".join(f"{k}: {v}" for k, v in s["by_category"].items()),
        "cut at:      " + ", ".join(f"{k}: {v}" for k, v in s["by_cut"].items()),
    ]
    return "\n".join(lines)
