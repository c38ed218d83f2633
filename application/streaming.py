"""Backpressure between a provider's stream and a client: a reader task fills a bounded queue that
the client side drains. A slow client fills the queue, the reader stops pulling, the provider's
socket stops being read, and memory stays flat; closing the relay cancels the reader, which closes
the upstream request at once.

``whole_answer`` is the other way to read a provider: for a client that wants the whole answer,
one non-streaming upstream call when the provider client offers one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

from domain.chat import ChatRequest, Chunk
from domain.ports import ProviderClient

__all__ = ["DEFAULT_BUFFER", "buffered", "whole_answer"]

T = TypeVar("T")

DEFAULT_BUFFER = 32
"""Chunks held between the provider and the client at most (a few KB)."""


class _End:
    __slots__ = ()


class _Failed(Generic[T]):
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = _End()


async def buffered(source: AsyncIterator[T], maxsize: int = DEFAULT_BUFFER, *, deadline: float | None = None) -> AsyncIterator[T]:
    """Items of ``source`` in order, read ahead by at most ``maxsize``. An exception of ``source``
    is raised here, after the items before it. Closing this iterator (or cancelling its consumer)
    cancels the reader and closes ``source``. ``deadline`` (event-loop time): the reader gives up
    then, and ``TimeoutError`` is raised here after the items read before it."""
    queue: asyncio.Queue[T | _End | _Failed[T]] = asyncio.Queue(maxsize)

    async def pump() -> None:
        try:
            async with asyncio.timeout_at(deadline):  # one timer for the whole read (None: none)
                while True:
                    try:
                        item = await anext(source)
                    except StopAsyncIteration:
                        break
                    await queue.put(item)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            await queue.put(_Failed(exc))
            return
        await queue.put(_END)

    reader = asyncio.ensure_future(pump())
    try:
        while True:
            item = await queue.get()
            if isinstance(item, _End):
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        if not reader.done():
            reader.cancel()
            await asyncio.wait((reader,))  # never raises, even when we are being cancelled ourselves
        await source.aclose()  # type: ignore[attr-defined]  # no-op once cancellation ran through it


def whole_answer(client: ProviderClient, upstream_model: str, request: ChatRequest) -> AsyncIterator[Chunk]:
    """The answer as ``client.complete`` gives it (one non-streaming upstream call: one response
    to read and decode instead of an event per token), or as its stream when it has no
    ``complete`` (the optional half of the ``ProviderClient`` port)."""
    complete = getattr(client, "complete", None)
    if complete is None:
        return client.stream(upstream_model, request)
    return complete(upstream_model, request)  # type: ignore[no-any-return]
