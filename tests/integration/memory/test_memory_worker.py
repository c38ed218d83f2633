"""Consolidation in the worker, on real NATS JetStream and Postgres, with the default local ONNX
embedder: turn events committed to the outbox are relayed by the worker, consumed by its memory
consumer, stored as memories and consolidated — a repeated message is merged into its first
sighting, a statement made in two conversations becomes a semantic fact with provenance, a
contradiction supersedes it (validity closed, ``supersedes`` edge), a long enough conversation
gets a summary. ``MemoryIngested`` consolidates memories stored outside the chat path; the sweep
decays importance."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats.js.errors
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.nats import JetStreamBus
from adapters.onnx import OnnxEmbedder
from adapters.postgres import SqlAlchemyUnitOfWorkFactory, create_engine
from adapters.postgres.migrate import upgrade
from adapters.postgres.tenant_policies import PostgresTenantMemory
from adapters.system import SystemClock, TimeOrderedIds
from api.memory import (
    MemoryModule,
    follow_tenant_switches,
    memory_chat_hook,
    open_memory,
    open_worker_memory,
)
from api.settings import load_settings
from api.worker import MEMORY_TURN_CONSUMER, Worker
from application.memory import TurnInput
from application.memory.consolidate import (
    ConsolidateMemory,
    ConsolidationPolicy,
    SweepMemory,
    summary_id,
)
from application.memory.tenant_switch import SetTenantMemory
from domain.chat import ChatMessage, ChatRequest
from domain.chat import Role as ChatRole
from domain.events import (
    ChatTurnCompleted,
    DomainEvent,
    MemoryIngested,
    RegistryChanged,
)
from domain.identity import Principal, PrincipalKind, Role
from domain.memory.tiers import fact_key
from tests.harness.jetstream import JetStreamNames
from tests.harness.services import TestServices

pytestmark = pytest.mark.timeout(180)

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def memory_database_url(services: TestServices) -> Iterator[str]:
    """A database of this module's own: the worker's relay claims every unsent outbox row."""
    url = services.create_database("lumina_memw")
    upgrade(url)
    yield url
    services.drop_database(url)


@pytest.fixture(scope="module")
def embedder() -> OnnxEmbedder:
    return OnnxEmbedder()


@dataclass
class Rig:
    engine: AsyncEngine
    uows: SqlAlchemyUnitOfWorkFactory
    memory: MemoryModule
    bus: JetStreamBus
    tenant: str

    async def scalar(self, sql: str, **params: object) -> object:
        async with self.engine.connect() as conn:
            return await conn.scalar(sa.text(sql), {"t": self.tenant, **params})

    async def rows(self, sql: str, **params: object) -> list[sa.Row[tuple[object, ...]]]:
        async with self.engine.connect() as conn:
            return list((await conn.execute(sa.text(sql), {"t": self.tenant, **params})).all())

    async def commit(self, *events: DomainEvent) -> None:
        async with self.uows() as uow:
            for event in events:
                uow.record(event)
            await uow.commit()


@pytest.fixture
async def rig(memory_database_url: str, nats_url: str, js_names: JetStreamNames, embedder: OnnxEmbedder) -> AsyncIterator[Rig]:
    engine = create_engine(memory_database_url, pool_size=6)
    settings = load_settings({}, database_url=memory_database_url)
    memory = await open_memory(settings, engine, embedder, clock=SystemClock(), ids=TimeOrderedIds())
    bus = await JetStreamBus.connect(nats_url, stream=js_names.stream, subjects=js_names.subjects)
    try:
        yield Rig(engine, SqlAlchemyUnitOfWorkFactory(engine), memory, bus, js_names.tenant)
    finally:
        await bus.close()
        await memory.aclose()
        await engine.dispose()


@pytest.fixture
async def worker(rig: Rig, js_names: JetStreamNames) -> AsyncIterator[Worker]:
    worker = Worker(
        uow_factory=rig.uows, bus=rig.bus, poll_interval=0.05, spend_subject=js_names.subject(),
        memory=rig.memory, memory_subjects=(js_names.subject("chat", "turn_completed"), js_names.subject("memory", "ingested")),
        memory_sweep_interval=0,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(running, 20)


def turn(tenant: str, n: int, conversation: str, user_text: str, assistant_text: str, user: str = "u1") -> ChatTurnCompleted:
    return ChatTurnCompleted(
        event_id=f"ev{n:03d}-{uuid.uuid4().hex[:8]}", tenant_id=tenant, occurred_at=T0 + timedelta(minutes=10 * n),
        request_id=f"req-{n}", user_id=user, conversation_id=conversation, user_text=user_text,
        assistant_text=assistant_text, model="sim-small",
    )


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.1)


async def consumed(rig: Rig, durable: str) -> bool:
    try:
        info = await rig.bus.js.consumer_info(rig.bus.stream, durable)
    except nats.js.errors.NotFoundError:
        return False
    return info.num_pending == 0 and info.num_ack_pending == 0


async def test_turn_events_are_remembered_merged_promoted_and_summarised(rig: Rig, worker: Worker) -> None:
    t = rig.tenant
    book = "Can you recommend a good book for the weekend?"
    events = [
        turn(t, 1, "c1", "I live in Lisbon and I love the food there.", "Lisbon is lovely; try the pastries."),
        turn(t, 2, "c1", book, "Try The Name of the Rose."),
        turn(t, 3, "c2", book, "How about Dune?"),  # the same question again, in another conversation
        turn(t, 4, "c2", "I live in Lisbon, close to the river.", "The river views must be great."),
    ]
    await rig.commit(*events)
    await wait_for(lambda: _fact_count(rig, "lisbon"))
    await wait_for(lambda: consumed(rig, MEMORY_TURN_CONSUMER))

    # memories appeared: every turn, except the repeated question merged into its first sighting
    ids = {r.id for r in await rig.rows("SELECT id FROM memories WHERE tenant_id = :t AND tier = 'episodic' AND role <> 'summary'")}
    expected = {f"{e.event_id}-{s}" for e in events for s in "ua"} - {f"{events[2].event_id}-u"}
    assert ids == expected
    assert await rig.scalar("SELECT count(*) FROM memories WHERE tenant_id = :t AND NOT consolidated") == 0
    first_question = f"{events[1].event_id}-u"
    assert await rig.scalar("SELECT importance FROM memories WHERE tenant_id = :t AND id = :i", i=first_question) > 0.5
    # the merged turn left its conversation's chain joined around it: c2 now starts at its answer
    answer = f"{events[2].event_id}-a"
    follows = await rig.rows("SELECT source, target FROM memory_edges WHERE tenant_id = :t AND kind = 'follows' AND (source = :s OR target = :s)", s=answer)
    assert {(r.source, r.target) for r in follows} == {(f"{events[3].event_id}-u", answer)}
    # ... and its other edges moved to the memory it was merged into
    assert await rig.scalar(
        "SELECT count(*) FROM memory_edges WHERE tenant_id = :t AND (source = :d OR target = :d)", d=f"{events[2].event_id}-u"
    ) == 0

    # the statement made in two conversations was promoted, with provenance to both turns
    (fact,) = await rig.rows(
        "SELECT id, subject, predicate, object, valid_to, importance FROM memories WHERE tenant_id = :t AND tier = 'semantic' AND predicate = 'lives in'"
    )
    assert (fact.subject, fact.predicate, fact.object, fact.valid_to) == ("user", "lives in", "Lisbon", None)
    assert fact.importance > 0.5
    sources = {r.target for r in await rig.rows(
        "SELECT target FROM memory_edges WHERE tenant_id = :t AND source = :s AND kind = 'derived_from'", s=fact.id
    )}
    assert sources == {f"{events[0].event_id}-u", f"{events[3].event_id}-u"}
    found, _ = await rig.memory.use.search(t, "u1", "where does the user live?")
    assert fact.id in {i for r in found.results for i in (r.id, *(c.id for c in (*r.before, *r.after)))}

    # c1 has four turns: summarised, with provenance; c2 (three after the merge) is not
    summary = summary_id("u1", "c1")
    text = await rig.scalar("SELECT text FROM memories WHERE tenant_id = :t AND id = :i", i=summary)
    assert isinstance(text, str) and text.startswith("summary: ")
    assert await rig.scalar(
        "SELECT count(*) FROM memory_edges WHERE tenant_id = :t AND source = :s AND kind = 'derived_from'", s=summary
    ) >= 1
    assert await rig.scalar("SELECT count(*) FROM memories WHERE tenant_id = :t AND id = :i", i=summary_id("u1", "c2")) == 0

    # a contradiction supersedes the fact (validity closed, never deleted)
    moved = turn(t, 5, "c3", "Big news: I moved to Porto last month.", "Congratulations on the move!")
    await rig.commit(moved)
    await wait_for(lambda: _fact_count(rig, "porto"))
    facts = {r.object: r for r in await rig.rows(
        "SELECT id, object, valid_to, occurred_at FROM memories WHERE tenant_id = :t AND tier = 'semantic' AND predicate = 'lives in'"
    )}
    assert facts["Porto"].valid_to is None and facts["Lisbon"].valid_to == facts["Porto"].occurred_at
    assert await rig.scalar(
        "SELECT count(*) FROM memory_edges WHERE tenant_id = :t AND source = :n AND target = :o AND kind = 'supersedes'",
        n=facts["Porto"].id, o=facts["Lisbon"].id,
    ) == 1

    # a redelivered event is stored once and finds nothing new to consolidate
    before = await rig.scalar("SELECT count(*) FROM memories WHERE tenant_id = :t")
    report = await rig.memory.remember(moved)
    assert report is not None and report.turns == 0 and report.outcomes == ()
    assert await rig.scalar("SELECT count(*) FROM memories WHERE tenant_id = :t") == before


async def _fact_count(rig: Rig, obj: str) -> bool:
    return bool(await rig.scalar(
        "SELECT count(*) FROM memories WHERE tenant_id = :t AND tier = 'semantic' AND lower(object) = :o AND valid_to IS NULL",
        o=obj,
    ))


async def test_memory_ingested_consolidates_and_results_are_explicit(rig: Rig, worker: Worker) -> None:
    t = rig.tenant
    at = T0.timestamp()
    turns = [
        TurnInput("user", "My favourite colour is green.", at),
        TurnInput("user", "My favourite colour is green.", at + 60),
        TurnInput("assistant", "Green it is.", at + 120),
        TurnInput("user", "I no longer live in Madrid.", at + 180),
    ]
    stored = await rig.memory.ingest(t, "u2", "notes", turns)
    await rig.commit(MemoryIngested(event_id=uuid.uuid4().hex, tenant_id=t, occurred_at=T0, user_id="u2", conversation_id="notes", memory_count=4))

    async def done() -> bool:
        return await rig.scalar("SELECT count(*) FROM memories WHERE tenant_id = :t AND user_id = 'u2' AND NOT consolidated") == 0

    await wait_for(done)
    remaining = {r.id for r in await rig.rows("SELECT id FROM memories WHERE tenant_id = :t AND user_id = 'u2' AND tier = 'episodic'")}
    assert stored[1].id not in remaining and stored[0].id in remaining  # merged into the first
    # one session only: the colour is observed, not yet a fact; a second conversation promotes it
    assert await rig.scalar("SELECT count(*) FROM memories WHERE tenant_id = :t AND user_id = 'u2' AND tier = 'semantic'") == 0
    await rig.memory.ingest(t, "u2", "chat-2", [TurnInput("user", "As I said, my favourite colour is green.", at + 600)])
    report = await rig.memory.consolidate(t, "u2")
    adds = [o for o in report.outcomes if o.op == "add" and o.kind == "fact"]
    assert len(adds) == 1 and "favourite colour is green" in adds[0].reason
    assert [o.op for o in report.outcomes if o.kind == "summary"] == ["noop"]  # chat-2 is one turn long
    again = await rig.memory.consolidate(t, "u2")
    assert again.turns == 0 and again.outcomes == ()


async def test_retraction_closes_a_fact_and_sweep_decays_importance(memory_database_url: str, embedder: OnnxEmbedder) -> None:
    engine = create_engine(memory_database_url, pool_size=4)
    settings = load_settings({}, database_url=memory_database_url)
    memory = await open_memory(settings, engine, embedder, clock=SystemClock(), ids=TimeOrderedIds())
    tenant, at = f"sweep-{uuid.uuid4().hex[:8]}", T0.timestamp()
    try:
        for i, conversation in enumerate(("a", "b")):
            await memory.ingest(tenant, "u", conversation, [TurnInput("user", "I work at Initech.", at + i)])
        first = await memory.consolidate(tenant, "u")
        (added,) = [o for o in first.outcomes if o.kind == "fact"]
        assert added.op == "add"
        await memory.ingest(tenant, "u", "c", [TurnInput("user", "I don't work at Initech anymore.", at + 10)])
        second = await memory.consolidate(tenant, "u")
        assert [(o.op, o.kind, o.memory_id) for o in second.outcomes if o.kind == "fact"] == [("delete", "fact", added.memory_id)]
        async with engine.connect() as conn:
            valid_to = await conn.scalar(sa.text("SELECT valid_to FROM memories WHERE tenant_id = :t AND id = :i"), {"t": tenant, "i": added.memory_id})
        assert valid_to == datetime.fromtimestamp(at + 10, UTC)

        class Later:
            def now(self) -> datetime:
                return datetime.now(UTC) + timedelta(days=60)  # two half-lives

            def monotonic(self) -> float:
                return 0.0

        later = ConsolidateMemory(memory.store, memory.vectors, memory.embedder, TimeOrderedIds(), Later())
        before = dict(await _importances(engine, tenant))
        report = await later(tenant, "u", decay=True)
        # the repeated statement was merged into its first sighting: two turns and the closed fact
        assert report.decayed == 3 == len(before)
        after = dict(await _importances(engine, tenant))
        assert after == pytest.approx({k: 0.05 + (v - 0.05) * 0.25 for k, v in before.items()}, abs=2e-3)
        assert (await later(tenant, "u", decay=True)).decayed == 0  # the decay clock restarted
        swept = await SweepMemory(memory.store, later, page=1)()
        assert tenant in {r.tenant_id for r in swept}
    finally:
        await memory.aclose()
        await engine.dispose()


async def _importances(engine: AsyncEngine, tenant: str) -> list[tuple[str, float]]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.text("SELECT id, importance FROM memories WHERE tenant_id = :t"), {"t": tenant})
        return [(r.id, float(r.importance)) for r in rows]


async def test_a_turn_is_not_crowded_out_of_its_duplicates_by_its_neighbours_windows(
    memory_database_url: str, embedder: OnnxEmbedder
) -> None:
    """Vectors are context windows: the windows of a turn's neighbours contain the turn's own text,
    so they rank above a real duplicate elsewhere. They are left out of the candidates, so even
    with two candidates the duplicate in the other conversation is found (and only it)."""
    engine = create_engine(memory_database_url, pool_size=4)
    settings = load_settings({}, database_url=memory_database_url)
    memory = await open_memory(settings, engine, embedder, clock=SystemClock(), ids=TimeOrderedIds())
    tenant, at = f"dup-{uuid.uuid4().hex[:8]}", T0.timestamp()
    said = "I adopted a small black puppy named Max from the shelter."
    try:
        await memory.ingest(tenant, "u", "a", [
            TurnInput("user", "The quarterly tax forms for the bakery took the whole weekend to fill in and file.", at),
            TurnInput("user", said, at + 1),
            TurnInput("user", "Our train to the coast was delayed by two hours because of the storm last night.", at + 2),
        ])
        await memory.ingest(tenant, "u", "b", [
            TurnInput("user", "ok", at + 10), TurnInput("user", said, at + 11), TurnInput("user", "sure", at + 12),
        ])
        b_turns = await memory.store.conversation_turns(tenant, "u", "b", 10)
        a_turns = await memory.store.conversation_turns(tenant, "u", "a", 10)
        repeated, original = b_turns[1], a_turns[1]
        (vector,) = await memory.embedder.embed([repeated.text])
        ranked = [h.id for h in await memory.vectors.query(tenant, vector, 6)]
        # the precondition: the neighbours' windows (and its own) outrank the real duplicate
        assert ranked.index(b_turns[0].id) < ranked.index(original.id)
        assert ranked.index(b_turns[2].id) < ranked.index(original.id)
        consolidate = ConsolidateMemory(
            memory.store, memory.vectors, memory.embedder, TimeOrderedIds(), SystemClock(),
            policy=ConsolidationPolicy(duplicate_candidates=2), reindex=memory.ingest.reindex,
        )
        report = await consolidate(tenant, "u")
        merges = [(o.op, o.memory_id) for o in report.outcomes if o.kind == "turn"]
        assert merges == [("delete", repeated.id), ("update", original.id)]
        assert {t.id for t in await memory.store.conversation_turns(tenant, "u", "b", 10)} == {b_turns[0].id, b_turns[2].id}
    finally:
        await memory.aclose()
        await engine.dispose()


async def test_the_workers_provider_registry_follows_registry_changed(
    memory_database_url: str, nats_url: str, js_names: JetStreamNames, tmp_path: Path
) -> None:
    """Memory that writes summaries through a provider gives the worker its own registry; a
    ``RegistryChanged`` of its tenant (outbox -> relay -> JetStream) reloads it at once, not only
    before the next sweep."""
    engine = create_engine(memory_database_url, pool_size=4)
    uows = SqlAlchemyUnitOfWorkFactory(engine)
    settings = load_settings(
        {}, database_url=memory_database_url, tenant_id=js_names.tenant, memory_summary_model="m", data_dir=str(tmp_path)
    )
    memory = await open_worker_memory(settings, engine, uows, clock=SystemClock(), ids=TimeOrderedIds())
    bus = await JetStreamBus.connect(nats_url, stream=js_names.stream, subjects=js_names.subjects)
    worker = Worker(
        uow_factory=uows, bus=bus, poll_interval=0.05, spend_subject=js_names.subject(), memory=memory,
        memory_subjects=(js_names.subject("chat", "turn_completed"), js_names.subject("memory", "ingested")),
        memory_sweep_interval=0,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        assert memory.registry is not None
        await asyncio.wait_for(worker.registry_listening.wait(), 20)
        before = memory.registry.reload.reloads
        async with uows() as uow:
            uow.record(RegistryChanged(
                event_id=uuid.uuid4().hex, tenant_id=js_names.tenant, occurred_at=T0, entity="model", name="m", action="upserted",
            ))
            await uow.commit()

        async def reloaded() -> bool:
            return memory.registry is not None and memory.registry.reload.reloads > before

        await wait_for(reloaded, 20)
    finally:
        stop.set()
        await asyncio.wait_for(running, 20)
        await bus.close()
        await memory.aclose()
        await engine.dispose()


async def test_dialogue_facts_are_stored_at_once_dated_with_provenance_and_superseded(
    memory_database_url: str, embedder: OnnxEmbedder
) -> None:
    """Imported dialogue (roles are the speakers' names): events, preferences and activities said
    once become semantic facts at once, attributed to the speaker, with ``derived_from`` their
    turn and an event dated the day it happened; a change of feeling supersedes the old fact
    (validity closed, history kept); a retraction closes it."""
    engine = create_engine(memory_database_url, pool_size=4)
    settings = load_settings({}, database_url=memory_database_url)
    memory = await open_memory(settings, engine, embedder, clock=SystemClock(), ids=TimeOrderedIds())
    tenant = f"dlg-{uuid.uuid4().hex[:8]}"
    s1 = datetime(2023, 5, 8, 13, 56, tzinfo=UTC).timestamp()
    try:
        first = await memory.ingest(tenant, "u", "s1", [
            TurnInput("Melanie", "I went to a pottery class yesterday and I love pottery.", s1),
            TurnInput("Caroline", "That's great! I'm researching adoption agencies.", s1 + 30),
            TurnInput("assistant", "I love pottery too.", s1 + 60),  # an assistant's words are nobody's facts
        ])
        report = await memory.consolidate(tenant, "u")
        added = sorted(o.reason.split(": ", 1)[1] for o in report.outcomes if o.kind == "fact" and o.op == "add")
        assert added == [
            "Caroline is researching adoption agencies", "Melanie loves pottery", "Melanie went to a pottery class on 2023-05-07",
        ]
        (event,) = await memory.store.facts(tenant, "u", [fact_key("Melanie", "went to a pottery class on 2023-05-07")])
        assert event.valid_from == datetime(2023, 5, 7, tzinfo=UTC).timestamp() and event.valid_to is None
        assert event.source_turn_ids == (first[0].id,)
        view = await memory.use.get(tenant, "u", event.id)
        assert view.memory.tier.value == "semantic"

        key = fact_key("Melanie", "feels about pottery")
        await memory.ingest(tenant, "u", "s2", [TurnInput("Melanie", "Honestly, I hate pottery.", s1 + 7 * 86400)])
        second = await memory.consolidate(tenant, "u")
        (update,) = [o for o in second.outcomes if o.kind == "fact"]
        loved, hated = sorted(await memory.store.facts(tenant, "u", [key]), key=lambda f: f.valid_from)
        assert update.op == "update" and update.old_id == loved.id and update.memory_id == hated.id
        assert loved.valid_to == s1 + 7 * 86400 and hated.object == "dislikes" and hated.valid_to is None

        await memory.ingest(tenant, "u", "s3", [TurnInput("Melanie", "I don't like pottery anymore.", s1 + 14 * 86400)])
        third = await memory.consolidate(tenant, "u")
        assert [(o.op, o.memory_id) for o in third.outcomes if o.kind == "fact"] == [("delete", hated.id)]
        assert all(f.valid_to is not None for f in await memory.store.facts(tenant, "u", [key]))
    finally:
        await memory.aclose()
        await engine.dispose()


async def test_a_tenant_switch_made_elsewhere_reaches_this_replicas_chat_hook_over_jetstream(
    rig: Rig, worker: Worker, js_names: JetStreamNames
) -> None:
    """Another replica switches the tenant's memory off (its audit event goes through the outbox,
    the worker relays it); this replica's chat hook, whose cached switch would otherwise hold for
    an hour, forgets it and the next request goes without memory."""
    tenant = rig.tenant
    async with rig.engine.begin() as conn:
        await conn.execute(sa.text("INSERT INTO tenants (id, name, created_at) VALUES (:t, :t, now())"), {"t": tenant})
    settings = load_settings({}, database_url=str(rig.engine.url.render_as_string(hide_password=False)), memory_tenant_cache_seconds=3600)
    hook = memory_chat_hook(settings, rig.engine, clock=SystemClock(), ids=TimeOrderedIds())
    hook.attach(rig.memory.search)
    alice = Principal(tenant, "alice", Role.MEMBER, PrincipalKind.API_KEY, "key-alice")
    request = ChatRequest(messages=(ChatMessage(ChatRole.USER, "what is my puppy called?"),), model="m")

    async def note() -> str:
        return (await hook.prepare(alice, request)).notes.get("memory_skipped", "recalled")

    assert await note() != "off_tenant"  # cached: on, for an hour
    stop, ready = asyncio.Event(), asyncio.Event()
    listening = asyncio.create_task(follow_tenant_switches(
        hook, rig.bus.js, stop, stream=rig.bus.stream, subject=js_names.subject("auth", "audited"), ready=ready,
    ))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        elsewhere = SetTenantMemory(PostgresTenantMemory(rig.engine), SystemClock(), TimeOrderedIds())  # no local invalidation
        admin = Principal(tenant, "root", Role.ADMIN, PrincipalKind.API_KEY, "key-root")
        assert (await elsewhere(admin, False)).changed
        assert hook._tenants.known(tenant).memory_enabled  # type: ignore[attr-defined,union-attr]  # still cached "on"

        async def off() -> bool:
            return await note() == "off_tenant"

        await wait_for(off, 20)
    finally:
        stop.set()
        await asyncio.wait_for(listening, 10)
