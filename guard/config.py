"""Settings: defaults < YAML file < ``GUARD_*`` environment < command-line flags.

Pydantic lives here, at the boundary; the rest of the package sees frozen dataclasses
(``guard.decision.policy.Policy``). Everything is validated at start with messages that name the
offending key, so a bad deployment fails before it takes traffic, never mid-stream.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from guard.errors import ConfigError

Mode = Literal["enforce", "shadow", "off"]
Action = Literal["halt", "resample", "alternate"]
FailMode = Literal["open", "closed"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_url(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{what} must be an http(s) URL like http://127.0.0.1:8000, got {value!r}")
    return value.rstrip("/")


class AlternateConfig(_Strict):
    """Where the *alternate* action sends a request whose generation turned risky."""

    upstream: str | None = None  # another vLLM; None: the main upstream
    model: str | None = None  # another served model; None: the client's
    system_prompt: str | None = None  # a safety system prompt prepended to the conversation
    attempts: int = Field(default=1, ge=1, le=5)

    @field_validator("upstream")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else _check_url(v, "alternate.upstream")


class PolicyConfig(_Strict):
    """How one class of traffic is guarded. ``None`` means: take it from the risk model."""

    mode: Mode = "enforce"
    depth: int | None = Field(default=None, ge=1, le=4096)
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    action: Action = "halt"
    hold_back: int = Field(default=0, ge=0, le=256)
    debounce: int = Field(default=1, ge=1, le=64)
    sparse_every: int = Field(default=16, ge=0, le=4096)
    safe_message: str | None = "I'm sorry, but I can't help with that."
    # Put before the safe message when text already reached the client ("" for none).
    halt_separator: str = Field(default="\n\n", max_length=64)
    fail_mode: FailMode = "open"
    max_n: int = Field(default=8, ge=1, le=128)
    max_tokens_limit: int = Field(default=8192, ge=1)
    max_top_logprobs: int = Field(default=20, ge=0, le=20)
    resample_attempts: int = Field(default=2, ge=1, le=5)
    resample_ban_tokens: int = Field(default=4, ge=1, le=64)
    alternate: AlternateConfig | None = None


class PolicyMatch(_Strict):
    model: str | None = None
    api_key: str | None = None  # the *name* of a configured key, never the key itself
    route: Literal["chat", "completions"] | None = None


class PolicyRule(_Strict):
    match: PolicyMatch
    policy: dict[str, Any]  # partial PolicyConfig, merged over the default policy


class ApiKeyConfig(_Strict):
    name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")  # hex SHA-256 of the key: keys are never stored
    rate_limit_rps: float | None = Field(default=None, gt=0)
    rate_limit_burst: int = Field(default=20, ge=1)


class DecisionLogConfig(_Strict):
    path: str | None = None  # JSONL file; None disables the decision log
    include_content: bool = False  # request/response text only when configured
    redact_pii: bool = True  # emails, phone and card numbers masked in logged text
    max_bytes: int = Field(default=100 * 1024 * 1024, ge=1024)
    backups: int = Field(default=5, ge=0)
    retention_days: float | None = Field(default=None, gt=0)
    queue_size: int = Field(default=10000, ge=1)


class GuardModelConfig(_Strict):
    """A guard classifier served by vLLM, asked every k tokens; its P(unsafe) joins the state."""

    kind: Literal["classify", "generative"] = "classify"
    url: str
    model: str | None = None
    unsafe_index: int = Field(default=1, ge=0)  # classify: which label is "unsafe"
    unsafe_token_id: int | None = None  # generative: label token ids
    safe_token_id: int | None = None
    query: str = ""  # generative: the instruction before the item
    item_template: str = "{text}"
    every_k_tokens: int = Field(default=16, ge=1)
    first_at_tokens: int = Field(default=8, ge=1)
    at_sentence_end: bool = True
    timeout_s: float = Field(default=1.0, gt=0)
    max_batch: int = Field(default=32, ge=1)
    window_ms: float = Field(default=2.0, ge=0)
    # Tokens that may reach the client before the first verdict arrives (0: never wait).
    hold_until_verdict: int = Field(default=0, ge=0, le=256)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_url(v, "guard_model.url")


class EncoderConfig(_Strict):
    """The sentence encoder served by vLLM (``--runner pooling``, ``/v1/embeddings``): a risk
    model with a request probe reads the request's intent from it (the state's external
    dimension). Asked once per request, as the request arrives (concurrently with vLLM's
    prefill); the stream's first tokens wait for the verdict at most ``timeout_s``, then the
    lexical state alone decides (counted in ``guard_scorer_calls_total{scorer="encoder"}``)."""

    url: str
    model: str | None = None  # served model name (default: the encoder the probe names)
    timeout_s: float = Field(default=1.0, gt=0)
    max_batch: int = Field(default=32, ge=1)
    window_ms: float = Field(default=2.0, ge=0)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_url(v, "encoder.url")


class TracingConfig(_Strict):
    enabled: bool = False
    endpoint: str | None = None  # OTLP/HTTP, e.g. http://otel-collector:4318/v1/traces
    service_name: str = "guard"


class Settings(_Strict):
    upstream: str
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    connect_timeout: float = Field(default=5.0, gt=0)
    read_timeout: float = Field(default=60.0, gt=0)  # idle gap between upstream reads
    total_timeout: float = Field(default=600.0, gt=0)  # whole request, stream included
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_streams: int = Field(default=512, ge=1)
    # Upstream connection pools, round-robin; 0: one per 16 of max_streams (at most 64).
    # httpcore's pool bookkeeping is quadratic in its connection count: small pools keep the
    # per-request cost flat as concurrency grows.
    upstream_pool_shards: int = Field(default=0, ge=0, le=256)
    upstream_api_key: SecretStr | None = None
    risk_model: str | None = None  # None: the shipped default model
    policy: PolicyConfig = PolicyConfig()
    policies: tuple[PolicyRule, ...] = ()
    api_keys: tuple[ApiKeyConfig, ...] = ()  # empty: no client authentication
    admin_key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    decision_log: DecisionLogConfig = DecisionLogConfig()
    tracing: TracingConfig = TracingConfig()
    guard_model: GuardModelConfig | None = None
    encoder: EncoderConfig | None = None
    shutdown_timeout: float = Field(default=30.0, ge=0)
    # Longer than a load balancer's idle timeout (often 60 s), so the proxy never closes a
    # keep-alive connection just as a client reuses it (a reset the client cannot retry safely).
    keep_alive_timeout: float = Field(default=75.0, gt=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, v: str) -> str:
        return _check_url(v, "upstream")

    @field_validator("policies")
    @classmethod
    def _rules(cls, rules: tuple[PolicyRule, ...]) -> tuple[PolicyRule, ...]:
        for i, rule in enumerate(rules):
            try:
                PolicyConfig.model_validate(rule.policy)
            except ValidationError as exc:
                raise ValueError(f"policies[{i}].policy: {_format(exc)}") from None
        return rules


def hash_key(key: str) -> str:
    """The form an API key is stored in config: ``guard hash-key`` prints it."""
    return hashlib.sha256(key.encode()).hexdigest()


# GUARD_<NAME> environment variables and their place in the settings tree.
ENV_KEYS: dict[str, tuple[str, ...]] = {
    "UPSTREAM": ("upstream",),
    "HOST": ("host",),
    "PORT": ("port",),
    "WORKERS": ("workers",),
    "CONNECT_TIMEOUT": ("connect_timeout",),
    "READ_TIMEOUT": ("read_timeout",),
    "TOTAL_TIMEOUT": ("total_timeout",),
    "MAX_BODY_BYTES": ("max_body_bytes",),
    "MAX_STREAMS": ("max_streams",),
    "UPSTREAM_POOL_SHARDS": ("upstream_pool_shards",),
    "UPSTREAM_API_KEY": ("upstream_api_key",),
    "RISK_MODEL": ("risk_model",),
    "ADMIN_KEY_SHA256": ("admin_key_sha256",),
    "SHUTDOWN_TIMEOUT": ("shutdown_timeout",),
    "KEEP_ALIVE_TIMEOUT": ("keep_alive_timeout",),
    "LOG_LEVEL": ("log_level",),
    "MODE": ("policy", "mode"),
    "DEPTH": ("policy", "depth"),
    "THRESHOLD": ("policy", "threshold"),
    "ACTION": ("policy", "action"),
    "HOLD_BACK": ("policy", "hold_back"),
    "DEBOUNCE": ("policy", "debounce"),
    "SPARSE_EVERY": ("policy", "sparse_every"),
    "FAIL_MODE": ("policy", "fail_mode"),
    "SAFE_MESSAGE": ("policy", "safe_message"),
    "HALT_SEPARATOR": ("policy", "halt_separator"),
    "DECISION_LOG": ("decision_log", "path"),
    "DECISION_LOG_CONTENT": ("decision_log", "include_content"),
    "DECISION_LOG_MAX_BYTES": ("decision_log", "max_bytes"),
    "DECISION_LOG_BACKUPS": ("decision_log", "backups"),
    "TRACING": ("tracing", "enabled"),
    "OTLP_ENDPOINT": ("tracing", "endpoint"),
    "GUARD_MODEL_URL": ("guard_model", "url"),
    "ENCODER_URL": ("encoder", "url"),
    "ENCODER_MODEL": ("encoder", "model"),
    "ENCODER_TIMEOUT": ("encoder", "timeout_s"),
}


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = tree
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value


def _format(exc: ValidationError) -> str:
    msgs = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msgs.append(f"{loc}: {err['msg']}")
    return "; ".join(msgs)


def load_settings(
    config_path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[tuple[str, ...], Any] | None = None,
) -> Settings:
    """Build validated settings; raises ConfigError with every problem named."""
    tree: dict[str, Any] = {}
    if config_path is not None:
        path = Path(config_path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        tree = loaded
    environ = os.environ if env is None else env
    for name, path_keys in ENV_KEYS.items():
        value = environ.get(f"GUARD_{name}")
        if value is not None and value != "":
            _set(tree, path_keys, value)
    for path_keys, value in (overrides or {}).items():
        if value is not None:
            _set(tree, path_keys, value)
    if "upstream" not in tree:
        raise ConfigError(
            "no upstream given: pass --upstream URL (or GUARD_UPSTREAM, or 'upstream:' in the"
            " config file). guard never starts a local model by surprise; `guard demo` does."
        )
    try:
        settings = Settings.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(f"invalid settings: {_format(exc)}") from None
    _check_cross_fields(settings)
    return settings


def _check_cross_fields(settings: Settings) -> None:
    policies = [("policy", settings.policy)] + [
        (f"policies[{i}]", settings.policy.model_copy(update=r.policy))
        for i, r in enumerate(settings.policies)
    ]
    key_names = {k.name for k in settings.api_keys}
    for where, pol in policies:
        if pol.action == "alternate" and pol.alternate is None:
            raise ConfigError(
                f"{where}: action 'alternate' needs an 'alternate:' section (upstream, model or"
                " system_prompt)"
            )
        if pol.alternate is not None and not (
            pol.alternate.upstream or pol.alternate.model or pol.alternate.system_prompt
        ):
            raise ConfigError(
                f"{where}.alternate: set at least one of upstream, model, system_prompt"
            )
    for i, rule in enumerate(settings.policies):
        if rule.match.api_key is not None and rule.match.api_key not in key_names:
            raise ConfigError(
                f"policies[{i}].match.api_key: no api key named {rule.match.api_key!r}"
            )
    gm = settings.guard_model
    if (
        gm is not None
        and gm.kind == "generative"
        and (gm.unsafe_token_id is None or gm.safe_token_id is None)
    ):
        raise ConfigError(
            "guard_model: a generative guard needs unsafe_token_id and safe_token_id (the label"
            " tokens' ids in its tokenizer)"
        )
    if gm is not None and settings.encoder is not None:
        raise ConfigError(
            "guard_model and encoder: a risk model has one external dimension, either a guard "
            "classifier's verdicts or the encoder's request verdict; configure one"
        )
    if len(key_names) != len(settings.api_keys):
        raise ConfigError("api_keys: names must be unique")
