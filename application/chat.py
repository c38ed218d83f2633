"""Chat use cases: stream a completion through the routed provider, settle its usage and cost,
and record a ``ChatCompleted`` event in the same transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from application.ports import (
    ModelCatalog,
    ProviderClients,
    Settlements,
    UnitOfWorkFactory,
)
from application.settlement import UnitOfWorkSettlements
from application.streaming import DEFAULT_BUFFER, buffered
from domain.chat import (
    ChatRequest,
    Chunk,
    ErrorChunk,
    Finish,
    FinishReason,
    ReasoningDelta,
    ResponseMetadata,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageChunk,
)
from domain.errors import ProviderError, Unavailable, UpstreamUnavailable
from domain.events import ChatCompleted
from domain.ports import Clock, IdGenerator
from domain.registry import ModelRoute
from domain.usage import UsageRecord

__all__ = ["ChatAnswer", "CompleteChat", "StreamChat"]


class StreamChat:
    """Stream one chat completion as unified chunks.

    Errors before the first chunk (unknown model, provider refused the request) are raised, so the
    edge can answer with a proper status. Once content has been sent, a provider failure becomes a
    final ``ErrorChunk``. Usage is settled and the event recorded before ``Finish`` is yielded, so a
    client that saw ``Finish`` can rely on the usage row and the outbox event both existing. Settling
    goes through the ``Settlements`` port (by default one unit of work per request; the composition
    root may install group commit); when it fails, the stream ends with an ``unavailable``
    ``ErrorChunk`` instead of ``Finish``.

    The provider is read ahead through a bounded buffer of ``buffer`` chunks (backpressure: a slow
    client pauses the upstream read). Closing the returned iterator, or cancelling its consumer,
    closes the upstream request. ``request.provider`` pins the provider serving the model.
    """

    def __init__(
        self,
        *,
        catalog: ModelCatalog,
        providers: ProviderClients,
        uow: UnitOfWorkFactory,
        clock: Clock,
        ids: IdGenerator,
        buffer: int = DEFAULT_BUFFER,
        settlements: Settlements | None = None,
    ) -> None:
        self._buffer = buffer
        self._settlements = settlements or UnitOfWorkSettlements(uow)
        self._catalog = catalog
        self._providers = providers
        self._clock = clock
        self._ids = ids

    async def __call__(self, tenant_id: str, request: ChatRequest) -> AsyncIterator[Chunk]:
        return await self.open(tenant_id, request)

    async def open(self, tenant_id: str, request: ChatRequest, *, read_ahead: bool = True) -> AsyncIterator[Chunk]:
        """``__call__`` with a choice: ``read_ahead=False`` reads the provider in the consumer's own
        task, without the bounded buffer's reader task and queue — for a consumer that drains the
        stream at once anyway (``CompleteChat``), where backpressure buys nothing. Settlement
        before ``Finish`` is the same either way."""
        route = await self._catalog.resolve(request.model, provider=request.provider)
        spec = await self._catalog.provider(route.provider)
        client = self._providers.get(route.provider)
        request_id = self._ids.new_id()
        started = self._clock.monotonic()
        upstream = client.stream(route.upstream_model, request)
        first = await _first(upstream)  # provider errors before any content propagate as exceptions
        return self._relay(tenant_id, request, route, spec.label, request_id, started, upstream, first, read_ahead)

    async def _relay(
        self,
        tenant_id: str,
        request: ChatRequest,
        route: ModelRoute,
        label: str,
        request_id: str,
        started: float,
        upstream: AsyncIterator[Chunk],
        first: Chunk | None,
        read_ahead: bool = True,
    ) -> AsyncIterator[Chunk]:
        model, provider, price = route.name, route.provider, route.price
        usage = Usage()
        reason = FinishReason.STOP
        # the reader task starts on the first read below; without read-ahead, the upstream itself
        rest = buffered(upstream, self._buffer) if read_ahead else upstream
        try:
            pending = [first] if first is not None else []
            try:
                while True:
                    chunk = pending.pop() if pending else await anext(rest)
                    match chunk:
                        case UsageChunk(usage=reported):
                            usage = reported
                        case Finish(reason=finish_reason):
                            reason = finish_reason
                        case TextDelta() | ReasoningDelta() | ToolCallDelta():
                            yield chunk
                        case ErrorChunk():
                            yield chunk
                            return
            except StopAsyncIteration:
                pass
            except ProviderError as exc:
                yield ErrorChunk(code=exc.code, message=exc.message, retryable=exc.retryable)
                return
        finally:
            if rest is not upstream:
                await rest.aclose()  # type: ignore[attr-defined]  # cancels the reader, closes upstream
            await upstream.aclose()  # type: ignore[attr-defined]
        cost = price.cost_micros(usage)
        latency_ms = round((self._clock.monotonic() - started) * 1000)
        now = self._clock.now()
        record = UsageRecord(
            request_id=request_id,
            tenant_id=tenant_id,
            provider=provider,
            model=model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cost_micros=cost,
            latency_ms=latency_ms,
            finish_reason=reason.value,
            created_at=now,
            conversation_id=request.conversation_id,
        )
        event = ChatCompleted(
            event_id=self._ids.new_id(),
            tenant_id=tenant_id,
            occurred_at=now,
            request_id=request_id,
            provider=provider,
            model=model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_micros=cost,
            latency_ms=latency_ms,
            finish_reason=reason.value,
            conversation_id=request.conversation_id or "",
        )
        try:
            await self._settlements.settle(record, event)
        except Unavailable as exc:
            yield ErrorChunk(code=Unavailable.code, message=f"usage could not be recorded: {exc.message}", retryable=True)
            return
        yield UsageChunk(usage=usage, cost_micros=cost)
        yield Finish(
            reason=reason,
            metadata=ResponseMetadata(
                request_id=request_id, provider=provider, model=model, latency_ms=latency_ms, cost_micros=cost,
                provider_label=label,
            ),
        )


async def _first(upstream: AsyncIterator[Chunk]) -> Chunk | None:
    try:
        return await anext(upstream)
    except StopAsyncIteration:
        return None
    except BaseException:
        await upstream.aclose()  # type: ignore[attr-defined]
        raise


@dataclass(frozen=True, slots=True)
class ChatAnswer:
    text: str
    tool_calls: tuple[ToolCallDelta, ...]
    usage: Usage
    cost_micros: int
    finish: Finish
    reasoning: str = ""


class CompleteChat:
    """The whole answer at once: the same path as streaming, gathered."""

    def __init__(self, stream: StreamChat) -> None:
        self._stream = stream

    async def __call__(self, tenant_id: str, request: ChatRequest) -> ChatAnswer:
        parts: list[str] = []
        thoughts: list[str] = []
        calls: dict[int, ToolCallDelta] = {}
        usage, cost, finish = Usage(), 0, Finish(reason=FinishReason.STOP)
        # drained at once here: no read-ahead task and queue between the provider and this loop
        chunks = await self._stream.open(tenant_id, request, read_ahead=False)
        try:
            async for chunk in chunks:
                match chunk:
                    case TextDelta(text=text):
                        parts.append(text)
                    case ReasoningDelta(text=text):
                        thoughts.append(text)
                    case ToolCallDelta(index=index):
                        prev = calls.get(index)
                        calls[index] = chunk if prev is None else ToolCallDelta(
                            index=index,
                            id=prev.id or chunk.id,
                            name=prev.name or chunk.name,
                            arguments_fragment=prev.arguments_fragment + chunk.arguments_fragment,
                        )
                    case UsageChunk(usage=u, cost_micros=c):
                        usage, cost = u, c
                    case Finish():
                        finish = chunk
                    case ErrorChunk(code=code, message=message):
                        raise _error_from_chunk(code, message)
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]  # an error chunk ends the loop early
        return ChatAnswer(
            "".join(parts), tuple(calls[i] for i in sorted(calls)), usage, cost, finish, "".join(thoughts)
        )


def _error_from_chunk(code: str, message: str) -> ProviderError | Unavailable:
    if code == Unavailable.code:
        return Unavailable(message)
    for cls in ProviderError.__subclasses__():
        if cls.code == code:
            return cls(message)
    return UpstreamUnavailable(message)
