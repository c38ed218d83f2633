"""The edges' authentication pieces in isolation: credential extraction, public paths, the API-key
cache (TTL, revocation on this replica, one lookup for concurrent first uses, failures never
cached, sessions never cached), and the gRPC gate over a real in-process server."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from api.auth import (
    PUBLIC_GRPC_METHODS,
    CachingAuthenticator,
    client_of_peer,
    credential_from,
    current_principal,
    is_public_path,
)
from api.bootstrap import build_backend
from api.settings import load_settings
from domain.chat import Finish, FinishReason, TextDelta, Usage, UsageChunk
from domain.identity import InvalidCredentials, Principal, PrincipalKind, Role
from lumina.v1 import chat_pb2 as pb
from lumina.v1 import chat_pb2_grpc
from tests.unit.auth_fakes import KEY, principal
from tests.unit.chat_fakes import ScriptedProvider
from tests.unit.fakes import FakeUnitOfWorkFactory
from tests.unit.test_edges import seed


class CountingAuthenticator:
    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[str] = []
        self.valid = {KEY: principal("acme"), "session-token": Principal("acme", "u2", Role.MEMBER, PrincipalKind.USER, "s1")}
        self.delay = delay

    async def authenticate(self, credential: str, *, client: str) -> Principal:
        self.calls.append(credential)
        await asyncio.sleep(self.delay)
        if credential not in self.valid:
            raise InvalidCredentials("unknown")
        return self.valid[credential]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_credentials_come_from_bearer_or_x_api_key_and_nothing_else() -> None:
    assert credential_from([("authorization", f"Bearer {KEY}")]) == KEY
    assert credential_from([("authorization", f"bearer   {KEY} ")]) == KEY
    assert credential_from([("x-api-key", KEY)]) == KEY
    assert credential_from([("authorization", "Bearer a"), ("x-api-key", "b")]) == "a"
    assert credential_from([("authorization", f"Basic {KEY}")]) == ""
    assert credential_from([("cookie", f"lumina_session={KEY}")]) == ""  # the backend reads no cookies
    assert client_of_peer("ipv4:10.1.2.3:5555") == "10.1.2.3" and client_of_peer("ipv6:[::1]:5555") == "::1"


def test_only_health_metrics_and_sign_in_paths_are_public() -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/v1/auth/login", "/v1/auth/signup/", "/v1/auth/password-reset"):
        assert is_public_path(path), path
    for path in ("/v1/chat/completions", "/v1/models", "/v1/messages", "/admin/providers", "/v1/auth/whoami",
                 "/v1/auth/api-keys", "/v1/auth/loginx", "/healthzz", "/", "//healthz"):
        assert not is_public_path(path), path
    assert "/lumina.v1.AuthService/Login" in PUBLIC_GRPC_METHODS
    assert not any("ChatService" in m or "ProviderService" in m or "ApiKey" in m for m in PUBLIC_GRPC_METHODS)


def test_current_principal_without_one_is_invalid_credentials() -> None:
    with pytest.raises(InvalidCredentials):
        current_principal()


async def test_verified_keys_are_cached_for_the_ttl_and_forgotten_on_revocation() -> None:
    inner, clock = CountingAuthenticator(), Clock()
    cache = CachingAuthenticator(inner, ttl=5, clock=clock)
    for _ in range(3):
        assert (await cache.authenticate(KEY, client="1.2.3.4")).tenant_id == "acme"
    assert inner.calls == [KEY]
    clock.now += 5.01
    await cache.authenticate(KEY, client="")
    assert inner.calls == [KEY, KEY]
    cache.forget("key-1")
    await cache.authenticate(KEY, client="")
    assert len(inner.calls) == 3


async def test_failures_and_sessions_always_reach_the_store() -> None:
    inner = CountingAuthenticator()
    cache = CachingAuthenticator(inner, ttl=5)
    for _ in range(2):
        with pytest.raises(InvalidCredentials):
            await cache.authenticate("lum_000000000000_unknown-unknown-unknown", client="")
        await cache.authenticate("session-token", client="")
    assert len(inner.calls) == 4  # each failure leaves its audit event; a session's idle timer moves


async def test_concurrent_first_uses_share_one_lookup() -> None:
    inner = CountingAuthenticator(delay=0.05)
    cache = CachingAuthenticator(inner, ttl=5)
    results = await asyncio.gather(*(cache.authenticate(KEY, client="") for _ in range(20)))
    assert len(inner.calls) == 1 and {r.credential_id for r in results} == {"key-1"}


async def test_every_chat_rpc_needs_a_credential_the_authenticator_accepts() -> None:
    script = [TextDelta("hi"), UsageChunk(Usage(input_tokens=1, output_tokens=1)), Finish(FinishReason.STOP)]
    inner = CountingAuthenticator()
    backend = build_backend(load_settings({}), uow=FakeUnitOfWorkFactory(), providers=[ScriptedProvider("scripted", script)],
                            seed=seed(), authenticator=inner)
    await backend.start(grpc_port=0, http_port=0)
    try:
        request = pb.CompleteRequest(parameters=pb.ChatParameters(messages=[pb.ChatMessage(role=pb.ROLE_USER, content="x")]))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{backend.grpc_port}") as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            for metadata in ((), (("authorization", "Bearer wrong"),), (("x-api-key", "wrong"),)):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.Complete(request, metadata=metadata)
                assert (info.value.code(), info.value.details()) == (grpc.StatusCode.UNAUTHENTICATED, "invalid credentials")
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    async for _ in stub.StreamComplete(pb.StreamCompleteRequest(parameters=request.parameters), metadata=metadata):
                        pass
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # authentication comes before anything else is looked at, even a malformed request
            raw = channel.unary_unary("/lumina.v1.ChatService/Complete")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await raw(b"\xff\xff garbage")
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            reply = await stub.Complete(request, metadata=(("x-api-key", KEY),))
            assert reply.text == "hi"
        usage = next(iter(backend.uow.db.usage.values()))  # type: ignore[attr-defined]
        assert (usage.tenant_id, usage.user_id, usage.api_key_id) == ("acme", "user-1", "key-1")
    finally:
        await backend.stop()


def test_identity_errors_map_to_statuses_with_retry_and_challenge_headers() -> None:
    from google.rpc import error_details_pb2, status_pb2

    from api.errors import map_error
    from api.grpc.status import status_for
    from api.rest.problems import EXCEPTION_HANDLERS
    from domain.errors import DomainError
    from domain.identity import (
        Forbidden,
        SecondFactorRequired,
        SessionExpired,
        StepUpRequired,
        TooManyAttempts,
        WeakPassword,
    )

    table = {
        InvalidCredentials("x"): (grpc.StatusCode.UNAUTHENTICATED, 401),
        SessionExpired("idle"): (grpc.StatusCode.UNAUTHENTICATED, 401),
        SecondFactorRequired(): (grpc.StatusCode.UNAUTHENTICATED, 401),
        StepUpRequired(): (grpc.StatusCode.UNAUTHENTICATED, 401),
        Forbidden("write"): (grpc.StatusCode.PERMISSION_DENIED, 403),
        TooManyAttempts(2.5): (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        WeakPassword("too short"): (grpc.StatusCode.INVALID_ARGUMENT, 422),
    }
    for exc, (code, status) in table.items():
        assert (map_error(exc).grpc_code, map_error(exc).http_status) == (code, status), exc
    assert map_error(SecondFactorRequired()).title == "Second factor required"

    details = status_for(TooManyAttempts(2.5)).trailing_metadata[0][1]
    parsed = status_pb2.Status.FromString(details)
    retry = error_details_pb2.RetryInfo()
    assert any(d.Unpack(retry) for d in parsed.details) and retry.retry_delay.ToMilliseconds() == 2500

    handler = EXCEPTION_HANDLERS[DomainError]
    limited = handler(None, TooManyAttempts(2.5))
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
    denied = handler(None, InvalidCredentials("wrong secret"))
    assert denied.status_code == 401 and denied.headers["www-authenticate"].startswith("Bearer")
    assert "wrong secret" not in str(denied.content)  # the reason is for the audit only


def test_identity_settings_defaults_and_a_bootstrap_key_never_echoed() -> None:
    from api.settings import SettingsError

    s = load_settings({})
    assert (s.console_url, s.rp_id, s.rp_origins) == (
        "http://127.0.0.1:8080", "localhost", ["http://127.0.0.1:8080", "http://localhost:8080"])
    s = load_settings({"LUMINA_PUBLIC_URL": "https://lumina.example.com", "LUMINA_SIGNUP_ENABLED": "false"})
    assert (s.rp_id, s.rp_origins[0], s.signup_enabled) == ("lumina.example.com", "https://lumina.example.com", False)
    with pytest.raises(SettingsError) as info:
        load_settings({"LUMINA_BOOTSTRAP_API_KEY": "lum_nothex00000z_secret-secret-secret-secret"})
    assert "LUMINA_BOOTSTRAP_API_KEY" in str(info.value) and "secret-secret" not in str(info.value)
    assert load_settings({"LUMINA_BOOTSTRAP_API_KEY": KEY}).bootstrap_api_key == KEY
