"""Prices and the cost of a request, in integer micro-dollars (1e-6 USD) to avoid float drift."""

from __future__ import annotations

import msgspec

from domain.chat import Usage

__all__ = ["Price"]


class Price(msgspec.Struct, frozen=True):
    """USD per one million tokens."""

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    cached_input_per_mtok: float = 0.0

    def cost_micros(self, usage: Usage) -> int:
        uncached = max(usage.input_tokens - usage.cached_input_tokens, 0)
        # price per 1M tokens in USD == micro-dollars per token
        micros = (
            uncached * self.input_per_mtok
            + usage.cached_input_tokens * self.cached_input_per_mtok
            + usage.output_tokens * self.output_per_mtok
        )
        return round(micros)
