"""Optional OpenTelemetry traces (off by default): one span per generation request.

The span carries the request id, route, model, outcome and the guard's decision (halted, halt
token, hitting probability); W3C ``traceparent`` from the client is its parent, so the guard shows
up inside the caller's trace. Spans are exported over OTLP/HTTP in a background batch processor:
nothing on the per-token path, no blocking I/O on the event loop.

Needs the ``otel`` extra (``pip install 'guard[otel]'``); enabling tracing without it is a
configuration error at start, not a silent no-op.
"""

from __future__ import annotations

from typing import Any

from guard.errors import ConfigError


class Tracer:
    """A thin wrapper so the app never imports OpenTelemetry when tracing is off."""

    def __init__(self, tracer: Any, propagator: Any, provider: Any) -> None:
        self._tracer = tracer
        self._propagator = propagator
        self._provider = provider

    def start(self, name: str, headers: dict[str, str], attributes: dict[str, Any]) -> Any:
        ctx = self._propagator.extract(carrier=headers)
        return self._tracer.start_span(name, context=ctx, attributes=attributes)

    def shutdown(self) -> None:
        self._provider.shutdown()


def create_tracer(endpoint: str | None, service_name: str, exporter: Any = None) -> Tracer:
    """Build a tracer exporting to ``endpoint`` (OTLP/HTTP), or to ``exporter`` (tests)."""
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:
        raise ConfigError(
            "tracing.enabled needs OpenTelemetry: pip install 'guard[otel]'"
        ) from None
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return Tracer(provider.get_tracer("guard"), TraceContextTextMapPropagator(), provider)
