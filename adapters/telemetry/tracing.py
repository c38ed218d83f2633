"""OpenTelemetry set-up and W3C trace-context propagation through gRPC metadata and NATS headers."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

__all__ = ["configure_tracing", "extract_context", "inject_headers", "server_span", "tracer"]

_unsampled = False  # configure_tracing("none"): every span is a non-recording one


def configure_tracing(service: str, exporter: str = "none") -> TracerProvider:
    """Install a TracerProvider. ``exporter``: "none" (trace and span ids made and propagated — to
    logs, events, the worker — but spans not recorded, as nothing would export them: a recorded
    span cost ~30 µs per request), "console" (JSON to stdout) or "memory" (kept in memory; for
    tests)."""
    chosen: SpanExporter | None = {
        "console": ConsoleSpanExporter,
        "memory": InMemorySpanExporter,
    }.get(exporter, lambda: None)()  # type: ignore[operator]
    provider = TracerProvider(
        resource=Resource.create({"service.name": service}), sampler=ALWAYS_ON if chosen is not None else ALWAYS_OFF,
    )
    if chosen is not None:
        provider.add_span_processor(SimpleSpanProcessor(chosen))
        provider.memory_exporter = chosen  # type: ignore[attr-defined]
    trace.set_tracer_provider(provider)
    global _unsampled
    _unsampled = chosen is None and trace.get_tracer_provider() is provider  # the global provider is set once
    return provider


class _UnsampledSpan:
    """What ``start_as_current_span`` makes when the sampler is ``ALWAYS_OFF``: a non-recording span
    (the parent's trace id, or a new one; a new span id; not sampled; the parent's trace state) made
    current for the block, without the SDK's span machinery (its sampler call, attributes, limits
    and the exception recording around the block)."""

    __slots__ = ("_context", "_span", "_token")

    def __init__(self, parent: context.Context) -> None:
        found = trace.get_current_span(parent).get_span_context()
        span_id = random.getrandbits(64) or 1
        if found.is_valid:
            trace_id, state = found.trace_id, found.trace_state
        else:
            trace_id, state = random.getrandbits(128) or 1, trace.TraceState()
        self._span = trace.NonRecordingSpan(
            trace.SpanContext(trace_id, span_id, is_remote=False, trace_flags=trace.TraceFlags(0), trace_state=state)
        )
        self._context = trace.set_span_in_context(self._span, parent)

    def __enter__(self) -> trace.Span:
        self._token = context.attach(self._context)
        return self._span

    def __exit__(self, *_: object) -> None:
        context.detach(self._token)


def server_span(tracer: trace.Tracer, name: str, parent: context.Context, kind: trace.SpanKind) -> Any:
    """``tracer.start_as_current_span(name, context=parent, kind=kind)``, cheaper when spans are
    not recorded (``LUMINA_TRACES=none``): the ids are made and propagated the same way."""
    if _unsampled:
        return _UnsampledSpan(parent)
    return tracer.start_as_current_span(name, context=parent, kind=kind)


def tracer(name: str = "lumina") -> trace.Tracer:
    return trace.get_tracer(name)


def inject_headers(headers: dict[str, str] | None = None) -> dict[str, str]:
    """Current trace context as W3C headers (``traceparent``, ``tracestate``)."""
    carrier: dict[str, str] = {} if headers is None else headers
    propagate.inject(carrier)
    return carrier


def extract_context(pairs: Mapping[str, str] | Iterable[tuple[str, str | bytes]] | None) -> context.Context:
    if pairs is None:
        return context.get_current()
    carrier = dict(pairs) if not isinstance(pairs, Mapping) else pairs
    return propagate.extract({k: v for k, v in carrier.items() if isinstance(v, str)})
