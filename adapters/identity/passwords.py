"""Password hashing with argon2id (argon2-cffi) and strength estimation with zxcvbn."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from zxcvbn import zxcvbn

from domain.identity import StrengthReport

__all__ = ["Argon2PasswordHasher", "ZxcvbnStrength"]

# ASVS V6.2 / OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1.
DEFAULT_MEMORY_KIB = 19 * 1024
DEFAULT_TIME_COST = 2
DEFAULT_PARALLELISM = 1


class Argon2PasswordHasher:
    """``PasswordHasher``. ``needs_rehash`` is true when a stored hash used other parameters, so a
    login upgrades it. ``dummy_verify`` burns one verification against a fixed hash, so unknown
    accounts take as long as known ones."""

    def __init__(
        self,
        *,
        memory_kib: int = DEFAULT_MEMORY_KIB,
        time_cost: int = DEFAULT_TIME_COST,
        parallelism: int = DEFAULT_PARALLELISM,
    ) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, hash_len=32, salt_len=16,
            type=argon2.Type.ID,
        )
        self._dummy: str | None = None
        self._lock = threading.Lock()

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True

    def dummy_verify(self, password: str) -> None:
        with self._lock:
            if self._dummy is None:
                self._dummy = self._hasher.hash("lumina-dummy-password-for-timing")
        self.verify(self._dummy, password)


class ZxcvbnStrength:
    """``PasswordStrength`` via zxcvbn: score 0..4; ``common`` when the whole password is one entry
    of zxcvbn's common-password list. Only the first ``max_chars`` are estimated (zxcvbn is
    quadratic); longer passwords are not weaker for it."""

    def __init__(self, max_chars: int = 100) -> None:
        self._max = max_chars

    def estimate(self, password: str, user_inputs: Sequence[str]) -> StrengthReport:
        sample = password[: self._max]
        result = zxcvbn(sample, user_inputs=[u for u in user_inputs if u])
        common = any(
            m.get("pattern") == "dictionary"
            and m.get("dictionary_name") == "passwords"
            and len(m.get("token", "")) == len(sample)
            for m in result.get("sequence", [])
        )
        feedback = result.get("feedback", {}) or {}
        text = feedback.get("warning") or " ".join(feedback.get("suggestions") or [])
        return StrengthReport(score=int(result["score"]), common=common, feedback=str(text))
