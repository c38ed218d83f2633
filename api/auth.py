"""The caller's principal at the edges.

The gRPC interceptor (``api/grpc/interceptors.py``) and the Litestar middleware
(``api/rest/principal.py``) resolve ``authorization: Bearer <credential>`` (an API key ``lum_…``
or a session token; ``x-api-key: <key>`` too, as Anthropic clients send it) into a ``Principal``
through an ``Authenticator`` and set it for the duration of the call; handlers read it with
``current_principal()``. Calls listed as public (sign-up, login, health, metrics…) run without
one; the AuthService calls listed in ``SESSION_GRPC_METHODS`` get the raw session token instead
(their use cases check it themselves, so a pending or single-factor session can finish its login
or enrol a factor).

Every rejection is the same ``InvalidCredentials`` ("invalid credentials": gRPC UNAUTHENTICATED,
HTTP 401 with ``WWW-Authenticate: Bearer``), whatever the cause; the cause goes to the audit event.

The caller's address (brute-force limiter keys, audit events) is the connecting peer's, unless that
peer is a trusted proxy (``TrustedProxies``, setting ``trusted_proxies``; loopback by default, where
`lumina up` runs the console): then it is the nearest untrusted address of ``x-forwarded-for``. The
edges resolve it once per call into ``client_var`` (``current_client()``).

``CachingAuthenticator`` keeps verified API keys for a few seconds, keyed by a SHA-256 of the raw
key, so the gateway's hot path does not reach Postgres per request; ``forget(key_id)`` drops a
key revoked on this replica at once (other replicas stop accepting it within the TTL).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Protocol

from domain.identity import Forbidden, InvalidCredentials, Principal, Role
from domain.identity.credentials import API_KEY_SCHEME

__all__ = [
    "AUTH_HTTP_ROUTES",
    "AUTH_SERVICE",
    "DEFAULT_TRUSTED_PROXIES",
    "ENROLMENT_AUTH_RPCS",
    "ENROLMENT_GRPC_METHODS",
    "ENROLMENT_HTTP_PATHS",
    "PUBLIC_AUTH_RPCS",
    "PUBLIC_GRPC_METHODS",
    "PUBLIC_HTTP_PATHS",
    "PUBLIC_HTTP_PREFIXES",
    "SESSION_AUTH_RPCS",
    "SESSION_GRPC_METHODS",
    "Authenticator",
    "CachingAuthenticator",
    "StaticAuthenticator",
    "TrustedProxies",
    "client_of_peer",
    "client_var",
    "credential_from",
    "current_client",
    "current_principal",
    "enrolment_options",
    "forwarded_for",
    "is_public_path",
    "principal_var",
    "require_platform_admin",
]

principal_var: ContextVar[Principal | None] = ContextVar("lumina_principal", default=None)
client_var: ContextVar[str] = ContextVar("lumina_client", default="")

AUTH_SERVICE = "lumina.v1.AuthService"
# AuthService calls anyone may make (they sign in, or answer alike whether an account exists).
PUBLIC_AUTH_RPCS = frozenset({
    "SignUp", "Login", "BeginPasskeyLogin", "FinishPasskeyLogin", "RequestPasswordReset", "ResetPassword",
    "BeginOidcLogin", "FinishOidcLogin", "GetLoginOptions",
})
# AuthService calls that act on the caller's session token, checked by the use case itself.
SESSION_AUTH_RPCS = frozenset({
    "VerifySecondFactor", "Logout", "ChangePassword", "BeginTotpEnrolment", "ConfirmTotpEnrolment",
    "BeginPasskeyRegistration", "FinishPasskeyRegistration",
})
# AuthService calls a single-factor session of a tenant that requires MFA may still make, besides
# the session calls above (ASVS V6.3.3: it must be able to enrol a factor; the console's account
# page needs WhoAmI). The edges resolve their principal with ``allow_single_factor``.
ENROLMENT_AUTH_RPCS = frozenset({"WhoAmI"})
# Full gRPC method names ("/lumina.v1.AuthService/Login") callable without a credential. The
# standard health and reflection services (``/grpc.*``) are never intercepted.
PUBLIC_GRPC_METHODS: frozenset[str] = frozenset(f"/{AUTH_SERVICE}/{rpc}" for rpc in PUBLIC_AUTH_RPCS)
SESSION_GRPC_METHODS: frozenset[str] = frozenset(f"/{AUTH_SERVICE}/{rpc}" for rpc in SESSION_AUTH_RPCS)
ENROLMENT_GRPC_METHODS: frozenset[str] = frozenset(f"/{AUTH_SERVICE}/{rpc}" for rpc in ENROLMENT_AUTH_RPCS)
# HTTP path prefixes served without a credential; each matches itself and what is below it.
PUBLIC_HTTP_PREFIXES: tuple[str, ...] = ("/healthz", "/readyz", "/metrics")
# The REST mirror of AuthService (api/rest/auth.py): RPC -> (HTTP method, path).
AUTH_HTTP_ROUTES: dict[str, tuple[str, str]] = {
    "SignUp": ("POST", "/v1/auth/signup"),
    "Login": ("POST", "/v1/auth/login"),
    "VerifySecondFactor": ("POST", "/v1/auth/second-factor"),
    "Logout": ("POST", "/v1/auth/logout"),
    "WhoAmI": ("GET", "/v1/auth/whoami"),
    "ChangePassword": ("POST", "/v1/auth/password"),
    "BeginTotpEnrolment": ("POST", "/v1/auth/totp/begin"),
    "ConfirmTotpEnrolment": ("POST", "/v1/auth/totp/confirm"),
    "BeginPasskeyRegistration": ("POST", "/v1/auth/passkeys/register/begin"),
    "FinishPasskeyRegistration": ("POST", "/v1/auth/passkeys/register/finish"),
    "BeginPasskeyLogin": ("POST", "/v1/auth/passkeys/login/begin"),
    "FinishPasskeyLogin": ("POST", "/v1/auth/passkeys/login/finish"),
    "RequestPasswordReset": ("POST", "/v1/auth/password-reset/request"),
    "ResetPassword": ("POST", "/v1/auth/password-reset"),
    "BeginOidcLogin": ("POST", "/v1/auth/oidc/begin"),
    "FinishOidcLogin": ("POST", "/v1/auth/oidc/finish"),
    "CreateApiKey": ("POST", "/v1/auth/api-keys"),
    "ListApiKeys": ("GET", "/v1/auth/api-keys"),
    "RevokeApiKey": ("DELETE", "/v1/auth/api-keys/{id:str}"),
    "ListPasskeys": ("GET", "/v1/auth/passkeys"),
    "DeletePasskey": ("DELETE", "/v1/auth/passkeys/{id:str}"),
    "GetLoginOptions": ("GET", "/v1/auth/login-options"),
    "ListSessions": ("GET", "/v1/auth/sessions"),
    "EndSession": ("DELETE", "/v1/auth/sessions/{id:str}"),
    "EndUserSessions": ("DELETE", "/v1/auth/sessions/users/{user_id:str}"),
    "UpdateTenantPolicy": ("PUT", "/v1/auth/tenant-policy"),
}
# Exact HTTP paths served without a resolved principal: the public and session-token routes.
PUBLIC_HTTP_PATHS: frozenset[str] = frozenset(
    path for rpc, (_, path) in AUTH_HTTP_ROUTES.items() if rpc in PUBLIC_AUTH_RPCS | SESSION_AUTH_RPCS
)

ENROLMENT_HTTP_PATHS: frozenset[str] = frozenset(
    path for rpc, (_, path) in AUTH_HTTP_ROUTES.items() if rpc in ENROLMENT_AUTH_RPCS
)

_BEARER = "bearer "


def enrolment_options(enrolment: bool) -> dict[str, bool]:
    """Keyword arguments for ``Authenticator.authenticate`` on an enrolment call (empty otherwise,
    so authenticators that know nothing of it keep working)."""
    return {"allow_single_factor": True} if enrolment else {}


def is_public_path(path: str) -> bool:
    if path.rstrip("/") in PUBLIC_HTTP_PATHS:
        return True
    for prefix in PUBLIC_HTTP_PREFIXES:
        if path == prefix or path.startswith(prefix + "/"):
            return True
    return False


def credential_from(headers: Iterable[tuple[str, str]]) -> str:
    """The bearer credential of a request's headers or metadata (lower-case names): ``authorization:
    Bearer <credential>``, else ``x-api-key: <key>``; '' when there is none."""
    bearer = key = ""
    for name, value in headers:
        if name == "authorization":
            if value[:7].lower() == _BEARER:
                bearer = value[7:].strip()
        elif name == "x-api-key":
            key = value.strip()
    return bearer or key


def client_of_peer(peer: str) -> str:
    """The address of a gRPC peer string (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return rest or peer


DEFAULT_TRUSTED_PROXIES = "127.0.0.0/8,::1"


class TrustedProxies:
    """The peers allowed to name the client they forward (``x-forwarded-for``).

    ``client(peer, forwarded)``: a peer that is not trusted is the client, whatever it sends. A
    trusted peer's ``x-forwarded-for`` is read right to left (each proxy appends the address it
    saw), skipping trusted proxies: the first address that is not one is the client. When every
    hop is trusted the leftmost one is (a browser on the console's own host); an unreadable hop
    ends the walk at the last trusted address seen, so nothing but an address ever comes out.
    """

    def __init__(self, networks: Iterable[str] = DEFAULT_TRUSTED_PROXIES.split(",")) -> None:
        self._networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = tuple(
            ipaddress.ip_network(n.strip(), strict=False) for n in networks if n.strip()
        )
        self._peers: dict[str, tuple[bool, str]] = {}  # peer -> (trusted, normalised); peers are few

    @classmethod
    def parse(cls, spec: str) -> TrustedProxies:
        """Comma-separated addresses or CIDR networks; '' trusts no peer. ``ValueError`` names a bad entry."""
        entries = [e.strip() for e in spec.split(",") if e.strip()]
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
        return cls(entries)

    @property
    def networks(self) -> tuple[str, ...]:
        return tuple(str(n) for n in self._networks)

    def trusts(self, address: str) -> bool:
        return self._peer(address)[0]

    def _peer(self, address: str) -> tuple[bool, str]:
        known = self._peers.get(address)
        if known is None:
            parsed = _address(address)
            known = (parsed is not None and any(parsed in n for n in self._networks), str(parsed))
            if len(self._peers) < 4096:
                self._peers[address] = known
        return known

    def client(self, peer: str, forwarded: Iterable[str] = ()) -> str:
        """The client's address: ``peer`` (the connecting address) or, for a trusted peer, the
        nearest untrusted hop of the ``x-forwarded-for`` values ``forwarded`` (in header order)."""
        trusted, nearest = self._peer(peer)
        if not trusted:
            return peer
        hops = [hop.strip() for value in forwarded for hop in value.split(",") if hop.strip()]
        for hop in reversed(hops):
            parsed = _address(_strip_port(hop))
            if parsed is None:
                return nearest
            nearest = str(parsed)
            if not any(parsed in n for n in self._networks):
                return nearest
        return nearest


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip().removeprefix("[").removesuffix("]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _strip_port(hop: str) -> str:
    """``1.2.3.4:5678`` -> ``1.2.3.4``; ``[::1]:5678`` -> ``::1``; anything else as it is."""
    if hop.startswith("["):
        return hop[1:hop.index("]")] if "]" in hop else hop
    if hop.count(":") == 1:
        return hop.partition(":")[0]
    return hop


def forwarded_for(headers: Iterable[tuple[str, str]]) -> list[str]:
    """The ``x-forwarded-for`` values of a request's headers or metadata (lower-case names)."""
    return [value for name, value in headers if name == "x-forwarded-for"]


def current_client() -> str:
    """The address of the caller of the call being served ('' when the edge did not set it)."""
    return client_var.get()


def current_principal() -> Principal:
    """The principal of the call being served; raises ``InvalidCredentials`` (UNAUTHENTICATED / 401)
    when there is none."""
    principal = principal_var.get()
    if principal is None:
        raise InvalidCredentials("no principal")
    return principal


def require_platform_admin(platform_tenant: str, action: str) -> Principal:
    """Platform-wide settings (the provider registry) are the bootstrap tenant's to change: the
    caller must be an admin of ``platform_tenant``. ``Forbidden`` otherwise."""
    principal = current_principal()
    if principal.tenant_id != platform_tenant:
        raise Forbidden(action)
    principal.require(Role.ADMIN, action)
    return principal


class Authenticator(Protocol):
    """The edges' port: a bearer credential -> ``Principal``; ``InvalidCredentials`` otherwise.
    ``allow_single_factor`` (passed for ``ENROLMENT_AUTH_RPCS`` only) accepts a single-factor session
    of a tenant that requires MFA."""

    async def authenticate(self, credential: str, *, client: str, allow_single_factor: bool = False) -> Principal: ...


class StaticAuthenticator:
    """Accepts exactly ``credentials`` (credential -> principal): for tests that fake the database,
    and for tools that embed a backend."""

    def __init__(self, credentials: dict[str, Principal]) -> None:
        self._credentials = dict(credentials)
        self.rejected = 0

    async def authenticate(self, credential: str, *, client: str, allow_single_factor: bool = False) -> Principal:
        principal = self._credentials.get(credential) if credential else None
        if principal is None:
            self.rejected += 1
            raise InvalidCredentials("unknown credential")
        return principal

    def forget(self, api_key_id: str) -> None:
        self._credentials = {c: p for c, p in self._credentials.items() if p.credential_id != api_key_id}


_KEY_PREFIX = f"{API_KEY_SCHEME}_"


class CachingAuthenticator:
    """``inner`` with verified API keys kept ``ttl`` seconds (sessions always go to ``inner``: their
    idle timer and logout must take effect at once). Concurrent first uses of one key share one
    lookup. Failures are never cached, so each leaves its audit event."""

    def __init__(
        self, inner: Authenticator, *, ttl: float = 5.0, max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._entries: dict[bytes, tuple[Principal, float]] = {}
        self._inflight: dict[bytes, asyncio.Future[Principal]] = {}
        self.lookups = 0  # calls that reached ``inner`` for an API key

    async def authenticate(self, credential: str, *, client: str, allow_single_factor: bool = False) -> Principal:
        if self._ttl <= 0 or not credential.startswith(_KEY_PREFIX):
            return await self._inner.authenticate(credential, client=client, **enrolment_options(allow_single_factor))
        digest = hashlib.sha256(credential.encode()).digest()
        hit = self._entries.get(digest)
        if hit is not None and hit[1] > self._clock():
            return hit[0]
        pending = self._inflight.get(digest)
        if pending is None:
            pending = asyncio.ensure_future(self._lookup(digest, credential, client))
            self._inflight[digest] = pending
            pending.add_done_callback(lambda _: self._inflight.pop(digest, None))
        return await asyncio.shield(pending)

    async def _lookup(self, digest: bytes, credential: str, client: str) -> Principal:
        self.lookups += 1
        principal = await self._inner.authenticate(credential, client=client)
        now = self._clock()
        if len(self._entries) >= self._max:
            self._entries = {d: e for d, e in self._entries.items() if e[1] > now}
            if len(self._entries) >= self._max:
                self._entries.clear()
        self._entries[digest] = (principal, now + self._ttl)
        return principal

    def forget(self, api_key_id: str) -> None:
        """Drop the cached key ``api_key_id`` (revoked on this replica)."""
        self._entries = {d: e for d, e in self._entries.items() if e[0].credential_id != api_key_id}
