"""Hooks the chat path calls around a provider call, so features that enrich a conversation
(long-term memory today) stay out of ``StreamChat`` itself.

``StreamChat`` calls every hook's ``prepare`` before routing (a hook may return a changed request:
e.g. memories injected as a system message within the request's token budget), and every hook's
``completed`` after the answer, when settling: the events it returns are committed in the same
transaction as the usage row (through the outbox), so nothing is lost if the process dies after
the client saw ``Finish``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

import msgspec

from domain.chat import ChatRequest
from domain.events import DomainEvent
from domain.identity import Principal

__all__ = ["ChatHook", "CompletedTurn", "PreparedChat"]


class PreparedChat(msgspec.Struct, frozen=True):
    """A hook's answer to ``prepare``: the request to send on, and what it added (for metadata)."""

    request: ChatRequest
    # e.g. {"memories": "5", "memory_tokens": "812"}; surfaced in response metadata
    notes: dict[str, str] = {}


class CompletedTurn(msgspec.Struct, frozen=True):
    """What a hook learns when a request finished: the caller's request and the answer's text."""

    request_id: str
    request: ChatRequest  # the request as the caller sent it (before any hook changed it)
    answer_text: str
    provider: str
    model: str
    occurred_at: datetime


class ChatHook(Protocol):
    async def prepare(self, principal: Principal, request: ChatRequest) -> PreparedChat: ...

    def completed(self, principal: Principal, turn: CompletedTurn) -> Sequence[DomainEvent]: ...
