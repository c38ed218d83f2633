"""Aborting an RPC with a rich status (google.rpc.Status with details) from a domain error."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from api.errors import map_error
from domain.errors import DomainError, InvalidRequest, RateLimited

__all__ = ["abort_with", "status_for"]

DOMAIN = "lumina.dev"


def status_for(exc: DomainError) -> grpc.Status:
    mapped = map_error(exc)
    details: list[any_pb2.Any] = []
    if isinstance(exc, InvalidRequest):
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in exc.violations
            ]
        )
        details.append(_pack(bad))
    else:
        details.append(_pack(error_details_pb2.ErrorInfo(reason=exc.code.upper(), domain=DOMAIN)))
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(exc.retry_after * 1000))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    status = status_pb2.Status(code=getattr(code_pb2, mapped.grpc_code.name), message=exc.message, details=details)
    return rpc_status.to_status(status)


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


async def abort_with(context: grpc.aio.ServicerContext, exc: DomainError) -> None:
    await context.abort_with_status(status_for(exc))
