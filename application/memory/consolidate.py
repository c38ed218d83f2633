"""Consolidation: what the worker does with a user's memories after they are stored.

``ConsolidateMemory(tenant, user)`` takes the user's unconsolidated episodic turns (oldest first,
under a per-user lock, so two workers never consolidate one user at once) and:

1. **merges near-duplicates**: a turn whose own text is within ``duplicate_threshold`` (cosine) of
   an earlier memory of the same user, tier and role is merged into it (``domain.memory.extraction.
   duplicate_of``): its edges move to the earlier memory, which is reinforced; the turn is deleted
   (DELETE turn + UPDATE turn). Candidates come from the vector store (context windows: a turn's
   own neighbours never take a candidate slot) plus the turns next to each hit;
2. **extracts facts** (a ``FactExtractor``: ``RuleFactExtractor``, or ``ProviderFactExtractor``
   through a chat model): single-valued *relations* are observations, promoted to semantic facts
   once seen in at least ``min_sessions`` conversations (``domain.memory.consolidation.promotions``);
   *dialogue facts* (events dated the day they happened, plans, activities, preferences,
   possessions, identities: ``domain.memory.dialogue``) are facts at once. Every fact has
   provenance (``derived_from`` edges to its source turns) and a validity interval. A newer fact
   on the same subject+predicate supersedes the current one at once (a ``supersedes`` edge; the
   old fact's validity is closed, never deleted); a retraction closes it. Each candidate goes
   through ``decide`` / ``apply``: ADD, UPDATE, DELETE or NOOP, each reported;
3. **writes session summaries**: a conversation with at least ``summary_min_turns`` turns gets one
   (ADD), rewritten once ``summary_every`` newer turns arrived (UPDATE; otherwise NOOP), by the
   ``Summarizer`` (a provider when configured, else extractive), with ``derived_from`` edges;
4. with ``decay=True`` (the scheduled sweep), **decays importance**: each memory's importance
   halves every ``half_life`` seconds since it was last set, towards ``floor``.

The turns are then marked consolidated. Running it again finds nothing pending (NOOP-free report).
``RememberTurn`` is the consumer of ``ChatTurnCompleted`` (ingest the exchange, then consolidate);
``SweepMemory`` is the schedule (every user with memories, with decay).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Literal, Protocol

import msgspec
import msgspec.structs

from application.memory.extract import FactExtractor, RuleFactExtractor
from application.memory.ingest import IngestTurns, TurnInput
from application.memory.manage import Reindex, vector_record
from application.memory.metering import ProviderMeter, complete_text, metered_as
from application.memory.ports import MemoryRepository, StoredMemory
from application.ports import Embedder, ModelCatalog, ProviderClients, VectorStore
from domain.chat import ChatMessage, ChatRequest, Role
from domain.errors import DomainError, InvalidRequest
from domain.events import ChatTurnCompleted, MemoryIngested
from domain.memory.consolidation import (
    Add,
    CandidateFact,
    Delete,
    Noop,
    Observation,
    Update,
    apply,
    decay_importance,
    decide,
    extractive_summary,
    promotions,
)
from domain.memory.extraction import duplicate_of, reinforced
from domain.memory.graph import Edge
from domain.memory.tiers import (
    Fact,
    SemanticMemory,
    Tier,
    Turn,
    fact_key,
    normalize_term,
)
from domain.memory.vectors import Eq, MetadataFilter, cosine_similarity, validate_tenant
from domain.ports import Clock, IdGenerator

__all__ = [
    "ConsolidateMemory",
    "ConsolidationPolicy",
    "ConsolidationReport",
    "ConsolidationStore",
    "ExtractiveSummarizer",
    "Outcome",
    "ProviderSummarizer",
    "RememberTurn",
    "Summarizer",
    "Summary",
    "SweepMemory",
    "summary_id",
]

MAX_TURN_TEXT = 16_000
FACTS_CONVERSATION = "_facts"  # the conversation id facts are stored under


class Outcome(msgspec.Struct, frozen=True):
    """One explicit consolidation result. ``memory_id`` is the memory added, changed, deleted or
    (for NOOP) already known; ``old_id`` the fact an UPDATE superseded."""

    op: Literal["add", "update", "delete", "noop"]
    kind: Literal["fact", "summary", "turn"]
    memory_id: str | None
    reason: str
    old_id: str | None = None


class ConsolidationReport(msgspec.Struct, frozen=True):
    tenant_id: str
    user_id: str
    turns: int  # pending turns consolidated in this run
    decayed: int  # memories whose importance decay was written
    outcomes: tuple[Outcome, ...] = ()

    def count(self, op: str, kind: str | None = None) -> int:
        return sum(1 for o in self.outcomes if o.op == op and (kind is None or o.kind == kind))


class ConsolidationPolicy(msgspec.Struct, frozen=True):
    duplicate_threshold: float = 0.95
    duplicate_candidates: int = 8  # earlier memories (by vector) whose own texts are compared
    min_sessions: int = 2
    fact_threshold: float = 0.92
    half_life: float = 30 * 86400.0
    floor: float = 0.05
    summary_min_turns: int = 4
    summary_every: int = 4
    summary_window: int = 80  # the most recent turns a summary covers (extractive is quadratic)
    summary_sentences: int = 3
    batch: int = 500

    def __post_init__(self) -> None:
        if (
            self.min_sessions < 1 or self.summary_min_turns < 1 or self.summary_every < 1 or self.batch < 1
            or self.duplicate_candidates < 1
        ):
            raise InvalidRequest.single("policy", "counts must be >= 1")
        if not -1.0 <= self.duplicate_threshold <= 1.0:
            raise InvalidRequest.single("duplicate_threshold", "must be a cosine in [-1, 1]")


class Summary(msgspec.Struct, frozen=True):
    text: str
    source_ids: tuple[str, ...]
    via: str  # "extractive" or "provider <model>"


class Summarizer(Protocol):
    async def summarize(self, turns: Sequence[StoredMemory], max_sentences: int) -> Summary:
        """A summary of ``turns`` (chronological, one conversation), with its source turn ids."""
        ...


class ConsolidationStore(MemoryRepository, Protocol):
    """What consolidation needs beyond ``MemoryRepository``; all scoped to one tenant except
    ``scopes`` (the sweep's list of users)."""

    def lock(self, tenant_id: str, user_id: str) -> AbstractAsyncContextManager[None]:
        """Held while one user is consolidated (across processes)."""
        ...

    async def pending(self, tenant_id: str, user_id: str, limit: int) -> list[StoredMemory]:
        """Unconsolidated episodic turns (not summaries), oldest first."""
        ...

    async def mark_consolidated(self, tenant_id: str, ids: Sequence[str]) -> None: ...

    async def merge(self, tenant_id: str, keep_id: str, drop_id: str, importance: float, at: float) -> list[str]:
        """Merge ``drop_id`` into ``keep_id``: its conversation's ``follows`` chain is joined around
        it, its other edges move to ``keep_id`` (no self-loops), it is deleted, and ``keep_id``'s
        importance is set (its decay clock restarting at ``at``). Returns the ids of the memories
        that were next to it (their context windows need re-indexing)."""
        ...

    async def add_observations(self, tenant_id: str, user_id: str, observations: Sequence[Observation]) -> None: ...

    async def forget_observations(self, tenant_id: str, user_id: str, retraction: Observation) -> None:
        """Drop observations of the retracted subject+predicate (+object, when it names one) made
        at or before the retraction: they must not be promoted afterwards."""
        ...

    async def observations(self, tenant_id: str, user_id: str, keys: Iterable[tuple[str, str]]) -> list[Observation]:
        """Observations whose normalised (subject, predicate) is among ``keys``."""
        ...

    async def facts(self, tenant_id: str, user_id: str, keys: Iterable[tuple[str, str]]) -> list[Fact]:
        """The user's facts (current and closed) whose normalised (subject, predicate) is among ``keys``."""
        ...

    async def save_facts(
        self, tenant_id: str, user_id: str, facts: Sequence[Fact], conversations: Mapping[str, str]
    ) -> None:
        """Insert or replace facts as semantic memories (``conversations``: fact id -> conversation)."""
        ...

    async def conversation_turns(
        self, tenant_id: str, user_id: str, conversation_id: str, limit: int
    ) -> list[StoredMemory]:
        """The conversation's most recent ``limit`` turns (episodic, not summaries), chronological."""
        ...

    async def importance_rows(self, tenant_id: str, user_id: str) -> list[tuple[str, float, float]]:
        """(id, importance, when it was last set) of every memory of the user."""
        ...

    async def set_importance(self, tenant_id: str, values: Mapping[str, float], at: float) -> None: ...

    async def scopes(self, after: tuple[str, str] | None, limit: int) -> list[tuple[str, str]]:
        """(tenant, user) pairs that have memories, ordered, strictly after ``after``."""
        ...


def summary_id(user: str, conversation: str) -> str:
    """The id of a conversation's summary memory (one per user and conversation)."""
    digest = hashlib.blake2b(f"{user}\0{conversation}".encode(), digest_size=12).hexdigest()
    return f"summary-{digest}"


def _spoken(memory: StoredMemory) -> str:
    return memory.text.removeprefix(f"{memory.role}: ") if memory.role else memory.text


class ExtractiveSummarizer:
    """The most central sentences (``domain.memory.consolidation.extractive_summary``)."""

    async def summarize(self, turns: Sequence[StoredMemory], max_sentences: int) -> Summary:
        domain_turns = [Turn(t.id, t.conversation_id, t.role, t.text, t.at) for t in turns]
        summary = extractive_summary(domain_turns, "summary", turns[0].conversation_id, turns[-1].at, max_sentences)
        return Summary(summary.text, summary.source_turn_ids, "extractive")


_SUMMARY_PROMPT = (
    "Summarise this conversation in at most {n} sentences for a memory store: the facts, "
    "preferences, plans and decisions it contains, in the third person. Reply with the summary only."
)


class ProviderSummarizer:
    """Asks ``model`` (resolved in the catalogue, served by its provider) for the summary; on any
    provider or catalogue error falls back to ``fallback`` and says so in ``via``."""

    def __init__(
        self, catalog: ModelCatalog, providers: ProviderClients, model: str, fallback: Summarizer | None = None,
        *, meter: ProviderMeter | None = None,
    ) -> None:
        self._catalog = catalog
        self._providers = providers
        self._model = model
        self._fallback = fallback or ExtractiveSummarizer()
        self._meter = meter  # usage rows and budgets (operation memory.summary)

    async def summarize(self, turns: Sequence[StoredMemory], max_sentences: int) -> Summary:
        transcript = "\n".join(f"{t.role or 'note'}: {_spoken(t)}"[:2000] for t in turns)
        request = ChatRequest(
            messages=(
                ChatMessage(Role.SYSTEM, _SUMMARY_PROMPT.format(n=max_sentences)),
                ChatMessage(Role.USER, transcript),
            ),
            model=self._model,
            max_tokens=400,
            temperature=0.0,
        )
        try:
            answer = await complete_text(
                self._catalog, self._providers, request, meter=self._meter, tenant_id=turns[0].tenant_id,
                user_id=turns[0].user_id, operation="memory.summary",
            )
            text = " ".join(answer.split())
        except DomainError as exc:
            fallen = await self._fallback.summarize(turns, max_sentences)
            return msgspec.structs.replace(fallen, via=f"{fallen.via} (provider {self._model} failed: {exc.code})")
        return Summary(text, tuple(t.id for t in turns), f"provider {self._model}")


class ConsolidateMemory:
    def __init__(
        self,
        store: ConsolidationStore,
        vectors: VectorStore,
        embedder: Embedder,
        ids: IdGenerator,
        clock: Clock,
        summarizer: Summarizer | None = None,
        policy: ConsolidationPolicy | None = None,
        *,
        reindex: Reindex | None = None,
        extractor: FactExtractor | None = None,
    ) -> None:
        self._extractor = extractor or RuleFactExtractor()
        self._reindex = reindex  # IngestTurns.reindex: the neighbours of a merged turn get new context windows
        self._store = store
        self._vectors = vectors
        self._embedder = embedder
        self._ids = ids
        self._clock = clock
        self._summarizer = summarizer or ExtractiveSummarizer()
        self._policy = policy or ConsolidationPolicy()

    async def __call__(self, tenant: str, user: str, *, decay: bool = False) -> ConsolidationReport:
        validate_tenant(tenant)
        if not user:
            raise InvalidRequest.single("user_id", "must be non-empty")
        with metered_as(tenant, user):  # provider embeddings made here are charged to this user
            return await self._consolidate(tenant, user, decay)

    async def _consolidate(self, tenant: str, user: str, decay: bool) -> ConsolidationReport:
        async with self._store.lock(tenant, user):
            now = self._clock.now().timestamp()
            decayed = await self._decay(tenant, user, now) if decay else 0
            outcomes: list[Outcome] = []
            turns = 0
            while True:
                pending = await self._store.pending(tenant, user, self._policy.batch)
                if not pending:
                    break
                turns += len(pending)
                survivors, merged = await self._merge_duplicates(tenant, user, pending, outcomes, now)
                # a merged turn still counts as a sighting (in its own conversation) of what it said,
                # attributed to the memory it was merged into
                sightings = [(m, m.id) for m in survivors] + merged
                await self._facts(tenant, user, sightings, outcomes)
                await self._summaries(tenant, user, dict.fromkeys(m.conversation_id for m in pending), outcomes)
                await self._store.mark_consolidated(tenant, [m.id for m in survivors])
                if len(pending) < self._policy.batch:
                    break
        return ConsolidationReport(tenant, user, turns, decayed, tuple(outcomes))

    async def _decay(self, tenant: str, user: str, now: float) -> int:
        p = self._policy
        updates: dict[str, float] = {}
        for memory_id, importance, since in await self._store.importance_rows(tenant, user):
            decayed = decay_importance(importance, since, now, p.half_life, p.floor)
            if importance - decayed >= 0.005:
                updates[memory_id] = decayed
        await self._store.set_importance(tenant, updates, now)
        return len(updates)

    async def _merge_duplicates(
        self, tenant: str, user: str, pending: list[StoredMemory], outcomes: list[Outcome], now: float
    ) -> tuple[list[StoredMemory], list[tuple[StoredMemory, str]]]:
        """Returns the turns that stay and the (merged turn, memory it was merged into) pairs.
        Candidates come from the vector store (whatever a memory's vector is built from, e.g. a
        context window, a memory saying the same thing ranks near); the decision compares the
        memories' own texts, embedded alone.

        Vectors are context windows, so a memory's own ``follows`` neighbours rank first (their
        windows contain its text) and do not take any of the ``duplicate_candidates`` slots; and a
        duplicate elsewhere may rank below *its* neighbours' windows. So the candidates are the
        hits, the turns next to them and the memory's own neighbours (same user, tier and role),
        each compared by its own text."""
        vectors = await self._embedder.embed([m.text for m in pending])
        adjacent: dict[str, set[str]] = {}
        for edge in await self._store.edges_touching(tenant, [m.id for m in pending], ["follows"]):
            adjacent.setdefault(edge.source, set()).add(edge.target)
            adjacent.setdefault(edge.target, set()).add(edge.source)
        survivors: list[StoredMemory] = []
        pairs: list[tuple[StoredMemory, str]] = []
        merged: set[str] = set()
        k = self._policy.duplicate_candidates
        for memory, vector in zip(pending, vectors, strict=True):
            where = MetadataFilter.of(Eq("user_id", user), Eq("tier", memory.tier.value), Eq("role", memory.role))
            skip = adjacent.get(memory.id, set()) | {memory.id}
            hits = [h.id for h in await self._vectors.query(tenant, vector, k + len(skip), where) if h.id not in skip][:k]
            around, _ = await self._store.with_neighbours(tenant, [*hits, *skip])
            earlier = [
                (m.at, m.id, m.text)
                for m in sorted(around, key=lambda m: (m.at, m.id))
                if m.id != memory.id and m.id not in merged and m.text and m.user_id == user
                and m.tier is memory.tier and m.role == memory.role and (m.at, m.id) < (memory.at, memory.id)
            ]
            own = await self._embedder.embed([text for _, _, text in earlier]) if earlier else []
            others = [(at, hid, cosine_similarity(vector, v)) for (at, hid, _), v in zip(earlier, own, strict=True)]
            target = duplicate_of((memory.at, memory.id), others, self._policy.duplicate_threshold)
            kept = (await self._store.get_many(tenant, [target[0]])) if target is not None else []
            if target is None or not kept:
                survivors.append(memory)
                continue
            keep_id, similarity = target
            neighbours = await self._store.merge(
                tenant, keep_id, memory.id, reinforced(kept[0].importance, memory.importance), now
            )
            await self._vectors.delete(tenant, [memory.id])
            joined = set(neighbours)  # the chain closed around the merged turn: its neighbours now touch
            for n in joined:
                adjacent.setdefault(n, set()).update(joined - {n})
            if neighbours and self._reindex is not None:
                await self._reindex(tenant, neighbours)
            merged.add(memory.id)
            pairs.append((memory, keep_id))
            outcomes.append(
                Outcome("delete", "turn", memory.id, f"near-duplicate of {keep_id} (cosine {similarity:.3f}); merged into it")
            )
            outcomes.append(Outcome("update", "turn", keep_id, f"absorbed near-duplicate {memory.id}; importance reinforced"))
        return survivors, pairs

    async def _facts(
        self, tenant: str, user: str, sightings: list[tuple[StoredMemory, str]], outcomes: list[Outcome]
    ) -> None:
        """``sightings``: (turn, id of the memory its statements are attributed to)."""
        observed: list[Observation] = []
        retractions: list[Observation] = []
        direct: list[CandidateFact] = []  # dialogue facts (events, plans, preferences...): facts at once
        extracted = await self._extractor.extract([m for m, _ in sightings])
        for (memory, turn_id), statements in zip(sightings, extracted, strict=True):
            for s in statements:
                if s.kind != "relation":
                    at = memory.at if s.valid_from is None else s.valid_from
                    direct.append(CandidateFact(
                        s.subject, s.predicate, s.object, s.text, at, (turn_id,), importance=0.5, retraction=s.retraction,
                    ))
                    continue
                seen = Observation(s.subject, s.predicate, s.object, s.text, memory.conversation_id, turn_id, memory.at)
                (retractions if s.retraction else observed).append(seen)
        if not observed and not retractions and not direct:
            return
        await self._store.add_observations(tenant, user, observed)
        for retraction in retractions:
            await self._store.forget_observations(tenant, user, retraction)
        keys = {fact_key(o.subject, o.predicate) for o in (*observed, *retractions, *direct)}
        history = await self._store.observations(tenant, user, keys)
        before = {f.id: f for f in await self._store.facts(tenant, user, keys)}
        semantic = SemanticMemory(tuple(before.values()))
        candidates = [
            CandidateFact(r.subject, r.predicate, r.object, r.text, r.at, (r.turn_id,), retraction=True)
            for r in retractions
        ]
        candidates += _merge_sightings(direct)
        promoted = promotions(history, self._policy.min_sessions, semantic)
        candidates += [p.candidate for p in promoted]
        promoted_keys = {fact_key(p.candidate.subject, p.candidate.predicate) for p in promoted}
        for o in observed:  # a contradiction of a current fact supersedes it at once
            current = semantic.current_for(o.subject, o.predicate)
            key = fact_key(o.subject, o.predicate)
            if current is not None and key not in promoted_keys and normalize_term(current.object) != normalize_term(o.object):
                candidates.append(CandidateFact(o.subject, o.predicate, o.object, o.text, o.at, (o.turn_id,), importance=0.6))
                promoted_keys.add(key)
        candidates.sort(key=lambda c: (c.at, fact_key(c.subject, c.predicate), c.retraction))
        edges: list[Edge] = []
        fresh: list[Fact] = []
        for candidate in candidates:
            decision = decide(candidate, semantic, self._ids.new_id(), self._policy.fact_threshold)
            semantic, made = apply(semantic, decision)
            edges += made
            match decision:
                case Add(fact=fact, reason=reason):
                    fresh.append(fact)
                    outcomes.append(Outcome("add", "fact", fact.id, f"{reason}: {fact.text}"))
                case Update(old_id=old_id, fact=fact, reason=reason):
                    fresh.append(semantic.get(fact.id))
                    outcomes.append(Outcome("update", "fact", fact.id, f"{reason}: {fact.text}", old_id=old_id))
                case Delete(old_id=old_id, reason=reason):
                    outcomes.append(Outcome("delete", "fact", old_id, f"{reason}: {candidate.text}"))
                case Noop(existing_id=existing, reason=reason):
                    outcomes.append(Outcome("noop", "fact", existing, f"{reason}: {candidate.text}"))
        changed = [f for f in semantic.facts if before.get(f.id) != f]
        if not changed:
            return
        # facts belong to no conversation (their sessions are in the provenance): a fact must never
        # be a conversation's latest memory, which the next turn would follow
        await self._store.save_facts(tenant, user, changed, dict.fromkeys((f.id for f in changed), FACTS_CONVERSATION))
        await self._store.add_edges(tenant, edges)
        if fresh:
            vectors = await self._embedder.embed([f.text for f in fresh])
            stored = {m.id: m for m in await self._store.get_many(tenant, [f.id for f in fresh])}
            await self._vectors.upsert(
                tenant, [vector_record(stored[f.id], v) for f, v in zip(fresh, vectors, strict=True) if f.id in stored]
            )

    async def _summaries(
        self, tenant: str, user: str, conversations: Iterable[str], outcomes: list[Outcome]
    ) -> None:
        p = self._policy
        for conversation in conversations:
            turns = await self._store.conversation_turns(tenant, user, conversation, p.summary_window)
            sid = summary_id(user, conversation)
            if len(turns) < p.summary_min_turns:
                outcomes.append(Outcome("noop", "summary", None, f"{conversation}: {len(turns)} turns, too few to summarise"))
                continue
            existing = await self._store.get_many(tenant, [sid])
            if existing:
                last = existing[0].source_id
                ids = [t.id for t in turns]
                newer = len(ids) - ids.index(last) - 1 if last in ids else len(ids)
                if newer < p.summary_every:
                    outcomes.append(Outcome("noop", "summary", sid, f"{conversation}: {newer} newer turns; summary current"))
                    continue
            summary = await self._summarizer.summarize(turns, p.summary_sentences)
            memory = StoredMemory(
                id=sid,
                tenant_id=tenant,
                user_id=user,
                conversation_id=conversation,
                tier=Tier.EPISODIC,
                text=f"summary: {summary.text}",
                at=turns[0].at,  # the start of the span: never the conversation's latest memory
                role="summary",
                importance=0.6,
                source_id=turns[-1].id,  # the last turn summarised
            )
            (vector,) = await self._embedder.embed([memory.text])
            await self._store.add(tenant, [memory])
            await self._store.mark_consolidated(tenant, [sid])
            await self._store.add_edges(tenant, [Edge(sid, t, "derived_from") for t in summary.source_ids if t != sid])
            await self._vectors.upsert(tenant, [vector_record(memory, vector)])
            op: Literal["add", "update"] = "update" if existing else "add"
            outcomes.append(Outcome(op, "summary", sid, f"{summary.via} summary of {len(turns)} turns of {conversation}"))


def _merge_sightings(candidates: Sequence[CandidateFact]) -> list[CandidateFact]:
    """One candidate per fact (subject, predicate, object, retraction) of this batch: the latest
    sighting, with the provenance of all of them (a fact said twice in a batch is one fact)."""
    groups: dict[tuple[str, str, str, bool], list[CandidateFact]] = {}
    for c in candidates:
        groups.setdefault((*fact_key(c.subject, c.predicate), normalize_term(c.object), c.retraction), []).append(c)
    out: list[CandidateFact] = []
    for group in groups.values():
        latest = max(group, key=lambda c: c.at)
        sources = tuple(dict.fromkeys(t for c in group for t in c.source_turn_ids))
        out.append(msgspec.structs.replace(latest, source_turn_ids=sources))
    return out


class RememberTurn:
    """The ``ChatTurnCompleted`` consumer: store the exchange (user and assistant turns, ids
    derived from the event id, so a redelivered event is stored once), then consolidate."""

    def __init__(self, ingest: IngestTurns, store: MemoryRepository, consolidate: ConsolidateMemory) -> None:
        self._ingest = ingest
        self._store = store
        self._consolidate = consolidate

    async def __call__(self, event: ChatTurnCompleted) -> ConsolidationReport | None:
        if not event.user_id:
            return None  # nobody to remember it for
        tenant, user = event.tenant_id, event.user_id
        conversation = event.conversation_id or f"request-{event.request_id}"
        ids = (f"{event.event_id}-u", f"{event.event_id}-a")
        if not await self._store.get_many(tenant, ids):
            at = event.occurred_at.timestamp()
            with metered_as(tenant, user):
                await self._ingest(
                    tenant,
                    user,
                    conversation,
                    [
                        TurnInput("user", event.user_text[:MAX_TURN_TEXT], at, source_id=event.request_id, id=ids[0]),
                        TurnInput("assistant", event.assistant_text[:MAX_TURN_TEXT], at + 0.001, source_id=event.request_id, id=ids[1]),
                    ],
                )
        return await self._consolidate(tenant, user)


async def consolidate_ingested(consolidate: ConsolidateMemory, event: MemoryIngested) -> ConsolidationReport:
    """The ``MemoryIngested`` consumer: consolidate that user."""
    return await consolidate(event.tenant_id, event.user_id)


class SweepMemory:
    """The scheduled pass: every user with memories is consolidated with decay. A user whose
    pass fails with a domain error is reported in ``failures`` and the sweep goes on."""

    def __init__(self, store: ConsolidationStore, consolidate: ConsolidateMemory, page: int = 200) -> None:
        self._store = store
        self._consolidate = consolidate
        self._page = page
        self.failures: list[tuple[str, str, str]] = []

    async def __call__(self) -> list[ConsolidationReport]:
        reports: list[ConsolidationReport] = []
        self.failures = []
        after: tuple[str, str] | None = None
        while True:
            scopes = await self._store.scopes(after, self._page)
            for tenant, user in scopes:
                try:
                    reports.append(await self._consolidate(tenant, user, decay=True))
                except DomainError as exc:
                    self.failures.append((tenant, user, exc.code))
            if len(scopes) < self._page:
                return reports
            after = scopes[-1]
