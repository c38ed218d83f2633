"""Prompts waiting for their answer stream: the form post stores one, the SSE request takes it.

Bounded, so a page that posts and never connects cannot grow the console's memory: past
``capacity`` the oldest waiting prompt is dropped (its stream then reports that it expired).
"""

from __future__ import annotations

import secrets
from collections import OrderedDict

import msgspec

__all__ = ["PendingPrompt", "PendingPrompts"]


class PendingPrompt(msgspec.Struct, frozen=True):
    prompt: str
    model: str = ""
    conversation_id: str = ""


class PendingPrompts:
    def __init__(self, capacity: int = 256) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._items: OrderedDict[str, PendingPrompt] = OrderedDict()

    def put(self, prompt: PendingPrompt) -> str:
        """Store ``prompt`` and return the unguessable id its stream is fetched by."""
        turn_id = secrets.token_urlsafe(16)
        self._items[turn_id] = prompt
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)
        return turn_id

    def take(self, turn_id: str) -> PendingPrompt | None:
        """Remove and return the prompt stored under ``turn_id``; each id streams once."""
        return self._items.pop(turn_id, None)

    def __len__(self) -> int:
        return len(self._items)
