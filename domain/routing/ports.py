"""Ports routing needs: a token counter, a store of circuit breakers shared across replicas, and a
source of randomness (retry jitter). Adapters implement them; unit tests use hand-written fakes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from domain.chat import ChatRequest
from domain.routing.breaker import Breaker, BreakerPolicy

__all__ = ["BreakerStore", "RandomSource", "TokenCounter"]


class TokenCounter(Protocol):
    def count_text(self, text: str, model: str = "") -> int:
        """Tokens of ``text`` in ``model``'s tokenizer (an approximation where it is not known)."""
        ...

    def count_prompt(self, request: ChatRequest, model: str = "") -> int:
        """Tokens the request's prompt takes: messages with their per-message framing, tool
        definitions and the response schema; images at a fixed estimate each."""
        ...


class BreakerStore(Protocol):
    """Circuit breakers by key (``breaker_key``), the same for every replica. Each operation applies
    the domain's transition (``Breaker.admit`` / ``Breaker.record``) atomically: two replicas never
    both take the last half-open probe slot, and no outcome is lost to a concurrent update.
    ``now`` is wall-clock epoch seconds. Failures of the store raise ``domain.errors.Unavailable``."""

    async def get_many(self, keys: Sequence[str]) -> dict[str, Breaker]:
        """The breakers of ``keys`` (a key never written is a closed breaker)."""
        ...

    async def admit(self, key: str, now: float, policy: BreakerPolicy) -> bool:
        """Whether a call may go ahead; a half-open breaker hands out its probe slots."""
        ...

    async def record(self, key: str, ok: bool, now: float, policy: BreakerPolicy) -> Breaker:
        """Record one call's outcome; the breaker after it."""
        ...


class RandomSource(Protocol):
    def random(self) -> float:
        """A float in [0, 1) (``random.Random`` satisfies this)."""
        ...
