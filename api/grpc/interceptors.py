"""One server interceptor for every Lumina RPC: decodes requests safely (malformed bytes become
INVALID_ARGUMENT, not INTERNAL), starts a server span from the caller's trace context,
authenticates the caller (``authorization: Bearer <credential>`` metadata, or ``x-api-key``) and
sets its principal for the handler (``api.auth.current_principal()``) unless the method is public,
maps domain errors through the one table, hides unexpected errors behind a generic INTERNAL status,
and counts requests and latency. The standard health and reflection services are left alone."""

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
from api.auth import (
    ENROLMENT_GRPC_METHODS,
    PUBLIC_GRPC_METHODS,
    SESSION_GRPC_METHODS,
    Authenticator,
    TrustedProxies,
    client_of_peer,
    client_var,
    credential_from,
    enrolment_options,
    forwarded_for,
    principal_var,
)
from api.grpc.status import abort_with
from domain.errors import DomainError, InvalidRequest
from domain.identity import InvalidCredentials, SessionExpired

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
    def __init__(self, metrics: Metrics, authenticator: Authenticator, proxies: TrustedProxies | None = None) -> None:
        self._metrics = metrics
        self._auth = authenticator
        self._proxies = proxies or TrustedProxies()
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
        gated = details.method not in PUBLIC_GRPC_METHODS and details.method not in SESSION_GRPC_METHODS
        if handler.unary_unary is not None:
            return handler._replace(
                unary_unary=self._wrap_unary(
                    method, handler.unary_unary, gated, enrolment=details.method in ENROLMENT_GRPC_METHODS
                ),
                request_deserializer=_safe(handler.request_deserializer),
            )
        if handler.unary_stream is not None:
            return handler._replace(
                unary_stream=self._wrap_stream(method, handler.unary_stream, gated),
                request_deserializer=_safe(handler.request_deserializer),
            )
        # client-streaming calls: the same gate and error mapping (their messages decode in the handler)
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=self._wrap_unary(method, handler.stream_unary, gated))
        if handler.stream_stream is not None:
            return handler._replace(stream_stream=self._wrap_stream(method, handler.stream_stream, gated))
        raise RuntimeError(f"unknown gRPC handler kind for {details.method}")  # fail closed

    def _client(self, context: grpc.aio.ServicerContext) -> None:
        """The caller's address (the peer, or whom a trusted proxy forwards) for this RPC's task."""
        metadata = context.invocation_metadata() or ()
        client_var.set(self._proxies.client(client_of_peer(context.peer() or ""), forwarded_for(metadata)))

    async def _authenticate(self, context: grpc.aio.ServicerContext, *, enrolment: bool = False) -> None:
        credential = credential_from(context.invocation_metadata() or ())
        try:
            principal = await self._auth.authenticate(
                credential, client=client_var.get(), **enrolment_options(enrolment)
            )
        except SessionExpired as exc:
            raise InvalidCredentials(exc.reason) from None
        principal_var.set(principal)  # this RPC's own task (and context) only

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

    def _wrap_unary(
        self, method: str, behaviour: Callable[..., Awaitable[Any]], gated: bool, *, enrolment: bool = False
    ) -> Callable[..., Awaitable[Any]]:
        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            with self._span(method, context) as span:
                try:
                    self._client(context)
                    if gated:
                        await self._authenticate(context, enrolment=enrolment)
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

    def _wrap_stream(
        self, method: str, behaviour: Callable[..., AsyncIterator[Any]], gated: bool
    ) -> Callable[..., AsyncIterator[Any]]:
        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started = time.perf_counter()
            with self._span(method, context) as span:
                try:
                    self._client(context)
                    if gated:
                        await self._authenticate(context)
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
