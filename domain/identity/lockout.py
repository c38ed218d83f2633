"""Brute-force backoff (ASVS V6.3.1): after a few free attempts each failure doubles the wait, up
to a cap. Nothing is permanent: counters expire and the wait never exceeds the cap."""

from __future__ import annotations

import msgspec

__all__ = ["BackoffPolicy"]


class BackoffPolicy(msgspec.Struct, frozen=True):
    free_attempts: int = 5
    base_seconds: float = 1.0
    cap_seconds: float = 900.0
    window_seconds: float = 3600.0  # failures are forgotten this long after the last one

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failures (0 for the free ones)."""
        over = failures - self.free_attempts - 1
        if over < 0:
            return 0.0
        return min(self.cap_seconds, self.base_seconds * (2 ** min(over, 40)))
