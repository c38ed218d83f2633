"""RRF, graph expansion, recency/importance, MMR, filters and score explanations."""

from __future__ import annotations

import pytest

from domain.errors import InvalidRequest
from domain.memory.graph import Edge, MemoryGraph, Node
from domain.memory.ranking import (
    MemoryCandidate,
    MemoryFilter,
    RankingWeights,
    rank,
    recency,
    reciprocal_rank_fusion,
)
from domain.memory.tiers import Tier

DAY = 86400.0
NOW = 1000 * DAY
NO_EXTRAS = RankingWeights(graph=0.0, recency=0.0, importance=0.0, mmr_lambda=1.0)


def mem(mid: str, text: str = "", at: float = NOW, **kw: object) -> MemoryCandidate:
    return MemoryCandidate(mid, text or f"memory {mid}", kw.pop("tier", Tier.EPISODIC), at, **kw)  # type: ignore[arg-type]


def test_rrf_sums_reciprocal_ranks() -> None:
    scores = reciprocal_rank_fusion([["a", "b"], ["b", "c", "b"]], k=60)
    assert scores["a"] == pytest.approx(1 / 61)
    assert scores["b"] == pytest.approx(1 / 62 + 1 / 61)  # repeated id counts once, at its best rank
    assert scores["c"] == pytest.approx(1 / 62)


def test_an_item_in_both_lists_beats_items_in_one() -> None:
    cands = {m.id: m for m in (mem("a"), mem("b"), mem("c"))}
    ranked = rank(cands, ["a", "b"], ["c", "b"], NOW, weights=NO_EXTRAS)
    assert [r.id for r in ranked] == ["b", "a", "c"]
    top = ranked[0].explanation
    assert top.rrf == pytest.approx(1.0) and top.fulltext_rank == 2 and top.vector_rank == 2
    assert ranked[1].explanation.vector_rank is None


def test_recency_halves_every_half_life() -> None:
    assert recency(NOW, NOW, DAY) == 1.0
    assert recency(NOW - 2 * DAY, NOW, DAY) == pytest.approx(0.25)
    assert recency(NOW + DAY, NOW, DAY) == 1.0


def test_recency_and_importance_reorder_equally_relevant_hits() -> None:
    old = mem("old", at=NOW - 60 * DAY)
    new = mem("new", at=NOW)
    # same fused score (rank 1 in one list each)
    w = RankingWeights(graph=0.0, recency=0.5, importance=0.0, half_life=30 * DAY, mmr_lambda=1.0)
    ranked = rank({"old": old, "new": new}, ["old"], ["new"], NOW, weights=w)
    assert [r.id for r in ranked] == ["new", "old"]
    assert ranked[1].explanation.recency == pytest.approx(0.5 * 0.25)
    vip = mem("vip", importance=1.0, at=NOW - 60 * DAY)
    w2 = RankingWeights(graph=0.0, recency=0.1, importance=0.5, half_life=30 * DAY, mmr_lambda=1.0)
    ranked = rank({"vip": vip, "new": new}, ["vip"], ["new"], NOW, weights=w2)
    assert [r.id for r in ranked] == ["vip", "new"]
    assert ranked[0].explanation.importance == pytest.approx(0.5)


def test_graph_expansion_brings_in_neighbours_with_decayed_scores() -> None:
    cands = {m.id: m for m in (mem("hit"), mem("near"), mem("far"), mem("off"))}
    graph = MemoryGraph(
        [Node(i, "memory") for i in cands] + [Node("paris", "entity")],
        [Edge("hit", "paris", "mentions"), Edge("near", "paris", "mentions"), Edge("far", "near", "follows")],
    )
    w = RankingWeights(graph=1.0, recency=0.0, importance=0.0, depth=3, decay=0.5, mmr_lambda=1.0)
    ranked = rank(cands, ["hit"], [], NOW, graph=graph, weights=w)
    by_id = {r.id: r.explanation for r in ranked}
    assert set(by_id) == {"hit", "near", "far"}  # "off" is not connected
    assert by_id["near"].graph == pytest.approx(0.25) and by_id["near"].graph_hops == 2
    assert by_id["far"].graph == pytest.approx(0.125) and by_id["far"].graph_hops == 3
    assert by_id["hit"].graph == 0.0 and by_id["hit"].graph_hops is None
    only_mentions = RankingWeights(graph=1.0, recency=0.0, importance=0.0, depth=3, edge_kinds=frozenset({"mentions"}))
    assert {r.id for r in rank(cands, ["hit"], [], NOW, graph=graph, weights=only_mentions)} == {"hit", "near"}


def test_mmr_demotes_near_duplicates() -> None:
    a = mem("a", vector=(1.0, 0.0))
    a2 = mem("a2", vector=(0.99, 0.01))
    b = mem("b", vector=(0.0, 1.0))
    cands = {m.id: m for m in (a, a2, b)}
    plain = rank(cands, ["a", "a2", "b"], ["a", "a2", "b"], NOW, weights=NO_EXTRAS)
    assert [r.id for r in plain] == ["a", "a2", "b"]
    diverse_w = RankingWeights(graph=0.0, recency=0.0, importance=0.0, mmr_lambda=0.5)
    diverse = rank(cands, ["a", "a2", "b"], ["a", "a2", "b"], NOW, weights=diverse_w)
    assert [r.id for r in diverse] == ["a", "b", "a2"]
    a2_expl = diverse[2].explanation
    assert a2_expl.mmr_penalty > 0.49
    assert diverse[0].explanation.mmr_penalty == 0.0


def test_mmr_without_vectors_uses_token_overlap() -> None:
    cands = {
        "x": mem("x", "paris trip museum louvre"),
        "y": mem("y", "paris trip museum louvre again"),
        "z": mem("z", "cooking pasta dinner"),
    }
    w = RankingWeights(graph=0.0, recency=0.0, importance=0.0, mmr_lambda=0.5)
    assert [r.id for r in rank(cands, ["x", "y", "z"], [], NOW, weights=w)] == ["x", "z", "y"]


def test_every_explanation_adds_up_to_its_score() -> None:
    cands = {f"m{i}": mem(f"m{i}", f"text {i} shared", at=NOW - i * DAY, importance=i / 10) for i in range(8)}
    graph = MemoryGraph([Node(i, "memory") for i in cands], [Edge("m0", "m7", "follows")])
    ranked = rank(cands, ["m0", "m1", "m2"], ["m3", "m1"], NOW, graph=graph, weights=RankingWeights(mmr_lambda=0.6))
    assert {r.id for r in ranked} == {"m0", "m1", "m2", "m3", "m7"}
    for r in ranked:
        e = r.explanation
        assert e.base == pytest.approx(e.rrf + e.graph + e.recency + e.importance)
        assert r.score == pytest.approx(0.6 * e.base - e.mmr_penalty) == e.score


def test_filters_by_tier_topic_entity_and_time() -> None:
    cands = {
        "fact": mem("fact", tier=Tier.SEMANTIC, topic_ids=("travel",), entities=("paris",), at=NOW - 5 * DAY),
        "turn": mem("turn", tier=Tier.EPISODIC, topic_ids=("food",), entities=("rome",), at=NOW - 1 * DAY),
    }
    hits = (["fact", "turn"], ["turn"])

    def ids(f: MemoryFilter) -> list[str]:
        return sorted(r.id for r in rank(cands, *hits, NOW, filters=f))

    assert ids(MemoryFilter()) == ["fact", "turn"]
    assert ids(MemoryFilter(tiers=frozenset({Tier.SEMANTIC}))) == ["fact"]
    assert ids(MemoryFilter(topics=frozenset({"food", "music"}))) == ["turn"]
    assert ids(MemoryFilter(entities=frozenset({"paris"}))) == ["fact"]
    assert ids(MemoryFilter(start=NOW - 2 * DAY)) == ["turn"]
    assert ids(MemoryFilter(end=NOW - 2 * DAY)) == ["fact"]
    assert ids(MemoryFilter(start=NOW - 5 * DAY, end=NOW - 5 * DAY)) == []


def test_filtered_out_memories_are_not_reached_by_expansion_and_unknown_hits_are_dropped() -> None:
    cands = {"a": mem("a"), "b": mem("b", tier=Tier.SEMANTIC)}
    graph = MemoryGraph([Node("a", "memory"), Node("b", "memory")], [Edge("a", "b", "follows")])
    f = MemoryFilter(tiers=frozenset({Tier.EPISODIC}))
    assert [r.id for r in rank(cands, ["a", "ghost"], [], NOW, graph=graph, filters=f)] == ["a"]


def test_limit_and_weight_validation() -> None:
    cands = {f"m{i}": mem(f"m{i}") for i in range(5)}
    assert len(rank(cands, list(cands), [], NOW, limit=2)) == 2
    with pytest.raises(InvalidRequest):
        RankingWeights(mmr_lambda=0.0)
    with pytest.raises(InvalidRequest):
        RankingWeights(half_life=0)


def test_mmr_only_reorders_the_head_of_the_list() -> None:
    # Six near-duplicates on top and a distinct memory last: with limit 2, MMR looks at the best
    # four only, so the distinct one (sixth by base score) cannot jump the queue.
    dup = "paris trip museum louvre"
    cands = {f"d{i}": mem(f"d{i}", dup) for i in range(6)} | {"z": mem("z", "cooking pasta dinner")}
    order = [*(f"d{i}" for i in range(6)), "z"]
    w = RankingWeights(graph=0.0, recency=0.0, importance=0.0, mmr_lambda=0.5)
    assert [r.id for r in rank(cands, order, [], NOW, weights=w, limit=2)] == ["d0", "d1"]
    assert [r.id for r in rank(cands, order, [], NOW, weights=w, limit=4)][:2] == ["d0", "z"]


def _naive_mmr(items, lam, limit):  # type: ignore[no-untyped-def]
    """MMR as the module docstring states it, with set-algebra Jaccard and no shortcuts."""
    from domain.memory.ranking import _similarity

    pool = sorted(items, key=lambda p: (-p[1], p[0].id))
    chosen: list = []
    while len(chosen) < min(limit, len(pool)):
        best = None
        for memory, base in pool:
            if any(memory.id == c[0].id for c in chosen):
                continue
            sim = max((_similarity(memory, c[0]) for c in chosen), default=0.0)
            value = lam * base - (1 - lam) * sim
            if best is None or value > best[0]:
                best = (value, memory, base, (1 - lam) * sim)
        assert best is not None
        chosen.append((best[1], best[2], best[3]))
    return chosen


def test_mmr_with_bit_mask_jaccard_picks_what_set_algebra_picks() -> None:
    import random

    from domain.memory.ranking import MemoryCandidate, mmr_select

    rng = random.Random(3)
    words = [f"w{i}" for i in range(40)]
    for _ in range(30):
        items = []
        for n in range(rng.randint(1, 25)):
            text = " ".join(rng.sample(words, rng.randint(0, 8)))
            vector = tuple(rng.uniform(-1, 1) for _ in range(4)) if rng.random() < 0.3 else None
            items.append((MemoryCandidate(f"m{n:02d}", text, Tier.EPISODIC, 0.0, vector=vector), rng.random()))
        lam, limit = rng.choice([0.3, 0.7, 1.0]), rng.randint(0, 12)
        got = [(m.id, base, pytest.approx(p)) for m, base, p in mmr_select(items, lam, limit)]
        assert got == [(m.id, base, p) for m, base, p in _naive_mmr(items, lam, limit)]
