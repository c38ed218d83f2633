"""The console's protections without a backend: CSRF tokens (signed double submit), redirects that
stay on the console, and how backend errors are read (signed out, wrong input, step-up)."""

from __future__ import annotations

import re

import pytest
from google.rpc import error_details_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from litestar.testing import AsyncTestClient

from web.app import create_app
from web.session import error_reason, field_errors, is_signed_out, safe_next

UNREACHABLE = "127.0.0.1:9"  # the discard port: nothing answers gRPC there


def token_of(html: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', html)
    assert match
    return match.group(1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/keys", "/keys"),
        ("/chat?x=1", "/chat?x=1"),
        ("//evil.example/", "/chat"),
        ("https://evil.example/", "/chat"),
        ("/\\evil.example", "/chat"),
        ("javascript:alert(1)", "/chat"),
        ("/ok\r\nSet-Cookie: x=1", "/chat"),
        (None, "/chat"),
    ],
)
def test_only_local_paths_are_followed_after_sign_in(value: object, expected: str) -> None:
    assert safe_next(value) == expected


def error(status: Status, *details: object) -> GRPCError:
    return GRPCError(status, "message", list(details))


def test_backend_errors_are_read_from_their_error_info() -> None:
    expired = error(Status.UNAUTHENTICATED, error_details_pb2.ErrorInfo(reason="UNAUTHENTICATED", domain="lumina.dev"))
    wrong = error(Status.UNAUTHENTICATED, error_details_pb2.ErrorInfo(reason="INVALID_CREDENTIALS", domain="lumina.dev"))
    step_up = error(Status.UNAUTHENTICATED, error_details_pb2.ErrorInfo(reason="STEP_UP_REQUIRED", domain="lumina.dev"))
    bad = error(Status.INVALID_ARGUMENT, error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field="password", description="too easy to guess")]))
    assert error_reason(step_up) == "STEP_UP_REQUIRED" and error_reason(bad) == ""
    assert field_errors(bad) == {"password": "too easy to guess"}
    assert is_signed_out(expired) and is_signed_out(error(Status.UNAUTHENTICATED))
    assert not is_signed_out(wrong)  # a wrong password or code, typed with a valid session
    assert is_signed_out(wrong, input_checked=False)  # the edge's uniform rejection of the session
    assert not is_signed_out(step_up) and not is_signed_out(step_up, input_checked=False)
    assert not is_signed_out(bad)


async def test_csrf_tokens_are_bound_to_the_cookie_and_survive_a_restart() -> None:
    first = create_app(UNREACHABLE, secret=b"1" * 32)
    async with AsyncTestClient(first, base_url="http://console.local") as client:
        page = await client.get("/login")
        token = token_of(page.text)
        nonce = client.cookies["lumina_csrf"]
        form = {"tenant": "t", "email": "a@example.com", "password": "x"}
        assert (await client.post("/login", data=form)).status_code == 403
        assert (await client.post("/login", data={**form, "csrf_token": "f" * 64})).status_code == 403
        passed = await client.post("/login", data={**form, "csrf_token": token})
        assert passed.status_code == 503 and "Cannot reach the backend" in passed.text  # past the check
        by_header = await client.post("/login", data=form, headers={"X-CSRF-Token": token})
        assert by_header.status_code == 503
        client.cookies.set("lumina_csrf", "A" * 43, domain="console.local")  # another browser's nonce with this page's token
        assert (await client.post("/login", data={**form, "csrf_token": token})).status_code == 403

    # A restarted console (new secret): the same browser reloads and its forms work again.
    second = create_app(UNREACHABLE, secret=b"2" * 32)
    async with AsyncTestClient(second, base_url="http://console.local") as client:
        client.cookies.set("lumina_csrf", nonce, domain="console.local")
        assert (await client.post("/login", data={**form, "csrf_token": token})).status_code == 403
        reloaded = await client.get("/login")
        assert client.cookies["lumina_csrf"] == nonce and token_of(reloaded.text) != token
        assert (await client.post("/login", data={**form, "csrf_token": token_of(reloaded.text)})).status_code == 503


async def test_a_nonce_that_is_not_ours_is_replaced() -> None:
    async with AsyncTestClient(create_app(UNREACHABLE), base_url="http://console.local") as client:
        client.cookies.set("lumina_csrf", "short", domain="console.local")
        page = await client.get("/login")
        assert client.cookies["lumina_csrf"] != "short" and len(client.cookies["lumina_csrf"]) >= 32
        out = await client.post("/logout", data={"csrf_token": token_of(page.text)}, follow_redirects=False)
        assert out.status_code == 303 and out.headers["location"] == "/login?notice=signed_out"
