"""The sentence encoder served by vLLM (``--runner pooling``, ``POST /v1/embeddings``): I/O edge.

* :class:`EmbeddingsClient`: one HTTP request per batch of texts, async (serving) and sync
  (fitting). ``{"model", "input": [texts], "truncate_prompt_tokens": N, "truncation_side":
  "right"}`` -> ``{"data": [{"index", "embedding": [dim floats]}]}``. The first ``N`` tokens of a
  text are read (the request's goal is stated first far more often than last, and the probe was
  trained on exactly this cut).
* :class:`ProbeScorer`: embeddings -> the risk model's request probe -> P(harmful request), the
  shape the micro-batcher and the verdict machinery take (``score(texts) -> [p]``).
* :class:`CachedEncoder`: the ``guard.training.probe_fit.Encoder`` that ``guard fit`` and the build
  scripts pass in: batched, with a progress callback, and a disk cache keyed by the encoder's
  weights SHA-256 and each text's SHA-256, so refits and leave-one-family-out folds embed each
  text once.

Cache layout: ``<cache>/<name>-<sha256[:12]>-L<max_tokens>/chunk-<ns>-<pid>.npz``, each with
``keys`` (hex SHA-256 of the UTF-8 text) and ``vecs`` (float32 rows); written to a temporary name
and renamed, so an interrupted run keeps every finished chunk and never a torn one.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from guard.errors import ScorerError
from guard.risk.probe import CANARY, RequestProbe
from guard.scoring.http import _data_by_index, _HTTPScorer, with_retries

#: the default encoder: sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0, 384-d), the upstream
#: model.safetensors' SHA-256 (scripts/encoder/fetch_minilm.sh checks the file against it)
MINILM_NAME: Final = "all-MiniLM-L6-v2"
MINILM_SHA256: Final = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MINILM_DIM: Final = 384
#: tokens of a text the encoder reads (the probe was trained on this cut)
DEFAULT_MAX_TOKENS: Final = 128


class EmbeddingsClient(_HTTPScorer):
    """``POST /v1/embeddings`` on vLLM serving a sentence encoder."""

    path = "/v1/embeddings"

    def __init__(
        self, base_url: str, *, model: str | None = None, max_tokens: int = 128, **kw: Any
    ) -> None:
        super().__init__(base_url, model=model, **kw)
        if max_tokens < 8:
            raise ValueError("max_tokens must be >= 8")
        self.max_tokens = max_tokens

    def build_request(self, texts: Sequence[str]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "input": list(texts),
            "truncate_prompt_tokens": self.max_tokens,
            "truncation_side": "right",
        }
        if self.model is not None:
            body["model"] = self.model
        return body

    def parse_embeddings(self, payload: object, n: int) -> list[list[float]]:
        out = []
        dim: int | None = None
        for i, row in enumerate(_data_by_index(payload, n)):
            emb = row.get("embedding")
            if not isinstance(emb, list) or not emb:
                raise ScorerError(f"data[{i}].embedding is not a list of numbers")
            if dim is None:
                dim = len(emb)
            elif len(emb) != dim:
                raise ScorerError(f"data[{i}].embedding has {len(emb)} dimensions, not {dim}")
            vec = [float(x) for x in emb if isinstance(x, int | float) and not isinstance(x, bool)]
            if len(vec) != len(emb) or not all(map(math.isfinite, vec)):
                raise ScorerError(f"data[{i}].embedding holds non-numbers")
            out.append(vec)
        return out

    def parse_response(self, payload: object, n: int) -> list[float]:
        raise ScorerError("an embeddings endpoint returns vectors, not scores: use ProbeScorer")

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        return self.parse_embeddings(await self._post(texts), len(texts))

    def embed_sync(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        return self.parse_embeddings(self._post_sync(texts), len(texts))


class ProbeScorer:
    """P(harmful request) of texts: the encoder's embeddings through the risk model's probe."""

    def __init__(self, client: EmbeddingsClient, probe: RequestProbe) -> None:
        self.client = client
        self.probe = probe
        self.name = "encoder"

    async def score(self, texts: Sequence[str]) -> list[float]:
        return [self.probe.prob(v) for v in await self.client.embed(texts)]

    def score_sync(self, texts: Sequence[str]) -> list[float]:
        return [self.probe.prob(v) for v in self.client.embed_sync(texts)]

    async def check(self) -> float:
        """Embed the fingerprint text; raise ``RiskModelError`` unless the served encoder is the
        probe's (``ScorerError`` when it cannot be reached). Returns the cosine."""
        (vec,) = await self.client.embed([CANARY])
        return self.probe.encoder.check_fingerprint(vec, f"the encoder at {self.client.url}")

    async def aclose(self) -> None:
        await self.client.aclose()


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


ProgressFn = Callable[[int, int], None]


class CachedEncoder:
    """A ``guard.training.probe_fit.Encoder`` over :class:`EmbeddingsClient`, with a disk cache."""

    def __init__(
        self,
        client: EmbeddingsClient,
        *,
        name: str,
        sha256: str,
        dim: int,
        cache_dir: Path | None,
        batch_size: int = 64,
        retries: int = 2,
        progress: ProgressFn | None = None,
        flush_every: int = 2048,
    ) -> None:
        self.client = client
        self.name = name
        self.sha256 = sha256
        self.dim = dim
        self.max_tokens = client.max_tokens
        self.batch_size = batch_size
        self.retries = retries
        self.progress = progress
        self.flush_every = flush_every
        self.folder = (
            cache_dir / f"{name}-{sha256[:12]}-L{client.max_tokens}" if cache_dir else None
        )
        self.known: dict[str, npt.NDArray[np.float32]] = {}
        #: texts embedded by the server (not from the cache) and the seconds it took
        self.n_embedded = 0
        self.seconds = 0.0
        if self.folder is not None and self.folder.is_dir():
            for f in sorted(self.folder.glob("chunk-*.npz")):
                try:
                    with np.load(f, allow_pickle=False) as z:
                        keys, vecs = z["keys"].tolist(), z["vecs"]
                except (OSError, ValueError, KeyError):
                    continue  # an unreadable chunk is embedded again, never trusted
                if vecs.ndim == 2 and vecs.shape[1] == dim:
                    self.known.update(zip((str(k) for k in keys), vecs, strict=True))

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        keys = [text_key(t) for t in texts]
        todo: dict[str, str] = {}
        for k, t in zip(keys, texts, strict=True):
            if k not in self.known:
                todo.setdefault(k, t)
        if todo:
            items = sorted(todo.items(), key=lambda kv: len(kv[1]))  # less padding per batch
            t0 = time.perf_counter()
            pend: list[str] = []
            for i in range(0, len(items), self.batch_size):
                part = items[i : i + self.batch_size]
                call = functools.partial(self.client.embed_sync, [t for _, t in part])
                vecs = with_retries(call, self.retries)
                for (k, _), v in zip(part, vecs, strict=True):
                    if len(v) != self.dim:
                        raise ScorerError(f"{self.client.url}: {len(v)}-d, expected {self.dim}")
                    self.known[k] = np.asarray(v, dtype=np.float32)
                    pend.append(k)
                if len(pend) >= self.flush_every or i + self.batch_size >= len(items):
                    self._flush(pend)
                    pend = []
                if self.progress is not None:
                    self.progress(min(i + self.batch_size, len(items)), len(items))
            self.n_embedded += len(items)
            self.seconds += time.perf_counter() - t0
        if not keys:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self.known[k] for k in keys])

    def _flush(self, keys: list[str]) -> None:
        if self.folder is None or not keys:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"chunk-{time.time_ns()}-{os.getpid()}"
        tmp = self.folder / f"{name}.tmp.npz"
        np.savez(tmp, keys=np.asarray(keys), vecs=np.stack([self.known[k] for k in keys]))
        os.replace(tmp, self.folder / f"{name}.npz")

    def close(self) -> None:
        self.client.close()


def make_encoder(
    url: str,
    *,
    model: str | None = MINILM_NAME,
    sha256: str | None = None,
    dim: int | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    cache_dir: Path | None = None,
    progress: ProgressFn | None = None,
    **kw: Any,
) -> CachedEncoder:
    """The encoder ``guard fit --encoder-url`` and the build scripts use. ``sha256`` and ``dim``
    default to all-MiniLM-L6-v2's when ``model`` is that name (required otherwise: the artifact
    records which weights the probe belongs to)."""
    if sha256 is None or dim is None:
        if model != MINILM_NAME:
            raise ValueError(
                f"encoder {model!r}: give its weights' sha256 and dimension (--encoder-sha256, "
                "--encoder-dim)"
            )
        sha256 = sha256 or MINILM_SHA256
        dim = dim or MINILM_DIM
    kw.setdefault("timeout", 120.0)
    client = EmbeddingsClient(url, model=model, max_tokens=max_tokens, **kw)
    return CachedEncoder(
        client,
        name=model or "encoder",
        sha256=sha256,
        dim=dim,
        cache_dir=cache_dir,
        progress=progress,
    )


def probe_scorer_from(url: str, probe: RequestProbe, cfg: Mapping[str, Any]) -> ProbeScorer:
    """The serving-side scorer for a model's probe (``cfg``: model, timeout, connect_timeout)."""
    client = EmbeddingsClient(
        url,
        model=cfg.get("model") or probe.encoder.name,
        max_tokens=probe.encoder.max_tokens,
        timeout=float(cfg.get("timeout", 1.0)),
        connect_timeout=cfg.get("connect_timeout"),
    )
    return ProbeScorer(client, probe)
