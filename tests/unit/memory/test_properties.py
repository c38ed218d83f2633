"""Property tests of the memory domain's invariants."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.memory.consolidation import CandidateFact, apply, decay_importance, decide
from domain.memory.graph import Edge, MemoryGraph, Node
from domain.memory.packing import pack
from domain.memory.ranking import (
    MemoryCandidate,
    MemoryFilter,
    RankedMemory,
    RankingWeights,
    ScoreExplanation,
    rank,
    reciprocal_rank_fusion,
)
from domain.memory.tiers import SemanticMemory, Tier
from domain.memory.topics import TopicModel

FAST = settings(max_examples=150, deadline=None)
IDS = st.sampled_from([f"m{i}" for i in range(12)])
HIT_LIST = st.lists(IDS, max_size=10)


def _ranked(mid: str, text: str) -> RankedMemory:
    return RankedMemory(MemoryCandidate(mid, text, Tier.EPISODIC, 0.0), 0.0, ScoreExplanation(0, 0, 0, 0, 0, 0, 0))


@FAST
@given(
    texts=st.lists(st.text(alphabet="ab ", max_size=40), max_size=15),
    budget=st.integers(0, 60),
    overhead=st.integers(0, 5),
)
def test_packing_never_exceeds_the_budget_and_is_greedy(texts: list[str], budget: int, overhead: int) -> None:
    items = [_ranked(f"m{i}", t) for i, t in enumerate(texts)]

    def count(text: str) -> int:
        return len(text.split())

    packed = pack(items, budget, count, overhead=overhead)
    assert packed.tokens_used <= budget
    assert packed.tokens_used == sum(count(r.memory.text) + overhead for r in packed.selected)
    chosen = [r.id for r in packed.selected]
    assert chosen == [r.id for r in items if r.id in set(chosen)]  # rank order kept
    assert sorted(chosen + list(packed.skipped_ids)) == sorted(r.id for r in items)
    used = 0
    for r in items:  # every skipped item really did not fit when its turn came
        cost = count(r.memory.text) + overhead
        if r.id in chosen:
            used += cost
        else:
            assert used + cost > budget


@FAST
@given(lists=st.lists(HIT_LIST, min_size=1, max_size=5), data=st.data())
def test_rrf_does_not_depend_on_the_order_of_the_lists(lists: list[list[str]], data: st.DataObject) -> None:
    shuffled = data.draw(st.permutations(lists))
    assert reciprocal_rank_fusion(shuffled) == reciprocal_rank_fusion(lists)


@FAST
@given(a=HIT_LIST, b=HIT_LIST)
def test_rank_is_symmetric_in_fulltext_and_vector_lists(a: list[str], b: list[str]) -> None:
    cands = {f"m{i}": MemoryCandidate(f"m{i}", f"text {i}", Tier.EPISODIC, float(i)) for i in range(12)}
    left = [(r.id, r.score) for r in rank(cands, a, b, 100.0)]
    right = [(r.id, r.score) for r in rank(cands, b, a, 100.0)]
    assert left == right


@st.composite
def ranking_case(draw: st.DrawFn) -> tuple[dict[str, MemoryCandidate], list[str], list[str], MemoryGraph, MemoryFilter]:
    n = draw(st.integers(1, 10))
    cands = {
        f"m{i}": MemoryCandidate(
            f"m{i}",
            draw(st.sampled_from(["paris trip", "paris hotel", "pasta dinner", "jazz concert", "hotel booking"])),
            draw(st.sampled_from(list(Tier))),
            draw(st.floats(0, 1000)),
            draw(st.floats(0, 1)),
            topic_ids=tuple(draw(st.sets(st.sampled_from(["t1", "t2"])))),
            vector=draw(st.none() | st.tuples(st.floats(0.1, 1), st.floats(0.1, 1))),
        )
        for i in range(n)
    }
    ids = list(cands)
    edges = draw(st.lists(st.tuples(st.sampled_from(ids), st.sampled_from(ids)), max_size=15))
    graph = MemoryGraph([Node(i, "memory") for i in ids], [Edge(s, t, "follows") for s, t in edges])
    fil = MemoryFilter(
        tiers=draw(st.none() | st.frozensets(st.sampled_from(list(Tier)), min_size=1)),
        topics=draw(st.none() | st.frozensets(st.sampled_from(["t1", "t2"]), min_size=1)),
        start=draw(st.none() | st.floats(0, 1000)),
    )
    hits = st.lists(st.sampled_from(ids + ["ghost"]), max_size=8)
    return cands, draw(hits), draw(hits), graph, fil


@FAST
@given(case=ranking_case(), lam=st.floats(0.05, 1.0), limit=st.integers(0, 12))
def test_ranked_results_are_unique_filtered_limited_and_explained(case, lam: float, limit: int) -> None:  # type: ignore[no-untyped-def]
    cands, ft, vec, graph, fil = case
    w = RankingWeights(mmr_lambda=lam, depth=2)
    results = rank(cands, ft, vec, 1000.0, graph=graph, weights=w, filters=fil, limit=limit)
    ids = [r.id for r in results]
    assert len(ids) == len(set(ids)) <= limit
    for r in results:
        e = r.explanation
        assert fil.matches(r.memory)
        assert math.isclose(e.base, e.rrf + e.graph + e.recency + e.importance, abs_tol=1e-9)
        assert math.isclose(r.score, lam * e.base - e.mmr_penalty, abs_tol=1e-9)
        assert 0.0 <= e.mmr_penalty <= (1 - lam) + 1e-9
        assert r.id in ft or r.id in vec or e.graph > 0


OBJECTS = st.sampled_from(["paris", "berlin", "rome", ""])
KEYS = st.sampled_from([("alice", "lives in"), ("Alice", "LIVES IN"), ("bob", "works at"), ("alice", "likes")])
OPS = st.lists(st.tuples(KEYS, OBJECTS, st.booleans(), st.floats(0, 100)), max_size=25)


@FAST
@given(ops=OPS)
def test_consolidation_keeps_at_most_one_current_fact_per_key_and_never_forgets(ops) -> None:  # type: ignore[no-untyped-def]
    memory = SemanticMemory()
    for n, ((subject, predicate), obj, retract, at) in enumerate(ops):
        if not obj and not retract:
            continue
        candidate = CandidateFact(subject, predicate, obj, f"{subject} {predicate} {obj}", at, (f"t{n}",), retraction=retract)
        before = len(memory.facts)
        decision = decide(candidate, memory, f"f{n}")
        memory, _ = apply(memory, decision)
        assert len(memory.facts) >= before  # nothing is ever deleted
        keys = [f.key for f in memory.current()]
        assert len(keys) == len(set(keys))
        if not retract:  # after asserting something, exactly one current fact holds for that key
            assert memory.current_for(subject, predicate) is not None
        for f in memory.facts:
            assert f.valid_to is None or f.valid_to >= f.valid_from
            if f.supersedes is not None:
                assert memory.get(f.supersedes).valid_to == f.valid_from


@FAST
@given(
    vectors=st.lists(st.tuples(st.floats(-1, 1), st.floats(-1, 1), st.floats(-1, 1)), max_size=20),
    threshold=st.floats(-1, 1),
)
def test_every_vector_lands_in_exactly_one_topic(vectors, threshold: float) -> None:  # type: ignore[no-untyped-def]
    vectors = [v for v in vectors if sum(x * x for x in v) > 1e-6]
    model = TopicModel(threshold)
    for i, v in enumerate(vectors):
        model, assignment = model.assign(f"m{i}", v, f"T{i}")
        assert assignment.created or assignment.similarity >= threshold
    members = [m for t in model.topics for m in t.member_ids]
    assert sorted(members) == sorted(f"m{i}" for i in range(len(vectors)))
    assert sum(t.size for t in model.topics) == len(vectors)
    for t in model.topics:
        assert math.sqrt(sum(c * c for c in t.centroid)) <= 1 + 1e-9


@FAST
@given(st.floats(0, 1), st.floats(0, 1e7), st.floats(0, 1e7), st.floats(1, 1e6))
def test_decay_never_rises_and_never_crosses_the_floor(imp: float, t1: float, t2: float, half: float) -> None:
    early, late = sorted((t1, t2))
    a = decay_importance(imp, 0.0, early, half, floor=0.1)
    b = decay_importance(imp, 0.0, late, half, floor=0.1)
    assert b <= a <= imp
    assert b >= min(imp, 0.1)


@FAST
@given(edges=st.lists(st.tuples(IDS, IDS), max_size=30), start=IDS, depth=st.integers(0, 4))
def test_neighbourhood_grows_with_depth_and_respects_it(edges, start: str, depth: int) -> None:  # type: ignore[no-untyped-def]
    graph = MemoryGraph([Node(f"m{i}", "memory") for i in range(12)], [Edge(s, t, "follows") for s, t in edges])
    near = graph.neighbourhood(start, depth)
    far = graph.neighbourhood(start, depth + 1)
    assert near.items() <= far.items()
    assert all(0 <= d <= depth for d in near.values()) and near[start] == 0
