"""Packing ranked memories into a token budget.

Greedy in rank order: each memory is taken when its tokens (``count_tokens(text)`` plus a fixed
per-item ``overhead`` for separators/headers) still fit; one that does not fit is skipped and the
next, smaller one may still be taken. The total never exceeds the budget.

``pack_passages`` packs *passages*: each ranked hit shown with its context (the memories around it
in its conversation, e.g. the turn it answers), the way a reader needs it. In rank order: a hit
already shown inside an earlier passage is not repeated (``merged_ids``); a passage leaves out the
context memories earlier passages already show, so no memory costs tokens twice; a passage that
does not fit is tried without its context, then skipped. ``max_items`` counts passages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import msgspec
import msgspec.structs

from domain.errors import InvalidRequest
from domain.memory.ranking import MemoryCandidate, RankedMemory

__all__ = ["PackedMemories", "PackedPassages", "Passage", "pack", "pack_passages"]


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


class Passage(msgspec.Struct, frozen=True):
    """A hit with the context shown around it (oldest first on each side)."""

    hit: RankedMemory
    before: tuple[MemoryCandidate, ...] = ()
    after: tuple[MemoryCandidate, ...] = ()
    tokens: int = 0  # count_tokens(text), without the per-item overhead

    @property
    def id(self) -> str:
        return self.hit.id

    @property
    def memories(self) -> tuple[MemoryCandidate, ...]:
        return (*self.before, self.hit.memory, *self.after)

    @property
    def text(self) -> str:
        return passage_text(self.memories)


class PackedPassages(msgspec.Struct, frozen=True):
    selected: tuple[Passage, ...]
    tokens_used: int
    skipped_ids: tuple[str, ...]  # hits ranked but over the budget or beyond max_items
    merged_ids: tuple[str, ...] = ()  # hits not repeated: an earlier passage already shows them


def passage_text(memories: Sequence[MemoryCandidate]) -> str:
    """The memories' texts, one per line."""
    return "\n".join(m.text for m in memories)


def pack_passages(
    ranked: Sequence[RankedMemory],
    context: Mapping[str, tuple[Sequence[MemoryCandidate], Sequence[MemoryCandidate]]],
    budget: int,
    count_tokens: Callable[[str], int],
    *,
    overhead: int = 0,
    max_items: int | None = None,
) -> PackedPassages:
    """Pack ranked hits as passages; ``context[id] = (before, after)`` (hits without an entry get
    none). See the module docstring."""
    if budget < 0 or overhead < 0:
        raise InvalidRequest.single("budget", "budget and overhead must be >= 0")
    selected: list[Passage] = []
    skipped: list[str] = []
    merged: list[str] = []
    shown: set[str] = set()
    used = 0
    for item in ranked:
        if item.id in shown:
            merged.append(item.id)
            continue
        if max_items is not None and len(selected) >= max_items:
            skipped.append(item.id)
            continue
        before, after = context.get(item.id, ((), ()))
        full = Passage(
            item,
            tuple(m for m in before if m.id not in shown and m.id != item.id),
            tuple(m for m in after if m.id not in shown and m.id != item.id),
        )
        for passage in (full, Passage(item)) if full.before or full.after else (full,):
            tokens = count_tokens(passage.text)
            if tokens < 0:
                raise InvalidRequest.single("count_tokens", "returned a negative count")
            if used + tokens + overhead <= budget:
                selected.append(msgspec.structs.replace(passage, tokens=tokens))
                shown.update(m.id for m in passage.memories)
                used += tokens + overhead
                break
        else:
            skipped.append(item.id)
    return PackedPassages(tuple(selected), used, tuple(skipped), tuple(merged))
