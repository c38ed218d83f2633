"""System clock and id generator (the real implementations of the Clock and IdGenerator ports)."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

__all__ = ["SystemClock", "TimeOrderedIds"]


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
_PAIRS = tuple(a + b for a in _ALPHABET for b in _ALPHABET)


class TimeOrderedIds:
    """26-character, lexicographically time-ordered ids (ULID layout: 48-bit ms time + 80 random bits).

    Crockford base32, two characters (10 bits) per table lookup; the random bits come from
    ``os.urandom`` read 4 KiB at a time (one system call per ~400 ids instead of one per id)."""

    _PAIRS = _PAIRS  # index: 10 bits, high 5 first
    _SHIFTS = tuple(range(120, -1, -10))  # 13 pairs: the 130-bit value's top two bits are zero
    _BATCH = 4096

    def __init__(self) -> None:
        self._random = b""
        self._at = 0
        self._pid = 0

    def new_id(self) -> str:
        at = self._at
        if at + 10 > len(self._random) or self._pid != os.getpid():  # a forked child reads its own bytes
            self._random, at, self._pid = os.urandom(self._BATCH), 0, os.getpid()
        self._at = at + 10
        value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(self._random[at : at + 10], "big")
        pairs = self._PAIRS
        return "".join([pairs[(value >> shift) & 1023] for shift in self._SHIFTS])
