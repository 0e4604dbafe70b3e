"""One guarded generation, end to end: the upstream response, the attempt loop (resample,
alternate, continuation after a banned-token segment), the total deadline, guard-model verdicts,
and the final report (metrics, trace span, decision log).

The decisions are the relay's (``guard.relay.relay``, sans-IO); this is the I/O around it. Errors
after the stream started end it the way clients expect: an SSE error event, then ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Mapping
from typing import Any, Protocol

import anyio

from guard import jsonfast, wire
from guard.decision.policy import Policy, RiskModelLike
from guard.errors import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from guard.generation.accounting import account, decision_records, end_span
from guard.relay import chunks
from guard.relay.relay import (
    DONE,
    GUARD_ENDED,
    REROUTE,
    RUNNING,
    SEGMENT_END,
    UPSTREAM_ERROR,
    Relay,
)
from guard.relay.reroute import continuation_body
from guard.request.parse import GenerationRequest
from guard.services import Services
from guard.upstream.client import UpstreamResponse
from guard.upstream.sse import SSEDecoder

log = logging.getLogger("guard")

#: A run of chunks read without waiting yields to the event loop every this many reads (a power
#: of two). Each yield lets the writer send what queued up (a write and two task switches under
#: load): every 16 reads measured 0.80–0.92× a bare relay's throughput, every 64 0.92–0.94×
#: (docs/performance.md); 64 chunks of relay work hold other streams for about 1 ms at most.
YIELD_EVERY_READS = 64
YIELD_MASK = YIELD_EVERY_READS - 1


class Write(Protocol):
    """Where a generation writes the client's bytes (the HTTP response body, or a collector).
    ``flush``: return only once the bytes were handed to the sender (the first token, a halt),
    instead of letting them coalesce with what follows."""

    def __call__(self, chunk: bytes, flush: bool = False, /) -> Awaitable[None]: ...


#: What a stream that outlived the total timeout ends with.
TIMEOUT_EVENT = (
    chunks.error_event(
        "upstream stream exceeded the total timeout", "upstream_error", "upstream_timeout", 504
    )
    + chunks.DONE
)


class GuardedGeneration:
    """Owns one generation after its first upstream response arrived with status 200."""

    def __init__(
        self,
        svc: Services,
        req: GenerationRequest,
        policy: Policy,
        model: RiskModelLike | None,
        *,
        rid: str,
        headers: Mapping[str, str],
        pre_ns: int,
        span: Any = None,
        request_verdict: asyncio.Future[float | None] | None = None,
    ) -> None:
        self.svc = svc
        self.request_verdict = request_verdict
        self.req = req
        self.rid = rid
        self.headers = dict(headers)  # for upstream attempts (x-request-id included)
        self.pre_ns = pre_ns  # the guard's own work before the first upstream call
        self.span = span
        gm = svc.guard_model
        log_cfg = svc.settings.decision_log
        self.relay = Relay(
            req,
            policy,
            model,
            trace=svc.decision_log is not None,
            keep_text=svc.decision_log is not None and log_cfg.include_content,
            verdicts=gm.schedule if gm is not None else None,
            verdict_hold=gm.hold_until_verdict if gm is not None else 0,
            collect=not req.stream,
        )
        self.deadline_hit = False
        # Loop time at which a caller's scope cancels the run for the total timeout, when that
        # is how the deadline is kept (non-streaming); the streaming response calls on_deadline.
        self.cancel_at: float | None = None
        # The error the stream ended with, when the guard wrote one (non-streaming: the response).
        self.failure: dict[str, Any] | None = None
        self._verdicts: list[asyncio.Future[float | None]] = []

    def on_deadline(self) -> bool:
        """The per-stream deadline timer fired: True, the stream is to be cancelled now; False
        when the upstream already said [DONE] (the rest is a brief read-out, then the end)."""
        if self.relay.status is DONE:
            return False
        self.deadline_hit = True
        return True

    # ------------------------------------------------------------------ the stream

    async def run(self, resp: UpstreamResponse, write: Write) -> None:
        """Write the client's bytes. Always ends the stream properly, and accounts it once.

        Cancellation (client gone, total deadline) ends it wherever it waits; the upstream
        response is closed then all the same (shielded: vLLM aborts the generation).
        """
        svc, relay, m = self.svc, self.relay, self.svc.metrics
        svc.active += 1
        m.active_streams.inc()
        outcome = "ok"
        completed = False
        deadline = time.monotonic() + svc.settings.total_timeout
        current: UpstreamResponse | None = resp
        try:
            if self.request_verdict is not None:
                # nothing leaves before the request's intent is known (bounded: the encoder's
                # timeout resolves the future with None, the lexical fallback)
                relay.set_request_verdict(await self.request_verdict)
            while current is not None:
                try:
                    await self._attempt(current, deadline, write)
                finally:
                    with anyio.CancelScope(shield=True):
                        await current.aclose()
                current = None
                if relay.status is REROUTE or relay.status is SEGMENT_END:
                    current = await self._next_attempt(write)
                elif relay.status is RUNNING or relay.status is UPSTREAM_ERROR:
                    outcome = await self._ended_without_done(write)
                    completed = True
                    return
            if relay.status is GUARD_ENDED:
                if relay.needs_prompt_count():
                    relay.on_prompt_tokens(await self._count_prompt())
                await write(relay.finish())
            completed = True
        except UpstreamError as exc:
            outcome, kind, status, code = _mid_stream_failure(exc)
            m.upstream_errors.labels(kind).inc()
            await write(self._fail(exc.message, "upstream_error", code, status) + chunks.DONE)
            completed = True
        except Exception:
            # A bug of ours must still end the stream the way clients expect, not cut the
            # connection: log it (with the request id), then an SSE error event and [DONE].
            log.exception("internal error while relaying request %s", self.rid)
            outcome = "error"
            await write(
                self._fail("internal error in the guard", "internal_error", None, 500) + chunks.DONE
            )
            completed = True
        finally:
            svc.active -= 1
            m.active_streams.dec()
            for fut in self._verdicts:
                fut.cancel()  # a verdict nobody will read is never sent
            if self.request_verdict is not None:
                self.request_verdict.cancel()
            if not completed:
                # Cancelled: by the streaming response's deadline timer (it says so first), by
                # the caller's scope past ``cancel_at`` (non-streaming), or the client left.
                if self.cancel_at is not None and anyio.current_time() >= self.cancel_at:
                    self.deadline_hit = True
                if self.deadline_hit:
                    outcome = "upstream_timeout"
                    m.upstream_errors.labels("timeout").inc()
                else:
                    outcome = "client_disconnect"
                    m.client_disconnects.inc()
            self._report(outcome)

    async def _next_attempt(self, write: Write) -> UpstreamResponse | None:
        """After a reroute or a banned-token segment: the next upstream response, or None when
        there is none (the stream ends as the relay says)."""
        relay = self.relay
        if relay.status is REROUTE:
            nxt = await self._reroute()
            if nxt is None:
                out = relay.halt_now("reroute_failed")
                if out:
                    await write(out)
            return nxt
        nxt = await self._continue()
        if nxt is None:
            await write(relay.end_segment())
        return nxt

    async def _ended_without_done(self, write: Write) -> str:
        """The upstream closed without [DONE]: after an error event, or cut short. The
        client's stream ends properly all the same; returns the outcome."""
        early = self.relay.status is RUNNING
        self.svc.metrics.upstream_errors.labels("early_close" if early else "error_event").inc()
        if early:
            await write(
                self._fail(
                    "upstream closed the stream before it was complete",
                    "upstream_error",
                    "upstream_early_close",
                    502,
                )
            )
        await write(chunks.DONE)
        return "upstream_error" if early else "ok"

    def _fail(self, message: str, err_type: str, code: str | None, status: int) -> bytes:
        self.failure = {
            "message": message,
            "type": err_type,
            "param": None,
            "code": code,
            "status": status,
        }
        return chunks.error_event(message, err_type, code, status)

    async def _attempt(self, resp: UpstreamResponse, deadline: float, write: Write) -> None:
        """Relay one upstream response until it ends or the relay says stop.

        Hot loop. ``write`` only queues: the streaming response's writer task sends whatever
        queued up while this loop ran in one write, when the loop next waits (for the network,
        or every ``YIELD_EVERY_READS`` reads). Stalls are bounded by the idle read timeout and
        the total deadline by a check per read (a cancel scope per read costs ~40% of the
        per-token CPU; a per-stream timer in GuardedStreamResponse covers a stall that outlives
        the deadline).
        """
        relay = self.relay
        decoder = SSEDecoder()
        feed = decoder.feed
        on_event = relay.on_event
        reads = resp.aiter_raw().__aiter__()
        stopped = False
        n_reads = 0
        # The first content (and a halt) leaves at once: handed to the writer as soon as it is
        # queued instead of when this loop next waits, which under load is up to
        # YIELD_EVERY_READS reads later (+1.9 ms TTFT at 64 streams). Later chunks coalesce.
        first_pending = relay.first_content_ns == 0
        async for raw in reads:
            n_reads += 1
            if not n_reads & YIELD_MASK:
                # Chunks httpx already received (one socket read can hold many) come back
                # without suspending: let other streams, the writer and the guard-model batcher
                # run now and then.
                await asyncio.sleep(0)
            if time.monotonic() > deadline:
                raise UpstreamTimeout("upstream stream exceeded the total timeout")
            for ev in feed(raw):
                out = on_event(ev)
                if out:
                    if first_pending and relay.first_content_ns:
                        first_pending = False
                        await write(out, True)
                    else:
                        await write(out)
                st = relay.status
                if st is not RUNNING and st is not UPSTREAM_ERROR:
                    stopped = True
                    break
            if relay.wants_verdicts:
                self._ask_verdicts()
                await asyncio.sleep(0)  # let the batcher take the asks
            if stopped:
                break
        if stopped:
            if relay.status is not DONE:
                await write(b"", True)  # a halt's bytes leave before the upstream is closed
            else:
                # Read the (already sent) end of the response so the connection goes back to the
                # pool instead of a new TCP connect per stream; briefly, because the client
                # already has everything.
                with anyio.move_on_after(0.05):
                    async for _ in reads:
                        pass
            return
        tail = decoder.close()
        if tail is not None and tail.data is not None:
            out = relay.on_event(tail)
            if out:
                await write(out)

    # ------------------------------------------------------------------ verdicts

    def _ask_verdicts(self) -> None:
        """Hand the relay's verdict requests to the micro-batcher; never waits for them."""
        gm = self.svc.guard_model
        assert gm is not None
        for index, text in self.relay.take_verdict_asks():
            fut = gm.batcher.submit(text)
            fut.add_done_callback(functools.partial(self._verdict_done, index))
            self._verdicts.append(fut)

    def _verdict_done(self, index: int, fut: asyncio.Future[float | None]) -> None:
        if not fut.cancelled():
            self.relay.on_verdict(index, fut.result())

    # ------------------------------------------------------------------ attempts

    async def _reroute(self) -> UpstreamResponse | None:
        relay, req = self.relay, self.req
        pol = relay.policy
        plan = relay.reroute_plan()
        base_url = None
        if pol.action == "resample":
            banned = list(plan.crossing_ids[:1])
            if not banned and plan.crossing_text:
                banned = await self._tokenize(plan.crossing_text)
            body = continuation_body(
                req,
                plan.prefix,
                plan.prefix_tokens,
                logit_bias={str(i): -100.0 for i in banned} or None,
                max_tokens=pol.resample_ban_tokens,
            )
            relay.begin_attempt(
                "resample", segment_limited=True, detail={"banned_token_ids": banned}
            )
        else:
            alt = pol.alternate
            assert alt is not None
            base_url = alt.upstream
            body = continuation_body(
                req,
                plan.prefix,
                plan.prefix_tokens,
                model=alt.model,
                system_prompt=alt.system_prompt,
            )
            relay.begin_attempt(
                "alternate",
                detail={"upstream": "alternate" if alt.upstream else "main", "model": alt.model},
            )
        self.svc.metrics.reroutes.labels(str(pol.action), "attempt").inc()
        if body is None:
            return None
        return await self._open_attempt(body, base_url)

    async def _continue(self) -> UpstreamResponse | None:
        prefix, tokens = self.relay.prefix()
        if self.req.max_tokens is not None and tokens >= self.req.max_tokens:
            return None
        body = continuation_body(self.req, prefix, tokens)
        if body is None:
            return None
        self.relay.begin_attempt("continue")
        return await self._open_attempt(body, None)

    async def _open_attempt(
        self, body: dict[str, Any], base_url: str | None
    ) -> UpstreamResponse | None:
        svc = self.svc
        try:
            resp = await svc.upstream.open(
                "POST",
                wire.PATHS[wire.route_of(body)],
                content=jsonfast.dumps(body),
                headers=self.headers,
                base_url=base_url,
            )
        except UpstreamError:
            svc.metrics.reroutes.labels("reroute", "failed").inc()
            return None
        if resp.status_code != 200:
            await resp.aclose()
            svc.metrics.reroutes.labels("reroute", "failed").inc()
            return None
        return resp

    async def _tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` from vLLM's /tokenize (rare path: resample without token_ids)."""
        body: dict[str, Any] = {"prompt": text, "add_special_tokens": False}
        if self.req.model:
            body["model"] = self.req.model
        try:
            status, obj = await self.svc.upstream.json("POST", wire.TOKENIZE_PATH, body)
        except UpstreamError:
            return []
        if status != 200 or not isinstance(obj, dict):
            return []
        toks = obj.get("tokens")
        return [int(t) for t in toks[:1]] if isinstance(toks, list) else []

    async def _count_prompt(self) -> int | None:
        """Prompt tokens for an honest usage chunk after an abort (vLLM sends none then)."""
        req = self.req
        body: dict[str, Any] = {"model": req.model} if req.model else {}
        if req.route == wire.CHAT:
            body["messages"] = req.body["messages"]
            if req.continues_final:
                body["continue_final_message"] = True
                body["add_generation_prompt"] = False
        else:
            body["prompt"] = req.prompt if isinstance(req.prompt, str) else ""
        try:
            status, obj = await self.svc.upstream.json("POST", wire.TOKENIZE_PATH, body)
        except UpstreamError:
            return None
        if status == 200 and isinstance(obj, dict) and isinstance(obj.get("count"), int):
            return int(obj["count"])
        return None

    # ------------------------------------------------------------------ the end

    def _report(self, outcome: str) -> None:
        svc = self.svc
        report = self.relay.report()
        account(svc.metrics, report, self.req.route, outcome, self.pre_ns)
        if svc.decision_log is not None:
            for record in decision_records(
                report,
                self.req,
                outcome,
                self.rid,
                svc.settings.decision_log,
                svc.models.current.version,
            ):
                svc.decision_log.submit(record)
        if self.span is not None:
            end_span(self.span, report, outcome)


def _mid_stream_failure(exc: UpstreamError) -> tuple[str, str, int, str]:
    """(outcome, metric kind, status, code) of an upstream failure after the stream started."""
    if isinstance(exc, UpstreamTimeout):
        return "upstream_timeout", "timeout", 504, "upstream_timeout"
    if isinstance(exc, UpstreamProtocolError):
        return "upstream_error", "protocol", 502, "upstream_error"
    return "upstream_error", "unreachable", 502, "upstream_error"
