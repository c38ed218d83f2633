"""A real backend for the console's identity tests: the composition root's backend on the session's
Postgres and Redis (identity module, AuthService, the auth interceptor), its provider the real
provider simulator, and the console in front of it on ``http://localhost:<port>`` (WebAuthn's
relying party id is ``localhost``; an IP address cannot be one).

``ConsoleClient`` acts like a browser without one: it keeps cookies and takes the CSRF token from
the pages it gets, as a browser's forms do. Each one connects from an address of its own on the
loopback network (127.x.y.z): the console names that address to the backend, whose per-address
limits (failed logins, sign-ups, reset requests) then count each "browser" apart, as they would
count real browsers. The backend's Redis keys live under a namespace of the module's own.
"""

from __future__ import annotations

import random
import re
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from adapters.identity import RedisLoginLimiter
from adapters.postgres.mappers import start_mappers
from adapters.providers import OpenAIProvider
from api.bootstrap import Backend, build_backend
from api.settings import load_settings
from domain.cost import Price
from domain.registry import ModelRoute, ProviderKind, ProviderSpec
from tools.provider_sim.testing import running_simulator
from web.server import running_console

PASSWORD = "violet-harbour-lantern-42"
MODEL = "web-console-sim"  # a model route of this module's own in the shared registry
PROVIDER = "web-console-sim"


@dataclass
class Stack:
    backend: Backend
    console_url: str  # http://localhost:<port>
    grpc_target: str
    engine: AsyncEngine
    redis: Redis
    redis_namespace: str

    async def mail_to(self, email: str) -> str:
        """The newest mail body queued for ``email`` (the worker that would send it does not run)."""
        async with self.engine.connect() as conn:
            body = (await conn.execute(
                text("SELECT body FROM mail_outbox WHERE recipient = :r ORDER BY seq DESC LIMIT 1"), {"r": email}
            )).scalar_one_or_none()
        assert body is not None, f"no mail queued for {email}"
        return str(body)

    async def forget_failures_from_loopback(self) -> None:
        """Every request reaches the backend from the console's address: clear that address's
        failure counter so one test's deliberate failures never lock out the next test."""
        await RedisLoginLimiter(self.redis, namespace=f"{self.redis_namespace}:auth").succeeded(["ip:127.0.0.1", "ip:::1"])


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with running_simulator() as url:
        yield url


@pytest.fixture(scope="module")
async def stack(
    database_url: str, redis_url: str, sim_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    # the console's port stays bound here (SO_REUSEADDR, not listening) until the console binds it:
    # the backend's own binds to port 0 in between cannot be given it (the kernel never autobinds a
    # port in use), as they could be a port only probed free
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    web_port = holder.getsockname()[1]
    namespace = f"test-{uuid.uuid4().hex[:12]}"
    settings = load_settings(
        {}, database_url=database_url, redis_url=redis_url, host="127.0.0.1", web_port=web_port,
        public_url=f"http://localhost:{web_port}", data_dir=str(tmp_path_factory.mktemp("web-identity")),
        redis_namespace=namespace,
    )
    start_mappers()  # registry entities must be built after the ORM maps them (build_backend would, later)
    seed = (
        [ProviderSpec(PROVIDER, ProviderKind.OPENAI_COMPATIBLE, label="simulated")],
        [ModelRoute(MODEL, PROVIDER, "sim-small", Price(0.10, 0.40))],
    )
    backend = build_backend(
        settings, providers=[OpenAIProvider(PROVIDER, api_key="k", base_url=sim_url, timeout=10)], seed=seed
    )
    await backend.start(grpc_port=0, http_port=0)
    engine = create_async_engine(database_url)
    redis = Redis.from_url(redis_url)
    target = f"127.0.0.1:{backend.grpc_port}"
    try:
        async with running_console(target, port=web_port, url_host="localhost") as url:
            holder.close()
            yield Stack(backend=backend, console_url=url, grpc_target=target, engine=engine, redis=redis,
                        redis_namespace=namespace)
    finally:
        holder.close()
        await redis.aclose()
        await engine.dispose()
        await backend.stop()


_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "page without a CSRF token"
    return match.group(1)


def alerts(html: str) -> list[str]:
    """The texts of the page's alerts (errors shown to the user)."""
    found = (re.sub(r"\s+", " ", m).strip() for m in re.findall(r'role="alert"[^>]*>([^<]*)<', html))
    return [text for text in found if text]


@dataclass
class Account:
    organisation: str
    tenant: str
    email: str
    password: str = PASSWORD


def browser_address() -> str:
    """A loopback address of a browser's own (127.0.0.0/8 all reaches the console on 127.0.0.1)."""
    return f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


class ConsoleClient:
    def __init__(self, base_url: str, address: str | None = None) -> None:
        self.address = address or browser_address()
        # IPv4 only: "localhost" must not be tried over ::1 from an IPv4 source address
        transport = httpx.AsyncHTTPTransport(local_address=self.address)
        self.http = httpx.AsyncClient(base_url=base_url, follow_redirects=False, timeout=30, transport=transport)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    def cookie(self, name: str) -> str | None:
        for cookie in self.http.cookies.jar:
            if cookie.name == name:
                return cookie.value
        return None

    async def token(self) -> str:
        return csrf_of((await self.http.get("/login")).text)

    async def submit(self, path: str, data: dict[str, str], **kwargs: object) -> httpx.Response:
        """POST a form the way the console's page would (with its CSRF token)."""
        return await self.http.post(path, data={**data, "csrf_token": await self.token()}, **kwargs)  # type: ignore[arg-type]

    async def sign_up(self, name: str = "") -> Account:
        tag = uuid.uuid4().hex[:8]
        email = f"{name or 'ann'}-{tag}@example.com"
        response = await self.submit("/signup", {
            "organisation": f"Console {tag}", "email": email, "display_name": "Ann Example",
            "password": PASSWORD, "confirm": PASSWORD,
        })
        assert response.status_code == 303, alerts(response.text) or response.text[:500]
        assert response.headers["location"] == "/account?notice=welcome"
        tenant = self.cookie("lumina_tenant")
        assert tenant and tenant.startswith(f"console-{tag}")
        return Account(organisation=f"Console {tag}", tenant=tenant, email=email)

    async def login(self, account: Account, password: str | None = None) -> httpx.Response:
        return await self.submit("/login", {
            "tenant": account.tenant, "email": account.email, "password": password or account.password, "next": "/chat",
        })

    async def logout(self) -> httpx.Response:
        return await self.submit("/logout", {})


def set_cookie_headers(response: httpx.Response, name: str) -> list[str]:
    return [v for v in response.headers.get_list("set-cookie") if v.startswith(f"{name}=")]


def artifacts() -> Path:
    return Path(__file__).resolve().parents[2] / "test-artifacts"
