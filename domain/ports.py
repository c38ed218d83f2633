"""Ports the domain needs. Adapters implement them; tests use hand-written fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Protocol

from domain.chat import ChatRequest, Chunk, EmbeddingRequest, Embeddings

__all__ = ["Clock", "IdGenerator", "ProviderClient"]


class Clock(Protocol):
    def now(self) -> datetime:
        """Wall-clock time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin, for durations."""
        ...


class IdGenerator(Protocol):
    def new_id(self) -> str:
        """A new unique, URL-safe id (time-ordered where the adapter can)."""
        ...


class ProviderClient(Protocol):
    """One configured provider. Streams unified chunks; raises ``domain.errors.ProviderError``
    subclasses for vendor failures before the first chunk, and may raise them mid-stream.

    The stream ends with at most one ``UsageChunk`` and exactly one ``Finish``. Closing the
    iterator (``aclose``) must close the upstream request promptly.

    Optionally, ``complete(upstream_model, request) -> AsyncIterator[Chunk]``: the same answer from
    one non-streaming upstream call, as the chunks ``stream`` would give (each text, reasoning and
    tool call whole, then at most one ``UsageChunk`` and exactly one ``Finish``), with the same
    errors. The chat use case calls it for a client that asked for the whole answer; a client
    without it is streamed (``application.streaming.whole_answer``).
    """

    name: str

    def stream(self, upstream_model: str, request: ChatRequest) -> AsyncIterator[Chunk]: ...

    async def embed(self, upstream_model: str, request: EmbeddingRequest) -> Embeddings:
        """Embed ``request.inputs``; providers without embeddings raise UpstreamInvalidRequest."""
        ...

    async def aclose(self) -> None: ...
