"""Deterministic answers and token counts.

The answer to a request is a function of its messages only: a digest of the (role, text) pairs
seeds a PRNG that picks words from a fixed list, so the same prompt always yields the same words,
and asking for fewer tokens yields a prefix of the same answer. One word counts as one token.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable

__all__ = ["WORDS", "answer_words", "digest", "embedding", "json_for_schema", "prompt_tokens", "split_even", "split_text"]

WORDS: tuple[str, ...] = tuple(
    """
    the a of to and in is it that for on with as this by from at be are was an or lumina
    signal river lantern copper meadow orbit harbor quiet velvet ember cedar summit
    prism falcon tundra marble compass willow glacier beacon canyon thistle ripple
    saffron cobalt juniper atlas quartz nimbus sparrow delta horizon mosaic pebble
    garnet zephyr kelp ivory basalt aurora fennel maple onyx tidal hollow
    """.split()  # noqa: SIM905
)

_CACHE_LIMIT = 4096
_cache: dict[tuple[bytes, int], tuple[str, ...]] = {}


def digest(parts: Iterable[tuple[str, str]]) -> bytes:
    """A stable 16-byte digest of ``(role, text)`` pairs."""
    h = hashlib.blake2b(digest_size=16)
    for role, text in parts:
        h.update(role.encode())
        h.update(b"\x00")
        h.update(text.encode())
        h.update(b"\x01")
    return h.digest()


def answer_words(seed: bytes, count: int) -> tuple[str, ...]:
    """The first ``count`` words of the answer seeded by ``seed`` (cached: benchmarks repeat)."""
    key = (seed, count)
    words = _cache.get(key)
    if words is None:
        rng = random.Random(int.from_bytes(seed, "big"))
        n = len(WORDS)
        words = tuple(WORDS[int(rng.random() * n)] for _ in range(count))
        if len(_cache) >= _CACHE_LIMIT:
            _cache.clear()
        _cache[key] = words
    return words


def prompt_tokens(texts: Iterable[str]) -> int:
    """Roughly 4/3 tokens per whitespace-separated word, rounded half up; at least 1."""
    words = sum(len(t.split()) for t in texts)
    return max(1, (words * 4 + 1) // 3)


def split_even(items: tuple[str, ...], parts: int) -> list[tuple[str, ...]]:
    """Split ``items`` into ``parts`` contiguous, non-empty groups of near-equal size."""
    parts = max(1, min(parts, len(items)))
    base, extra = divmod(len(items), parts)
    out: list[tuple[str, ...]] = []
    start = 0
    for i in range(parts):
        size = base + (1 if i < extra else 0)
        out.append(items[start : start + size])
        start += size
    return out


def split_text(text: str, parts: int) -> list[str]:
    """``text`` cut into ``parts`` (at most ``len(text)``) contiguous, non-empty pieces."""
    parts = max(1, min(parts, len(text)))
    size = -(-len(text) // parts)
    return [text[i : i + size] for i in range(0, len(text), size)] or [text]


_MAX_DEPTH = 6


def json_for_schema(schema: object, seed: bytes, _depth: int = 0) -> object:
    """A deterministic JSON value satisfying the common subset of JSON Schema: ``type`` (or a
    list of types), ``properties`` (all of them, so ``required`` and strict mode hold), ``items``
    with ``minItems``, ``enum``, ``const``, ``anyOf``/``oneOf``, string ``minLength``, numeric
    ``minimum``/``maximum``. No schema gives an object ``{"answer": <words>}``."""
    rng = random.Random(int.from_bytes(hashlib.blake2b(seed, digest_size=8).digest(), "big"))
    return _value(schema if isinstance(schema, dict) and schema else {"type": "object", "properties": {"answer": {"type": "string"}}}, rng, _depth)


def _value(schema: dict[str, object], rng: random.Random, depth: int) -> object:
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[int(rng.random() * len(enum))]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options and isinstance(options[0], dict):
            return _value(options[0], rng, depth)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        props = schema.get("properties")
        if not isinstance(props, dict) or depth >= _MAX_DEPTH:
            return {}
        return {name: _value(sub if isinstance(sub, dict) else {}, rng, depth + 1) for name, sub in props.items()}
    if kind == "array":
        items = schema.get("items")
        low = schema.get("minItems")
        count = max(1, low if isinstance(low, int) else 1)
        if depth >= _MAX_DEPTH:
            return []
        return [_value(items if isinstance(items, dict) else {}, rng, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        low = schema.get("minimum", 0)
        high = schema.get("maximum", 100)
        low = low if isinstance(low, (int, float)) else 0
        high = high if isinstance(high, (int, float)) and high >= low else low + 100
        value = low + rng.random() * (high - low)
        return math.ceil(value) if kind == "integer" and math.ceil(value) <= high else (int(low) if kind == "integer" else round(value, 3))
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    low = schema.get("minLength")
    words = [WORDS[int(rng.random() * len(WORDS))] for _ in range(3)]
    text = " ".join(words)
    while isinstance(low, int) and len(text) < low:
        text += " " + WORDS[int(rng.random() * len(WORDS))]
    return text


def embedding(text: str, dims: int) -> list[float]:
    """A deterministic unit vector of ``dims`` floats for ``text`` (equal texts, equal vectors)."""
    rng = random.Random(int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big"))
    raw = [rng.gauss(0.0, 1.0) for _ in range(dims)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]
