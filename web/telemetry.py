"""The console's own tracing: each chat answer is a client span whose W3C context travels to the
backend in the gRPC metadata, so one trace covers browser request, backend, relay and consumers."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

__all__ = ["configure_tracing", "traced_metadata", "tracer"]


def configure_tracing(service: str = "lumina-web") -> None:
    """Install an SDK tracer provider unless one is installed already (the global is set once)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider(resource=Resource.create({"service.name": service})))


def tracer() -> trace.Tracer:
    return trace.get_tracer("lumina.web")


def traced_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """``metadata`` plus the current span's ``traceparent``/``tracestate``."""
    carrier = dict(metadata or {})
    propagate.inject(carrier)
    return carrier
