"""Providers and the models they serve, as data (entities: mapped imperatively by the
persistence adapter, so they are plain dataclasses), with each model's declared capabilities,
its price history, and the merge of the shipped catalogue with what a provider lists upstream."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import msgspec

from domain.cost import Price
from domain.errors import InvalidRequest

__all__ = [
    "CONSERVATIVE_CAPABILITIES",
    "CatalogueEntry",
    "Modality",
    "ModelCapabilities",
    "ModelRoute",
    "ModelSource",
    "PricePoint",
    "ProviderKind",
    "ProviderSpec",
    "merge_catalogue",
    "price_in_force",
    "validate_name",
]


class ProviderKind(enum.StrEnum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    GEMINI = "gemini"
    DEEPSEEK = "deepseek"
    XAI = "xai"
    OPENAI_COMPATIBLE = "openai_compatible"


class Modality(enum.StrEnum):
    TEXT = "text"
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"
    FILE = "file"


class ModelSource(enum.StrEnum):
    """Where a model row came from: typed by an operator, the shipped catalogue, or only the
    provider's model listing (then its capabilities are conservative defaults and it is unpriced)."""

    MANUAL = "manual"
    CATALOGUE = "catalogue"
    DISCOVERED = "discovered"


class ModelCapabilities(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a model can do, as declared (catalogue or operator), not as probed.

    ``tags`` are free labels routing rules can require (e.g. ``eu``, ``no-training``): stored with
    the capabilities (the registry's JSON column), so adding one needs no schema change."""

    context_window: int = 8192
    max_output_tokens: int = 4096
    input_modalities: tuple[Modality, ...] = (Modality.TEXT,)
    output_modalities: tuple[Modality, ...] = (Modality.TEXT,)
    tools: bool = False
    parallel_tool_calls: bool = False
    json_schema: bool = False
    streaming: bool = True
    reasoning: bool = False
    embeddings: bool = False
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for tag in self.tags:
            if not tag or len(tag) > 64 or not set(tag) <= _TAG_CHARS:
                raise InvalidRequest.single("capabilities.tags", "a tag is 1-64 lowercase letters, digits or - _ . :")
        if self.context_window <= 0:
            raise InvalidRequest.single("capabilities.context_window", "must be positive")
        if self.max_output_tokens <= 0:
            raise InvalidRequest.single("capabilities.max_output_tokens", "must be positive")
        if self.max_output_tokens > self.context_window:
            raise InvalidRequest.single("capabilities.max_output_tokens", "cannot exceed the context window")
        if self.parallel_tool_calls and not self.tools:
            raise InvalidRequest.single("capabilities.parallel_tool_calls", "needs tools")


_TAG_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.:")

CONSERVATIVE_CAPABILITIES = ModelCapabilities()
"""For models a provider lists but the catalogue does not know: text in, text out, nothing else."""

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/@")


def validate_name(field_name: str, value: str) -> str:
    if not value or len(value) > 200 or not set(value) <= _NAME_CHARS:
        raise InvalidRequest.single(field_name, "expected 1-200 letters, digits or - _ . : / @")
    return value


@dataclass(eq=False)
class ProviderSpec:
    """A configured provider. ``label`` is shown to users (e.g. "simulated").
    The API key itself is not part of the entity: it is stored encrypted, apart."""

    name: str
    kind: ProviderKind
    base_url: str | None = None
    label: str = ""
    enabled: bool = True


@dataclass(eq=False)
class ModelRoute:
    """A model name as clients say it, and where it is served.

    ``price`` is the price in force now (the latest ``PricePoint``); ``priced`` is False for models
    nobody has priced (discovered upstream only). ``available`` is False when the provider's
    listing no longer has the model; ``enabled`` is the operator's switch."""

    name: str
    provider: str
    upstream_model: str
    price: Price = field(default_factory=Price)
    is_default: bool = False
    capabilities: ModelCapabilities = field(default_factory=ModelCapabilities)
    enabled: bool = True
    available: bool = True
    priced: bool = True
    source: ModelSource = ModelSource.MANUAL

    @property
    def routable(self) -> bool:
        return self.enabled and self.available


@dataclass(frozen=True, slots=True)
class PricePoint:
    """A model's price from ``effective_from`` (timezone-aware) until the next point."""

    model: str
    effective_from: datetime
    price: Price

    def __post_init__(self) -> None:
        if self.effective_from.tzinfo is None:
            raise InvalidRequest.single("effective_from", "must carry a timezone")


def price_in_force(history: Iterable[PricePoint], at: datetime) -> Price | None:
    """The price whose ``effective_from`` is the latest one not after ``at``; None before the first."""
    best: PricePoint | None = None
    for point in history:
        if point.effective_from <= at and (best is None or point.effective_from >= best.effective_from):
            best = point
    return None if best is None else best.price


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    """One model of the shipped catalogue: a vendor's model id, what it can do, what it costs."""

    kind: ProviderKind
    model: str
    capabilities: ModelCapabilities
    price: Price
    price_effective: datetime
    aliases: tuple[str, ...] = ()


def merge_catalogue(
    provider: str,
    kind: ProviderKind,
    catalogue: Sequence[CatalogueEntry],
    upstream: Sequence[str] | None,
    *,
    prefix: str = "",
) -> list[ModelRoute]:
    """The models ``provider`` serves: its kind's catalogue entries, marked unavailable when the
    upstream listing (when there is one: ``None`` means "not asked") lacks them, plus the models
    listed upstream that the catalogue does not know, with conservative capabilities, unpriced.
    Route names are ``prefix + model id``."""
    listed = None if upstream is None else set(upstream)
    routes: list[ModelRoute] = []
    known: set[str] = set()
    for entry in catalogue:
        if entry.kind != kind:
            continue
        names = {entry.model, *entry.aliases}
        known |= names
        available = listed is None or bool(names & listed)
        routes.append(
            ModelRoute(
                name=prefix + entry.model,
                provider=provider,
                upstream_model=entry.model,
                price=entry.price,
                capabilities=entry.capabilities,
                available=available,
                priced=True,
                source=ModelSource.CATALOGUE,
            )
        )
    for model in sorted((listed or set()) - known):
        routes.append(
            ModelRoute(
                name=prefix + model,
                provider=provider,
                upstream_model=model,
                price=Price(),
                capabilities=CONSERVATIVE_CAPABILITIES,
                available=True,
                priced=False,
                source=ModelSource.DISCOVERED,
            )
        )
    return sorted(routes, key=lambda r: r.name)
