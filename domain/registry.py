"""Providers and the models they serve, as data (entities: mapped imperatively by the
persistence adapter, so they are plain dataclasses)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from domain.cost import Price

__all__ = ["ModelRoute", "ProviderKind", "ProviderSpec"]


class ProviderKind(enum.StrEnum):
    OPENAI = "openai"
    OPENAI_COMPATIBLE = "openai_compatible"


@dataclass(eq=False)
class ProviderSpec:
    """A configured provider. ``label`` is shown to users (e.g. "simulated").
    The API key itself is not part of the entity: it lives with the adapter's secrets."""

    name: str
    kind: ProviderKind
    base_url: str | None = None
    label: str = ""
    enabled: bool = True


@dataclass(eq=False)
class ModelRoute:
    """A model name as clients say it, and where it is served."""

    name: str
    provider: str
    upstream_model: str
    price: Price = field(default_factory=Price)
    is_default: bool = False
