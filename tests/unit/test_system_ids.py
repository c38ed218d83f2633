"""TimeOrderedIds: ULID layout in lower-case Crockford base32, time-ordered, unique, fork-safe."""

from __future__ import annotations

import os
import re
import time

from adapters.system import TimeOrderedIds

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _decode(value: str) -> int:
    n = 0
    for ch in value:
        n = n * 32 + _ALPHABET.index(ch)
    return n


def test_an_id_is_26_base32_characters_whose_top_48_bits_are_the_time_in_ms() -> None:
    before = time.time_ns() // 1_000_000
    value = TimeOrderedIds().new_id()
    after = time.time_ns() // 1_000_000
    assert re.fullmatch(r"[0-9a-hjkmnp-tv-z]{26}", value)
    assert before <= _decode(value) >> 80 <= after


def test_ids_are_unique_and_ordered_by_time_across_buffer_refills() -> None:
    ids = TimeOrderedIds()
    first = [ids.new_id() for _ in range(1000)]  # > one 4 KiB buffer of random bits
    time.sleep(0.002)
    later = ids.new_id()
    assert len(set(first)) == 1000
    assert all(later > value for value in first)
    assert len({_decode(v) & ((1 << 80) - 1) for v in first}) == 1000  # the random parts differ


def test_a_forked_child_does_not_repeat_its_parents_random_bits() -> None:
    ids = TimeOrderedIds()
    ids.new_id()  # the parent has a buffer now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report one id's random part, then leave without running pytest's teardown
        os.write(write, ids.new_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    parent = ids.new_id()
    assert _decode(child) & ((1 << 80) - 1) != _decode(parent) & ((1 << 80) - 1)
