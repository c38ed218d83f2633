"""CSPRNG tokens, SHA-256 digests and constant-time comparison (``SecretGenerator``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

__all__ = ["SystemSecrets"]


class SystemSecrets:
    def token(self, nbytes: int = 32) -> str:
        return secrets.token_urlsafe(nbytes)

    def short_code(self) -> str:
        """10 base32 characters (50 bits) as ``xxxxx-xxxxx``."""
        raw = base64.b32encode(secrets.token_bytes(10)).decode().lower()[:10]
        return f"{raw[:5]}-{raw[5:]}"

    def digest(self, secret: str) -> str:
        return hashlib.sha256(secret.encode()).hexdigest()

    def equal(self, a: str, b: str) -> bool:
        return hmac.compare_digest(a.encode(), b.encode())
