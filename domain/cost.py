"""Prices and the cost of a request, in integer micro-dollars (1e-6 USD) to avoid float drift."""

from __future__ import annotations

from dataclasses import dataclass

from domain.chat import Usage
from domain.errors import InvalidRequest

__all__ = ["Price"]


@dataclass(frozen=True, slots=True)
class Price:
    """USD per one million tokens (so, numerically, micro-dollars per token)."""

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    cached_input_per_mtok: float = 0.0

    def __post_init__(self) -> None:
        for name in ("input_per_mtok", "output_per_mtok", "cached_input_per_mtok"):
            if getattr(self, name) < 0:
                raise InvalidRequest.single(name, "a price cannot be negative")

    def cost_micros(self, usage: Usage) -> int:
        uncached = max(usage.input_tokens - usage.cached_input_tokens, 0)
        micros = (
            uncached * self.input_per_mtok
            + usage.cached_input_tokens * self.cached_input_per_mtok
            + usage.output_tokens * self.output_per_mtok
        )
        return round(micros)
