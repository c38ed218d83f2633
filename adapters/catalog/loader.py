"""Load ``models.toml`` (or another file of the same shape) into domain ``CatalogueEntry``s.
Read once, on first use, and validated whole: a bad row fails loading with its index and model."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from pathlib import Path

import msgspec

from domain.cost import Price
from domain.errors import InvalidRequest
from domain.registry import CatalogueEntry, Modality, ModelCapabilities, ProviderKind

__all__ = ["DEFAULT_PATH", "CatalogueError", "ShippedCatalogue"]

DEFAULT_PATH = Path(__file__).with_name("models.toml")


class CatalogueError(ValueError):
    pass


class _Price(msgspec.Struct, forbid_unknown_fields=True):
    input: float
    output: float
    cached_input: float = 0.0


class _Row(msgspec.Struct, forbid_unknown_fields=True):
    kind: ProviderKind
    model: str
    context_window: int
    max_output_tokens: int
    price: _Price
    aliases: list[str] = []
    input: tuple[Modality, ...] = (Modality.TEXT,)
    output: tuple[Modality, ...] = (Modality.TEXT,)
    tools: bool = False
    parallel_tool_calls: bool = False
    json_schema: bool = False
    streaming: bool = True
    reasoning: bool = False
    embeddings: bool = False
    tags: list[str] = []
    effective: date | None = None


class _Header(msgspec.Struct):
    as_of: date
    sources: list[str]


class _File(msgspec.Struct):
    catalogue: _Header
    model: list[_Row]


class ShippedCatalogue:
    def __init__(self, path: str | Path = DEFAULT_PATH) -> None:
        self._path = Path(path)
        self._entries: list[CatalogueEntry] | None = None
        self.as_of: date | None = None
        self.sources: list[str] = []

    def entries(self) -> Sequence[CatalogueEntry]:
        if self._entries is None:
            self._entries = self._load()
        return self._entries

    def _load(self) -> list[CatalogueEntry]:
        try:
            raw = tomllib.loads(self._path.read_text())
            parsed = msgspec.convert(raw, _File)
        except (OSError, tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
            raise CatalogueError(f"catalogue {self._path}: {exc}") from exc
        self.as_of, self.sources = parsed.catalogue.as_of, parsed.catalogue.sources
        entries: list[CatalogueEntry] = []
        seen: set[tuple[ProviderKind, str]] = set()
        for i, row in enumerate(parsed.model):
            if (row.kind, row.model) in seen:
                raise CatalogueError(f"catalogue {self._path}: model[{i}] {row.model} is listed twice")
            seen.add((row.kind, row.model))
            try:
                caps = ModelCapabilities(
                    context_window=row.context_window, max_output_tokens=row.max_output_tokens,
                    input_modalities=tuple(row.input), output_modalities=tuple(row.output), tools=row.tools,
                    parallel_tool_calls=row.parallel_tool_calls, json_schema=row.json_schema,
                    streaming=row.streaming, reasoning=row.reasoning, embeddings=row.embeddings,
                    tags=tuple(row.tags),
                )
                price = Price(row.price.input, row.price.output, row.price.cached_input)
            except InvalidRequest as exc:
                raise CatalogueError(f"catalogue {self._path}: model[{i}] {row.model}: {exc.message}") from exc
            effective = datetime.combine(row.effective or parsed.catalogue.as_of, time(), tzinfo=UTC)
            entries.append(CatalogueEntry(row.kind, row.model, caps, price, effective, tuple(row.aliases)))
        return entries
