"""Security primitives behind the identity ports: argon2id, zxcvbn, CSPRNG tokens, TOTP + QR,
WebAuthn relying party, Redis brute-force limiter, SMTP sender, OIDC relying party (authlib)."""

from adapters.identity.limiter import RedisLoginLimiter
from adapters.identity.oidc import AuthlibOidcClient
from adapters.identity.passwords import Argon2PasswordHasher, ZxcvbnStrength
from adapters.identity.secrets import SystemSecrets
from adapters.identity.smtp import SmtpMailSender
from adapters.identity.totp import PyOtpTotp
from adapters.identity.webauthn import PyWebAuthnRelyingParty

__all__ = [
    "Argon2PasswordHasher",
    "AuthlibOidcClient",
    "PyOtpTotp",
    "PyWebAuthnRelyingParty",
    "RedisLoginLimiter",
    "SmtpMailSender",
    "SystemSecrets",
    "ZxcvbnStrength",
]
