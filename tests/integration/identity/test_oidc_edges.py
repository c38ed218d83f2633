"""OIDC sign-in through the production backend (``build_backend``, nothing faked) over real gRPC:
AuthService BeginOidcLogin -> the real IdP's login form -> FinishOidcLogin -> a session the
backend accepts; a replayed state gets the uniform UNAUTHENTICATED answer."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from redis.asyncio import Redis

from adapters.identity import AuthlibOidcClient
from adapters.postgres.engine import create_engine
from adapters.postgres.migrate import upgrade_async
from api.bootstrap import Backend, build_backend
from api.identity import first_start, identity_context
from api.settings import load_settings
from application.identity import ConfigureOidc
from lumina.v1 import auth_pb2 as apb
from lumina.v1 import auth_pb2_grpc
from tests.harness.oidc import OidcProviderServer, callback_params, sign_in
from tests.harness.services import TestServices
from tests.integration.identity.conftest import IDP_PASSWORD, OIDC_CLIENT

pytestmark = pytest.mark.timeout(180)
REDIRECT = OIDC_CLIENT.redirect_uris[0]


@pytest.fixture(scope="module")
async def backend(
    services: TestServices, redis_url: str, oidc_idp: OidcProviderServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Backend]:
    database_url = services.create_database("lumina_oidc_edges")
    await upgrade_async(database_url)
    settings = load_settings({}, database_url=database_url, redis_url=redis_url, tenant_id=f"o{uuid.uuid4().hex[:10]}",
                             data_dir=str(tmp_path_factory.mktemp("oidc-edges")), memory_enabled=False,
                             redis_namespace=f"test-{uuid.uuid4().hex[:12]}")
    await first_start(settings, database_url)
    # the operator's step (`lumina oidc set`), on the same database and key file as the backend
    engine = create_engine(database_url, pool_size=2)
    redis = Redis.from_url(redis_url)
    try:
        await ConfigureOidc(identity_context(settings, engine, redis), AuthlibOidcClient())(
            settings.tenant_id, issuer=oidc_idp.issuer, client_id=OIDC_CLIENT.client_id,
            client_secret=OIDC_CLIENT.client_secret, redirect_uris=OIDC_CLIENT.redirect_uris, jit_users=True,
        )
    finally:
        await redis.aclose()
        await engine.dispose()
    backend = build_backend(settings)
    await backend.start(grpc_port=0, http_port=0)
    try:
        yield backend
    finally:
        await backend.stop()
        services.drop_database(database_url)


async def call(backend: Backend, rpc: str, request: Any, token: str | None = None) -> Any:
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{backend.grpc_port}") as channel:
        return await getattr(auth_pb2_grpc.AuthServiceStub(channel), rpc)(request, metadata=metadata, timeout=20)


async def test_oidc_sign_in_over_grpc(backend: Backend) -> None:
    tenant = backend.settings.tenant_id
    begun = await call(backend, "BeginOidcLogin", apb.BeginOidcLoginRequest(tenant_id=tenant, redirect_uri=REDIRECT))
    params = callback_params(await sign_in(begun.authorization_url, login="sub-carol", password=IDP_PASSWORD,
                                           redirect_uri=REDIRECT))
    assert params["state"] == begun.state
    finish = apb.FinishOidcLoginRequest(state=params["state"], code=params["code"], redirect_uri=REDIRECT)
    done = await call(backend, "FinishOidcLogin", finish)
    assert done.created and not done.linked and done.session.assurance_level == 1
    me = await call(backend, "WhoAmI", apb.WhoAmIRequest(), done.session.token)
    assert (me.principal.tenant_id, me.principal.email, me.principal.kind) == (tenant, "carol@example.com", "user")

    with pytest.raises(grpc.aio.AioRpcError) as replay:
        await call(backend, "FinishOidcLogin", finish)
    assert replay.value.code() == grpc.StatusCode.UNAUTHENTICATED and replay.value.details() == "invalid credentials"
    with pytest.raises(grpc.aio.AioRpcError) as foreign:
        await call(backend, "BeginOidcLogin", apb.BeginOidcLoginRequest(tenant_id=tenant, redirect_uri="https://evil.example/cb"))
    assert foreign.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_login_options_say_which_tenants_offer_sso(backend: Backend) -> None:
    tenant = backend.settings.tenant_id
    on = await call(backend, "GetLoginOptions", apb.GetLoginOptionsRequest(tenant_id=tenant))
    default = await call(backend, "GetLoginOptions", apb.GetLoginOptionsRequest())  # the server's default tenant
    for unknown in ("no-such-tenant", "Not A Tenant!"):
        off = await call(backend, "GetLoginOptions", apb.GetLoginOptionsRequest(tenant_id=unknown))
        assert (off.oidc_enabled, off.passkeys_allowed, off.signup_allowed) == (False, True, True)
    assert on.oidc_enabled and default.oidc_enabled and on.passkeys_allowed
