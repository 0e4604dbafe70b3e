"""The guarded relay of one generation request: sans-IO.

``on_event(SSEEvent) -> bytes`` turns each upstream event into the bytes the client gets (often the
event's own bytes, untouched); ``status`` tells the I/O layer (guard.app) when to stop reading,
close the upstream response, or open another attempt (reroute). No I/O happens here, so the whole
decision logic is testable by feeding recorded wire bytes.

Per event, the fast path is: one JSON parse, one tracker feed + table lookup, return ``ev.raw``.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from guard import jsonfast
from guard.decision.choice import REASON_MODEL_ERROR, ChoiceGuard
from guard.decision.policy import Policy, RiskModelLike
from guard.errors import UpstreamProtocolError
from guard.relay import chunks
from guard.relay.chunks import StreamMeta
from guard.request.parse import CHAT, GenerationRequest
from guard.upstream.sse import SSEEvent

# Relay status, read by the I/O loop after each event.
RUNNING = 0
DONE = 1  # upstream's [DONE] was relayed: the response is complete
GUARD_ENDED = 2  # every choice ended and at least one was halted: close upstream, then finish()
REROUTE = 3  # open another attempt: next_attempt() says what
SEGMENT_END = 4  # a resample's banned-token segment ended: continue unbiased
UPSTREAM_ERROR = 5  # upstream sent an error event: relayed; [DONE] follows


class _Choice:
    __slots__ = (
        "crossing_ids",
        "crossing_text",
        "done",
        "generated",
        "guard",
        "halted",
        "held",
        "held_tokens",
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
        self.held: deque[tuple[bytes, int, str]] = deque()
        self.held_tokens = 0
        self.tool_mode = False
        # Released text, kept only where a reroute needs the safe prefix.
        self.released: list[str] | None = [] if keep_text else None
        self.crossing_text = ""
        self.crossing_ids: list[int] = []
        self.schedule: Any = None  # guard.scoring.verdicts.VerdictSchedule when a guard model runs


class Relay:
    def __init__(
        self,
        req: GenerationRequest,
        policy: Policy,
        model: RiskModelLike | None,
        *,
        trace: bool = False,
        keep_text: bool = False,
        verdicts: Any = None,
        verdict_hold: int = 0,
    ) -> None:
        self.req = req
        self.policy = policy
        self.model = model
        self.chat = req.route == CHAT
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
        # Guard-model verdicts: the relay says what to score (verdict_asks); the I/O layer asks
        # the model concurrently and hands results back through on_verdict.
        self._verdicts = verdicts if self.tracking else None
        self.verdict_hold = verdict_hold if self.enforce else 0
        self.verdict_asks: list[tuple[int, str]] = []
        self.verdict_futures: list[Any] = []  # the I/O layer's pending verdicts (cancelled at end)
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
        self.error_event: bytes | None = None
        self.deadline_hit = False  # set by the I/O layer when the total timeout cut the stream

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
                from guard.scoring.verdicts import VerdictSchedule, last_user_message

                prompt = self.req.prompt
                text = prompt if isinstance(prompt, str) else last_user_message(prompt)
                cs.schedule = VerdictSchedule(self._verdicts, text, self.req.prefill)
            self.choices[index] = cs
        return cs

    # ------------------------------------------------------------------ events

    def on_event(self, ev: SSEEvent) -> bytes:
        if self.status == DONE:
            return b""  # anything after [DONE] is not for the client
        data = ev.data
        if data is None:
            return ev.raw  # comment (keep-alive): harmless, keeps proxies' idle timers happy
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
            if "error" in obj:
                self.status = UPSTREAM_ERROR
                self.error_event = ev.raw
                return ev.raw
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
            return ev.raw if self.attempt == 0 else b""
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

    def _on_choice(self, raw: bytes, obj: dict[str, Any], choice: Any) -> bytes:
        if not isinstance(choice, dict):
            raise UpstreamProtocolError("upstream sent a choice that is not a JSON object")
        index = choice.get("index", 0)
        if not isinstance(index, int) or index < 0 or index > 1024:
            raise UpstreamProtocolError("upstream sent a choice with a bad index")
        cs = self._choice(index)
        if cs.done:
            return b""
        if cs.reason == REASON_MODEL_ERROR and cs.guard is None and self.enforce:
            return self._halt(cs, REASON_MODEL_ERROR)
        finish = choice.get("finish_reason")
        # What the model generated in this chunk, and how many tokens it is.
        has_tool = False
        if self.chat:
            delta = choice.get("delta")
            text = ""
            if isinstance(delta, dict):
                content = delta.get("content")
                if content:
                    text = content
                reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                if reasoning:
                    text = reasoning + text if text else reasoning
                tools = delta.get("tool_calls")
                if tools:
                    has_tool = True
                    for call in tools:
                        fn = call.get("function") if isinstance(call, dict) else None
                        if isinstance(fn, dict):
                            args = fn.get("arguments")
                            if isinstance(args, str) and args:
                                text += args
            lp = choice.get("logprobs")
            if lp and isinstance(lp, dict) and isinstance(lp.get("content"), list):
                ntok = len(lp["content"])
            else:
                ids = choice.get("token_ids")
                ntok = len(ids) if isinstance(ids, list) else (1 if text or has_tool else 0)
        else:
            text = choice.get("text") or ""
            lp = choice.get("logprobs")
            if lp and isinstance(lp, dict) and isinstance(lp.get("tokens"), list):
                ntok = len(lp["tokens"])
            else:
                ids = choice.get("token_ids")
                ntok = len(ids) if isinstance(ids, list) else (1 if text else 0)
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
            raw = self._rewrite(obj)
        cs.generated += ntok
        if text and self.first_arrival_ns == 0:
            self.first_arrival_ns = time.perf_counter_ns()
        guard = cs.guard
        if cs.schedule is not None and (text or ntok):
            ask = cs.schedule.observe(text, ntok)
            if ask is not None:
                self.verdict_asks.append((cs.index, ask))
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
            out = self._release(cs, raw, ntok, text, final=True, strip_finish=obj)
            self.status = SEGMENT_END
            return out
        out = self._release(cs, raw, ntok, text, final=finish is not None, tool=has_tool)
        if finish is not None:
            cs.done = True
            self.open_choices -= 1
            if self.open_choices <= 0 and self.halted_any:
                self.status = GUARD_ENDED
        return out

    def _release(
        self,
        cs: _Choice,
        raw: bytes,
        ntok: int,
        text: str,
        *,
        final: bool,
        tool: bool = False,
        strip_finish: dict[str, Any] | None = None,
    ) -> bytes:
        if strip_finish is not None:
            choice = dict(strip_finish["choices"][0])
            choice["finish_reason"] = None
            stripped = dict(strip_finish)
            stripped["choices"] = [choice]
            if self.attempt > 0 and self.meta is not None:
                stripped["id"], stripped["created"], stripped["model"] = (
                    self.meta.id,
                    self.meta.created,
                    self.meta.model,
                )
            raw = chunks.sse(stripped) if (text or ntok) else b""
        if tool and self.enforce:
            cs.tool_mode = True  # a partial tool call is never released: hold until the end
        hold = self.hold_back
        sched = cs.schedule
        if self.verdict_hold and sched is not None and sched.answered == 0 and not sched.fallbacks:
            hold = max(hold, self.verdict_hold)  # a bounded wait for the first verdict
        if hold == 0 and not cs.tool_mode and not cs.held:
            self._mark_released(cs, ntok, text)
            return raw
        cs.held.append((raw, ntok, text))
        cs.held_tokens += ntok
        if final:
            out = b"".join(item[0] for item in cs.held)
            for _, n, t in cs.held:
                self._mark_released(cs, n, t)
            cs.held.clear()
            cs.held_tokens = 0
            return out
        if cs.tool_mode:
            return b""
        parts = []
        while cs.held and cs.held_tokens - cs.held[0][1] >= hold:
            item = cs.held.popleft()
            cs.held_tokens -= item[1]
            self._mark_released(cs, item[1], item[2])
            parts.append(item[0])
        return b"".join(parts)

    def _mark_released(self, cs: _Choice, ntok: int, text: str) -> None:
        cs.released_tokens += ntok
        if text and self.first_content_ns == 0:
            self.first_content_ns = time.perf_counter_ns()
        if cs.released is not None and text:
            cs.released.append(text)

    def _rewrite(self, obj: dict[str, Any]) -> bytes:
        meta = self.meta
        assert meta is not None
        obj["id"], obj["created"], obj["model"] = meta.id, meta.created, meta.model
        return chunks.sse(obj)

    # ------------------------------------------------------------------ decisions

    def _decide(self, cs: _Choice, reason: str) -> bytes:
        if self.reroutable and self._attempts_left() > 0 and reason != REASON_MODEL_ERROR:
            cs.held.clear()
            cs.held_tokens = 0
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
        cs.held_tokens = 0
        cs.done = True
        cs.halted = True
        cs.reason = reason
        self.halted_any = True
        self.open_choices -= 1
        meta = self.meta
        assert meta is not None
        out = b""
        if self.policy.safe_message:
            out = chunks.content_chunk(meta, cs.index, self.policy.safe_message)
            if self.first_content_ns == 0:
                self.first_content_ns = time.perf_counter_ns()
        out += chunks.finish_chunk(
            meta, cs.index, chunks.CONTENT_FILTER, self.guard_details(cs, "halt")
        )
        if self.open_choices <= 0:
            self.status = GUARD_ENDED
        return out

    def halt_now(self, reason: str) -> bytes:
        """Halt the (single) choice after a failed reroute."""
        cs = self._choice(0)
        if cs.done:
            return b""
        return self._halt(cs, reason)

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

    def on_verdict(self, index: int, p: float | None) -> None:
        """A guard-model verdict for choice ``index`` arrived (None: fell back to lexical)."""
        if index >= len(self.choices):
            return
        cs = self.choices[index]
        if cs is None or cs.schedule is None:
            return
        cs.schedule.on_verdict(p)
        if p is not None and cs.guard is not None and not cs.done:
            try:
                cs.guard.tracker.set_external_score(p)  # type: ignore[attr-defined]
            except Exception:
                cs.guard.failed = True
            cs.guard.force_check = True

    # ------------------------------------------------------------------ reroutes

    def prefix(self) -> tuple[str, int]:
        """The safe prefix the client already has (text, tokens) — choice 0."""
        cs = self._choice(0)
        return ("".join(cs.released or ()), cs.released_tokens)

    def crossing(self) -> tuple[str, list[int]]:
        cs = self._choice(0)
        return cs.crossing_text, cs.crossing_ids

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
        if self.status == SEGMENT_END:
            return b""
        self.status = DONE
        if self.reroutes and self.req.include_usage:
            return self._usage_bytes() + ev.raw
        return ev.raw

    def _usage_bytes(self) -> bytes:
        if self.meta is None:
            return b""
        return chunks.usage_chunk(self.meta, self.prompt_tokens, self.completion_tokens())

    def completion_tokens(self) -> int:
        return sum(cs.generated for cs in self.choices if cs is not None)

    def finish(self) -> bytes:
        """Closing bytes after the guard ended the stream (halt): usage if asked, [DONE]."""
        self.status = DONE
        out = self._usage_bytes() if self.req.include_usage else b""
        return out + chunks.DONE

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
