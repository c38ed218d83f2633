"""``OidcClient`` with authlib (``AsyncOAuth2Client``: authorization URL with PKCE S256, code
exchange with ``client_secret_basic``) and joserfc (ID token signature and claims).

Discovery documents and JWKS are cached per issuer for ``metadata_ttl`` seconds; a token signed
with a key id the cached JWKS lacks refetches it once (the IdP rotated its keys). Each request
opens its own HTTP client (sign-ins are rare next to their cost), so there is nothing to close. Only asymmetric
signature algorithms are accepted, never ``none`` or HMAC. Errors carry the cause for the audit
(``InvalidCredentials.reason``) and never a token, code or secret.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import httpx2
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from application.identity.oidc import OidcClaims, OidcMetadata, OidcTokens
from domain.errors import InvalidRequest, Unavailable
from domain.identity import InvalidCredentials, OidcProvider
from domain.identity.oidc import validate_url

__all__ = ["AuthlibOidcClient"]

ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class AuthlibOidcClient:
    def __init__(
        self,
        *,
        timeout: float = 10.0,
        metadata_ttl: float = 3600.0,
        leeway_seconds: int = 60,
        algorithms: tuple[str, ...] = ASYMMETRIC,
    ) -> None:
        self._timeout = timeout
        self._ttl = metadata_ttl
        self._leeway = leeway_seconds
        self._algorithms = [a for a in algorithms if a in ASYMMETRIC]
        self._metadata: dict[str, tuple[float, OidcMetadata]] = {}
        self._jwks: dict[str, tuple[float, KeySet]] = {}

    # --- discovery and keys ---------------------------------------------------------------------

    async def discover(self, issuer: str) -> OidcMetadata:
        cached = self._metadata.get(issuer)
        if cached and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        data = await self._get_json(issuer.rstrip("/") + "/.well-known/openid-configuration", "discovery")
        if data.get("issuer") != issuer:
            raise InvalidCredentials("discovery: the document names another issuer")
        try:
            metadata = OidcMetadata(
                issuer=issuer,
                authorization_endpoint=validate_url("authorization_endpoint", str(data["authorization_endpoint"])),
                token_endpoint=validate_url("token_endpoint", str(data["token_endpoint"])),
                jwks_uri=validate_url("jwks_uri", str(data["jwks_uri"])),
                userinfo_endpoint=validate_url("userinfo_endpoint", str(data["userinfo_endpoint"]))
                if data.get("userinfo_endpoint") else "",
            )
        except (KeyError, InvalidRequest) as exc:
            raise InvalidCredentials(f"discovery: missing or unusable endpoint ({exc})") from None
        self._metadata[issuer] = (time.monotonic(), metadata)
        return metadata

    async def _keys(self, metadata: OidcMetadata, *, refresh: bool = False) -> KeySet:
        cached = self._jwks.get(metadata.jwks_uri)
        if cached and not refresh and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        data = await self._get_json(metadata.jwks_uri, "jwks")
        try:
            keys = KeySet.import_key_set(data)  # type: ignore[arg-type]
        except (JoseError, KeyError, TypeError, ValueError) as exc:
            raise InvalidCredentials(f"jwks: unusable key set ({type(exc).__name__})") from None
        self._jwks[metadata.jwks_uri] = (time.monotonic(), keys)
        return keys

    async def _get_json(self, url: str, what: str, *, bearer: str = "") -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        try:
            async with httpx2.AsyncClient(timeout=self._timeout, follow_redirects=False) as http:
                response = await http.get(url, headers=headers)
        except httpx2.HTTPError as exc:
            raise Unavailable(f"identity provider unreachable ({what}: {type(exc).__name__})") from exc
        if response.status_code >= 500:
            raise Unavailable(f"identity provider failed ({what}: HTTP {response.status_code})")
        if response.status_code != 200:
            raise InvalidCredentials(f"{what}: HTTP {response.status_code}")
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise InvalidCredentials(f"{what}: not a JSON object")
        return data

    # --- the code flow ----------------------------------------------------------------------------

    def _oauth(self, provider: OidcProvider, redirect_uri: str) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=provider.client_id,
            client_secret=provider.client_secret,
            scope=" ".join(provider.scopes),
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_basic",
            timeout=self._timeout,
        )

    async def authorization_url(
        self, provider: OidcProvider, *, redirect_uri: str, state: str, nonce: str, code_verifier: str
    ) -> str:
        metadata = await self.discover(provider.issuer)
        async with self._oauth(provider, redirect_uri) as client:
            url, _ = client.create_authorization_url(
                metadata.authorization_endpoint, state=state, code_verifier=code_verifier, nonce=nonce
            )
        return str(url)

    async def exchange_code(
        self, provider: OidcProvider, *, code: str, redirect_uri: str, code_verifier: str
    ) -> OidcTokens:
        metadata = await self.discover(provider.issuer)
        try:
            async with self._oauth(provider, redirect_uri) as client:
                token = await client.fetch_token(
                    metadata.token_endpoint, grant_type="authorization_code", code=code,
                    code_verifier=code_verifier, redirect_uri=redirect_uri,
                )
        except OAuthError as exc:  # the IdP's error response: invalid_grant, invalid_client, ...
            raise InvalidCredentials(f"token exchange: {exc.error}") from None
        except httpx2.HTTPStatusError as exc:
            raise Unavailable(f"identity provider failed (token: HTTP {exc.response.status_code})") from None
        except httpx2.HTTPError as exc:
            raise Unavailable(f"identity provider unreachable (token: {type(exc).__name__})") from None
        id_token = token.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise InvalidCredentials("token exchange: no id_token in the response")
        access = token.get("access_token")
        return OidcTokens(id_token=id_token, access_token=access if isinstance(access, str) else "")

    async def validate_id_token(self, provider: OidcProvider, id_token: str, *, nonce: str, now: datetime) -> OidcClaims:
        metadata = await self.discover(provider.issuer)
        keys = await self._keys(metadata)
        try:
            try:
                token = jwt.decode(id_token, keys, algorithms=self._algorithms)
            except InvalidKeyIdError:  # signed with a key we have not seen: the IdP rotated
                token = jwt.decode(id_token, await self._keys(metadata, refresh=True), algorithms=self._algorithms)
        except JoseError as exc:
            raise InvalidCredentials(f"id token: {_jose_reason(exc)}") from None
        except (ValueError, TypeError):
            raise InvalidCredentials("id token: malformed") from None
        claims = token.claims
        registry = jwt.JWTClaimsRegistry(
            now=int(now.timestamp()),
            leeway=self._leeway,
            iss={"essential": True, "value": provider.issuer},
            aud={"essential": True, "value": provider.client_id},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise InvalidCredentials(f"id token: {_jose_reason(exc)}") from None
        audience = claims["aud"]
        if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != provider.client_id:
            raise InvalidCredentials("id token: several audiences and azp is not this client")
        return _claims(claims, issuer=provider.issuer)

    async def userinfo(self, provider: OidcProvider, access_token: str, *, subject: str) -> OidcClaims:
        metadata = await self.discover(provider.issuer)
        if not metadata.userinfo_endpoint:
            return OidcClaims(issuer=provider.issuer, subject=subject)
        data = await self._get_json(metadata.userinfo_endpoint, "userinfo", bearer=access_token)
        if data.get("sub") != subject:
            raise InvalidCredentials("userinfo: sub differs from the id token's")
        return _claims(data, issuer=provider.issuer)


def _claims(data: dict[str, Any], *, issuer: str) -> OidcClaims:
    verified = data.get("email_verified")
    amr = data.get("amr")
    return OidcClaims(
        issuer=issuer,
        subject=str(data["sub"]),
        email=data["email"] if isinstance(data.get("email"), str) else "",
        # some IdPs send the string "true"
        email_verified=verified is True or (isinstance(verified, str) and verified.lower() == "true"),
        name=data["name"] if isinstance(data.get("name"), str) else "",
        amr=tuple(str(a) for a in amr) if isinstance(amr, list) else (),
        acr=data["acr"] if isinstance(data.get("acr"), str) else "",
    )


def _jose_reason(exc: JoseError) -> str:
    claim = getattr(exc, "claim", None) or ""
    name = type(exc).__name__
    return {
        "BadSignatureError": "bad signature",
        "ExpiredTokenError": "expired",
        "InvalidKeyIdError": "unknown signing key",
        "UnsupportedAlgorithmError": "algorithm not allowed",
        "MissingAlgorithmError": "algorithm not allowed",
    }.get(name) or (f"{claim} {'missing' if 'Missing' in name else 'mismatch'}" if claim else name)
