"""The pre-call cost estimate of a request on one model, from token counts and the registry's
prices (the price in force at the request's time, from the model's price history)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import msgspec

from domain.cost import Price
from domain.errors import InvalidRequest
from domain.registry import PricePoint

__all__ = ["CostEstimate", "estimate_cost", "price_at"]


class CostEstimate(msgspec.Struct, frozen=True, gc=False):
    """Micro-dollars (1e-6 USD) per part and in total. ``effective_from`` says which price applied
    (None: the route's current price, no history given)."""

    input_micros: int
    cached_input_micros: int
    output_micros: int
    reasoning_micros: int
    total_micros: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    effective_from: datetime | None = None


def price_at(history: Iterable[PricePoint], at: datetime, current: Price) -> tuple[Price, datetime | None]:
    """The price in force at ``at`` and since when; ``current`` (the route's) when the history
    starts later or is empty."""
    best: PricePoint | None = None
    for point in history:
        if point.effective_from <= at and (best is None or point.effective_from >= best.effective_from):
            best = point
    if best is None:
        return current, None
    return best.price, best.effective_from


def estimate_cost(
    price: Price,
    *,
    input_tokens: int,
    output_tokens: int,
    cached_input_tokens: int = 0,
    reasoning_tokens: int = 0,
    reasoning_per_mtok: float | None = None,
    effective_from: datetime | None = None,
) -> CostEstimate:
    """``input_tokens`` includes ``cached_input_tokens`` (billed at the cached rate);
    ``reasoning_tokens`` are hidden output on top of the visible ``output_tokens``, billed at the
    output rate unless ``reasoning_per_mtok`` says otherwise (every vendor catalogued today bills
    them as output; the registry has no separate reasoning price). Rounding is per part, so the
    parts add up to the total."""
    if min(input_tokens, output_tokens, cached_input_tokens, reasoning_tokens) < 0:
        raise InvalidRequest.single("tokens", "token counts cannot be negative")
    if cached_input_tokens > input_tokens:
        raise InvalidRequest.single("cached_input_tokens", "cannot exceed input_tokens")
    if reasoning_per_mtok is not None and reasoning_per_mtok < 0:
        raise InvalidRequest.single("reasoning_per_mtok", "a price cannot be negative")
    reasoning_rate = price.output_per_mtok if reasoning_per_mtok is None else reasoning_per_mtok
    inp = round((input_tokens - cached_input_tokens) * price.input_per_mtok)
    cached = round(cached_input_tokens * price.cached_input_per_mtok)
    out = round(output_tokens * price.output_per_mtok)
    reasoning = round(reasoning_tokens * reasoning_rate)
    return CostEstimate(
        input_micros=inp,
        cached_input_micros=cached,
        output_micros=out,
        reasoning_micros=reasoning,
        total_micros=inp + cached + out + reasoning,
        input_tokens=input_tokens,
        cached_input_tokens=cached_input_tokens,
        output_tokens=output_tokens,
        reasoning_tokens=reasoning_tokens,
        effective_from=effective_from,
    )

