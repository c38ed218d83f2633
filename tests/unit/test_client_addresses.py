"""Which address a call comes from: the peer, or the client a trusted proxy forwards in
``x-forwarded-for`` — the backend's ``api.auth.TrustedProxies`` and the console's copy
(``web.proxies``) agree case by case; the REST middleware and the gRPC interceptor set it per call;
the limiter groups IPv6 clients by /64; the setting is checked at start-up."""

from __future__ import annotations

from typing import Any

import pytest

from api.auth import DEFAULT_TRUSTED_PROXIES, TrustedProxies, client_var, current_client
from api.grpc.interceptors import EdgeInterceptor
from api.rest.principal import authentication_middleware
from api.settings import SettingsError, load_settings
from application.identity.context import client_key
from application.identity.login import limiter_keys
from web.proxies import DEFAULT_TRUSTED_PROXIES as WEB_DEFAULT
from web.proxies import TrustedProxies as WebTrustedProxies

# (trusted, peer, x-forwarded-for values, expected client)
CASES = [
    # an untrusted peer is the client, whatever it claims
    (DEFAULT_TRUSTED_PROXIES, "203.0.113.7", ["198.51.100.1"], "203.0.113.7"),
    ("", "127.0.0.1", ["198.51.100.1"], "127.0.0.1"),  # '' trusts no one, loopback included
    # the console (loopback) names the browser
    (DEFAULT_TRUSTED_PROXIES, "127.0.0.1", ["198.51.100.1"], "198.51.100.1"),
    (DEFAULT_TRUSTED_PROXIES, "::1", ["2001:db8::5"], "2001:db8::5"),
    # a trusted peer without the header is the client (a local script)
    (DEFAULT_TRUSTED_PROXIES, "127.0.0.1", [], "127.0.0.1"),
    # right to left: what the client itself put on the left is never believed
    ("127.0.0.0/8,10.0.0.0/8", "10.0.0.2", ["6.6.6.6, 198.51.100.9, 10.0.0.3"], "198.51.100.9"),
    ("127.0.0.0/8,10.0.0.0/8", "10.0.0.2", ["6.6.6.6", "198.51.100.9"], "198.51.100.9"),  # several header lines
    # every hop trusted: the leftmost (a browser on the console's own host)
    (DEFAULT_TRUSTED_PROXIES, "127.0.0.1", ["127.0.0.5"], "127.0.0.5"),
    # ports and brackets, IPv4-mapped IPv6
    (DEFAULT_TRUSTED_PROXIES, "127.0.0.1", ["198.51.100.1:4431"], "198.51.100.1"),
    (DEFAULT_TRUSTED_PROXIES, "127.0.0.1", ["[2001:db8::7]:443"], "2001:db8::7"),
    (DEFAULT_TRUSTED_PROXIES, "::ffff:127.0.0.1", ["198.51.100.2"], "198.51.100.2"),
    # an unreadable hop ends the walk at the last trusted address seen: nothing else comes out
    (DEFAULT_TRUSTED_PROXIES, "127.0.0.1", ["unknown"], "127.0.0.1"),
    ("127.0.0.0/8,10.0.0.0/8", "127.0.0.1", ["<script>, 10.0.0.9"], "10.0.0.9"),
    # a peer that is no IP address (a unix socket) is never trusted
    (DEFAULT_TRUSTED_PROXIES, "/run/lumina.sock", ["198.51.100.1"], "/run/lumina.sock"),
]


@pytest.mark.parametrize(("trusted", "peer", "forwarded", "expected"), CASES)
def test_the_backend_and_the_console_find_the_same_client(
    trusted: str, peer: str, forwarded: list[str], expected: str
) -> None:
    assert TrustedProxies.parse(trusted).client(peer, forwarded) == expected
    assert WebTrustedProxies(trusted).client(peer, forwarded) == expected


def test_defaults_and_bad_settings() -> None:
    assert WEB_DEFAULT == DEFAULT_TRUSTED_PROXIES == load_settings({}).trusted_proxies
    assert TrustedProxies().networks == ("127.0.0.0/8", "::1/128")
    with pytest.raises(ValueError, match="'bogus'"):
        TrustedProxies.parse("10.0.0.0/8, bogus")
    with pytest.raises(ValueError, match="'bogus'"):
        WebTrustedProxies("bogus")
    with pytest.raises(SettingsError, match="LUMINA_TRUSTED_PROXIES: '300.1.1.1'"):
        load_settings({"LUMINA_TRUSTED_PROXIES": "300.1.1.1"})
    assert load_settings({"LUMINA_TRUSTED_PROXIES": ""}).trusted_proxies == ""
    with pytest.raises(SettingsError, match="LUMINA_REDIS_NAMESPACE"):
        load_settings({"LUMINA_REDIS_NAMESPACE": "has space"})


def test_the_limiter_counts_ipv6_clients_by_their_64() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("198.51.100.4") == "198.51.100.4"
    assert limiter_keys("acme", "ann@example.com", "2001:db8:1:2::77") == ["acct:acme:ann@example.com", "ip:2001:db8:1:2::/64"]


class _Authenticator:
    def __init__(self) -> None:
        self.clients: list[str] = []

    async def authenticate(self, credential: str, *, client: str) -> Any:
        self.clients.append(client)
        from tests.unit.auth_fakes import principal

        return principal("acme")


async def _asgi_call(trusted: str, path: str, peer: str, forwarded: str | None) -> tuple[str, list[str]]:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(current_client())

    authenticator = _Authenticator()
    middleware = authentication_middleware(authenticator, TrustedProxies.parse(trusted))(app)
    headers = [(b"authorization", b"Bearer k")] + ([(b"x-forwarded-for", forwarded.encode())] if forwarded else [])
    scope = {"type": "http", "path": path, "headers": headers, "client": (peer, 5555)}
    await middleware(scope, None, None)
    assert client_var.get() == ""  # reset after the request
    return seen[0], authenticator.clients


async def test_the_rest_middleware_sets_the_client_for_public_and_authenticated_paths() -> None:
    assert await _asgi_call(DEFAULT_TRUSTED_PROXIES, "/v1/auth/login", "127.0.0.1", "198.51.100.3") == ("198.51.100.3", [])
    assert await _asgi_call(DEFAULT_TRUSTED_PROXIES, "/v1/models", "127.0.0.1", "198.51.100.3") == (
        "198.51.100.3", ["198.51.100.3"])  # the authenticator's audit gets it too
    # a spoofed header from a peer that is not trusted changes nothing
    assert await _asgi_call(DEFAULT_TRUSTED_PROXIES, "/v1/models", "203.0.113.9", "127.0.0.1") == (
        "203.0.113.9", ["203.0.113.9"])
    assert await _asgi_call("", "/v1/auth/login", "127.0.0.1", "198.51.100.3") == ("127.0.0.1", [])


class _Context:
    def __init__(self, peer: str, metadata: tuple[tuple[str, str], ...]) -> None:
        self._peer, self._metadata = peer, metadata

    def peer(self) -> str:
        return self._peer

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


@pytest.mark.parametrize(("trusted", "peer", "expected"), [
    (DEFAULT_TRUSTED_PROXIES, "ipv4:127.0.0.1:41000", "198.51.100.8"),
    (DEFAULT_TRUSTED_PROXIES, "ipv6:[::1]:41000", "198.51.100.8"),
    (DEFAULT_TRUSTED_PROXIES, "ipv4:203.0.113.1:41000", "203.0.113.1"),
    ("10.1.0.0/16", "ipv4:127.0.0.1:41000", "127.0.0.1"),
])
def test_the_grpc_interceptor_sets_the_client(trusted: str, peer: str, expected: str) -> None:
    interceptor = EdgeInterceptor(metrics=None, authenticator=_Authenticator(), proxies=TrustedProxies.parse(trusted))  # type: ignore[arg-type]
    token = client_var.set("")
    try:
        interceptor._client(_Context(peer, (("x-forwarded-for", "198.51.100.8"),)))  # type: ignore[arg-type]
        assert current_client() == expected
    finally:
        client_var.reset(token)
