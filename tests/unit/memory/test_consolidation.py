"""ADD / UPDATE / DELETE / NOOP decisions, decay, promotion and extractive summaries."""

from __future__ import annotations

import pytest

from domain.errors import InvalidRequest
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
    split_sentences,
)
from domain.memory.graph import Edge
from domain.memory.tiers import Fact, SemanticMemory, Turn

DAY = 86400.0


def cand(obj: str, at: float, text: str | None = None, **kw: object) -> CandidateFact:
    subject = kw.pop("subject", "alice")
    predicate = kw.pop("predicate", "lives in")
    return CandidateFact(subject, predicate, obj, text or f"{subject} {predicate} {obj}", at, ("t1",), **kw)  # type: ignore[arg-type]


def stored(*candidates_and_ids: tuple[CandidateFact, str]) -> SemanticMemory:
    memory = SemanticMemory()
    for c, fid in candidates_and_ids:
        memory, _ = apply(memory, decide(c, memory, fid))
    return memory


def test_new_information_is_added_with_provenance_edges() -> None:
    memory = SemanticMemory()
    decision = decide(cand("Paris", 10.0), memory, "f1")
    assert isinstance(decision, Add) and decision.fact.id == "f1" and decision.fact.valid_from == 10.0
    memory, edges = apply(memory, decision)
    assert memory.current_for("alice", "lives in") is not None
    assert edges == (Edge("f1", "t1", "derived_from"),)


def test_restating_a_known_fact_is_a_noop_unless_more_specific_and_newer() -> None:
    memory = stored((cand("Paris", 10.0), "f1"))
    same = decide(cand("paris", 20.0), memory, "f2")
    assert isinstance(same, Noop) and same.existing_id == "f1"
    richer = decide(cand("Paris", 20.0, "alice lives in Paris near the Louvre since 2019"), memory, "f2")
    assert isinstance(richer, Update) and richer.old_id == "f1" and "specific" in richer.reason
    older_richer = decide(cand("Paris", 5.0, "alice lives in Paris near the Louvre since 2019"), memory, "f2")
    assert isinstance(older_richer, Noop)


def test_a_contradiction_supersedes_the_current_fact() -> None:
    memory = stored((cand("Paris", 10.0), "f1"))
    decision = decide(cand("Berlin", 20.0), memory, "f2")
    assert isinstance(decision, Update) and decision.old_id == "f1" and "contradicts" in decision.reason
    memory, edges = apply(memory, decision)
    assert memory.get("f1").valid_to == 20.0 and memory.current_for("alice", "lives in").object == "Berlin"  # type: ignore[union-attr]
    assert Edge("f2", "f1", "supersedes") in edges
    stale = decide(cand("Rome", 15.0), memory, "f3")
    assert isinstance(stale, Noop) and "older" in stale.reason


def test_an_explicit_retraction_closes_validity() -> None:
    memory = stored((cand("Paris", 10.0), "f1"))
    wrong_object = decide(cand("Rome", 30.0, retraction=True), memory, "x")
    assert isinstance(wrong_object, Noop)
    decision = decide(cand("Paris", 30.0, retraction=True), memory, "x")
    assert decision == Delete("f1", 30.0)
    memory, edges = apply(memory, decision)
    assert memory.current() == () and memory.get("f1").valid_to == 30.0 and edges == ()
    assert isinstance(decide(cand("", 40.0, retraction=True), memory, "x"), Noop)
    wildcard = decide(cand("", 40.0, retraction=True), stored((cand("Oslo", 1.0), "g")), "x")
    assert isinstance(wildcard, Delete) and wildcard.old_id == "g"


def test_near_duplicates_by_cosine_across_different_wording() -> None:
    memory = stored((cand("sushi", 10.0, "alice likes sushi", predicate="likes", vector=(1.0, 0.0)), "f1"))
    dup = cand("sushi a lot", 20.0, "alice loves sushi", predicate="enjoys", vector=(0.99, 0.05))
    d = decide(dup, memory, "f2", threshold=0.95)
    assert isinstance(d, Noop) and d.existing_id == "f1" and "near-duplicate" in d.reason
    richer = cand("sushi", 20.0, "alice really enjoys salmon sushi rolls", predicate="enjoys", vector=(0.99, 0.05))
    u = decide(richer, memory, "f2", threshold=0.95)
    assert isinstance(u, Update) and u.old_id == "f1"
    far = cand("jazz", 20.0, "alice enjoys jazz", predicate="enjoys", vector=(0.0, 1.0))
    assert isinstance(decide(far, memory, "f3", threshold=0.95), Add)
    assert isinstance(decide(dup, memory, "f2", threshold=0.9999), Add)


def test_non_retraction_candidates_need_an_object() -> None:
    with pytest.raises(InvalidRequest, match="object"):
        decide(cand("  ", 1.0), SemanticMemory(), "f")


def test_importance_decays_towards_the_floor() -> None:
    assert decay_importance(0.85, 0.0, 0.0, DAY) == pytest.approx(0.85)
    assert decay_importance(0.85, 0.0, DAY, DAY, floor=0.05) == pytest.approx(0.45)
    assert decay_importance(0.85, 0.0, 100 * DAY, DAY, floor=0.05) == pytest.approx(0.05)
    assert decay_importance(0.01, 0.0, DAY, DAY, floor=0.05) == 0.01
    with pytest.raises(InvalidRequest):
        decay_importance(0.5, 0.0, 1.0, 0.0)


def obs(session: str, turn: str, at: float, obj: str = "tea") -> Observation:
    return Observation("Bob", "drinks", obj, f"bob drinks {obj}", session, turn, at)


def test_facts_seen_in_enough_sessions_are_promoted() -> None:
    observations = [obs("s1", "t1", 1), obs("s1", "t2", 2), obs("s2", "t3", 3), obs("s3", "t4", 4, "coffee")]
    assert promotions(observations, 3) == ()
    (promo,) = promotions(observations, 2)
    assert promo.session_ids == ("s1", "s2")
    c = promo.candidate
    assert c.source_turn_ids == ("t1", "t2", "t3") and c.at == 3 and c.importance == pytest.approx(0.7)
    memory, _ = apply(SemanticMemory(), decide(c, SemanticMemory(), "f1"))
    assert promotions(observations, 2, memory) == ()  # already semantic


def test_extractive_summary_picks_central_sentences_in_original_order() -> None:
    turns = [
        Turn("t1", "s", "user", "We planned the trip to Paris. The weather is nice.", 1.0),
        Turn("t2", "s", "assistant", "Paris trip planning needs a hotel. Bananas are yellow.", 2.0),
        Turn("t3", "s", "user", "Book the hotel in Paris for the trip!", 3.0),
    ]
    summary = extractive_summary(turns, "sum", "s", 10.0, max_sentences=2)
    # the sentence sharing most with the others (paris, trip, hotel) is the most central
    assert summary.text == "Paris trip planning needs a hotel. Book the hotel in Paris for the trip!"
    assert summary.source_turn_ids == ("t2", "t3")
    assert "Bananas" not in extractive_summary(turns, "sum", "s", 10.0, max_sentences=3).text
    assert extractive_summary([], "e", "s", 1.0).text == ""


def test_split_sentences() -> None:
    assert split_sentences("One. Two!  Three? four") == ["One.", "Two!", "Three?", "four"]


def test_fact_helpers_unchanged_by_noop() -> None:
    memory = stored((cand("Paris", 10.0), "f1"))
    after, edges = apply(memory, Noop("f1", "x"))
    assert after == memory and edges == ()
    assert isinstance(memory.facts[0], Fact)
