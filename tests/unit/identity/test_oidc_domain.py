"""OIDC value objects validate themselves: https issuers (http only on loopback), openid scope,
registered redirect URIs; a login state expires."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.errors import InvalidRequest
from domain.identity import OidcLoginState, OidcProvider

GOOD = dict(tenant_id="acme", issuer="https://idp.example.com", client_id="lumina", client_secret="s",
            redirect_uris=("https://lumina.example.com/auth/oidc/callback",))


def test_a_well_formed_provider() -> None:
    provider = OidcProvider(**GOOD)
    assert provider.scopes == ("openid", "email", "profile")
    assert OidcProvider(**{**GOOD, "issuer": "http://127.0.0.1:9000"}).issuer.startswith("http://")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"issuer": "http://idp.example.com"}, "issuer"),  # http off loopback
        ({"issuer": "https://idp.example.com/#frag"}, "issuer"),
        ({"issuer": "https://user:pw@idp.example.com"}, "issuer"),
        ({"issuer": "https://idp.example.com/?tenant=1"}, "issuer"),
        ({"issuer": "ftp://idp.example.com"}, "issuer"),
        ({"client_id": "  "}, "client_id"),
        ({"client_secret": ""}, "client_secret"),
        ({"scopes": ("email",)}, "scopes"),
        ({"scopes": ("openid", "email profile")}, "scopes"),
        ({"redirect_uris": ()}, "redirect_uris"),
        ({"redirect_uris": ("javascript:alert(1)",)}, "redirect_uris"),
    ],
)
def test_bad_configuration_names_its_field(change: dict, field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        OidcProvider(**{**GOOD, **change})
    assert err.value.violations[0].field == field


def test_login_state_expires() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    state = OidcLoginState(state_hash="h", tenant_id="acme", nonce="n", code_verifier="v", redirect_uri="r",
                           expires_at=now + timedelta(minutes=10))
    assert not state.expired(now) and state.expired(now + timedelta(minutes=10))
