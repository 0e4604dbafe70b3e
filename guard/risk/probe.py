"""The request-intent probe: a linear head on a pretrained sentence encoder (numpy only).

A risk model fitted with an encoder carries the probe in its artifact: the encoder's name, the
SHA-256 of its weights, the dimension, how many tokens of a text it reads, a *fingerprint* (one
fixed text and the vector the encoder gave it when the probe was trained), and the head
``p = sigmoid(w . e + b)`` on the L2-normalised sentence embedding ``e``. Serving asks the encoder
(vLLM ``/v1/embeddings``) for the embedding of the latest user message and turns it into ``p``
with :meth:`RequestProbe.prob`; the probability's bin joins the Markov state as its external
dimension (``guard.tracking.Tracker.set_external_score``).

The fingerprint is how serving knows it talks to the encoder the probe was trained on: a
different model, other weights, another pooling or a lower precision all move the canary's
vector, and the guard refuses to start (:class:`~guard.errors.RiskModelError`) rather than read
a probe off the wrong embedding space.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from guard.errors import RiskModelError

FloatArray = npt.NDArray[np.float64]

#: the fingerprint text: ordinary, short, fixed forever (changing it invalidates every artifact)
CANARY: Final = "Guard encoder fingerprint: where is my order, and how do I reset my password?"
#: the cosine between the canary's served and recorded vectors below which the encoder is refused
#: (float32 vs float32 on another machine: > 0.9999; bfloat16: about 0.999; another model: < 0.9)
MIN_COSINE: Final = 0.995


@dataclass(frozen=True, slots=True)
class EncoderSpec:
    """Which encoder a probe was trained on, and the fingerprint that identifies it."""

    name: str
    sha256: str
    dim: int
    #: tokens of a text the encoder reads (longer texts are cut, keeping the start)
    max_tokens: int
    canary_vec: tuple[float, ...]

    def meta(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "dim": self.dim,
            "max_tokens": self.max_tokens,
            "canary": CANARY,
            "min_cosine": MIN_COSINE,
        }

    def fingerprint_cosine(self, vec: Sequence[float]) -> float:
        """Cosine between the canary's vector from a served encoder and the recorded one."""
        a = np.asarray(vec, dtype=np.float64)
        b = np.asarray(self.canary_vec, dtype=np.float64)
        if a.shape != b.shape:
            return 0.0
        den = float(np.linalg.norm(a) * np.linalg.norm(b))
        return float(a @ b) / den if den > 0 else 0.0

    def check_fingerprint(self, vec: Sequence[float], where: str = "the encoder") -> float:
        """Raise ``RiskModelError`` unless ``vec`` (the canary embedded by ``where``) is this
        encoder's; returns the cosine."""
        n = len(vec)
        if n != self.dim:
            raise RiskModelError(
                f"{where} returns {n}-d embeddings; the risk model's request probe was trained "
                f"on {self.name} ({self.dim}-d, weights sha256 {self.sha256[:12]}): serve that "
                "encoder, or use a risk model fitted with this one"
            )
        cos = self.fingerprint_cosine(vec)
        if not cos >= MIN_COSINE:
            raise RiskModelError(
                f"{where} is not the encoder the risk model was fitted with: its fingerprint "
                f"cosine is {cos:.4f} (< {MIN_COSINE}); expected {self.name} (weights sha256 "
                f"{self.sha256[:12]}, float32, mean pooling, normalised)"
            )
        return cos


@dataclass(frozen=True, slots=True)
class RequestProbe:
    """``p = sigmoid(w . e + b)``: P(the request asks for something harmful)."""

    encoder: EncoderSpec
    w: tuple[float, ...]
    bias: float

    def logit(self, vec: Sequence[float]) -> float:
        if len(vec) != len(self.w):
            raise ValueError(f"embedding has {len(vec)} dimensions, the probe {len(self.w)}")
        return math.fsum(a * b for a, b in zip(self.w, vec, strict=True)) + self.bias

    def prob(self, vec: Sequence[float]) -> float:
        z = self.logit(vec)
        return 0.5 * (1.0 + math.tanh(0.5 * z))

    def probs(self, vecs: npt.ArrayLike) -> FloatArray:
        """Row-wise probabilities of an ``(n, dim)`` array (fitting, evaluation)."""
        m = np.asarray(vecs, dtype=np.float64)
        z = m @ np.asarray(self.w, dtype=np.float64) + self.bias
        return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)), dtype=np.float64)

    # -- the artifact ---------------------------------------------------------------------------
    def to_artifact(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
        arrays = {
            "probe_w": np.asarray(self.w, dtype=np.float32),
            "probe_canary": np.asarray(self.encoder.canary_vec, dtype=np.float32),
        }
        return arrays, {**self.encoder.meta(), "bias": self.bias, "target": "request"}

    @staticmethod
    def from_artifact(
        arrays: Mapping[str, npt.NDArray[Any]], meta: Mapping[str, Any]
    ) -> RequestProbe:
        try:
            w = np.asarray(arrays["probe_w"], dtype=np.float64)
            canary = np.asarray(arrays["probe_canary"], dtype=np.float64)
            dim = int(meta["dim"])
            spec = EncoderSpec(
                name=str(meta["name"]),
                sha256=str(meta["sha256"]),
                dim=dim,
                max_tokens=int(meta["max_tokens"]),
                canary_vec=tuple(canary.tolist()),
            )
            bias = float(meta["bias"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RiskModelError(f"risk model: the request probe is incomplete: {exc!r}") from exc
        if w.shape != (dim,) or canary.shape != (dim,):
            raise RiskModelError("risk model: the request probe does not match its encoder's dim")
        if not (np.all(np.isfinite(w)) and math.isfinite(bias)):
            raise RiskModelError("risk model: the request probe is not finite")
        if meta.get("canary", CANARY) != CANARY:
            raise RiskModelError("risk model: the probe's fingerprint text is not this guard's")
        return RequestProbe(spec, tuple(w.tolist()), bias)
