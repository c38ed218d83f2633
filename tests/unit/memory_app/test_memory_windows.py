"""Context windows: what IngestTurns indexes a turn by, and the passages SearchMemory returns
(on the in-memory fakes of the ports)."""

from __future__ import annotations

import pytest

from application.memory import IngestTurns, SearchMemory, TurnInput
from application.memory.ingest import window_text
from application.memory.search import approximate_tokens
from domain.errors import InvalidRequest
from tests.unit.memory_app.fakes import FakeMemoryRepository, FakeVectorStore
from tests.unit.memory_app.hashing import HashEmbedder
from tests.unit.memory_app.test_memory_use_cases import NOW, Clock, Ids

TURNS = [
    TurnInput("alice", "Did you ever find a teacher for the cello?", NOW - 600, "D1:1"),
    TurnInput("bob", "Yes, Mrs Okafor, every Tuesday evening.", NOW - 540, "D1:2"),
    TurnInput("alice", "The weather was awful all week.", NOW - 480, "D1:3"),
    TurnInput("bob", "My sister moved to Porto.", NOW - 420, "D1:4"),
]


class RecordingEmbedder(HashEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    async def embed(self, texts):  # type: ignore[no-untyped-def]
        self.texts += list(texts)
        return await super().embed(texts)


def parts(window: int = 1):  # type: ignore[no-untyped-def]
    repo, store, embedder = FakeMemoryRepository(), FakeVectorStore(), RecordingEmbedder()
    ingest = IngestTurns(repo, store, embedder, Ids(), window=window)
    return ingest, SearchMemory(repo, store, embedder, Clock(), window=window), repo, store, embedder


async def test_a_turn_is_indexed_with_its_neighbours_and_earlier_windows_grow_with_later_turns() -> None:
    ingest, _, repo, store, embedder = parts()
    first = await ingest("t1", "u1", "c1", TURNS[:2])
    a, b = (m.text for m in first)
    assert repo.windows[("t1", first[0].id)] == window_text([a, b])
    assert repo.windows[("t1", first[1].id)] == window_text([a, b])  # its next turn is not known yet
    assert embedder.texts == [window_text([a, b]), window_text([a, b])]
    assert first[1].text == "bob: Yes, Mrs Okafor, every Tuesday evening."  # the memory keeps its own text

    later = await ingest("t1", "u1", "c1", TURNS[2:])
    c, d = (m.text for m in later)
    # The last earlier turn is re-indexed: its window now reaches into the new turn.
    assert repo.windows[("t1", first[1].id)] == window_text([a, b, c])
    assert repo.windows[("t1", later[0].id)] == window_text([b, c, d])
    assert embedder.texts[2:] == [window_text([a, b, c]), window_text([b, c, d]), window_text([c, d])]
    assert set(store.records) == {("t1", m.id) for m in first + later}


async def test_window_zero_indexes_each_turn_alone() -> None:
    ingest, _, repo, _, embedder = parts(window=0)
    stored = await ingest("t1", "u1", "c1", TURNS)
    assert repo.windows == {} and embedder.texts == [m.text for m in stored]


async def test_search_returns_passages_that_answer_with_the_turn_replied_to() -> None:
    ingest, search, *_ = parts()
    await ingest("t1", "u1", "c1", TURNS)
    response = await search("t1", "u1", "who teaches the cello?", k=2)
    top = response.results[0]
    shown = [top.source_id, *(c.source_id for c in (*top.before, *top.after))]
    assert {"D1:1", "D1:2"} <= set(shown)  # the question and its answer, together
    assert "Okafor" in top.passage and "cello" in top.passage
    assert top.tokens == approximate_tokens(top.passage)
    ids = [r.id for r in response.results] + [c.id for r in response.results for c in (*r.before, *r.after)]
    assert len(ids) == len(set(ids))  # no memory is shown twice
    assert response.tokens_used == sum(r.tokens + 4 for r in response.results)


async def test_reindex_rebuilds_windows_from_the_current_neighbours() -> None:
    ingest, _, repo, store, _ = parts()
    stored = await ingest("t1", "u1", "c1", TURNS)
    repo.windows.clear()
    assert await ingest.reindex("t1", [stored[1].id, "unknown"]) == 1
    assert repo.windows == {("t1", stored[1].id): window_text([m.text for m in stored[:3]])}
    assert await ingest.reindex("t1", ["unknown"]) == 0
    with pytest.raises(InvalidRequest):
        IngestTurns(repo, store, HashEmbedder(), Ids(), window=-1)
