"""One server interceptor for every Lumina RPC: decodes requests safely (malformed bytes become
INVALID_ARGUMENT, not INTERNAL), starts a server span from the caller's trace context, maps domain
errors through the one table, hides unexpected errors behind a generic INTERNAL status, and counts
requests and latency."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog
from google.protobuf.message import DecodeError
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from adapters.telemetry.metrics import Metrics
from adapters.telemetry.tracing import extract_context
from api.grpc.status import abort_with
from domain.errors import DomainError, InvalidRequest

__all__ = ["EdgeInterceptor"]

log = structlog.get_logger("lumina.grpc")


class _Malformed:
    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _safe(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, ValueError, TypeError) as exc:
            return _Malformed(str(exc) or type(exc).__name__)

    return decode


class EdgeInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._tracer = trace.get_tracer("lumina.grpc")

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith("/grpc."):
            return handler
        method = details.method.rsplit("/", 1)[-1]
        if handler.unary_unary is not None:
            return handler._replace(
                unary_unary=self._wrap_unary(method, handler.unary_unary),
                request_deserializer=_safe(handler.request_deserializer),
            )
        if handler.unary_stream is not None:
            return handler._replace(
                unary_stream=self._wrap_stream(method, handler.unary_stream),
                request_deserializer=_safe(handler.request_deserializer),
            )
        return handler

    def _span(self, method: str, context: grpc.aio.ServicerContext) -> Any:
        parent = extract_context(context.invocation_metadata() or ())
        return self._tracer.start_as_current_span(f"grpc {method}", context=parent, kind=SpanKind.SERVER)

    async def _fail(self, context: grpc.aio.ServicerContext, exc: BaseException, span: trace.Span) -> None:
        if isinstance(exc, DomainError):
            span.set_status(Status(StatusCode.ERROR, exc.code))
            await abort_with(context, exc)
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        log.error("rpc failed", exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error; the server log has the details")

    def _finish(self, method: str, context: grpc.aio.ServicerContext, started: float) -> None:
        code = context.code()
        name = code.name if isinstance(code, grpc.StatusCode) else "OK"
        seconds = time.perf_counter() - started
        self._metrics.observe_request("grpc", method, name, seconds)
        log.info("rpc", method=method, code=name, ms=round(seconds * 1000, 2))

    def _wrap_unary(self, method: str, behaviour: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            with self._span(method, context) as span:
                try:
                    if isinstance(request, _Malformed):
                        raise InvalidRequest.single("request", f"malformed protobuf message: {request.reason}")
                    return await behaviour(request, context)
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:  # noqa: BLE001 - every failure leaves through the status table
                    await self._fail(context, exc, span)
                finally:
                    self._finish(method, context, started)

        return unary

    def _wrap_stream(self, method: str, behaviour: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started = time.perf_counter()
            with self._span(method, context) as span:
                try:
                    if isinstance(request, _Malformed):
                        raise InvalidRequest.single("request", f"malformed protobuf message: {request.reason}")
                    async for item in behaviour(request, context):
                        yield item
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    await self._fail(context, exc, span)
                finally:
                    self._finish(method, context, started)

        return stream
