"""ChatService: decode, call one use case as the caller's principal, encode."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from api.auth import current_principal
from api.grpc.mapping import (
    decode_parameters,
    encode_chunk,
    encode_finish_reason,
    encode_metadata,
)
from application.chat import CompleteChat, StreamChat
from domain.budgets import RateLimitStatus
from domain.chat import UsageChunk
from lumina.v1 import chat_pb2 as pb
from lumina.v1 import chat_pb2_grpc

__all__ = ["ChatServicer"]


class ChatServicer(chat_pb2_grpc.ChatServiceServicer):
    def __init__(self, *, stream: StreamChat, complete: CompleteChat) -> None:
        self._stream = stream
        self._complete = complete

    async def Complete(self, request: pb.CompleteRequest, context: grpc.aio.ServicerContext) -> pb.CompleteResponse:  # noqa: N802
        chat = decode_parameters(request.parameters)
        answer = await self._complete(current_principal(), chat)
        meta = answer.finish.metadata
        await context.send_initial_metadata(
            _headers(meta.provider if meta else "", meta.model if meta else "", answer.rate_limit)
        )
        return pb.CompleteResponse(
            text=answer.text,
            tool_calls=[pb.ToolCall(id=c.id or "", name=c.name or "", arguments=c.arguments_fragment) for c in answer.tool_calls],
            usage=encode_chunk(UsageChunk(usage=answer.usage, cost_micros=answer.cost_micros)).usage,
            finish_reason=encode_finish_reason(answer.finish.reason),
            metadata=encode_metadata(meta),
            reasoning=answer.reasoning,
        )

    async def StreamComplete(  # noqa: N802
        self, request: pb.StreamCompleteRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamCompleteResponse]:
        chat = decode_parameters(request.parameters)
        chunks = await self._stream(current_principal(), chat)
        try:
            # who serves the answer and the rate limits that applied, before the first chunk
            await context.send_initial_metadata(_headers(chunks.provider, chunks.model, chunks.rate_limit))
            async for chunk in chunks:
                yield encode_chunk(chunk)
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]


def _headers(provider: str, model: str, rate_limit: RateLimitStatus | None) -> tuple[tuple[str, str], ...]:
    """``x-lumina-route`` and the ``x-ratelimit-*`` values, as gRPC initial metadata."""
    pairs = list(rate_limit.headers().items()) if rate_limit is not None else []
    if provider:
        pairs.append(("x-lumina-route", f"{provider}/{model}"))
    return tuple(pairs)
