"""Fakes of the chat-side ports: a scripted provider, a fixed clock, sequential ids."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

from domain.chat import ChatRequest, Chunk
from domain.errors import NotFound

__all__ = ["FixedClock", "ScriptedProvider", "SequentialIds", "StaticProviders"]


class FixedClock:
    def __init__(self, start: datetime | None = None, step: float = 0.0) -> None:
        self._now = start or datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        self._mono = 100.0
        self.step = step

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        self._mono += self.step
        return self._mono


class SequentialIds:
    def __init__(self, prefix: str = "id") -> None:
        self._n = 0
        self._prefix = prefix

    def new_id(self) -> str:
        self._n += 1
        return f"{self._prefix}{self._n:04d}"


class ScriptedProvider:
    """Yields ``script`` items; an exception item is raised at that point. Records what it saw."""

    def __init__(self, name: str, script: Sequence[Chunk | Exception]) -> None:
        self.name = name
        self.script = list(script)
        self.requests: list[tuple[str, ChatRequest]] = []
        self.yielded = 0
        self.closed_streams = 0
        self.closed = False

    async def stream(self, upstream_model: str, request: ChatRequest) -> AsyncIterator[Chunk]:
        self.requests.append((upstream_model, request))
        try:
            for item in self.script:
                if isinstance(item, Exception):
                    raise item
                self.yielded += 1
                yield item
        finally:
            self.closed_streams += 1

    async def aclose(self) -> None:
        self.closed = True


class StaticProviders:
    def __init__(self, *clients: ScriptedProvider) -> None:
        self._clients = {c.name: c for c in clients}

    def get(self, provider: str) -> ScriptedProvider:
        try:
            return self._clients[provider]
        except KeyError:
            raise NotFound("provider", provider) from None
