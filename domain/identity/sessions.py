"""Sessions (ASVS V7): opaque tokens stored as SHA-256 hashes, idle and absolute timeouts,
assurance level and step-up."""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

__all__ = ["Session", "SessionPolicy"]


class SessionPolicy(msgspec.Struct, frozen=True):
    idle_timeout: timedelta = timedelta(minutes=30)
    absolute_timeout: timedelta = timedelta(hours=12)
    # A half-finished login (password accepted, second factor pending) lives this long.
    pending_timeout: timedelta = timedelta(minutes=5)
    # Sensitive actions need a second factor at most this old.
    step_up_window: timedelta = timedelta(minutes=10)


class Session(msgspec.Struct, frozen=True):
    id: str
    token_hash: str  # hex SHA-256 of the opaque token; the token itself is never stored
    tenant_id: str
    user_id: str
    created_at: datetime
    last_seen_at: datetime
    assurance_level: int  # 1 or 2 factors
    pending_second_factor: bool = False
    second_factor_at: datetime | None = None

    def expired(self, now: datetime, policy: SessionPolicy) -> str:
        """'' while usable, else why not ('idle', 'absolute', 'pending')."""
        if self.pending_second_factor and now - self.created_at >= policy.pending_timeout:
            return "pending"
        if now - self.created_at >= policy.absolute_timeout:
            return "absolute"
        if now - self.last_seen_at >= policy.idle_timeout:
            return "idle"
        return ""

    def recent_second_factor(self, now: datetime, policy: SessionPolicy) -> bool:
        return (
            self.assurance_level >= 2
            and self.second_factor_at is not None
            and now - self.second_factor_at <= policy.step_up_window
        )
