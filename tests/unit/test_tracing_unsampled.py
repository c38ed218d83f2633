"""``server_span`` without recording (``LUMINA_TRACES=none``): the ids are made and propagated as
the SDK makes them under an ``ALWAYS_OFF`` sampler, without its span machinery."""

from __future__ import annotations

from opentelemetry import trace

from adapters.telemetry.tracing import _UnsampledSpan, extract_context, inject_headers

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _parts(traceparent: str) -> tuple[str, str, str, str]:
    version, trace_id, span_id, flags = traceparent.split("-")
    return version, trace_id, span_id, flags


def test_a_request_with_a_parent_continues_its_trace_in_a_new_unsampled_span() -> None:
    before = trace.get_current_span()
    with _UnsampledSpan(extract_context({"traceparent": PARENT, "tracestate": "vendor=1"})) as span:
        assert trace.get_current_span() is span and not span.is_recording()
        headers = inject_headers()
        version, trace_id, span_id, flags = _parts(headers["traceparent"])
        assert (version, trace_id, flags) == ("00", "0af7651916cd43dd8448eb211c80319c", "00")
        assert span_id != "b7ad6b7169203331" and int(span_id, 16) != 0  # its own span
        assert headers["tracestate"] == "vendor=1"
    assert trace.get_current_span() is before  # detached again


def test_a_request_without_a_parent_starts_a_trace_of_its_own() -> None:
    seen = set()
    for _ in range(2):
        with _UnsampledSpan(extract_context({})):
            _, trace_id, span_id, flags = _parts(inject_headers()["traceparent"])
            assert int(trace_id, 16) != 0 and int(span_id, 16) != 0 and flags == "00"
            seen.add(trace_id)
    assert len(seen) == 2  # a new trace each time
