"""StreamChat settles through the ``Settlements`` port: Finish only after it returned; a failed
settlement ends the stream with an ``unavailable`` error instead (CompleteChat raises Unavailable)."""

from __future__ import annotations

import asyncio

import pytest

from application.catalog import RegistryCatalog
from application.chat import CompleteChat, StreamChat
from domain.chat import ErrorChunk, Finish, TextDelta, UsageChunk
from domain.errors import Unavailable
from domain.events import DomainEvent
from domain.registry import ModelRoute, ProviderKind, ProviderSpec
from domain.usage import UsageRecord
from tests.unit.chat_fakes import FixedClock, ScriptedProvider, SequentialIds, StaticProviders
from tests.unit.fakes import FakeUnitOfWorkFactory
from tests.unit.test_chat import HELLO, PRICE, T1, happy_script


class RecordingSettlements:
    def __init__(self, *, fail: bool = False) -> None:
        self.settled: list[tuple[UsageRecord, tuple[DomainEvent, ...]]] = []
        self.fail = fail
        self.gate = asyncio.Event()
        self.gate.set()

    async def settle(self, record: UsageRecord, *events: DomainEvent) -> None:
        await self.gate.wait()
        if self.fail:
            raise Unavailable("database unavailable during settle: OSError")
        self.settled.append((record, events))


async def make(settlements: RecordingSettlements) -> tuple[StreamChat, FakeUnitOfWorkFactory]:
    uow = FakeUnitOfWorkFactory()
    async with uow() as u:
        await u.providers.upsert_provider(ProviderSpec("p1", ProviderKind.OPENAI_COMPATIBLE, label="simulated"))
        await u.providers.upsert_model(ModelRoute("small", "p1", "upstream-small", PRICE, is_default=True))
        await u.commit()
    clock = FixedClock(step=0.05)
    stream = StreamChat(
        catalog=RegistryCatalog(uow, clock), providers=StaticProviders(ScriptedProvider("p1", happy_script())),
        uow=uow, clock=clock, ids=SequentialIds(), settlements=settlements,
    )
    return stream, uow


async def test_finish_waits_for_the_settlement() -> None:
    settlements = RecordingSettlements()
    settlements.gate.clear()
    stream, uow = await make(settlements)
    chunks = await stream(T1, HELLO)
    seen = [await anext(chunks), await anext(chunks)]
    assert all(isinstance(c, TextDelta) for c in seen)
    pending = asyncio.ensure_future(anext(chunks))
    await asyncio.sleep(0.01)
    assert not pending.done()  # usage is not reported before the settlement returned
    settlements.gate.set()
    assert isinstance(await pending, UsageChunk)
    rest = [c async for c in chunks]
    assert isinstance(rest[-1], Finish)
    (record, (event, *_)), = settlements.settled
    assert record.request_id == rest[-1].metadata.request_id == event.request_id
    assert record.cost_micros == rest[-1].metadata.cost_micros > 0


async def test_a_failed_settlement_ends_the_stream_with_unavailable_not_finish() -> None:
    stream, _ = await make(RecordingSettlements(fail=True))
    chunks = [c async for c in await stream(T1, HELLO)]
    assert [type(c) for c in chunks] == [TextDelta, TextDelta, ErrorChunk]
    assert chunks[-1].code == "unavailable" and chunks[-1].retryable
    assert "usage could not be recorded" in chunks[-1].message


async def test_complete_chat_raises_unavailable_when_settlement_fails() -> None:
    stream, _ = await make(RecordingSettlements(fail=True))
    with pytest.raises(Unavailable, match="usage could not be recorded"):
        await CompleteChat(stream)(T1, HELLO)
