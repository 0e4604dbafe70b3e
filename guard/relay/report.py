"""What one generation did, frozen: read once it ended, by accounting (metrics), tracing and the
decision log (guard.generation.accounting). Built by ``Relay.report()``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from guard.decision.policy import Policy


@dataclass(frozen=True, slots=True)
class GuardReport:
    failed: bool
    checks: int
    check_ns: int
    last_risk: float
    max_risk: float
    tokens: int
    crossed_at: int
    trace: tuple[tuple[int, float], ...] | None
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ChoiceReport:
    index: int
    halted: bool
    reason: str | None
    generated: int
    released_tokens: int
    released: tuple[str, ...] | None  # released text chunks, where kept
    guard: GuardReport | None


@dataclass(frozen=True, slots=True)
class RelayReport:
    """The frozen summary of one generation, for metrics, tracing and the decision log."""

    policy: Policy
    enforce: bool
    outcome: str  # halted | rerouted | passed
    choices: tuple[ChoiceReport, ...]
    reroutes: tuple[dict[str, Any], ...]
    shadow_halts: int
    halted_any: bool
    first_content_ns: int
    first_arrival_ns: int
