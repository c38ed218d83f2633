"""Imperative (classical) mapping of the domain entities onto ``tables``: the domain stays unaware
of SQLAlchemy. ``start_mappers()`` is idempotent and is called by ``engine.create_engine``."""

from __future__ import annotations

import threading

from sqlalchemy.orm import composite, registry

from adapters.postgres import tables
from domain.cost import Price
from domain.registry import ModelRoute, ProviderSpec

__all__ = ["mapper_registry", "start_mappers"]

mapper_registry = registry(metadata=tables.metadata)
_lock = threading.Lock()
_started = False


def start_mappers() -> None:
    global _started
    with _lock:
        if _started:
            return
        mapper_registry.map_imperatively(ProviderSpec, tables.providers)
        mapper_registry.map_imperatively(
            ModelRoute,
            tables.models,
            properties={
                "price": composite(
                    Price,
                    tables.models.c.input_per_mtok,
                    tables.models.c.output_per_mtok,
                    tables.models.c.cached_input_per_mtok,
                )
            },
        )
        _started = True
