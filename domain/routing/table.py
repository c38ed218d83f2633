"""The registry compiled for routing: each model gets a bit, and every static property (enabled,
provider, tags, each capability, context window and output thresholds) becomes a bitmask, so
filtering a request's candidates is a handful of integer operations whatever the registry size.
Rebuilt when the registry or the routing config changes (``Router.load``)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from domain.registry import Modality, ModelRoute
from domain.routing.breaker import breaker_key
from domain.routing.config import RoutingConfig

__all__ = ["RouteTable", "bits_of"]


_BYTE_BITS: tuple[tuple[int, ...], ...] = tuple(tuple(i for i in range(8) if b >> i & 1) for b in range(256))


def bits_of(mask: int) -> list[int]:
    """The indices of the set bits of ``mask``, ascending."""
    out: list[int] = []
    base = 0
    for byte in mask.to_bytes((mask.bit_length() + 7) // 8, "little"):
        if byte:
            out += [base + i for i in _BYTE_BITS[byte]]
        base += 8
    return out


class RouteTable:
    """``routes`` in name order; bit i is ``routes[i]``."""

    def __init__(self, routes: Sequence[ModelRoute], config: RoutingConfig) -> None:
        ordered = sorted(routes, key=lambda r: r.name)
        names = [r.name for r in ordered]
        if len(set(names)) != len(names):
            raise ValueError("route names must be unique")
        self.routes: tuple[ModelRoute, ...] = tuple(ordered)
        self.names: tuple[str, ...] = tuple(names)
        self.index: dict[str, int] = {n: i for i, n in enumerate(names)}
        self.all = (1 << len(ordered)) - 1
        self.providers: tuple[str, ...] = tuple(r.provider for r in ordered)
        self.upstream: tuple[str, ...] = tuple(r.upstream_model for r in ordered)
        # the live view's key of each model (``breaker_key(provider, upstream model)``)
        self.keys: tuple[str, ...] = tuple(breaker_key(r.provider, r.upstream_model) for r in ordered)

        def mask(pred: object) -> int:
            m = 0
            for i, r in enumerate(ordered):
                if pred(r):  # type: ignore[operator]
                    m |= 1 << i
            return m

        self.enabled = mask(lambda r: r.enabled)
        self.available = mask(lambda r: r.available)
        self.chat = mask(lambda r: not r.capabilities.embeddings and Modality.TEXT in r.capabilities.output_modalities)
        self.images = mask(lambda r: Modality.IMAGE in r.capabilities.input_modalities)
        self.tools = mask(lambda r: r.capabilities.tools)
        self.parallel_tools = mask(lambda r: r.capabilities.parallel_tool_calls)
        self.json_schema = mask(lambda r: r.capabilities.json_schema)
        self.json_mode = mask(lambda r: r.capabilities.json_schema or r.capabilities.tools)
        self.streaming = mask(lambda r: r.capabilities.streaming)
        self.reasoning = mask(lambda r: r.capabilities.reasoning)

        self.by_provider: dict[str, int] = {}
        self.by_key: dict[str, int] = {}
        self.by_tag: dict[str, int] = {}
        for i, r in enumerate(ordered):
            bit = 1 << i
            self.by_provider[r.provider] = self.by_provider.get(r.provider, 0) | bit
            key = self.keys[i]
            self.by_key[key] = self.by_key.get(key, 0) | bit
            for tag in {*r.capabilities.tags, *config.model_tags.get(r.name, ())}:
                self.by_tag[tag] = self.by_tag.get(tag, 0) | bit

        # "at least N": thresholds ascending, and for each position the mask of models at or above
        self.window_values, self.window_masks = _threshold_masks([r.capabilities.context_window for r in ordered])
        self.output_values, self.output_masks = _threshold_masks([r.capabilities.max_output_tokens for r in ordered])

        # per-model numbers the strategies use: micro-dollars per token (unpriced: the dearest known
        # rate, so "cheapest" never prefers a model whose cost nobody knows), quality, weight
        priced_in = [r.price.input_per_mtok for r in ordered if r.priced]
        priced_out = [r.price.output_per_mtok for r in ordered if r.priced]
        worst_in, worst_out = max(priced_in, default=0.0), max(priced_out, default=0.0)
        self.in_rate: tuple[float, ...] = tuple(r.price.input_per_mtok if r.priced else worst_in for r in ordered)
        self.out_rate: tuple[float, ...] = tuple(r.price.output_per_mtok if r.priced else worst_out for r in ordered)
        self.rates: tuple[tuple[float, float], ...] = tuple(zip(self.in_rate, self.out_rate, strict=True))
        self.quality: tuple[float, ...] = tuple(config.quality.get(r.name, config.default_quality) for r in ordered)
        self.rr_weight: tuple[float, ...] = tuple(config.rr_weights.get(r.name, 1.0) for r in ordered)
        self._chunks: dict[int, tuple[str, ...]] = {}

    def __len__(self) -> int:
        return len(self.routes)

    def at_least_window(self, tokens: int) -> tuple[int, int]:
        """(position, mask) of the models whose context window holds ``tokens``."""
        pos = bisect.bisect_left(self.window_values, tokens)
        return pos, self.window_masks[pos]

    def at_least_output(self, tokens: int) -> tuple[int, int]:
        pos = bisect.bisect_left(self.output_values, tokens)
        return pos, self.output_masks[pos]

    def tags_mask(self, tags: frozenset[str]) -> int:
        m = self.all
        for tag in tags:
            m &= self.by_tag.get(tag, 0)
        return m

    def names_of(self, mask: int) -> list[str]:
        """The names of the models in ``mask``, in name order (byte by byte, from a table of the
        names each byte value stands for at each position, filled as needed)."""
        out: list[str] = []
        chunks = self._chunks
        for pos, byte in enumerate(mask.to_bytes((mask.bit_length() + 7) // 8, "little")):
            if byte:
                key = pos << 8 | byte
                found = chunks.get(key)
                if found is None:
                    base, names = pos * 8, self.names
                    found = chunks[key] = tuple(names[base + i] for i in _BYTE_BITS[byte])
                out += found
        return out


def _threshold_masks(values: list[int]) -> tuple[list[int], list[int]]:
    """Distinct values ascending, and for position p the mask of models with value >= values[p];
    position len(values) (above every value) has the empty mask."""
    distinct = sorted(set(values))
    masks: list[int] = []
    for threshold in distinct:
        m = 0
        for i, v in enumerate(values):
            if v >= threshold:
                m |= 1 << i
        masks.append(m)
    masks.append(0)
    return distinct, masks
