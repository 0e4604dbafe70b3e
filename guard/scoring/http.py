"""HTTP clients for guard models served by vLLM (I/O edge: httpx).

Two endpoint styles, both answering "P(unsafe)" for a batch of texts in ONE request:

* ``POST /classify`` (a sequence-classification model served with ``--runner pooling --convert
  classify``): ``{"model", "input": [texts], "truncate_prompt_tokens": -1, "truncation_side":
  "left"}`` -> ``{"data": [{"index", "label", "probs": [p0, p1, ...], "num_classes"}]}``;
  P(unsafe) = ``probs[unsafe_index]``.
* ``POST /generative_scoring`` (any generative model, e.g. a Llama-Guard-style guard):
  ``{"model", "query", "items": [texts], "label_token_ids": [unsafe_id, safe_id],
  "apply_softmax": true}`` -> ``{"data": [{"index", "object": "score", "score"}]}``. vLLM builds
  ``query + item`` for each item (``query`` tokenized with special tokens, items without), runs one
  forward pass and returns the probability of the FIRST label token as the next token (softmaxed
  over the label tokens when ``apply_softmax``) -- so the unsafe token id goes first.

Each client has an async API (``await client.score(texts)``, sharing one ``httpx.AsyncClient``
passed in or created lazily) and a sync API (``client.score_sync(texts)``) for offline fitting.
Every failure (connect error, timeout, HTTP status, malformed body) raises :class:`ScorerError`.
``make_external_scorer`` is the entry point ``guard fit --scorer-url`` imports.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import httpx

__all__ = [
    "DEFAULT_REQUEST_TEMPLATE",
    "DEFAULT_RESPONSE_TEMPLATE",
    "BatchedHTTPScorer",
    "ClassifyClient",
    "GenerativeScoringClient",
    "ScorerError",
    "ScoringClient",
    "make_external_scorer",
]

from guard.errors import ScorerError
from guard.risk.verdict_text import DEFAULT_REQUEST_TEMPLATE, DEFAULT_RESPONSE_TEMPLATE


class ScoringClient(Protocol):
    """What the batcher and :class:`BatchedHTTPScorer` need from a client."""

    name: str

    async def score(self, texts: Sequence[str]) -> list[float]: ...

    def score_sync(self, texts: Sequence[str]) -> list[float]: ...


def _as_prob(x: object, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise ScorerError(f"{what}: expected a number, got {type(x).__name__}")
    p = float(x)
    if not math.isfinite(p) or p < -1e-6 or p > 1 + 1e-6:
        raise ScorerError(f"{what}: {p!r} is not a probability")
    return min(1.0, max(0.0, p))


def _data_by_index(payload: object, n: int) -> list[Mapping[str, Any]]:
    if not isinstance(payload, Mapping):
        raise ScorerError("response is not a JSON object")
    data = payload.get("data")
    if not isinstance(data, list) or len(data) != n:
        got = len(data) if isinstance(data, list) else type(data).__name__
        raise ScorerError(f"response 'data' has {got} entries, expected {n}")
    rows: list[Mapping[str, Any] | None] = [None] * n
    for i, row in enumerate(data):
        if not isinstance(row, Mapping):
            raise ScorerError(f"data[{i}] is not an object")
        idx = row.get("index", i)
        if not isinstance(idx, int) or not 0 <= idx < n or rows[idx] is not None:
            raise ScorerError(f"data[{i}] has a bad index {idx!r}")
        rows[idx] = row
    return [r for r in rows if r is not None]


class _HTTPScorer:
    """Shared plumbing: URL, timeouts, one async client, one sync client, error mapping."""

    path = ""

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        timeout: float = 2.0,
        connect_timeout: float | None = None,
        client: httpx.AsyncClient | None = None,
        sync_client: httpx.Client | None = None,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # accept ".../v1" as given for the chat API: these endpoints live at the root
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[: -len("/v1")]
        self.url = self.base_url + self.path
        self.model = model
        self.timeout = httpx.Timeout(
            timeout, connect=connect_timeout if connect_timeout is not None else timeout
        )
        self.headers = dict(headers or {})
        self.name = name or (model or "model")
        self._client = client
        self._own_client = client is None
        self._sync = sync_client
        self._own_sync = sync_client is None

    # -- pure parts (tested against recorded shapes) ------------------------------------------
    def build_request(self, texts: Sequence[str]) -> dict[str, Any]:
        raise NotImplementedError

    def parse_response(self, payload: object, n: int) -> list[float]:
        raise NotImplementedError

    # -- I/O ----------------------------------------------------------------------------------

    async def _post(self, texts: Sequence[str]) -> object:
        """One POST of ``texts``; the decoded JSON body. Raises ScorerError."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        try:
            resp = await self._client.post(
                self.url,
                json=self.build_request(texts),
                headers=self.headers,
                timeout=self.timeout,
            )
        except httpx.HTTPError as e:
            raise ScorerError(f"{self.url}: {type(e).__name__}: {e}") from e
        return self._payload(resp)

    def _post_sync(self, texts: Sequence[str]) -> object:
        if self._sync is None:
            self._sync = httpx.Client(timeout=self.timeout)
        try:
            resp = self._sync.post(
                self.url,
                json=self.build_request(texts),
                headers=self.headers,
                timeout=self.timeout,
            )
        except httpx.HTTPError as e:
            raise ScorerError(f"{self.url}: {type(e).__name__}: {e}") from e
        return self._payload(resp)

    def _payload(self, resp: httpx.Response) -> object:
        if resp.status_code != 200:
            raise ScorerError(f"{self.url}: HTTP {resp.status_code}: {resp.text[:300]}")
        try:
            return resp.json()
        except ValueError as e:
            raise ScorerError(f"{self.url}: response is not JSON: {e}") from e

    async def score(self, texts: Sequence[str]) -> list[float]:
        """P(unsafe) per text, in order, from one HTTP request. Raises ScorerError."""
        if not texts:
            return []
        return self.parse_response(await self._post(texts), len(texts))

    def score_sync(self, texts: Sequence[str]) -> list[float]:
        """Blocking twin of :meth:`score` (offline fitting)."""
        if not texts:
            return []
        return self.parse_response(self._post_sync(texts), len(texts))

    async def aclose(self) -> None:
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None
        self.close()

    def close(self) -> None:
        if self._own_sync and self._sync is not None:
            self._sync.close()
            self._sync = None


class ClassifyClient(_HTTPScorer):
    """``POST /classify`` on a sequence-classification guard; P(unsafe) = probs[unsafe_index].

    ``truncate_prompt_tokens=-1`` with ``truncation_side="left"`` (default) lets vLLM cut an
    over-long input to the model's max length keeping its END (the newest text); pass
    ``truncate_prompt_tokens=None`` to send neither field (vLLM then answers 400 for long inputs).
    """

    path = "/classify"

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        unsafe_index: int = 1,
        truncate_prompt_tokens: int | None = -1,
        truncation_side: str = "left",
        **kw: Any,
    ) -> None:
        super().__init__(base_url, model=model, **kw)
        if unsafe_index < 0:
            raise ValueError("unsafe_index must be >= 0")
        self.unsafe_index = unsafe_index
        self.truncate_prompt_tokens = truncate_prompt_tokens
        self.truncation_side = truncation_side

    def build_request(self, texts: Sequence[str]) -> dict[str, Any]:
        body: dict[str, Any] = {"input": list(texts)}
        if self.model is not None:
            body["model"] = self.model
        if self.truncate_prompt_tokens is not None:
            body["truncate_prompt_tokens"] = self.truncate_prompt_tokens
            body["truncation_side"] = self.truncation_side
        return body

    def parse_response(self, payload: object, n: int) -> list[float]:
        out = []
        for i, row in enumerate(_data_by_index(payload, n)):
            probs = row.get("probs")
            if not isinstance(probs, list) or len(probs) <= self.unsafe_index:
                raise ScorerError(
                    f"data[{i}].probs has no entry {self.unsafe_index} (num_classes "
                    f"{row.get('num_classes')!r})"
                )
            out.append(_as_prob(probs[self.unsafe_index], f"data[{i}].probs"))
        return out


class GenerativeScoringClient(_HTTPScorer):
    """``POST /generative_scoring`` on a generative guard; P(unsafe) = P(next token = unsafe).

    ``query`` is the fixed head of the guard prompt (tokenized WITH special tokens, e.g. BOS, and
    shared by all items -- prefix caching helps); each text is rendered with ``item_template``
    (``{text}`` placeholder), e.g. the conversation followed by the guard's answer cue. The
    unsafe token id is sent first (vLLM scores the first label); with ``apply_softmax`` the
    probability is normalised over ``[unsafe_token_id, safe_token_id]``.
    """

    path = "/generative_scoring"

    def __init__(
        self,
        base_url: str,
        *,
        unsafe_token_id: int,
        safe_token_id: int | None = None,
        model: str | None = None,
        query: str = "",
        item_template: str = "{text}",
        apply_softmax: bool = True,
        **kw: Any,
    ) -> None:
        super().__init__(base_url, model=model, **kw)
        if apply_softmax and safe_token_id is None:
            raise ValueError("apply_softmax needs safe_token_id (a 1-token softmax is always 1)")
        if "{text}" not in item_template:
            raise ValueError("item_template must contain '{text}'")
        self.unsafe_token_id = unsafe_token_id
        self.safe_token_id = safe_token_id
        self.query = query
        self.item_template = item_template
        self.apply_softmax = apply_softmax

    def build_request(self, texts: Sequence[str]) -> dict[str, Any]:
        labels = [self.unsafe_token_id]
        if self.safe_token_id is not None:
            labels.append(self.safe_token_id)
        body: dict[str, Any] = {
            "query": self.query,
            "items": [self.item_template.replace("{text}", t) for t in texts],
            "label_token_ids": labels,
            "apply_softmax": self.apply_softmax,
        }
        if self.model is not None:
            body["model"] = self.model
        return body

    def parse_response(self, payload: object, n: int) -> list[float]:
        return [
            _as_prob(row.get("score"), f"data[{i}].score")
            for i, row in enumerate(_data_by_index(payload, n))
        ]


ProgressFn = Callable[[int, int], None]

T = TypeVar("T")


def with_retries(call: Callable[[], T], retries: int) -> T:
    """``call()``, tried again up to ``retries`` times on ``ScorerError`` (backing off 0.2 s,
    0.4 s, ... at most 2 s): offline fitting rides out a server's brief hiccup."""
    for attempt in range(retries + 1):
        try:
            return call()
        except ScorerError:
            if attempt == retries:
                raise
            time.sleep(min(2.0, 0.2 * 2**attempt))
    raise AssertionError("unreachable")


class BatchedHTTPScorer:
    """Synchronous, chunked scorer over a guard model, for offline use (``guard fit``).

    ``score_batch(texts)`` renders each text with ``template`` (``{text}`` placeholder), sends
    chunks of ``batch_size`` texts (one HTTP call each, ``retries`` extra tries per chunk) and
    returns P(unsafe) per text in order. ``iter_chunks`` yields per chunk for progress bars;
    ``progress(done, total)`` is called after every chunk if given.
    """

    def __init__(
        self,
        client: ScoringClient,
        *,
        batch_size: int = 32,
        template: str = "{text}",
        retries: int = 2,
        progress: ProgressFn | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.client = client
        self.name = client.name
        self.batch_size = batch_size
        self.template = template
        self.retries = retries
        self.progress = progress
        self.calls = 0
        self.seconds = 0.0

    def _one(self, chunk: list[str]) -> list[float]:
        def call() -> list[float]:
            t0 = time.perf_counter()
            try:
                return self.client.score_sync(chunk)
            finally:
                self.calls += 1
                self.seconds += time.perf_counter() - t0

        return with_retries(call, self.retries)

    def iter_chunks(self, texts: Sequence[str]) -> Iterator[list[float]]:
        rendered = [self.template.replace("{text}", t) for t in texts]
        done = 0
        for s in range(0, len(rendered), self.batch_size):
            out = self._one(rendered[s : s + self.batch_size])
            done += len(out)
            if self.progress is not None:
                self.progress(done, len(rendered))
            yield out

    def score_batch(self, texts: list[str]) -> list[float]:
        out: list[float] = []
        for chunk in self.iter_chunks(texts):
            out.extend(chunk)
        return out

    def score(self, text: str) -> float:
        return self.score_batch([text])[0]

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if callable(close):
            close()


def make_external_scorer(
    url: str, kind: str = "classify", model: str | None = None, **kw: Any
) -> BatchedHTTPScorer:
    """Build the offline scorer ``guard fit --scorer ... --scorer-url URL`` uses.

    ``kind``: ``"classify"`` (``/classify``; kw ``unsafe_index`` (1), ``truncate_prompt_tokens``)
    or ``"generative"`` (``/generative_scoring``; kw ``unsafe_token_id`` (required),
    ``safe_token_id``, ``query``, ``item_template``, ``apply_softmax``). Common kw: ``timeout``
    (default 30 s offline), ``headers``; BatchedHTTPScorer kw: ``batch_size`` (32), ``retries`` (2),
    ``progress``, ``template``. ``template`` wraps each text before sending; default ``"{text}"``:
    ``guard fit``/``guard eval`` already render the texts exactly as serving does
    (``guard.risk.verdict_text``: prompt summary + response prefix in the tiny-guard format).
    """
    ext_keys = ("batch_size", "retries", "progress", "template")
    ext = {k: kw.pop(k) for k in ext_keys if k in kw}
    kw.setdefault("timeout", 30.0)
    client: ScoringClient
    if kind in ("classify", "classifier"):
        client = ClassifyClient(url, model=model, **kw)
    elif kind in ("generative", "generative_scoring"):
        if "unsafe_token_id" not in kw:
            raise ValueError("kind='generative' needs unsafe_token_id=")
        client = GenerativeScoringClient(url, model=model, **kw)
    else:
        raise ValueError(f"unknown scorer kind {kind!r} (classify | generative)")
    return BatchedHTTPScorer(client, **ext)
