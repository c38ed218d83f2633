"""Aborting an RPC with a rich status (google.rpc.Status with details) from a domain error."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from api.errors import map_error
from domain.errors import (
    BudgetExceeded,
    DomainError,
    InvalidRequest,
    RateLimited,
    RateLimitExceeded,
)
from domain.identity import TooManyAttempts

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
        details.append(_pack(error_details_pb2.ErrorInfo(reason=exc.code.upper(), domain=DOMAIN, metadata=_info(exc))))
    retry_after = exc.retry_after if isinstance(exc, RateLimited | TooManyAttempts | RateLimitExceeded) else None
    if isinstance(exc, BudgetExceeded | RateLimitExceeded):  # Lumina's own quotas: name the one refused
        subject = f"budget:{exc.budget_id}" if isinstance(exc, BudgetExceeded) else f"rate_limit:{exc.limit_id}"
        violation = error_details_pb2.QuotaFailure.Violation(subject=subject, description=exc.message)
        details.append(_pack(error_details_pb2.QuotaFailure(violations=[violation])))
    if isinstance(exc, BudgetExceeded) and exc.resets_at is not None:  # the period's end frees the budget
        retry_after = max(0.0, (exc.resets_at - datetime.now(UTC)).total_seconds())
    if retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(retry_after * 1000))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    status = status_pb2.Status(code=getattr(code_pb2, mapped.grpc_code.name), message=exc.message, details=details)
    rich = rpc_status.to_status(status)
    if isinstance(exc, RateLimitExceeded) and exc.headers:  # the x-ratelimit-* values, as trailers
        rich = rich._replace(trailing_metadata=(*rich.trailing_metadata, *exc.headers.items()))  # type: ignore[attr-defined]
    return rich


def _info(exc: DomainError) -> dict[str, str]:
    if isinstance(exc, BudgetExceeded):
        return {"budget_id": exc.budget_id, "budget_name": exc.budget_name, "limit_micros": str(exc.limit_micros)}
    if isinstance(exc, RateLimitExceeded):
        return {"rate_limit_id": exc.limit_id}
    return {}


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


async def abort_with(context: grpc.aio.ServicerContext, exc: DomainError) -> None:
    await context.abort_with_status(status_for(exc))
