"""The registry compiled for routing: each model gets a bit, and every static property (enabled,
provider, tags, each capability, context window and output thresholds) becomes a bitmask, so
filtering a request's candidates is a handful of integer operations whatever the registry size.
Rebuilt when the registry or the routing config changes (``Router.load``)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from itertools import compress

from domain.registry import Modality, ModelRoute
from domain.routing.breaker import breaker_key
from domain.routing.config import RoutingConfig

__all__ = ["RouteTable", "bits_of"]


_SELECT = bytes.maketrans(b"01", b"\x00\x01")
_SPARSE = 12  # up to this many set bits, peeling the lowest bit beats scanning the whole mask


def bits_of(mask: int) -> list[int]:
    """The indices of the set bits of ``mask``, ascending."""
    if mask.bit_count() <= _SPARSE:
        out: list[int] = []
        while mask:
            low = mask & -mask
            out.append(low.bit_length() - 1)
            mask ^= low
        return out
    return list(compress(range(mask.bit_length()), _selectors(mask)))


def _selectors(mask: int) -> bytes:
    """One byte per bit of ``mask``, lowest first: 1 where it is set, else 0 (all in C: the binary
    digits, mapped to 0/1 for ``itertools.compress``, reversed)."""
    return format(mask, "b").encode().translate(_SELECT)[::-1]


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
        self._digits = f"0{len(ordered)}b"
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

    def selectors(self, mask: int) -> bytes:
        """``len(self)`` bytes, byte i 1 when bit i of ``mask`` is set, else 0: with
        ``itertools.compress``, the members of ``mask`` in any per-model sequence, in order."""
        return format(mask, self._digits).encode().translate(_SELECT)[::-1]

    def names_of(self, mask: int) -> list[str]:
        """The names of the models in ``mask``, in name order."""
        names = self.names
        if mask.bit_count() <= _SPARSE:
            out: list[str] = []
            while mask:
                low = mask & -mask
                out.append(names[low.bit_length() - 1])
                mask ^= low
            return out
        return list(compress(names, _selectors(mask)))


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
