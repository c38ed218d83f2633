"""Model tags ride in the registry's capabilities JSON column (no schema change): written and read
back through the Postgres unit of work, loaded from the shipped catalogue's TOML, and seen by the
router's tenant rules."""

from __future__ import annotations

from pathlib import Path

from adapters.catalog.loader import ShippedCatalogue
from adapters.postgres.engine import create_engine
from adapters.postgres.uow import SqlAlchemyUnitOfWorkFactory
from domain.registry import ModelCapabilities, ModelRoute, ProviderKind, ProviderSpec
from domain.routing import Requirements, Router, RoutingConfig, TenantRules


async def test_tags_round_trip_through_postgres_and_drive_routing(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=2)
    uow = SqlAlchemyUnitOfWorkFactory(engine)
    try:
        async with uow() as tx:
            await tx.providers.upsert_provider(ProviderSpec(name="tags-eu", kind=ProviderKind.OPENAI_COMPATIBLE))
            await tx.providers.upsert_model(
                ModelRoute(name="tags-eu-model", provider="tags-eu", upstream_model="m",
                           capabilities=ModelCapabilities(tags=("eu", "no-training")))
            )
            await tx.providers.upsert_model(ModelRoute(name="tags-plain-model", provider="tags-eu", upstream_model="p"))
            await tx.commit()
        async with uow() as tx:
            models = [m for m in await tx.providers.list_models() if m.provider == "tags-eu"]
            await tx.providers.delete_provider("tags-eu")
            await tx.commit()
    finally:
        await engine.dispose()
    stored = {m.name: m.capabilities.tags for m in models}
    assert stored == {"tags-eu-model": ("eu", "no-training"), "tags-plain-model": ()}
    rules = TenantRules(require_tags=frozenset({"eu"}))
    decision = Router(RoutingConfig(rules=rules), models).decide(Requirements(prompt_tokens=10))
    assert decision.chosen is not None and decision.chosen.model == "tags-eu-model"
    assert decision.rejected == {"tags-plain-model": "lacks required tags: eu"}


def test_catalogue_rows_may_carry_tags(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(
        '[catalogue]\nas_of = 2026-01-01\nsources = ["test"]\n\n'
        '[[model]]\nkind = "openai"\nmodel = "m"\ncontext_window = 8192\nmax_output_tokens = 1024\n'
        'tags = ["us", "frontier"]\nprice = { input = 1.0, output = 2.0 }\n'
    )
    [entry] = ShippedCatalogue(path).entries()
    assert entry.capabilities.tags == ("us", "frontier")
