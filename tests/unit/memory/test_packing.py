"""Packing ranked memories into a token budget."""

from __future__ import annotations

import pytest

from domain.errors import InvalidRequest
from domain.memory.packing import pack, pack_passages
from domain.memory.ranking import MemoryCandidate, RankedMemory, ScoreExplanation
from domain.memory.tiers import Tier


def ranked(mid: str, words: int) -> RankedMemory:
    e = ScoreExplanation(0, 0, 0, 0, 0, 0, 0)
    return RankedMemory(MemoryCandidate(mid, " ".join(["w"] * words), Tier.EPISODIC, 0.0), 0.0, e)


def words(text: str) -> int:
    return len(text.split())


def test_greedy_in_rank_order_skipping_what_does_not_fit() -> None:
    items = [ranked("a", 5), ranked("big", 20), ranked("b", 4), ranked("c", 2)]
    packed = pack(items, 12, words)
    assert [r.id for r in packed.selected] == ["a", "b", "c"] and packed.tokens_used == 11
    assert packed.skipped_ids == ("big",)


def test_overhead_and_max_items_count() -> None:
    items = [ranked("a", 5), ranked("b", 4), ranked("c", 2)]
    with_overhead = pack(items, 12, words, overhead=2)  # 7 + (6 does not fit) + 4
    assert [r.id for r in with_overhead.selected] == ["a", "c"] and with_overhead.tokens_used == 11
    capped = pack(items, 100, words, max_items=1)
    assert [r.id for r in capped.selected] == ["a"] and capped.skipped_ids == ("b", "c")
    assert pack(items, 0, words).selected == ()
    with pytest.raises(InvalidRequest):
        pack(items, -1, words)


def memory(mid: str, words: int = 1) -> MemoryCandidate:
    return MemoryCandidate(mid, " ".join([mid] * words), Tier.EPISODIC, 0.0)


def test_passages_show_context_once_and_merge_hits_already_shown() -> None:
    items = [ranked("b", 1), ranked("c", 1), ranked("e", 1)]
    context = {
        "b": ((memory("a"),), (memory("c"),)),
        "c": ((memory("b"),), (memory("d"),)),
        "e": ((memory("d"),), (memory("f"),)),
    }
    packed = pack_passages(items, context, 100, words)
    assert [[m.id for m in p.memories] for p in packed.selected] == [["a", "b", "c"], ["d", "e", "f"]]
    assert packed.merged_ids == ("c",)  # shown after b: not repeated
    assert [p.tokens for p in packed.selected] == [3, 3] and packed.tokens_used == 6
    assert packed.selected[0].text == "a\nw\nc"  # the hit's own text (ranked() makes "w") between its context


def test_a_passage_that_does_not_fit_is_tried_without_its_context() -> None:
    items = [ranked("a", 2), ranked("b", 2)]
    context = {"a": ((memory("x", 5),), ()), "b": ((), (memory("y", 1),))}
    packed = pack_passages(items, context, 5, words, overhead=0, max_items=5)
    assert [(p.id, [m.id for m in p.memories]) for p in packed.selected] == [("a", ["a"]), ("b", ["b", "y"])]
    assert packed.tokens_used == 5 and packed.skipped_ids == ()
    assert pack_passages(items, context, 1, words).skipped_ids == ("a", "b")
    capped = pack_passages(items, context, 100, words, max_items=1)
    assert [p.id for p in capped.selected] == ["a"] and capped.skipped_ids == ("b",)
    with pytest.raises(InvalidRequest):
        pack_passages(items, context, -1, words)
