"""Phrase rotations: the cyclic augmentation of a response (docs/depth-and-augment.md).

A response is split at sentence and clause punctuation; its rotations keep every phrase and
change only their order, so a harmful answer whose harmful phrase came late is also seen with it
early (``FitConfig.augment``, ``guard augment``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import replace

from guard.training.trajectories import Trajectory

_PHRASE = re.compile(r"[^.!?;:\n]+[.!?;:\n]*\s*|[.!?;:\n]+\s*")


def split_phrases(text: str) -> list[str]:
    """Phrases ending at sentence/clause punctuation or newlines; ``"".join`` gives ``text``."""
    parts = _PHRASE.findall(text)
    if "".join(parts) != text:  # pragma: no cover - the pattern covers every character
        return [text]
    return parts


def rotate_phrases(phrases: Sequence[str], k: int) -> str:
    """Rotation ``k`` of a phrase list, keeping a space between phrases that lacked one."""
    seq = [*phrases[k:], *phrases[:k]]
    return "".join(p if p[-1:].isspace() else p + " " for p in seq).rstrip()


def cyclic_rotations(
    traj: Trajectory, weight: float = 1.0, max_rotations: int = 8
) -> list[tuple[Trajectory, float]]:
    """Cyclic phrase rotations of a trajectory (identity excluded), sharing ``weight`` in total.

    Only trajectories whose harm position is not tied to the text (no ``harm_start_char``) and
    that ended (not censored) are rotated. The orbit therefore adds at most ``weight`` (one
    trajectory's worth) on top of the original.
    """
    if traj.harm_start_char is not None or traj.censored:
        return []
    phrases = split_phrases(traj.continuation())
    n = len(phrases)
    if n < 2:
        return []
    texts: list[str] = []
    seen = {"".join(phrases), rotate_phrases(phrases, 0)}
    shifts = range(1, n)
    if n - 1 > max_rotations:
        shifts = range(1, n, max(1, math.ceil((n - 1) / max_rotations)))
    for k in shifts:
        rot = rotate_phrases(phrases, k)
        if rot not in seen:
            seen.add(rot)
            texts.append(rot)
    if not texts:
        return []
    w = weight / len(texts)
    return [
        (
            replace(
                traj,
                id=f"{traj.id}#rot{i + 1}",
                response=traj.prefill + t,
                tokens=None,
                harm_start_char=None,
            ),
            w,
        )
        for i, t in enumerate(texts)
    ]
