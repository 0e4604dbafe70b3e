"""The resolved policy of one request, as a frozen value, and how it is chosen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from guard.config import Action, FailMode, Mode, PolicyConfig, Settings
from guard.errors import ClientError
from guard.request.parse import GenerationRequest
from guard.wire import CHAT


class TrackerLike(Protocol):
    """What the decision layer needs from a risk-model tracker (guard.risk implements it)."""

    def feed(self, text: str, n_tokens: int = 1) -> None: ...
    def risk(self) -> float: ...
    @property
    def tokens(self) -> int: ...
    def state(self) -> dict[str, Any]: ...


class RiskModelLike(Protocol):
    @property
    def depth(self) -> int: ...
    @property
    def suggested_threshold(self) -> float: ...
    def tracker(self, prompt: Any, prefill: str = "") -> TrackerLike: ...


@dataclass(frozen=True, slots=True)
class Alternate:
    upstream: str | None
    model: str | None
    system_prompt: str | None
    attempts: int


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    mode: Mode
    depth: int
    threshold: float
    action: Action
    hold_back: int
    debounce: int
    sparse_every: int
    safe_message: str | None
    halt_separator: str
    fail_mode: FailMode
    max_n: int
    max_tokens_limit: int
    max_top_logprobs: int
    resample_attempts: int
    resample_ban_tokens: int
    alternate: Alternate | None

    @property
    def enforcing(self) -> bool:
        return self.mode == "enforce"

    @property
    def tracking(self) -> bool:
        return self.mode != "off"


def build_policy(name: str, cfg: PolicyConfig, model: RiskModelLike) -> Policy:
    alt = cfg.alternate
    return Policy(
        name=name,
        mode=cfg.mode,
        depth=cfg.depth if cfg.depth is not None else model.depth,
        threshold=cfg.threshold if cfg.threshold is not None else model.suggested_threshold,
        action=cfg.action,
        hold_back=cfg.hold_back,
        debounce=cfg.debounce,
        sparse_every=cfg.sparse_every,
        safe_message=cfg.safe_message,
        halt_separator=cfg.halt_separator,
        fail_mode=cfg.fail_mode,
        max_n=cfg.max_n,
        max_tokens_limit=cfg.max_tokens_limit,
        max_top_logprobs=cfg.max_top_logprobs,
        resample_attempts=cfg.resample_attempts,
        resample_ban_tokens=cfg.resample_ban_tokens,
        alternate=None
        if alt is None
        else Alternate(alt.upstream, alt.model, alt.system_prompt, alt.attempts),
    )


class PolicyBook:
    """Resolves (model, api key name, route) to a Policy; first matching rule wins.

    Built once per settings + risk model (and rebuilt on reload), so lookups are a dict hit.
    """

    __slots__ = ("_cache", "_default", "_model", "_rules")

    def __init__(self, settings: Settings, model: RiskModelLike) -> None:
        self._model = model
        self._default = build_policy("default", settings.policy, model)
        self._rules = [
            (
                r.match,
                build_policy(f"rule{i}", settings.policy.model_copy(update=r.policy), model),
            )
            for i, r in enumerate(settings.policies)
        ]
        self._cache: dict[tuple[str | None, str | None, str], Policy] = {}

    @property
    def default(self) -> Policy:
        return self._default

    def resolve(self, model: str | None, api_key: str | None, route: str) -> Policy:
        key = (model, api_key, route)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        chosen = self._default
        for match, pol in self._rules:
            if match.model is not None and match.model != model:
                continue
            if match.api_key is not None and match.api_key != api_key:
                continue
            if match.route is not None and match.route != route:
                continue
            chosen = pol
            break
        if len(self._cache) < 4096:  # bounded: model names come from clients
            self._cache[key] = chosen
        return chosen


def check_limits(req: GenerationRequest, policy: Policy) -> None:
    """Per-policy limits on what would otherwise fail upstream (or cost too much)."""
    if req.n > policy.max_n:
        raise ClientError(f"n must be at most {policy.max_n} under this policy", param="n")
    if req.max_tokens is not None and req.max_tokens > policy.max_tokens_limit:
        raise ClientError(
            f"max_tokens must be at most {policy.max_tokens_limit} under this policy",
            param="max_tokens",
        )
    body = req.body
    top = body.get("top_logprobs") if req.route == CHAT else body.get("logprobs")
    if isinstance(top, int) and not isinstance(top, bool) and top > policy.max_top_logprobs:
        name = "top_logprobs" if req.route == CHAT else "logprobs"
        raise ClientError(
            f"{name} must be at most {policy.max_top_logprobs} under this policy", param=name
        )
    if req.route == CHAT and body.get("top_logprobs") and not body.get("logprobs"):
        raise ClientError("top_logprobs needs logprobs: true", param="top_logprobs")
