"""Deterministic answers and token counts.

The answer to a request is a function of its messages only: a digest of the (role, text) pairs
seeds a PRNG that picks words from a fixed list, so the same prompt always yields the same words,
and asking for fewer tokens yields a prefix of the same answer. One word counts as one token.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable

__all__ = ["WORDS", "answer_words", "digest", "prompt_tokens", "split_even"]

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
