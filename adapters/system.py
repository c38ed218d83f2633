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


class TimeOrderedIds:
    """26-character, lexicographically time-ordered ids (ULID layout: 48-bit ms time + 80 random bits)."""

    _ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"

    def new_id(self) -> str:
        value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
        out = []
        for _ in range(26):
            out.append(self._ALPHABET[value & 31])
            value >>= 5
        return "".join(reversed(out))
