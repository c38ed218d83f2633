"""Every edge requires a principal: one production backend (``build_backend`` with nothing faked:
Postgres for identity, usage and the registry, Redis for the login limiter, the provider simulator
behind the registry), its admin and bootstrap key made by the first start, driven over real gRPC
and HTTP by the unmodified openai and anthropic SDKs, httpx and grpc.aio."""

from __future__ import annotations

import asyncio
import random
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import anthropic
import grpc
import httpx
import openai
import pyotp
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from adapters.events_codec import decode_event
from adapters.postgres.migrate import upgrade_async
from api.bootstrap import Backend, build_backend
from api.identity import first_start
from api.settings import load_settings
from application.identity import CreateApiKey, ListApiKeys, RegisterUser
from application.identity.bootstrap import ActAs
from domain.events import AuthenticationAudited
from domain.identity import Role
from lumina.v1 import auth_pb2 as apb
from lumina.v1 import auth_pb2_grpc, chat_pb2_grpc, provider_pb2_grpc
from lumina.v1 import chat_pb2 as pb
from lumina.v1 import provider_pb2 as ppb
from tests.harness.services import TestServices
from tools.provider_sim.testing import running_simulator

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "violet-harbour-lantern-42"
UNIFORM = "invalid credentials"
HI = [{"role": "user", "content": "hello there"}]


def new_key() -> str:
    return f"lum_{secrets.token_hex(6)}_{secrets.token_urlsafe(24)}"


@dataclass
class Platform:
    backend: Backend
    settings: Any
    database_url: str
    engine: AsyncEngine
    tenant: str
    key: str  # the administrator's bootstrap key

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.backend.http_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.backend.grpc_port}"

    async def outbox_mark(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(sa.text("SELECT coalesce(max(id), 0) FROM outbox"))).scalar_one())

    async def audits_since(self, mark: int) -> list[AuthenticationAudited]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.text("SELECT payload FROM outbox WHERE id > :m AND subject LIKE '%.auth.audited' ORDER BY id"), {"m": mark}
            )
            return [decode_event(r.payload) for r in rows]  # type: ignore[misc]


@pytest.fixture(scope="module")
def sim_port() -> Iterator[int]:
    with running_simulator() as base_url:
        yield int(base_url.rsplit(":", 1)[1].split("/")[0])


@pytest.fixture(scope="module")
async def platform(services: TestServices, redis_url: str, sim_port: int, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Platform]:
    database_url = services.create_database("lumina_auth")  # its own: the registry here points at this module's simulator
    await upgrade_async(database_url)
    tenant = f"a{uuid.uuid4().hex[:10]}"
    key = new_key()
    settings = load_settings(
        {}, database_url=database_url, redis_url=redis_url, tenant_id=tenant, bootstrap_api_key=key,
        sim_port=sim_port, data_dir=str(tmp_path_factory.mktemp("auth-edges")),
        redis_namespace=f"test-{uuid.uuid4().hex[:12]}",  # its own limiter counters: runs never lock each other out
    )
    lines = await first_start(settings, database_url)
    assert "LUMINA_BOOTSTRAP_API_KEY is its API key" in lines[0] and key not in "".join(lines)
    backend = build_backend(settings)  # the production path: registry, identity, group commit
    await backend.start(grpc_port=0, http_port=0)
    engine = create_async_engine(database_url)
    try:
        yield Platform(backend, settings, database_url, engine, tenant, key)
    finally:
        await backend.stop()
        await engine.dispose()
        services.drop_database(database_url)


def meta(credential: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {credential}"),) if credential is not None else ()


def hdrs(credential: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {credential}"} if credential is not None else {}


async def grpc_complete(platform: Platform, credential: str | None) -> pb.CompleteResponse:
    async with grpc.aio.insecure_channel(platform.grpc) as channel:
        return await chat_pb2_grpc.ChatServiceStub(channel).Complete(
            pb.CompleteRequest(parameters=pb.ChatParameters(messages=[pb.ChatMessage(role=pb.ROLE_USER, content="hi")])),
            metadata=meta(credential), timeout=20,
        )


async def auth_call(
    platform: Platform, rpc: str, request: Any, credential: str | None = None, metadata: tuple[tuple[str, str], ...] = ()
) -> Any:
    async with grpc.aio.insecure_channel(platform.grpc) as channel:
        return await getattr(auth_pb2_grpc.AuthServiceStub(channel), rpc)(
            request, metadata=meta(credential) + metadata, timeout=20
        )


async def test_missing_invalid_revoked_and_expired_credentials_get_one_uniform_401_and_an_audit_event(
    platform: Platform,
) -> None:
    ctx = platform.backend.identity.ctx
    admin = await ActAs(ctx)(platform.tenant, "admin@localhost")
    expired = await CreateApiKey(ctx)(admin, "expired", expires_at=ctx.clock.now() - timedelta(seconds=1))
    async with httpx.AsyncClient(base_url=platform.http, headers=hdrs(platform.key)) as http:
        made = (await http.post("/v1/auth/api-keys", json={"name": "soon revoked"})).json()
        revoked = made["raw_key"]
        assert (await http.post("/v1/chat/completions", json={"messages": HI}, headers=hdrs(revoked))).status_code == 200
        assert (await http.delete(f"/v1/auth/api-keys/{made['key']['id']}")).status_code == 200
    prefix = platform.key.split("_")[1]
    cases = {
        "no credential": None,
        "malformed key": "not-a-key-at-all",
        "unknown key": new_key(),
        "wrong secret": f"lum_{prefix}_{secrets.token_urlsafe(24)}",
        "revoked": revoked,  # revoked on this replica: its cache entry went with it
        "expired": expired.raw,
        "unknown session": secrets.token_urlsafe(32),
    }
    mark = await platform.outbox_mark()
    async with httpx.AsyncClient(base_url=platform.http) as http:
        for case, credential in cases.items():
            for method, path, body in (("POST", "/v1/chat/completions", {"messages": HI}), ("GET", "/v1/models", None),
                                       ("GET", "/admin/providers", None), ("GET", "/v1/auth/whoami", None)):
                r = await http.request(method, path, json=body, headers=hdrs(credential))
                assert r.status_code == 401, (case, path, r.text)
                assert r.headers["www-authenticate"].startswith("Bearer"), case
                assert r.headers["content-type"].startswith("application/problem+json")
                assert r.json()["detail"] == UNIFORM and r.json()["title"] == "Unauthenticated", (case, r.json())
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await grpc_complete(platform, credential)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED and info.value.details() == UNIFORM, case
        # Anthropic clients read Anthropic's error shape on /v1/messages
        r = await http.post("/v1/messages", json={"max_tokens": 5, "messages": HI}, headers={"x-api-key": revoked})
        assert r.status_code == 401 and r.json()["error"] == {"type": "authentication_error", "message": UNIFORM}
    reasons = [e.reason for e in await platform.audits_since(mark) if e.outcome == "failed"]
    for expected in ("no credential", "unknown key", "wrong secret", "revoked", "expired", "unknown token"):
        assert reasons.count(expected) >= 5, (expected, reasons)  # one per rejected call
    # open without a credential: health, readiness, metrics; the grpc health service
    async with httpx.AsyncClient(base_url=platform.http) as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).status_code == 200
        assert (await http.get("/metrics")).status_code == 200
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(platform.grpc) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_viewer_reads_but_cannot_change_the_registry_nor_can_another_tenants_owner(platform: Platform) -> None:
    ctx = platform.backend.identity.ctx
    viewer = await RegisterUser(ctx)(platform.tenant, f"viewer-{uuid.uuid4().hex[:6]}@example.com", "Vee", None, Role.VIEWER)
    async with httpx.AsyncClient(base_url=platform.http, headers=hdrs(platform.key)) as http:
        made = await http.post("/v1/auth/api-keys", json={"name": "viewer's", "user_id": viewer.id})  # an admin may
        assert made.status_code == 200, made.text
    viewer_key = made.json()["raw_key"]
    outsider = await auth_call(platform, "SignUp", apb.SignUpRequest(
        email="owner@elsewhere.example", password=PASSWORD, display_name="Olga", organisation="Elsewhere Inc"))
    provider = {"kind": "openai_compatible", "base_url": "http://127.0.0.1:9/v1", "label": "extra"}
    async with httpx.AsyncClient(base_url=platform.http) as http:
        assert (await http.get("/admin/providers", headers=hdrs(viewer_key))).status_code == 200
        for credential in (viewer_key, outsider.session.token):
            denied = await http.put("/admin/providers/extra", json=provider, headers=hdrs(credential))
            assert denied.status_code == 403 and denied.json()["code"] == "permission_denied", denied.text
            assert (await http.delete("/admin/providers/simulator", headers=hdrs(credential))).status_code == 403
        allowed = await http.put("/admin/providers/extra", json=provider, headers=hdrs(platform.key))
        assert allowed.status_code == 200, allowed.text
        assert (await http.delete("/admin/providers/extra", headers=hdrs(platform.key))).status_code == 204
    async with grpc.aio.insecure_channel(platform.grpc) as channel:
        stub = provider_pb2_grpc.ProviderServiceStub(channel)
        listed = await stub.ListProviders(ppb.ListProvidersRequest(), metadata=meta(viewer_key))
        assert "simulator" in {p.name for p in listed.providers}
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.DeleteProvider(ppb.DeleteProviderRequest(name="simulator"), metadata=meta(viewer_key))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ListProviders(ppb.ListProvidersRequest())
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (await grpc_complete(platform, viewer_key)).text  # a viewer may chat


async def test_unmodified_sdks_use_a_lumina_key_and_usage_names_the_user_and_key(platform: Platform) -> None:
    async with openai.AsyncOpenAI(api_key=platform.key, base_url=f"{platform.http}/v1", max_retries=0) as client:
        reply = await client.chat.completions.create(model="sim-small", messages=HI)
        models = [m.id async for m in client.models.list()]
    assert reply.choices[0].message.content and "sim-small" in models
    async with anthropic.AsyncAnthropic(api_key=platform.key, base_url=platform.http, max_retries=0) as client:
        message = await client.messages.create(model="sim-small", max_tokens=50, messages=HI)
    assert message.content[0].text
    async with openai.AsyncOpenAI(api_key=new_key(), base_url=f"{platform.http}/v1", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(model="sim-small", messages=HI)
    async with anthropic.AsyncAnthropic(api_key="lum_nope", base_url=platform.http, max_retries=0) as client:
        with pytest.raises(anthropic.AuthenticationError):
            await client.messages.create(model="sim-small", max_tokens=5, messages=HI)

    ctx = platform.backend.identity.ctx
    admin = await ActAs(ctx)(platform.tenant, "admin@localhost")
    keys = {k.name: k for k in await ListApiKeys(ctx)(admin)}
    bootstrap = keys["bootstrap (LUMINA_BOOTSTRAP_API_KEY)"]
    request_id = reply.id.removeprefix("chatcmpl-")
    async with platform.engine.connect() as conn:
        row = (await conn.execute(
            sa.text("SELECT tenant_id, user_id, api_key_id FROM usage_records WHERE request_id = :r"), {"r": request_id}
        )).one()
    assert tuple(row) == (platform.tenant, admin.user_id, bootstrap.id)


async def test_sign_up_totp_login_keys_and_logout_over_grpc(platform: Platform) -> None:
    email = f"ann-{uuid.uuid4().hex[:6]}@example.com"
    up = await auth_call(platform, "SignUp", apb.SignUpRequest(
        email=email, password=PASSWORD, display_name="Ann", organisation="Acme Labs"))
    assert up.tenant_id.startswith("acme-labs") and up.session.assurance_level == 1 and not up.session.pending_second_factor
    me = await auth_call(platform, "WhoAmI", apb.WhoAmIRequest(), up.session.token)
    assert (me.principal.email, me.principal.role, me.principal.kind, me.principal.has_totp) == (email, "owner", "user", False)

    begun = await auth_call(platform, "BeginTotpEnrolment", apb.BeginTotpEnrolmentRequest(), up.session.token)
    assert begun.otpauth_uri.startswith("otpauth://totp/") and begun.qr_svg.startswith("<svg")
    totp = pyotp.TOTP(begun.secret)
    confirmed = await auth_call(platform, "ConfirmTotpEnrolment", apb.ConfirmTotpEnrolmentRequest(code=totp.now()),
                                up.session.token)
    assert len(confirmed.recovery_codes) == 10 and confirmed.session.assurance_level == 2
    with pytest.raises(grpc.aio.AioRpcError) as info:  # a new factor ended every other session, the old one too
        await auth_call(platform, "WhoAmI", apb.WhoAmIRequest(), up.session.token)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await auth_call(platform, "Login", apb.LoginRequest(tenant_id=up.tenant_id, email=email, password="wrong-password-1"))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED and info.value.details() == UNIFORM
    login = await auth_call(platform, "Login", apb.LoginRequest(tenant_id=up.tenant_id, email=email, password=PASSWORD))
    assert login.session.pending_second_factor
    with pytest.raises(grpc.aio.AioRpcError) as info:  # a pending session is no principal
        await auth_call(platform, "WhoAmI", apb.WhoAmIRequest(), login.session.token)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    code = totp.at(time.time() + 30)  # the enrolment used this step's code: each code works once
    full = await auth_call(platform, "VerifySecondFactor", apb.VerifySecondFactorRequest(code=code), login.session.token)
    token = full.session.token
    assert full.session.assurance_level == 2 and not full.session.pending_second_factor
    me = await auth_call(platform, "WhoAmI", apb.WhoAmIRequest(), token)
    assert me.principal.has_totp and me.principal.assurance_level == 2 and me.principal.tenant_id == up.tenant_id

    created = await auth_call(platform, "CreateApiKey", apb.CreateApiKeyRequest(name="ci"), token)
    assert created.raw_key.startswith(f"lum_{created.key.prefix}_")
    listed = await auth_call(platform, "ListApiKeys", apb.ListApiKeysRequest(), token)
    assert [(k.id, k.name) for k in listed.keys] == [(created.key.id, "ci")] and created.raw_key not in str(listed)
    answer = await grpc_complete(platform, created.raw_key)  # the new tenant's key chats at once
    assert answer.text
    await auth_call(platform, "RevokeApiKey", apb.RevokeApiKeyRequest(id=created.key.id), token)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await grpc_complete(platform, created.raw_key)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED

    await auth_call(platform, "Logout", apb.LogoutRequest(), token)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await auth_call(platform, "WhoAmI", apb.WhoAmIRequest(), token)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await auth_call(platform, "BeginOidcLogin", apb.BeginOidcLoginRequest(tenant_id=up.tenant_id, redirect_uri="http://localhost/cb"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND  # public, but this tenant has no identity provider


async def test_the_same_flows_over_rest(platform: Platform) -> None:
    email = f"bea-{uuid.uuid4().hex[:6]}@example.com"
    async with httpx.AsyncClient(base_url=platform.http) as http:
        weak = await http.post("/v1/auth/signup", json={"email": email, "password": "password", "organisation": "B"})
        assert weak.status_code == 422 and weak.json()["errors"][0]["field"] == "password"
        up = await http.post("/v1/auth/signup", json={"email": email, "password": PASSWORD, "display_name": "Bea",
                                                      "organisation": "Bea & Co"})
        assert up.status_code == 200, up.text
        tenant, session = up.json()["tenant_id"], up.json()["session"]["token"]
        assert tenant.startswith("bea-co") and up.headers["cache-control"] == "no-store"
        me = await http.get("/v1/auth/whoami", headers=hdrs(session))
        assert me.json()["principal"]["email"] == email and me.json()["principal"]["role"] == "owner"

        begun = (await http.post("/v1/auth/totp/begin", headers=hdrs(session))).json()
        totp = pyotp.TOTP(begun["secret"])
        done = await http.post("/v1/auth/totp/confirm", json={"code": totp.now()}, headers=hdrs(session))
        assert done.status_code == 200 and len(done.json()["recovery_codes"]) == 10
        recovery = done.json()["recovery_codes"][0]

        bad = await http.post("/v1/auth/login", json={"tenant_id": tenant, "email": email, "password": "nope-nope-nope"})
        assert bad.status_code == 401 and bad.json()["detail"] == UNIFORM and bad.headers["www-authenticate"]
        login = (await http.post("/v1/auth/login", json={"tenant_id": tenant, "email": email, "password": PASSWORD})).json()
        assert login["session"]["pending_second_factor"] is True
        pending = login["session"]["token"]
        assert (await http.post("/v1/chat/completions", json={"messages": HI}, headers=hdrs(pending))).status_code == 401
        second = await http.post("/v1/auth/second-factor", json={"code": recovery}, headers=hdrs(pending))
        assert second.status_code == 200, second.text
        token = second.json()["session"]["token"]
        assert second.json()["session"]["assurance_level"] == 2

        made = await http.post("/v1/auth/api-keys", json={"name": "laptop", "expires_at": "2999-01-01T00:00:00Z"},
                               headers=hdrs(token))
        assert made.status_code == 200 and made.json()["key"]["expires_at"] == "2999-01-01T00:00:00Z"
        raw, key_id = made.json()["raw_key"], made.json()["key"]["id"]
        listed = (await http.get("/v1/auth/api-keys", headers=hdrs(token))).json()["keys"]
        assert [k["id"] for k in listed] == [key_id] and "secret_hash" not in listed[0]
        chat = await http.post("/v1/chat/completions", json={"messages": HI}, headers=hdrs(raw))
        assert chat.status_code == 200
        assert (await http.delete(f"/v1/auth/api-keys/{key_id}", headers=hdrs(token))).status_code == 200
        assert (await http.delete(f"/v1/auth/api-keys/{key_id}", headers=hdrs(token))).status_code == 404
        assert (await http.post("/v1/chat/completions", json={"messages": HI}, headers=hdrs(raw))).status_code == 401
        malformed = await http.post("/v1/auth/login", content=b"{nope")
        assert malformed.status_code == 422 and malformed.headers["content-type"].startswith("application/problem+json")

        assert (await http.post("/v1/auth/logout", headers=hdrs(token))).status_code == 200
        assert (await http.get("/v1/auth/whoami", headers=hdrs(token))).status_code == 401


async def test_first_start_is_idempotent_and_without_a_key_prints_a_one_time_reset_link(
    platform: Platform, redis_url: str
) -> None:
    again = await first_start(platform.settings, platform.database_url)
    assert "LUMINA_BOOTSTRAP_API_KEY is its API key" in again[0]
    tenant = f"b{uuid.uuid4().hex[:10]}"
    plain = load_settings({}, database_url=platform.database_url, redis_url=redis_url, tenant_id=tenant,
                          public_url="http://localhost:8080")
    [line] = await first_start(plain, platform.database_url)
    assert "admin@localhost (tenant " in line and "has no password yet" in line and "lumina keys create" in line
    link = line.split(" set it at ", 1)[1].split(" ", 1)[0]
    assert link.startswith("http://localhost:8080/recover?token=")
    token = link.split("token=", 1)[1]
    async with httpx.AsyncClient(base_url=platform.http) as http:
        reset = await http.post("/v1/auth/password-reset", json={"token": token, "new_password": PASSWORD})
        assert reset.status_code == 200, reset.text
        again_reset = await http.post("/v1/auth/password-reset", json={"token": token, "new_password": PASSWORD})
        assert again_reset.status_code == 401  # single use
        login = await http.post("/v1/auth/login", json={"tenant_id": tenant, "email": "admin@localhost", "password": PASSWORD})
        assert login.status_code == 200 and login.json()["session"]["token"]
    [line] = await first_start(plain, platform.database_url)  # has a password now: no new link
    assert "sign in to the console" in line

    async with platform.engine.connect() as conn:
        counts = (await conn.execute(sa.text(
            "SELECT (SELECT count(*) FROM tenants WHERE id = :t), (SELECT count(*) FROM users WHERE tenant_id = :t)"
        ), {"t": tenant})).one()
    assert tuple(counts) == (1, 1)


async def test_lumina_keys_create_prints_a_working_key_once(platform: Platform) -> None:
    env = {"PATH": "/usr/bin:/bin", "LUMINA_DATABASE_URL": platform.database_url, "LUMINA_TENANT_ID": platform.tenant,
           "LUMINA_DATA_DIR": platform.settings.data_dir}
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "api.cli", "keys", "create", "--name", "script"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    raw = done.stdout.strip()
    assert raw.startswith("lum_") and "shown once" in done.stderr and raw not in done.stderr
    assert (await grpc_complete(platform, raw)).text
    missing = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "api.cli", "keys", "create", "--name", "x", "--email", "nobody@example.com"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert missing.returncode == 1 and missing.stderr.strip().startswith("lumina: user") and missing.stdout == ""


# --- client addresses, abuse limits, passkeys, login options ----------------------------------


def xff(address: str, credential: str | None = None) -> dict[str, str]:
    """Headers of a request forwarded by a trusted proxy (this test runs on loopback, trusted by default)."""
    return {**hdrs(credential), "x-forwarded-for": address}


_DOC_HOSTS = iter(random.sample(range(1, 255), 254))


def doc_address() -> str:
    """An address of this test's own (TEST-NET-2), never handed out twice in a run: one test's
    exhausted limits never reach another (and the run's own Redis namespace keeps runs apart)."""
    return f"198.51.100.{next(_DOC_HOSTS)}"


def retry_delay(error: grpc.aio.AioRpcError) -> float:
    from google.rpc import error_details_pb2, status_pb2

    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                    info = error_details_pb2.RetryInfo()
                    detail.Unpack(info)
                    return info.retry_delay.ToTimedelta().total_seconds()
    raise AssertionError("no RetryInfo")


async def test_a_trusted_proxy_names_the_client_for_limits_and_audits(platform: Platform) -> None:
    a, b = "198.51.100.61", "198.51.100.62"
    email = f"cy-{uuid.uuid4().hex[:6]}@example.com"
    async with httpx.AsyncClient(base_url=platform.http) as http:
        up = await http.post("/v1/auth/signup", json={"email": email, "password": PASSWORD, "organisation": "Cy"},
                             headers=xff(doc_address()))
        tenant = up.json()["tenant_id"]
        mark = await platform.outbox_mark()
        # A guesses at accounts that do not exist: only A's address collects failures
        for i in range(6):
            bad = await http.post("/v1/auth/login", json={"tenant_id": tenant, "email": f"guess{i}@example.com",
                                                          "password": "wrong-password-1"}, headers=xff(a))
            assert bad.status_code == 401
        locked = await http.post("/v1/auth/login", json={"tenant_id": tenant, "email": email, "password": PASSWORD},
                                 headers=xff(a))
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) >= 1
        ok = await http.post("/v1/auth/login", json={"tenant_id": tenant, "email": email, "password": PASSWORD},
                             headers=xff(b))
        assert ok.status_code == 200, ok.text  # B is not A
    with pytest.raises(grpc.aio.AioRpcError) as info:  # the same address over gRPC metadata is locked too
        await auth_call(platform, "Login", apb.LoginRequest(tenant_id=tenant, email=email, password=PASSWORD),
                        metadata=(("x-forwarded-for", a),))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and retry_delay(info.value) > 0
    audits = [e for e in await platform.audits_since(mark) if e.method == "password"]
    assert {e.client_address for e in audits if e.outcome == "failed"} == {a}
    assert [e.client_address for e in audits if e.outcome == "succeeded"] == [b]
    assert {e.client_address for e in audits if e.outcome == "locked_out"} == {a}


async def test_sign_up_and_reset_requests_are_limited_per_client_address(platform: Platform) -> None:
    a, b = doc_address(), doc_address()
    limit = platform.backend.identity.ctx.signup_limit.limit
    bad_signup = {"email": "not an email", "password": PASSWORD, "organisation": "Flood"}
    async with httpx.AsyncClient(base_url=platform.http) as http:
        for _ in range(limit):  # cheap refusals count as much as sign-ups: each costs the server a check
            assert (await http.post("/v1/auth/signup", json=bad_signup, headers=xff(a))).status_code == 422
        refused = await http.post("/v1/auth/signup", json=bad_signup, headers=xff(a))
        assert refused.status_code == 429 and refused.headers["content-type"].startswith("application/problem+json")
        assert 3000 <= int(refused.headers["retry-after"]) <= 3600 and refused.json()["detail"] == "too many attempts; try again later"
        assert (await http.post("/v1/auth/signup", json=bad_signup, headers=xff(b))).status_code == 422
        reset_limit = platform.backend.identity.ctx.reset_limit.limit
        for i in range(reset_limit):
            answer = await http.post("/v1/auth/password-reset/request",
                                     json={"tenant_id": platform.tenant, "email": f"r{i}-{a}@example.com"}, headers=xff(b))
            assert answer.status_code == 200
        refused = await http.post("/v1/auth/password-reset/request",
                                  json={"tenant_id": platform.tenant, "email": "admin@localhost"}, headers=xff(b))
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await auth_call(platform, "SignUp", apb.SignUpRequest(email="x@example.com", password=PASSWORD, organisation="F"),
                        metadata=(("x-forwarded-for", a),))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and retry_delay(info.value) > 3000


async def test_passkeys_are_listed_and_removed_and_login_options_answer_over_rest_and_grpc(platform: Platform) -> None:
    from tests.unit.identity.soft_authenticator import SoftAuthenticator, b64url

    device = SoftAuthenticator(platform.settings.rp_id, platform.settings.rp_origins[0])
    email = f"pk-{uuid.uuid4().hex[:6]}@example.com"
    async with httpx.AsyncClient(base_url=platform.http) as http:
        up = (await http.post("/v1/auth/signup", json={"email": email, "password": PASSWORD, "organisation": "Keys"},
                              headers=xff(doc_address()))).json()
        token, tenant = up["session"]["token"], up["tenant_id"]
        begun = (await http.post("/v1/auth/passkeys/register/begin", headers=hdrs(token))).json()
        response, credential = device.create(begun["options_json"])
        done = await http.post("/v1/auth/passkeys/register/finish", headers=hdrs(token), json={
            "ceremony_id": begun["ceremony_id"], "credential_json": response, "name": "yubikey"})
        assert done.status_code == 200, done.text
        token = done.json()["session"]["token"]
        listed = (await http.get("/v1/auth/passkeys", headers=hdrs(token))).json()["passkeys"]
        assert [(p["id"], p["name"], p["transports"]) for p in listed] == [(b64url(credential.credential_id), "yubikey", ["internal"])]
        assert listed[0]["created_at"].endswith("Z") and "last_used_at" not in listed[0] and "public_key" not in listed[0]
        key = (await http.post("/v1/auth/api-keys", json={"name": "k"}, headers=hdrs(token))).json()["raw_key"]
        assert (await http.get("/v1/auth/passkeys", headers=hdrs(key))).json()["passkeys"][0]["name"] == "yubikey"
        # removing a factor takes a session with a recent second factor: an API key never is one
        assert (await http.delete(f"/v1/auth/passkeys/{listed[0]['id']}", headers=hdrs(key))).status_code == 401
        assert (await http.delete("/v1/auth/passkeys/AAAA", headers=hdrs(token))).status_code == 404
        assert (await http.delete("/v1/auth/passkeys/%25%25", headers=hdrs(token))).status_code == 404
        options = (await http.get("/v1/auth/login-options", params={"tenant_id": tenant})).json()
        assert options == {"passkeys_allowed": True, "signup_allowed": True}  # no identity provider: oidc_enabled false
        assert (await http.get("/v1/auth/login-options", params={"nope": "x"})).status_code == 422
    via_grpc = await auth_call(platform, "ListPasskeys", apb.ListPasskeysRequest(), token)
    assert [p.name for p in via_grpc.passkeys] == ["yubikey"] and via_grpc.passkeys[0].HasField("created_at")
    options = await auth_call(platform, "GetLoginOptions", apb.GetLoginOptionsRequest(tenant_id="no-such-tenant"))
    assert (options.oidc_enabled, options.passkeys_allowed, options.signup_allowed) == (False, True, True)
    await auth_call(platform, "DeletePasskey", apb.DeletePasskeyRequest(id=via_grpc.passkeys[0].id), token)
    assert list((await auth_call(platform, "ListPasskeys", apb.ListPasskeysRequest(), token)).passkeys) == []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await auth_call(platform, "DeletePasskey", apb.DeletePasskeyRequest(id=via_grpc.passkeys[0].id), token)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def _reason(error: grpc.aio.AioRpcError) -> str:
    from google.rpc import error_details_pb2, status_pb2

    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info.reason
    return ""


async def test_sessions_are_listed_and_ended_by_their_user_and_by_an_admin_over_grpc_and_rest(platform: Platform) -> None:
    """ASVS V7.5.2 and V7.4.5 at the edges: ListSessions / EndSession / EndUserSessions and their
    REST mirror under /v1/auth/sessions, each leaving an audit event."""
    email = f"sam-{uuid.uuid4().hex[:6]}@example.com"
    ctx = platform.backend.identity.ctx
    await RegisterUser(ctx)(platform.tenant, email, "Sam", PASSWORD, Role.MEMBER)
    login = apb.LoginRequest(tenant_id=platform.tenant, email=email, password=PASSWORD)
    tokens = [(await auth_call(platform, "Login", login)).session.token for _ in range(3)]
    mark = await platform.outbox_mark()
    listed = await auth_call(platform, "ListSessions", apb.ListSessionsRequest(), tokens[2])
    assert len(listed.sessions) == 3 and [s.current for s in listed.sessions].count(True) == 1
    current = next(s for s in listed.sessions if s.current)
    assert current.assurance_level == 1 and current.created_at.seconds > 0 and current.last_seen_at.seconds > 0
    assert all(t not in str(listed) for t in tokens)  # never a token
    first = next(s.id for s in listed.sessions if not s.current)
    await auth_call(platform, "EndSession", apb.EndSessionRequest(id=first), tokens[2])
    alive = []
    for token in tokens[:2]:
        try:
            await auth_call(platform, "WhoAmI", apb.WhoAmIRequest(), token)
            alive.append(token)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
    assert len(alive) == 1
    async with httpx.AsyncClient(base_url=platform.http) as http:
        rest = (await http.get("/v1/auth/sessions", headers=hdrs(alive[0]))).json()["sessions"]
        assert len(rest) == 2 and [s.get("current", False) for s in rest].count(True) == 1
        other = next(s["id"] for s in rest if not s.get("current"))
        # another user (the admin's key) cannot end it: NotFound, like an unknown id
        assert (await http.delete(f"/v1/auth/sessions/{other}", headers=hdrs(platform.key))).status_code == 404
        assert (await http.delete(f"/v1/auth/sessions/{other}", headers=hdrs(alive[0]))).status_code == 200
        assert (await http.get("/v1/auth/whoami", headers=hdrs(tokens[2]))).status_code == 401
        assert (await http.get("/v1/auth/sessions", headers=hdrs(alive[0]))).json()["sessions"][0]["current"] is True
        # a member may not end another user's sessions; the tenant's admin may
        me = (await http.get("/v1/auth/whoami", headers=hdrs(alive[0]))).json()["principal"]
        admin = (await http.get("/v1/auth/whoami", headers=hdrs(platform.key))).json()["principal"]
        refused = await http.delete(f"/v1/auth/sessions/users/{admin['user_id']}", headers=hdrs(alive[0]))
        assert refused.status_code == 403
        fresh = (await auth_call(platform, "Login", login)).session.token
        ended = await http.delete(f"/v1/auth/sessions/users/{me['user_id']}", headers=hdrs(platform.key))
        assert ended.status_code == 200 and ended.json()["ended"] == 2
        for token in (alive[0], fresh):
            assert (await http.get("/v1/auth/whoami", headers=hdrs(token))).status_code == 401
        assert (await http.delete("/v1/auth/sessions/users/nobody", headers=hdrs(platform.key))).status_code == 404
    grpc_ended = await auth_call(platform, "EndUserSessions", apb.EndUserSessionsRequest(user_id=me["user_id"]), platform.key)
    assert grpc_ended.ended == 0
    audits = [e for e in await platform.audits_since(mark) if e.method == "session" and e.outcome == "ended"]
    assert len(audits) == 4 and {e.user_id for e in audits} == {me["user_id"]}
    assert audits[2].reason.endswith(f"by admin {admin['user_id']}")


async def test_a_tenant_requiring_mfa_lets_one_factor_sessions_enrol_and_nothing_else(platform: Platform) -> None:
    """ASVS V6.3.3 at the edges: UpdateTenantPolicy (admins; turning it off needs step-up), then a
    single-factor session reaches WhoAmI and enrolment only, with a clear "second factor required"."""
    email = f"oli-{uuid.uuid4().hex[:6]}@example.com"
    up = await auth_call(platform, "SignUp", apb.SignUpRequest(
        email=email, password=PASSWORD, display_name="Oli", organisation=f"Oli {uuid.uuid4().hex[:4]}"))
    owner = up.session.token
    async with httpx.AsyncClient(base_url=platform.http) as http:
        missing = await http.put("/v1/auth/tenant-policy", json={}, headers=hdrs(owner))
        assert missing.status_code == 422
        on = await http.put("/v1/auth/tenant-policy", json={"require_mfa": True}, headers=hdrs(owner))
        assert on.status_code == 200 and on.json()["policy"]["require_mfa"] is True
        me = await http.get("/v1/auth/whoami", headers=hdrs(owner))
        assert me.status_code == 200 and me.json()["principal"]["mfa_enrolment_required"] is True
        for method, path in (("GET", "/v1/auth/api-keys"), ("GET", "/v1/auth/sessions"), ("GET", "/v1/models")):
            r = await http.request(method, path, headers=hdrs(owner))
            assert r.status_code == 401 and r.json()["title"] == "Second factor required", (path, r.text)
            assert r.json()["code"] == "second_factor_required"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await auth_call(platform, "ListApiKeys", apb.ListApiKeysRequest(), owner)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED and _reason(info.value) == "SECOND_FACTOR_REQUIRED"
    me = await auth_call(platform, "WhoAmI", apb.WhoAmIRequest(), owner)
    assert me.principal.mfa_enrolment_required and me.principal.assurance_level == 1
    begun = await auth_call(platform, "BeginTotpEnrolment", apb.BeginTotpEnrolmentRequest(), owner)
    await auth_call(platform, "BeginPasskeyRegistration", apb.BeginPasskeyRegistrationRequest(), owner)
    totp = pyotp.TOTP(begun.secret)
    done = await auth_call(platform, "ConfirmTotpEnrolment", apb.ConfirmTotpEnrolmentRequest(code=totp.now()), owner)
    token = done.session.token
    me = await auth_call(platform, "WhoAmI", apb.WhoAmIRequest(), token)
    assert not me.principal.mfa_enrolment_required and me.principal.assurance_level == 2
    await auth_call(platform, "ListApiKeys", apb.ListApiKeysRequest(), token)
    # an admin of another tenant changes nothing here; a key of this tenant cannot turn it off (no step-up)
    key = (await auth_call(platform, "CreateApiKey", apb.CreateApiKeyRequest(name="ops"), token)).raw_key
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await auth_call(platform, "UpdateTenantPolicy", apb.UpdateTenantPolicyRequest(require_mfa=False), key)
    assert _reason(info.value) == "STEP_UP_REQUIRED"
    off = await auth_call(platform, "UpdateTenantPolicy", apb.UpdateTenantPolicyRequest(require_mfa=False), token)
    assert not off.policy.require_mfa
    other = await auth_call(platform, "WhoAmI", apb.WhoAmIRequest(), platform.key)
    assert other.principal.tenant_id != up.tenant_id


async def test_a_first_second_factor_needs_a_recent_sign_in_over_grpc(platform: Platform) -> None:
    """ASVS V7.5.1: a single-factor session older than 10 minutes must sign in again (reason
    REAUTHENTICATION_REQUIRED) before BeginTotpEnrolment / BeginPasskeyRegistration."""
    email = f"rae-{uuid.uuid4().hex[:6]}@example.com"
    ctx = platform.backend.identity.ctx
    await RegisterUser(ctx)(platform.tenant, email, "Rae", PASSWORD, Role.MEMBER)
    login = apb.LoginRequest(tenant_id=platform.tenant, email=email, password=PASSWORD)
    token = (await auth_call(platform, "Login", login)).session.token
    async with platform.engine.begin() as conn:  # this session signed in 11 minutes ago
        await conn.execute(sa.text(
            "UPDATE auth_sessions SET created_at = created_at - interval '11 minutes' WHERE token_hash = :h"
        ), {"h": ctx.secrets.digest(token)})
    await auth_call(platform, "WhoAmI", apb.WhoAmIRequest(), token)  # still a valid session
    for rpc, request in (("BeginTotpEnrolment", apb.BeginTotpEnrolmentRequest()),
                         ("BeginPasskeyRegistration", apb.BeginPasskeyRegistrationRequest())):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await auth_call(platform, rpc, request, token)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert _reason(info.value) == "REAUTHENTICATION_REQUIRED", rpc
    again = (await auth_call(platform, "Login", login, token)).session.token  # signing in again rotates
    await auth_call(platform, "BeginTotpEnrolment", apb.BeginTotpEnrolmentRequest(), again)
    async with httpx.AsyncClient(base_url=platform.http) as http:
        r = await http.post("/v1/auth/passkeys/register/begin", json={}, headers=hdrs(again))
        assert r.status_code == 200, r.text
