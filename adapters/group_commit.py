"""Group commit: many concurrent callers' items written by one writer, a batch per transaction.

``GroupCommit(write)`` runs one writer task. ``submit(item)`` queues the item and waits until the
batch holding it has been written (``write`` returned) or has failed (``write`` raised: every caller
of that batch gets ``GroupCommitFailed`` chained to the error; items are never retried, so nothing
is written twice). Batches form naturally: while one is being written, newcomers queue and go
together in the next, so an idle system adds no delay and a busy one shares each commit between
up to ``max_batch`` callers. ``max_delay`` (seconds, default 0) additionally holds a batch open that
long when it is not full — more sharing under moderate load, at that much added latency.

A caller that is cancelled while waiting does not take its item back: it is written with its
batch. ``aclose()`` writes what is queued, then stops the writer.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["GroupCommit", "GroupCommitFailed"]

T = TypeVar("T")


class GroupCommitFailed(Exception):
    """The batch holding the caller's item was not written; ``__cause__`` is the writer's error."""


class GroupCommit(Generic[T]):
    def __init__(
        self,
        write: Callable[[Sequence[T]], Awaitable[None]],
        *,
        max_batch: int = 256,
        max_delay: float = 0.0,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._write = write
        self._max_batch = max_batch
        self._max_delay = max_delay
        self._pending: list[tuple[T, asyncio.Future[None]]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.batches = 0
        """Batches written so far (for tests and benchmarks)."""

    async def submit(self, item: T) -> None:
        if self._closing:
            raise GroupCommitFailed("the writer is closed")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._pending.append((item, done))
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            # a context of its own: the writer must not carry the first caller's context (trace ids)
            self._task = loop.create_task(self._run(), name="group-commit", context=contextvars.Context())
        assert self._wake is not None
        self._wake.set()
        await done

    async def _run(self) -> None:
        assert self._wake is not None
        wake = self._wake
        while True:
            if not self._pending:
                if self._closing:
                    return
                wake.clear()
                await wake.wait()
                continue
            if self._max_delay > 0 and len(self._pending) < self._max_batch and not self._closing:
                await asyncio.sleep(self._max_delay)
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                await self._write([item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch
                for _, done in batch:
                    if not done.done():
                        failed = GroupCommitFailed(str(exc) or type(exc).__name__)
                        failed.__cause__ = exc
                        done.set_exception(failed)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
            self.batches += 1

    async def aclose(self) -> None:
        """Write what is queued, then stop the writer."""
        self._closing = True
        if self._task is not None and not self._task.done():
            assert self._wake is not None
            self._wake.set()
            await self._task
