"""A deterministic stand-in for the sentence encoder (hashed bag of words, L2-normalised), with
the real one's contract (``guard.training.probe_fit.Encoder``): enough to test the fit and serving
pipelines' plumbing. The real encoder (all-MiniLM-L6-v2 served by vLLM) is tested end to end in
tests/e2e/test_encoder_vllm.py."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

DIM = 32


class HashEncoder:
    """Hashed bag of words, normalised: a fake encoder with the real one's contract."""

    name = "hash-bow"
    sha256 = "0" * 64
    dim = DIM
    max_tokens = 128

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), DIM))
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, zlib.crc32(w.encode()) % DIM] += 1.0
            out[i, -1] += 0.1  # never the zero vector
        return out / np.linalg.norm(out, axis=1, keepdims=True)
