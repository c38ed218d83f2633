"""Password policy (ASVS V6.2): length 8..128 (at least 64 allowed), any characters, no composition
rules, strength judged by an estimator port, never truncated."""

from __future__ import annotations

import msgspec

from domain.identity.errors import WeakPassword

__all__ = ["MAX_PASSWORD_LENGTH", "MIN_PASSWORD_LENGTH", "PasswordPolicy", "StrengthReport"]

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 128


class StrengthReport(msgspec.Struct, frozen=True):
    score: int  # 0..4 (zxcvbn scale)
    common: bool  # found in a list of common or breached passwords
    feedback: str = ""


class PasswordPolicy(msgspec.Struct, frozen=True):
    min_length: int = MIN_PASSWORD_LENGTH
    max_length: int = MAX_PASSWORD_LENGTH
    min_score: int = 3

    def check_length(self, password: str) -> None:
        if len(password) < self.min_length:
            raise WeakPassword(f"at least {self.min_length} characters")
        if len(password) > self.max_length:
            raise WeakPassword(f"at most {self.max_length} characters")

    def check_strength(self, report: StrengthReport) -> None:
        if report.common:
            raise WeakPassword("this password is too common")
        if report.score < self.min_score:
            raise WeakPassword("too easy to guess" + (f": {report.feedback}" if report.feedback else ""))
