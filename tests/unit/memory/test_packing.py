"""Packing ranked memories into a token budget."""

from __future__ import annotations

import pytest

from domain.errors import InvalidRequest
from domain.memory.packing import pack
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
