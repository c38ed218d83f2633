"""Registry domain: price in force, catalogue merge, capabilities, the shipped catalogue, key masks."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from adapters.catalog import ShippedCatalogue
from application.registry import mask_key
from domain.cost import Price
from domain.errors import InvalidRequest
from domain.registry import (
    CONSERVATIVE_CAPABILITIES,
    CatalogueEntry,
    ModelCapabilities,
    ModelSource,
    PricePoint,
    ProviderKind,
    merge_catalogue,
    price_in_force,
)


def at(day: int) -> datetime:
    return datetime(2025, 1, day, tzinfo=UTC)


def test_price_in_force_is_the_latest_period_started_by_then() -> None:
    history = [PricePoint("m", at(10), Price(2, 8)), PricePoint("m", at(1), Price(1, 4)), PricePoint("m", at(20), Price(3, 9))]
    assert price_in_force(history, at(1)) == Price(1, 4)
    assert price_in_force(history, at(15)) == Price(2, 8)
    assert price_in_force(history, at(25)) == Price(3, 9)
    assert price_in_force(history, datetime(2024, 12, 31, tzinfo=UTC)) is None


def test_price_points_need_a_timezone() -> None:
    with pytest.raises(InvalidRequest):
        PricePoint("m", datetime(2025, 1, 1), Price())


CAPS = ModelCapabilities(context_window=1000, max_output_tokens=100, tools=True)
CATALOGUE = [
    CatalogueEntry(ProviderKind.OPENAI, "a", CAPS, Price(1, 2), at(1)),
    CatalogueEntry(ProviderKind.OPENAI, "b", CAPS, Price(3, 4), at(1), aliases=("b-2025",)),
    CatalogueEntry(ProviderKind.ANTHROPIC, "c", CAPS, Price(5, 6), at(1)),
]


def test_merge_marks_unlisted_catalogue_models_unavailable_and_unknown_upstream_ones_unpriced() -> None:
    routes = {r.name: r for r in merge_catalogue("oa", ProviderKind.OPENAI, CATALOGUE, ["b-2025", "new-model"])}
    assert set(routes) == {"a", "b", "new-model"}
    assert not routes["a"].available and routes["a"].priced and routes["a"].price == Price(1, 2)
    assert routes["b"].available  # listed under an alias
    new = routes["new-model"]
    assert new.available and not new.priced and new.source is ModelSource.DISCOVERED
    assert new.capabilities == CONSERVATIVE_CAPABILITIES and not new.capabilities.tools
    assert all(r.provider == "oa" for r in routes.values())


def test_merge_without_a_listing_trusts_the_catalogue_and_prefixes_names() -> None:
    routes = merge_catalogue("ant", ProviderKind.ANTHROPIC, CATALOGUE, None, prefix="ant/")
    assert [(r.name, r.upstream_model, r.available) for r in routes] == [("ant/c", "c", True)]


def test_capabilities_validate_themselves() -> None:
    with pytest.raises(InvalidRequest):
        ModelCapabilities(context_window=100, max_output_tokens=200)
    with pytest.raises(InvalidRequest):
        ModelCapabilities(parallel_tool_calls=True, tools=False)


def test_shipped_catalogue_covers_the_five_vendors_with_dated_prices() -> None:
    cat = ShippedCatalogue()
    entries = cat.entries()
    by_kind = {e.kind for e in entries}
    assert {ProviderKind.OPENAI, ProviderKind.ANTHROPIC, ProviderKind.GEMINI, ProviderKind.DEEPSEEK, ProviderKind.XAI} <= by_kind
    names = {e.model for e in entries}
    assert {"gpt-4o", "gpt-4o-mini", "gpt-4.1", "o3", "gemini-2.5-pro", "gemini-2.5-flash",
            "deepseek-chat", "deepseek-reasoner", "grok-4", "claude-sonnet-4-5", "claude-opus-4-1"} <= names
    assert cat.as_of is not None and all(s.startswith("https://") for s in cat.sources)
    gpt4o = next(e for e in entries if e.model == "gpt-4o")
    assert gpt4o.price == Price(2.50, 10.00, 1.25) and gpt4o.capabilities.tools
    assert all(e.price_effective.tzinfo is not None for e in entries)


def test_key_hints_never_reveal_the_key() -> None:
    key = "sk-proj-abcdefghijklmnopqrstuvwxyz0123"
    hint = mask_key(key)
    assert hint == "sk-…0123" and "abcdefgh" not in hint
    assert mask_key("short") == "…"
