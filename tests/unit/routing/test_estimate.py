"""Pre-call cost estimates: tokens times the price in force at the time (effective dates), per
part (input, cached input, output, reasoning), consistent with how actual usage is billed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.chat import Usage
from domain.cost import Price
from domain.errors import InvalidRequest
from domain.registry import PricePoint
from domain.routing import estimate_cost, price_at

JAN = datetime(2026, 1, 1, tzinfo=UTC)
MAR = datetime(2026, 3, 1, tzinfo=UTC)


def test_parts_add_up_and_reasoning_is_billed_as_output_by_default() -> None:
    price = Price(input_per_mtok=2.5, output_per_mtok=10.0, cached_input_per_mtok=1.25)
    est = estimate_cost(price, input_tokens=10_000, cached_input_tokens=4_000, output_tokens=500, reasoning_tokens=2_000)
    assert est.input_micros == 6_000 * 2.5
    assert est.cached_input_micros == 4_000 * 1.25
    assert est.output_micros == 500 * 10
    assert est.reasoning_micros == 2_000 * 10
    assert est.total_micros == 15_000 + 5_000 + 5_000 + 20_000
    own = estimate_cost(price, input_tokens=0, output_tokens=0, reasoning_tokens=1_000, reasoning_per_mtok=3.0)
    assert own.reasoning_micros == 3_000 and own.total_micros == 3_000


def test_the_price_in_force_follows_effective_dates() -> None:
    history = [
        PricePoint("m", JAN, Price(1.0, 2.0)),
        PricePoint("m", MAR, Price(0.5, 1.0)),
    ]
    current = Price(9.0, 9.0)
    assert price_at(history, datetime(2025, 12, 31, tzinfo=UTC), current) == (current, None)
    assert price_at(history, datetime(2026, 2, 1, tzinfo=UTC), current) == (Price(1.0, 2.0), JAN)
    assert price_at(history, MAR, current) == (Price(0.5, 1.0), MAR)
    price, since = price_at(reversed(history), datetime(2026, 6, 1, tzinfo=UTC), current)
    est = estimate_cost(price, input_tokens=1_000_000, output_tokens=1_000_000, effective_from=since)
    assert est.total_micros == 1_500_000 and est.effective_from == MAR


@given(
    st.floats(0, 100), st.floats(0, 300), st.floats(0, 50),
    st.integers(0, 2_000_000), st.integers(0, 2_000_000), st.data(),
)
def test_estimate_matches_billing_of_the_same_usage(inp: float, out: float, cached: float, tokens_in: int, tokens_out: int, data) -> None:  # type: ignore[no-untyped-def]
    cached_tokens = data.draw(st.integers(0, tokens_in))
    price = Price(inp, out, cached)
    est = estimate_cost(price, input_tokens=tokens_in, cached_input_tokens=cached_tokens, output_tokens=tokens_out)
    billed = price.cost_micros(Usage(input_tokens=tokens_in, output_tokens=tokens_out, cached_input_tokens=cached_tokens))
    assert abs(est.total_micros - billed) <= 2  # rounding per part vs once
    assert est.total_micros == est.input_micros + est.cached_input_micros + est.output_micros + est.reasoning_micros


def test_bad_counts_are_refused() -> None:
    with pytest.raises(InvalidRequest):
        estimate_cost(Price(), input_tokens=10, output_tokens=0, cached_input_tokens=11)
    with pytest.raises(InvalidRequest):
        estimate_cost(Price(), input_tokens=-1, output_tokens=0)
