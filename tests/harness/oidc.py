"""A real OpenID Provider for tests: ``tools/oidc_provider/server.mjs`` (npm ``oidc-provider``) in a
Node process on a free loopback port, and ``sign_in``, which walks its login form like a browser.

    with OidcProviderServer(clients=[...], accounts=[...]) as idp:
        url, state = await BeginOidcLogin(...)(tenant, redirect_uri)
        callback = await sign_in(url, login="alice", password="...", redirect_uri=redirect_uri)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx

from tests.harness.services import HarnessError

__all__ = ["OidcAccount", "OidcClientRegistration", "OidcProviderServer", "callback_params", "sign_in"]

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "tools" / "oidc_provider" / "server.mjs"


@dataclass(frozen=True)
class OidcClientRegistration:
    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]


@dataclass(frozen=True)
class OidcAccount:
    sub: str
    password: str
    email: str | None = None
    email_verified: bool | None = None
    name: str | None = None
    amr: tuple[str, ...] = ("pwd",)


@dataclass
class OidcProviderServer:
    clients: Sequence[OidcClientRegistration]
    accounts: Sequence[OidcAccount]
    conform_id_token_claims: bool = True  # True: email and email_verified only from userinfo
    issuer: str = ""
    _proc: subprocess.Popen[str] | None = field(default=None, repr=False)
    _stderr: object = field(default=None, repr=False)

    def start(self, timeout: float = 30.0) -> str:
        node = shutil.which("node")
        if node is None:
            raise HarnessError("oidc-provider: `node` is not on PATH (Node 20+ is needed)")
        if not (ROOT / "node_modules" / "oidc-provider").is_dir():
            raise HarnessError("oidc-provider: run `npm install` (node_modules/oidc-provider is missing)")
        config = {
            "host": "127.0.0.1",
            "port": 0,
            "clients": [
                {"client_id": c.client_id, "client_secret": c.client_secret, "redirect_uris": list(c.redirect_uris)}
                for c in self.clients
            ],
            "accounts": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(a).items() if v is not None}
                         for a in self.accounts],
            "conform_id_token_claims": self.conform_id_token_claims,
        }
        stderr = tempfile.TemporaryFile(mode="w+")
        self._stderr = stderr
        env = {**os.environ, "OIDC_PROVIDER_CONFIG": json.dumps(config), "NODE_NO_WARNINGS": "1"}
        self._proc = subprocess.Popen(
            [node, str(SERVER)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True
        )
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self._proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        if not line or not line[0].strip():
            self.stop()
            stderr.seek(0)
            raise HarnessError(f"oidc-provider did not start within {timeout}s: {stderr.read()[-2000:]}")
        self.issuer = json.loads(line[0])["issuer"]
        return self.issuer

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()
        self._proc = None

    def __enter__(self) -> OidcProviderServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


async def sign_in(authorization_url: str, *, login: str, password: str, redirect_uri: str, max_hops: int = 10) -> str:
    """Follow the authorization request through the IdP's login form like a browser (cookies kept)
    and return the URL the IdP finally redirects to (``redirect_uri?code=...&state=...``), without
    requesting it."""
    async with httpx.AsyncClient(follow_redirects=False, timeout=10) as browser:
        url, method, form = authorization_url, "GET", None
        for _ in range(max_hops):
            response = await browser.request(method, url, data=form)
            if response.is_redirect:
                target = urljoin(url, response.headers["location"])
                if target.startswith(redirect_uri):
                    return target
                url, method, form = target, "GET", None
                continue
            if response.status_code == 200 and 'name="password"' in response.text:
                if form is not None:
                    raise AssertionError("the IdP refused the login")
                url = urljoin(url, _form_action(response.text))
                method, form = "POST", {"login": login, "password": password}
                continue
            raise AssertionError(f"unexpected IdP answer {response.status_code}: {response.text[:300]}")
    raise AssertionError("too many redirects at the IdP")


def callback_params(callback_url: str) -> dict[str, str]:
    """The query parameters of the redirect back to Lumina (``code``, ``state``, ``iss``, or ``error``)."""
    return {k: v[0] for k, v in parse_qs(urlsplit(callback_url).query).items()}


def _form_action(page: str) -> str:
    start = page.index('action="', page.index('<form method="post"')) + len('action="')
    return page[start : page.index('"', start)]
