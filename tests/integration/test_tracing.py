from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.scripted import DONE, Script, chat_events
from tests.support.sse import CHAT, HARMFUL


async def test_span_per_request_with_decision_and_parent(harness) -> None:
    exporter = InMemorySpanExporter()
    h = harness(
        lambda p, r: Script(b"".join(chat_events(HARMFUL)) + DONE),
        env={"GUARD_TRACING": "true"},
        span_exporter=exporter,
    )
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    await h.client.post(
        "/v1/chat/completions", json=CHAT, headers={"x-request-id": "r-1", "traceparent": tp}
    )
    (span,) = exporter.get_finished_spans()
    assert span.name == "guard.generate"
    assert span.attributes["guard.request_id"] == "r-1"
    assert span.attributes["guard.outcome"] == "halted"
    assert span.attributes["guard.halt_token"] == 4
    assert format(span.context.trace_id, "032x") == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert format(span.parent.span_id, "016x") == "00f067aa0ba902b7"


async def test_tracing_off_by_default(harness) -> None:
    h = harness(lambda p, r: Script(b"".join(chat_events(["hi"])) + DONE))
    assert h.app.state.services.tracer is None
