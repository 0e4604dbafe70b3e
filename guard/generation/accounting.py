"""Once per generation (never per token): metrics, the trace span and decision-log records, all
read from the relay's frozen report."""

from __future__ import annotations

import time
from typing import Any

from guard.config import DecisionLogConfig
from guard.observability.decision_log import redact
from guard.observability.metrics import Metrics
from guard.relay.report import ChoiceReport, RelayReport
from guard.request.parse import GenerationRequest


def account(m: Metrics, report: RelayReport, route: str, outcome: str, pre_ns: int) -> None:
    """Count one finished generation. ``outcome`` is ``ok`` or what cut it short."""
    m.requests.labels(route, report.outcome if outcome == "ok" else outcome).inc()
    relayed = checked = check_ns = 0
    policy = report.policy
    for cs in report.choices:
        relayed += cs.released_tokens
        g = cs.guard
        if g is not None:
            if g.failed:
                m.risk_model_failures.labels(policy.fail_mode).inc()
            checked += g.checks
            check_ns += g.check_ns
            m.decision_risk.observe(g.last_risk)
        if cs.halted:
            m.halts.labels(policy.action if report.reroutes else "halt", cs.reason or "risk").inc()
            if g is not None:
                m.halt_depth.observe(g.tokens)
    if relayed:
        m.tokens_relayed.inc(relayed)
    if checked:
        m.tokens_checked.inc(checked)
        m.check_seconds.observe(check_ns / checked / 1e9)
    if report.shadow_halts:
        m.shadow_decisions.labels("risk").inc(report.shadow_halts)
    for r in report.reroutes:
        m.reroutes.labels(str(r.get("action")), "done").inc()
    if report.first_content_ns and report.first_arrival_ns:
        # What the guard added before the first content delta left: its own work before the
        # upstream call, plus the delay between the first content arriving from upstream and
        # the first content released to the client (checks, and the hold-back window).
        hold = max(0, report.first_content_ns - report.first_arrival_ns)
        m.added_ttft_seconds.observe((pre_ns + hold) / 1e9)


def end_span(span: Any, report: RelayReport, outcome: str) -> None:
    span.set_attribute("guard.outcome", report.outcome if outcome == "ok" else outcome)
    cs = report.choices[0] if report.choices else None
    if cs is not None and cs.guard is not None:
        g = cs.guard
        span.set_attribute("guard.tokens", g.tokens)
        span.set_attribute("guard.max_hitting_probability", g.max_risk)
        if g.crossed_at >= 0:
            span.set_attribute("guard.halt_token", g.crossed_at)
    span.set_attribute("guard.halted", report.halted_any)
    span.end()


def decision_records(
    report: RelayReport,
    req: GenerationRequest,
    outcome: str,
    rid: str,
    cfg: DecisionLogConfig,
    risk_model_version: str,
) -> list[dict[str, Any]]:
    """Decision-log records: one per choice, in the trajectory format (docs/decision-log.md).

    ``label`` is left null: a person or a labelling job fills it before ``guard fit``. A choice
    the guard halted is marked ``meta.censored`` (its natural ending is unknown).
    """
    content = cfg.include_content

    def text(value: str) -> str:
        return redact(value) if cfg.redact_pii else value

    prompt = _logged_prompt(req, text) if content else None
    result = report.outcome if outcome == "ok" else outcome
    many = len(report.choices) > 1
    records = []
    for cs in report.choices:
        response = tokens = None
        if content and cs.released is not None:
            tokens = [text(t) for t in cs.released]
            response = text(req.prefill) + "".join(tokens)
        records.append(
            {
                "id": f"{rid}-{cs.index}" if many else rid,
                "source": "guard",
                "prompt": prompt,
                "prefill": text(req.prefill) if content else None,
                "response": response,
                "tokens": tokens,
                "label": None,
                "harm_start_char": None,
                "meta": {
                    "ts": time.time(),
                    "request_id": rid,
                    "route": req.route,
                    "model": req.model,
                    "policy": report.policy.name,
                    "mode": report.policy.mode,
                    "outcome": result,
                    "censored": cs.halted,
                    "risk_model": risk_model_version,
                    "reroutes": list(report.reroutes),
                    "decision": _decision(cs, report.enforce),
                },
            }
        )
    return records


def _logged_prompt(req: GenerationRequest, text: Any) -> Any:
    if isinstance(req.prompt, str):
        return text(req.prompt)
    return [
        {
            "role": mm.get("role"),
            "content": text(str(mm["content"]))
            if isinstance(mm.get("content"), str)
            else mm.get("content"),
        }
        for mm in req.prompt
        if isinstance(mm, dict)
    ]


def _decision(cs: ChoiceReport, enforce: bool) -> dict[str, Any]:
    g = cs.guard
    decision: dict[str, Any] = {
        "index": cs.index,
        "action": "halt"
        if cs.halted
        else ("shadow_halt" if g and g.crossed_at >= 0 and not enforce else "pass"),
        "reason": cs.reason,
        "generated_tokens": cs.generated,
        "released_tokens": cs.released_tokens,
    }
    if g is not None:
        decision.update(g.details)
        if g.crossed_at >= 0:
            decision["halt_token"] = g.crossed_at
        decision["trace"] = list(g.trace) if g.trace is not None else None
        decision["check_us"] = round(g.check_ns / max(1, g.checks) / 1000, 3)
        decision["risk_model_failed"] = g.failed
    return decision
