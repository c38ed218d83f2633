"""Group commit (adapters.group_commit) with a hand-written writer: batching, failure isolation,
cancellation and close. The Postgres writer is tested in tests/integration/test_settlement.py."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from adapters.group_commit import GroupCommit, GroupCommitFailed


class GatedWriter:
    """Records each batch; holds every write until ``gate`` is set; fails batches holding ``poison``."""

    def __init__(self, poison: object = None) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.poison = poison
        self.writing = asyncio.Event()

    async def __call__(self, batch: Sequence[int]) -> None:
        self.writing.set()
        await self.gate.wait()
        if self.poison in batch:
            raise RuntimeError("constraint violated")
        self.batches.append(list(batch))


async def test_an_idle_writer_writes_a_lone_item_at_once() -> None:
    writer = GatedWriter()
    group = GroupCommit(writer)
    await asyncio.wait_for(group.submit(1), 1)
    assert writer.batches == [[1]]
    await group.aclose()


async def test_items_arriving_during_a_write_share_the_next_batch() -> None:
    writer = GatedWriter()
    writer.gate.clear()
    group = GroupCommit(writer)
    first = asyncio.create_task(group.submit(0))
    await writer.writing.wait()  # batch [0] is in flight
    rest = [asyncio.create_task(group.submit(i)) for i in range(1, 11)]
    await asyncio.sleep(0)
    assert not any(t.done() for t in [first, *rest])  # nobody returns before its commit
    writer.gate.set()
    await asyncio.gather(first, *rest)
    assert writer.batches == [[0], list(range(1, 11))]
    assert group.batches == 2
    await group.aclose()


async def test_batches_hold_at_most_max_batch_items() -> None:
    writer = GatedWriter()
    writer.gate.clear()
    group = GroupCommit(writer, max_batch=4)
    tasks = [asyncio.create_task(group.submit(i)) for i in range(10)]
    await asyncio.sleep(0)
    writer.gate.set()
    await asyncio.gather(*tasks)
    assert [len(b) for b in writer.batches] == [4, 4, 2]
    assert sorted(i for b in writer.batches for i in b) == list(range(10))
    await group.aclose()


async def test_a_failed_batch_fails_exactly_its_callers() -> None:
    writer = GatedWriter(poison=3)
    writer.gate.clear()
    group = GroupCommit(writer)
    head = asyncio.create_task(group.submit(0))
    await writer.writing.wait()
    doomed = [asyncio.create_task(group.submit(i)) for i in (1, 2, 3)]
    await asyncio.sleep(0)
    writer.gate.set()
    await head
    results = await asyncio.gather(*doomed, return_exceptions=True)
    assert all(isinstance(r, GroupCommitFailed) for r in results)
    assert all(isinstance(r.__cause__, RuntimeError) for r in results)
    assert writer.batches == [[0]]  # the poisoned batch wrote nothing
    await group.submit(4)  # the writer goes on
    assert writer.batches == [[0], [4]]
    await group.aclose()


async def test_a_cancelled_caller_item_is_still_written() -> None:
    writer = GatedWriter()
    writer.gate.clear()
    group = GroupCommit(writer)
    task = asyncio.create_task(group.submit(7))
    await writer.writing.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    writer.gate.set()
    await group.aclose()
    assert writer.batches == [[7]]


async def test_max_delay_holds_a_batch_open_for_latecomers() -> None:
    writer = GatedWriter()
    group = GroupCommit(writer, max_delay=0.05)
    first = asyncio.create_task(group.submit(1))
    await asyncio.sleep(0.01)
    await asyncio.gather(first, group.submit(2))
    assert writer.batches == [[1, 2]]
    await group.aclose()


async def test_close_writes_what_is_queued_then_refuses() -> None:
    writer = GatedWriter()
    writer.gate.clear()
    group = GroupCommit(writer)
    tasks = [asyncio.create_task(group.submit(i)) for i in range(3)]
    await writer.writing.wait()
    closing = asyncio.create_task(group.aclose())
    await asyncio.sleep(0)
    writer.gate.set()
    await closing
    await asyncio.gather(*tasks)
    assert sorted(i for b in writer.batches for i in b) == [0, 1, 2]
    with pytest.raises(GroupCommitFailed):
        await group.submit(9)


async def test_the_writer_does_not_run_in_a_caller_context() -> None:
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: list[str] = []

    async def write(batch: Sequence[int]) -> None:
        seen.append(var.get())

    group = GroupCommit(write)
    var.set("request-1")
    await group.submit(1)
    assert seen == ["unset"]
    await group.aclose()
