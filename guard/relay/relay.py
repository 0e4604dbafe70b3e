"""The guarded relay of one generation: a sans-IO state machine, as h11's ``Connection`` is.

Events in: ``on_event`` (an upstream SSE event), ``on_verdict`` (a guard-model verdict),
``on_prompt_tokens`` (the prompt's size, counted by vLLM's ``/tokenize``), ``begin_attempt`` (a
reroute or continuation attempt was opened). Commands out: the bytes to send the client
(``on_event``'s return value), the verdicts to ask (``take_verdict_asks``), and ``status``, which
says what the I/O layer (``guard.generation``) must do next:

* ``RUNNING``: keep reading the upstream;
* ``UPSTREAM_ERROR``: upstream sent an error event (relayed); its ``[DONE]`` follows;
* ``DONE``: upstream's ``[DONE]`` was relayed: the response is complete;
* ``GUARD_ENDED``: every choice ended, at least one halted: abort the upstream, then ``finish()``;
* ``REROUTE``: abort the upstream; open another attempt as ``reroute_plan()`` says, then
  ``begin_attempt``;
* ``SEGMENT_END``: a resample's banned-token segment ended: continue without the bias (or
  ``end_segment()`` when that cannot be opened).

No I/O happens here, so the whole decision logic is tested by feeding recorded wire bytes
(tests/unit/relay). Per event, the fast path is one JSON parse, one tracker feed + table lookup,
and ``ev.raw`` returned untouched. ``report()`` is the frozen summary accounting and the decision
log read once the generation ended.

With ``collect=True`` (non-streaming clients) the same machine keeps the guarded chunk objects in
``collected`` instead of returning bytes; ``guard.relay.assemble`` folds them into one completion.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from guard import jsonfast, wire
from guard.decision.choice import REASON_MODEL_ERROR, ChoiceGuard
from guard.decision.policy import Policy, RiskModelLike
from guard.errors import UpstreamProtocolError
from guard.relay import chunks
from guard.relay.chunks import StreamMeta
from guard.relay.holdback import HoldBack
from guard.relay.report import ChoiceReport, GuardReport, RelayReport
from guard.request.parse import GenerationRequest
from guard.upstream.sse import SSEEvent


class Status(enum.Enum):
    RUNNING = "running"
    DONE = "done"
    GUARD_ENDED = "guard_ended"
    REROUTE = "reroute"
    SEGMENT_END = "segment_end"
    UPSTREAM_ERROR = "upstream_error"


RUNNING = Status.RUNNING
DONE = Status.DONE
GUARD_ENDED = Status.GUARD_ENDED
REROUTE = Status.REROUTE
SEGMENT_END = Status.SEGMENT_END
UPSTREAM_ERROR = Status.UPSTREAM_ERROR


class VerdictSchedule(Protocol):
    """When to ask the guard model and what (guard.scoring.verdicts.VerdictSchedule)."""

    @property
    def answered(self) -> int: ...
    @property
    def fallbacks(self) -> int: ...
    def observe(self, text_chunk: str, n_tokens: int = 1) -> str | None: ...
    def on_verdict(self, p: float | None) -> None: ...


#: Builds a choice's verdict schedule from the request's prompt and prefill.
ScheduleFactory = Callable[[Any, str], VerdictSchedule]


@dataclass(frozen=True, slots=True)
class ReroutePlan:
    """What the next attempt continues from: the safe prefix the client already has."""

    action: str  # resample | alternate
    prefix: str
    prefix_tokens: int
    crossing_text: str  # the chunk that crossed the threshold (never released)
    crossing_ids: tuple[int, ...]  # its token ids, when the client asked vLLM for them


class _Choice:
    __slots__ = (
        "crossing_ids",
        "crossing_text",
        "delivered",
        "done",
        "generated",
        "guard",
        "halted",
        "held",
        "index",
        "reason",
        "released",
        "released_tokens",
        "schedule",
        "tool_mode",
    )

    def __init__(self, index: int, guard: ChoiceGuard | None, keep_text: bool) -> None:
        self.index = index
        self.guard = guard
        self.done = False
        self.halted = False
        self.reason: str | None = None
        self.generated = 0  # tokens the model generated for this choice, all attempts
        self.released_tokens = 0
        self.delivered = False  # some text reached the client
        self.held = HoldBack()
        self.tool_mode = False
        # Released text, kept only where a reroute needs the safe prefix.
        self.released: list[str] | None = [] if keep_text else None
        self.crossing_text = ""
        self.crossing_ids: list[int] = []
        self.schedule: VerdictSchedule | None = None


class Relay:
    def __init__(
        self,
        req: GenerationRequest,
        policy: Policy,
        model: RiskModelLike | None,
        *,
        trace: bool = False,
        keep_text: bool = False,
        verdicts: ScheduleFactory | None = None,
        verdict_hold: int = 0,
        collect: bool = False,
    ) -> None:
        self.req = req
        self.policy = policy
        self.model = model
        self.chat = req.route == wire.CHAT
        # Structured output (JSON mode, a JSON schema): the separator's raw newlines inside a JSON
        # string make the SDKs' partial parsers fail before they see content_filter.
        rf = req.body.get("response_format")
        self._separate = not (
            isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema")
        ) and not any(k in req.body for k in ("guided_json", "structured_outputs"))
        self.status = RUNNING
        self.meta: StreamMeta | None = None
        self.tracking = policy.tracking and model is not None
        self.enforce = policy.enforcing and self.tracking
        self.hold_back = policy.hold_back if self.enforce else 0
        self.reroutable = self.enforce and policy.action in ("resample", "alternate") and req.n == 1
        self._trace = trace
        # Released text is kept only where something needs it: a reroute's safe prefix, or a
        # decision log that records content.
        self._keep_text = keep_text or self.reroutable
        self._verdicts = verdicts if self.tracking else None
        self.verdict_hold = verdict_hold if self.enforce else 0
        # No window of any kind: a chunk that passed its check leaves at once (the fast path).
        self._release_at_once = self.hold_back == 0 and self.verdict_hold == 0
        self._asks: list[tuple[int, str]] = []
        #: the encoder's request verdict (``set_request_verdict``): P, and "answered" /
        #: "fallback" (None: not asked)
        self.request_p: float | None = None
        self.request_verdict: str | None = None
        self.choices: list[_Choice | None] = [None] * req.n
        self.open_choices = req.n
        self.attempt = 0  # 0: the client's own request; >0: reroute attempts
        self.segment_limited = False  # this attempt is a resample's banned-token segment
        self.reroutes: list[dict[str, Any]] = []
        self.prompt_tokens: int | None = None
        self.halted_any = False
        self.shadow_halts = 0
        self.first_content_ns = 0  # perf_counter_ns when the first content reached the client
        self.first_arrival_ns = 0  # perf_counter_ns when the first content came from upstream
        self.error: dict[str, Any] | None = None  # an upstream error event's object
        # Non-streaming: the guarded chunk objects, in order, instead of bytes.
        self.collected: list[dict[str, Any]] | None = [] if collect else None

    # ------------------------------------------------------------------ choices

    def _choice(self, index: int) -> _Choice:
        if index >= len(self.choices):  # more choices than asked: be tolerant
            self.choices.extend([None] * (index + 1 - len(self.choices)))
            self.open_choices += index + 1 - self.req.n
        cs = self.choices[index]
        if cs is None:
            guard = None
            if self.tracking and self.model is not None:
                try:
                    tracker = self.model.tracker(self.req.prompt, self.req.prefill)
                    if self.request_p is not None:
                        # a tracker without an external dimension has no such method: that
                        # model reads no encoder (it was never asked)
                        tracker.set_external_score(self.request_p)  # type: ignore[attr-defined]
                    guard = ChoiceGuard(tracker, self.policy, trace=self._trace)
                except Exception:
                    guard = None
                    if self.policy.fail_mode == "closed" and self.enforce:
                        cs = _Choice(index, None, False)
                        cs.reason = REASON_MODEL_ERROR
                        self.choices[index] = cs
                        return cs
            cs = _Choice(index, guard, self._keep_text)
            if self._verdicts is not None and guard is not None:
                cs.schedule = self._verdicts(self.req.prompt, self.req.prefill)
            self.choices[index] = cs
        return cs

    # ------------------------------------------------------------------ output

    def _emit(self, obj: dict[str, Any], raw: bytes | None = None) -> bytes:
        """One chunk out: its bytes when streaming; kept as an object when collecting."""
        if self.collected is not None:
            self.collected.append(obj)
            return b""
        return raw if raw is not None else chunks.sse(obj)

    def _emit_all(self, payloads: list[Any]) -> bytes:
        if self.collected is not None:
            self.collected.extend(payloads)
            return b""
        return payloads[0] if len(payloads) == 1 else b"".join(payloads)

    # ------------------------------------------------------------------ events

    def on_event(self, ev: SSEEvent) -> bytes:
        if self.status is DONE:
            return b""  # anything after [DONE] is not for the client
        data = ev.data
        if data is None:
            # A comment (keep-alive): harmless, keeps proxies' idle timers happy.
            return b"" if self.collected is not None else ev.raw
        if data == b"[DONE]":
            return self._on_done(ev)
        try:
            obj = jsonfast.loads(data)
        except ValueError:
            raise UpstreamProtocolError("upstream sent an event that is not valid JSON") from None
        if not isinstance(obj, dict):
            raise UpstreamProtocolError("upstream sent an event that is not a JSON object")
        choices = obj.get("choices")
        if not choices:
            return self._on_choiceless(ev.raw, obj)
        if self.meta is None:
            self.meta = StreamMeta(
                str(obj.get("id", "")),
                str(obj.get("object", "chat.completion.chunk" if self.chat else "text_completion")),
                int(obj.get("created", 0) or int(time.time())),
                str(obj.get("model", "")),
                self.chat,
            )
        if len(choices) == 1:
            return self._on_choice(ev.raw, obj, choices[0])
        # Several choices in one chunk (not what vLLM streams): handle each as its own event.
        out = []
        for choice in choices:
            single = dict(obj)
            single["choices"] = [choice]
            out.append(self._on_choice(chunks.sse(single), single, choice))
        return b"".join(out)

    def _on_choiceless(self, raw: bytes, obj: dict[str, Any]) -> bytes:
        if "error" in obj:
            self.status = UPSTREAM_ERROR
            err = obj["error"]
            self.error = err if isinstance(err, dict) else {"message": str(err)}
            return self._emit(obj, raw)
        usage = obj.get("usage")
        if usage is not None:
            if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
                if self.attempt == 0:
                    self.prompt_tokens = usage["prompt_tokens"]
                elif self.prompt_tokens is None:
                    # A reroute's prompt holds the released prefix too: take it back out.
                    self.prompt_tokens = max(
                        0, usage["prompt_tokens"] - self._choice(0).released_tokens
                    )
            if self.attempt > 0 or self.halted_any:
                return b""  # we write our own, honest across attempts
        return self._emit(obj, raw) if self.attempt == 0 else b""

    def _on_choice(self, raw: bytes, obj: dict[str, Any], choice: Any) -> bytes:
        if not isinstance(choice, dict):
            raise UpstreamProtocolError("upstream sent a choice that is not a JSON object")
        index = choice.get("index", 0)
        if index.__class__ is not int or index < 0 or index > 1024:
            raise UpstreamProtocolError("upstream sent a choice with a bad index")
        choices = self.choices
        cs = choices[index] if index < len(choices) else None
        if cs is None:
            cs = self._choice(index)
        if cs.done:
            return b""
        if cs.guard is None and cs.reason == REASON_MODEL_ERROR and self.enforce:
            return self._halt(cs, REASON_MODEL_ERROR)
        finish = choice.get("finish_reason")
        text, ntok, has_tool = wire.generated(choice, self.chat)
        rewrite = False
        if self.attempt > 0:
            if self.chat and not text and not has_tool and finish is None:
                return b""  # the new attempt's role chunk: the client has one already
            if (
                finish is not None
                and self.reroutes
                and not (self.segment_limited and finish == "length")
            ):
                # The stream's real end after a reroute: say what the guard did.
                obj["guard"] = self.guard_details(cs, str(self.reroutes[-1]["action"]))
            meta = self.meta
            assert meta is not None
            obj["id"], obj["created"], obj["model"] = meta.id, meta.created, meta.model
            rewrite = True
        cs.generated += ntok
        if text and self.first_arrival_ns == 0:
            self.first_arrival_ns = time.perf_counter_ns()
        if cs.schedule is not None and (text or ntok):
            ask = cs.schedule.observe(text, ntok)
            if ask is not None:
                self._asks.append((cs.index, ask))
        guard = cs.guard
        if guard is not None and (text or ntok):
            reason = guard.observe(text, ntok)
            if reason is not None:
                if self.enforce:
                    cs.crossing_text = text
                    ids = choice.get("token_ids")
                    cs.crossing_ids = list(ids) if isinstance(ids, list) else []
                    return self._decide(cs, reason)
                self.shadow_halts += 1
        if finish is not None and self.segment_limited and finish == "length":
            # End of a resample's banned-token segment: not the client's end. Release what was
            # checked and let the I/O loop continue without the bias.
            out = self._release(cs, self._segment_payload(obj, text, ntok), ntok, text, final=True)
            self.status = SEGMENT_END
            return out
        if self.collected is not None:
            payload: Any = obj
        else:
            payload = chunks.sse(obj) if rewrite else raw
            if (
                finish is None
                and not has_tool
                and self._release_at_once
                and not cs.held
                and not cs.tool_mode
            ):
                # The common case, inline: nothing held, no window: release this chunk now.
                cs.released_tokens += ntok
                if text:
                    self._mark_text(cs, text)
                return payload  # type: ignore[no-any-return]
        out = self._release(cs, payload, ntok, text, final=finish is not None, tool=has_tool)
        if finish is not None:
            cs.done = True
            self.open_choices -= 1
            if self.open_choices <= 0 and self.halted_any:
                self.status = GUARD_ENDED
        return out

    def _segment_payload(self, obj: dict[str, Any], text: str, ntok: int) -> Any:
        """A segment's last chunk without its ``finish_reason`` (the stream goes on)."""
        choice = dict(obj["choices"][0])
        choice["finish_reason"] = None
        stripped = dict(obj)
        stripped["choices"] = [choice]
        if not (text or ntok):
            return None
        return stripped if self.collected is not None else chunks.sse(stripped)

    def _release(
        self,
        cs: _Choice,
        payload: Any,
        ntok: int,
        text: str,
        *,
        final: bool,
        tool: bool = False,
    ) -> bytes:
        if tool and self.enforce:
            cs.tool_mode = True  # a partial tool call is never released: hold until the end
        hold = self.hold_back
        sched = cs.schedule
        if self.verdict_hold and sched is not None and sched.answered == 0 and not sched.fallbacks:
            hold = max(hold, self.verdict_hold)  # a bounded wait for the first verdict
        held = cs.held
        if hold == 0 and not cs.tool_mode and not held:
            self._mark_released(cs, ntok, text)
            if payload is None:
                return b""
            if self.collected is not None:
                self.collected.append(payload)
                return b""
            return payload  # type: ignore[no-any-return]
        held.push(payload, ntok, text)
        if final:
            items = held.flush()
        elif cs.tool_mode:
            return b""
        else:
            items = held.release(hold)
        for _, n, t in items:
            self._mark_released(cs, n, t)
        payloads = [p for p, _, _ in items if p is not None]
        return self._emit_all(payloads) if payloads else b""

    def _mark_released(self, cs: _Choice, ntok: int, text: str) -> None:
        cs.released_tokens += ntok
        if text:
            self._mark_text(cs, text)

    def _mark_text(self, cs: _Choice, text: str) -> None:
        if not cs.delivered:
            cs.delivered = True
            if self.first_content_ns == 0:
                self.first_content_ns = time.perf_counter_ns()
        if cs.released is not None:
            cs.released.append(text)

    # ------------------------------------------------------------------ decisions

    def _decide(self, cs: _Choice, reason: str) -> bytes:
        if self.reroutable and self._attempts_left() > 0 and reason != REASON_MODEL_ERROR:
            cs.held.clear()
            self.status = REROUTE
            return b""
        return self._halt(cs, reason)

    def _attempts_left(self) -> int:
        pol = self.policy
        limit = (
            pol.resample_attempts
            if pol.action == "resample"
            else (pol.alternate.attempts if pol.alternate else 0)
        )
        return limit - len(self.reroutes)

    def _halt(self, cs: _Choice, reason: str) -> bytes:
        cs.held.clear()
        cs.done = True
        cs.halted = True
        cs.reason = reason
        self.halted_any = True
        self.open_choices -= 1
        meta = self.meta
        assert meta is not None
        out = []
        message = self.policy.safe_message
        if message:
            if cs.delivered and self.policy.halt_separator and self._separate:
                # Text already reached the client: the safe message starts on its own.
                message = self.policy.halt_separator + message
            out.append(self._emit(chunks.content_obj(meta, cs.index, message)))
            if self.first_content_ns == 0:
                self.first_content_ns = time.perf_counter_ns()
        out.append(
            self._emit(
                chunks.finish_obj(
                    meta, cs.index, chunks.CONTENT_FILTER, self.guard_details(cs, "halt")
                )
            )
        )
        if self.open_choices <= 0:
            self.status = GUARD_ENDED
        return b"".join(out)

    def halt_now(self, reason: str) -> bytes:
        """Halt the (single) choice after a failed reroute."""
        cs = self._choice(0)
        if cs.done:
            return b""
        return self._halt(cs, reason)

    def end_segment(self) -> bytes:
        """The continuation after a resample segment could not be opened (or had no room left):
        end the choice with ``length``, saying what the guard did."""
        meta = self.meta
        assert meta is not None
        cs = self._choice(0)
        cs.done = True
        self.status = GUARD_ENDED
        return self._emit(chunks.finish_obj(meta, 0, "length", self.guard_details(cs, "resample")))

    def guard_details(self, cs: _Choice, action: str) -> dict[str, Any]:
        info: dict[str, Any] = {"action": action, "reason": cs.reason, "policy": self.policy.name}
        if cs.guard is not None:
            info.update(cs.guard.details())
            if cs.guard.crossed_at >= 0:
                info["halt_token"] = cs.guard.crossed_at
        if self.reroutes:
            info["reroutes"] = self.reroutes
        return info

    # ------------------------------------------------------------------ verdicts

    def set_request_verdict(self, p: float | None) -> None:
        """The encoder's verdict on the request (P(harmful request); None: it fell back), in
        force for every choice from its first token. Called before the first upstream event."""
        self.request_p = p
        self.request_verdict = "answered" if p is not None else "fallback"

    def take_verdict_asks(self) -> list[tuple[int, str]]:
        """Texts to score, as (choice index, text); the I/O layer asks the guard model."""
        asks, self._asks = self._asks, []
        return asks

    @property
    def wants_verdicts(self) -> bool:
        return bool(self._asks)

    def on_verdict(self, index: int, p: float | None) -> None:
        """A guard-model verdict for choice ``index`` arrived (None: fell back to lexical)."""
        if index >= len(self.choices):
            return
        cs = self.choices[index]
        if cs is None or cs.schedule is None:
            return
        cs.schedule.on_verdict(p)
        if p is not None and cs.guard is not None and not cs.done:
            setter = getattr(cs.guard.tracker, "set_external_score", None)
            try:
                if setter is None:
                    raise TypeError("the risk model takes no guard-model verdicts")
                setter(p)
            except Exception:
                cs.guard.failed = True
            cs.guard.force_check = True

    # ------------------------------------------------------------------ reroutes

    def prefix(self) -> tuple[str, int]:
        """The safe prefix the client already has (text, tokens) — choice 0."""
        cs = self._choice(0)
        return ("".join(cs.released or ()), cs.released_tokens)

    def reroute_plan(self) -> ReroutePlan:
        """What the attempt after ``Status.REROUTE`` continues from."""
        cs = self._choice(0)
        text, tokens = self.prefix()
        return ReroutePlan(
            str(self.policy.action), text, tokens, cs.crossing_text, tuple(cs.crossing_ids)
        )

    def begin_attempt(
        self, kind: str, *, segment_limited: bool = False, detail: dict[str, Any] | None = None
    ) -> None:
        """A new upstream attempt continues choice 0 from its released prefix."""
        cs = self._choice(0)
        text, tokens = self.prefix()
        if cs.guard is not None and self.model is not None and kind != "continue":
            tracker = self.model.tracker(self.req.prompt, self.req.prefill)
            if text:
                tracker.feed(text, tokens)
            old = cs.guard
            cs.guard = ChoiceGuard(tracker, self.policy, trace=old.trace is not None)
            cs.guard.checks, cs.guard.check_ns = old.checks, old.check_ns
            cs.guard.max_risk = old.max_risk
            if old.trace is not None and cs.guard.trace is not None:
                cs.guard.trace.extend(old.trace)
        if kind != "continue":
            entry = {"action": kind, "at_token": tokens}
            if detail:
                entry.update(detail)
            self.reroutes.append(entry)
        self.attempt += 1
        self.segment_limited = segment_limited
        self.status = RUNNING

    # ------------------------------------------------------------------ ends

    def _on_done(self, ev: SSEEvent) -> bytes:
        if self.status is SEGMENT_END:
            return b""
        self.status = DONE
        if self.collected is not None:
            if self.reroutes and self.req.include_usage:
                self._usage_out()
            return b""
        if self.reroutes and self.req.include_usage:
            return self._usage_out() + ev.raw
        return ev.raw

    def _usage_out(self) -> bytes:
        if self.meta is None:
            return b""
        return self._emit(chunks.usage_obj(self.meta, self.prompt_tokens, self.completion_tokens()))

    def completion_tokens(self) -> int:
        return sum(cs.generated for cs in self.choices if cs is not None)

    def on_prompt_tokens(self, n: int | None) -> None:
        """The prompt's size, counted for an honest usage chunk (vLLM sends none after an abort)."""
        self.prompt_tokens = n

    def finish(self) -> bytes:
        """Closing bytes after the guard ended the stream (halt): usage if asked, [DONE]."""
        self.status = DONE
        out = self._usage_out() if self.req.include_usage else b""
        return out if self.collected is not None else out + chunks.DONE

    def needs_prompt_count(self) -> bool:
        """Usage must be written by us and vLLM has not told us the prompt's size."""
        return (
            self.req.include_usage
            and self.prompt_tokens is None
            and (self.halted_any or bool(self.reroutes))
        )

    # ------------------------------------------------------------------ summary

    def outcome(self) -> str:
        if any(cs is not None and cs.halted for cs in self.choices):
            return "halted"
        if self.reroutes:
            return "rerouted"
        return "passed"

    def report(self) -> RelayReport:
        out = []
        for cs in self.choices:
            if cs is None:
                continue
            g = cs.guard
            gr = None
            if g is not None:
                gr = GuardReport(
                    g.failed,
                    g.checks,
                    g.check_ns,
                    g.last_risk,
                    g.max_risk,
                    g.tokens,
                    g.crossed_at,
                    tuple(g.trace) if g.trace is not None else None,
                    g.details(),
                )
            out.append(
                ChoiceReport(
                    cs.index,
                    cs.halted,
                    cs.reason,
                    cs.generated,
                    cs.released_tokens,
                    tuple(cs.released) if cs.released is not None else None,
                    gr,
                )
            )
        return RelayReport(
            self.policy,
            self.enforce,
            self.outcome(),
            tuple(out),
            tuple(self.reroutes),
            self.shadow_halts,
            self.halted_any,
            self.first_content_ns,
            self.first_arrival_ns,
        )
