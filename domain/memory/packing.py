"""Packing ranked memories into a token budget.

Greedy in rank order: each memory is taken when its tokens (``count_tokens(text)`` plus a fixed
per-item ``overhead`` for separators/headers) still fit; one that does not fit is skipped and the
next, smaller one may still be taken. The total never exceeds the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

from domain.errors import InvalidRequest
from domain.memory.ranking import RankedMemory

__all__ = ["PackedMemories", "pack"]


class PackedMemories(msgspec.Struct, frozen=True):
    selected: tuple[RankedMemory, ...]
    tokens_used: int
    skipped_ids: tuple[str, ...]  # ranked but over the budget


def pack(
    ranked: Sequence[RankedMemory],
    budget: int,
    count_tokens: Callable[[str], int],
    *,
    overhead: int = 0,
    max_items: int | None = None,
) -> PackedMemories:
    if budget < 0 or overhead < 0:
        raise InvalidRequest.single("budget", "budget and overhead must be >= 0")
    selected: list[RankedMemory] = []
    skipped: list[str] = []
    used = 0
    for item in ranked:
        if max_items is not None and len(selected) >= max_items:
            skipped.append(item.id)
            continue
        tokens = count_tokens(item.memory.text)
        if tokens < 0:
            raise InvalidRequest.single("count_tokens", "returned a negative count")
        cost = tokens + overhead
        if used + cost <= budget:
            selected.append(item)
            used += cost
        else:
            skipped.append(item.id)
    return PackedMemories(tuple(selected), used, tuple(skipped))
