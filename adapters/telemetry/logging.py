"""structlog configured once by the composition root: JSON lines carrying the current trace and
span ids, with secret-looking fields redacted before anything is written."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from opentelemetry import trace

__all__ = ["configure_logging", "redact"]

_SECRET_KEYS = re.compile(r"(api[_-]?key|authorization|password|secret|token(?!s)|cookie)", re.I)
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{4,}")
_KEY_LIKE = re.compile(r"\b(sk|lum)[-_][A-Za-z0-9_-]{8,}")


def redact(value: str) -> str:
    """Mask bearer tokens and API-key-shaped strings inside free text."""
    return _KEY_LIKE.sub(r"\1-***", _BEARER.sub(r"\1***", value))


def _redact_processor(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        value = event[key]
        if _SECRET_KEYS.search(key) and key not in ("event",):
            event[key] = "***"
        elif isinstance(value, str):
            event[key] = redact(value)
    return event


def _trace_ids(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event["trace_id"] = format(ctx.trace_id, "032x")
        event["span_id"] = format(ctx.span_id, "016x")
    return event


def configure_logging(*, level: str = "info", fmt: str = "json", service: str = "lumina") -> None:
    numeric = logging.getLevelName(level.upper())
    renderer: Any = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _trace_ids,
        structlog.processors.format_exc_info,
        _redact_processor,
    ]
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    # Route stdlib logging (uvicorn, alembic, grpc) through the same JSON renderer.
    formatter = structlog.stdlib.ProcessorFormatter(foreign_pre_chain=processors, processors=[
        structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer])
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO) if numeric < logging.INFO else numeric)
    # uvicorn's access log and the HTTP clients' per-request INFO lines ("HTTP Request: POST ...",
    # one per upstream call) cost a log record each on the hot path and say nothing the metrics don't
    for noisy in ("uvicorn.access", "httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
