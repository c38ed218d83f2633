"""Providers and the models they serve, as data."""

from __future__ import annotations

import enum

import msgspec

from domain.cost import Price

__all__ = ["ModelRoute", "ProviderKind", "ProviderSpec"]


class ProviderKind(enum.StrEnum):
    OPENAI = "openai"
    OPENAI_COMPATIBLE = "openai_compatible"


class ProviderSpec(msgspec.Struct, frozen=True):
    """A configured provider. ``label`` is shown to users (e.g. "simulated")."""

    name: str
    kind: ProviderKind
    base_url: str | None = None
    label: str = ""
    enabled: bool = True


class ModelRoute(msgspec.Struct, frozen=True):
    """A model name as clients say it, and where it is served."""

    name: str
    provider: str
    upstream_model: str
    price: Price = Price()
    is_default: bool = False
