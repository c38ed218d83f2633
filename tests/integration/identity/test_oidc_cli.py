"""`lumina oidc set|show|remove`: the operator configures a tenant's IdP from the command line (the
secret from the environment, stored sealed), and a sign-in through it works end to end."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from api.cli import main
from application.identity import FinishOidcLogin
from domain.errors import NotFound
from tests.harness.oidc import OidcProviderServer
from tests.integration.identity.conftest import OIDC_CLIENT, World, shared_data_dir
from tests.integration.identity.test_oidc import REDIRECT, at_idp


async def test_operator_sets_shows_and_removes_the_idp(
    world: World, oidc_idp: OidcProviderServer, database_url: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from adapters.identity import AuthlibOidcClient

    monkeypatch.setenv("LUMINA_DATABASE_URL", database_url)
    monkeypatch.setenv("LUMINA_DATA_DIR", str(shared_data_dir()))
    monkeypatch.setenv("OIDC_CLIENT_SECRET", OIDC_CLIENT.client_secret)
    base = ["oidc", "set", "--tenant", world.tenant, "--client-id", OIDC_CLIENT.client_id,
            "--redirect-uri", REDIRECT, "--jit"]

    assert await asyncio.to_thread(main, [*base, "--issuer", oidc_idp.issuer]) == 0
    assert await asyncio.to_thread(main, ["oidc", "show", "--tenant", world.tenant]) == 0
    out = capsys.readouterr().out
    assert f"OIDC sign-in through {oidc_idp.issuer}" in out and "jit users:     on" in out
    assert OIDC_CLIENT.client_secret not in out
    async with world.engine.connect() as conn:
        sealed = (await conn.execute(sa.text("SELECT client_secret_ciphertext FROM oidc_providers WHERE tenant_id = :t"),
                                     {"t": world.tenant})).scalar_one()
    assert OIDC_CLIENT.client_secret.encode() not in bytes(sealed)

    rp = AuthlibOidcClient()
    _, created, _ = await FinishOidcLogin(world.ctx, rp)(*await at_idp(world, rp, "sub-carol"), REDIRECT)
    assert created

    # a wrong issuer fails with one line, before anything is stored
    wrong = oidc_idp.issuer.replace("127.0.0.1", "localhost")
    assert await asyncio.to_thread(main, [*base, "--issuer", wrong]) == 1
    assert "issuer: discovery failed" in capsys.readouterr().err
    monkeypatch.delenv("OIDC_CLIENT_SECRET")
    assert await asyncio.to_thread(main, [*base, "--issuer", oidc_idp.issuer]) == 2  # no secret, no tty

    assert await asyncio.to_thread(main, ["oidc", "remove", "--tenant", world.tenant]) == 0
    with pytest.raises(NotFound):
        await at_idp(world, rp, "sub-carol")
