"""Tiers (working context, facts with validity, supersede/retract) and the graph's neighbourhood."""

from __future__ import annotations

import pytest

from domain.errors import InvalidRequest, NotFound
from domain.memory.graph import Edge, MemoryGraph, Node
from domain.memory.tiers import (
    Fact,
    SemanticMemory,
    SessionSummary,
    Turn,
    WorkingContext,
)


def fact(fid: str, obj: str, at: float, subject: str = "alice", predicate: str = "lives in") -> Fact:
    return Fact(fid, subject, predicate, obj, f"{subject} {predicate} {obj}", ("t-" + fid,), at)


def turn(tid: str, at: float, session: str = "s1", text: str = "hi") -> Turn:
    return Turn(tid, session, "user", text, at)


def test_fact_validity_is_half_open() -> None:
    f = fact("f1", "Paris", 100.0).closed(200.0)
    assert f.valid_at(100.0) and f.valid_at(199.9)
    assert not f.valid_at(200.0) and not f.valid_at(99.0)
    assert not f.is_current


def test_fact_requires_provenance_and_ordered_interval() -> None:
    with pytest.raises(InvalidRequest, match="provenance"):
        Fact("f", "a", "b", "c", "a b c", (), 1.0)
    with pytest.raises(InvalidRequest, match="valid_to"):
        Fact("f", "a", "b", "c", "a b c", ("t",), 10.0, valid_to=5.0)
    with pytest.raises(InvalidRequest, match="already closed"):
        fact("f", "x", 1.0).closed(2.0).closed(3.0)


def test_a_newer_fact_supersedes_the_old_one_instead_of_deleting_it() -> None:
    memory, _ = SemanticMemory().add(fact("f1", "Paris", 100.0))
    memory, edges = memory.add(fact("f2", "Berlin", 500.0, subject=" Alice ", predicate="LIVES  in"))
    old, new = memory.get("f1"), memory.get("f2")
    assert old.valid_to == 500.0 and new.is_current and new.supersedes == "f1"
    assert Edge("f2", "f1", "supersedes") in edges and Edge("f2", "t-f2", "derived_from") in edges
    assert [f.id for f in memory.history("alice", "lives in")] == ["f1", "f2"]
    assert memory.current_for("ALICE", "lives in") == new
    assert [f.id for f in memory.valid_at(300.0)] == ["f1"]


def test_supersede_rejects_closed_or_earlier_facts() -> None:
    memory, _ = SemanticMemory().add(fact("f1", "Paris", 100.0))
    with pytest.raises(InvalidRequest, match="cannot start before"):
        memory.supersede("f1", fact("f0", "Rome", 50.0))
    memory = memory.retract("f1", 150.0)
    assert memory.get("f1").valid_to == 150.0 and memory.current() == ()
    with pytest.raises(InvalidRequest, match="no longer current"):
        memory.supersede("f1", fact("f2", "Rome", 200.0))
    with pytest.raises(NotFound):
        memory.get("nope")


def test_semantic_memory_rejects_two_current_facts_for_one_key_and_duplicate_ids() -> None:
    with pytest.raises(InvalidRequest, match="two current"):
        SemanticMemory((fact("a", "x", 1.0), fact("b", "y", 2.0)))
    with pytest.raises(InvalidRequest, match="duplicate"):
        SemanticMemory((fact("a", "x", 1.0), fact("a", "y", 2.0, predicate="works at")))


def test_working_context_evicts_the_oldest_turns() -> None:
    ctx = WorkingContext(max_turns=2)
    ctx, out1 = ctx.push(turn("t1", 1))
    ctx, out2 = ctx.push(turn("t2", 2))
    ctx, out3 = ctx.push(turn("t3", 3))
    assert out1 == out2 == () and [t.id for t in out3] == ["t1"]
    assert [t.id for t in ctx.turns] == ["t2", "t3"]
    assert ctx.follows_edges() == (Edge("t3", "t2", "follows"),)


def test_session_summary_links_to_its_turns() -> None:
    s = SessionSummary("sum1", "s1", "text", 10.0, ("t1", "t2"))
    assert s.derived_from_edges() == (Edge("sum1", "t1", "derived_from"), Edge("sum1", "t2", "derived_from"))


def _graph() -> MemoryGraph:
    nodes = [Node(i, "memory") for i in ("m1", "m2", "m3", "m4")] + [Node("paris", "entity"), Node("travel", "topic")]
    edges = [
        Edge("m1", "paris", "mentions"),
        Edge("m2", "paris", "mentions"),
        Edge("m2", "travel", "about"),
        Edge("m3", "travel", "about"),
        Edge("m4", "m3", "follows"),
    ]
    return MemoryGraph(nodes, edges)


def test_neighbourhood_respects_depth_kinds_and_direction() -> None:
    g = _graph()
    assert g.neighbourhood("m1", 0) == {"m1": 0}
    assert g.neighbourhood("m1", 2) == {"m1": 0, "paris": 1, "m2": 2}
    assert g.neighbourhood("m1", 4) == {"m1": 0, "paris": 1, "m2": 2, "travel": 3, "m3": 4}
    assert g.neighbourhood("m1", 4, kinds={"mentions"}) == {"m1": 0, "paris": 1, "m2": 2}
    assert g.neighbourhood("m3", 1, direction="out") == {"m3": 0, "travel": 1}
    assert g.neighbourhood("m3", 1, direction="in") == {"m3": 0, "m4": 1}
    assert g.neighbourhood("ghost", 3) == {}
    with pytest.raises(InvalidRequest, match="unknown edge kinds"):
        g.neighbourhood("m1", 1, kinds={"likes"})


def test_graph_is_immutable_and_checks_edges() -> None:
    g = _graph()
    g2 = g.with_nodes(Node("m5", "memory")).with_edges(Edge("m5", "m1", "follows"), Edge("m5", "m1", "follows"))
    assert "m5" not in g and "m5" in g2
    assert len(g2.edges) == len(g.edges) + 1
    with pytest.raises(InvalidRequest, match="unknown node"):
        g.with_edges(Edge("m1", "nowhere", "follows"))
    with pytest.raises(InvalidRequest, match="already a"):
        g.with_nodes(Node("paris", "topic"))
    with pytest.raises(InvalidRequest):
        Edge("a", "b", "likes")  # type: ignore[arg-type]


def test_superseding_across_keys_still_leaves_one_current_fact_per_key() -> None:
    memory, _ = SemanticMemory().add(fact("f1", "sushi", 10.0, predicate="likes"))
    memory, _ = memory.add(fact("f2", "ramen", 20.0, predicate="enjoys"))
    # a reworded near-duplicate of f1 whose key ("alice", "enjoys") already has f2
    memory, edges = memory.supersede("f1", fact("f3", "salmon sushi", 30.0, predicate="enjoys"))
    assert [f.id for f in memory.current()] == ["f3"]
    assert memory.get("f1").valid_to == 30.0 and memory.get("f2").valid_to == 30.0
    assert edges[0] == Edge("f3", "f1", "supersedes")
