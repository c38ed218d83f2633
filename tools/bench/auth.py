"""What authentication adds to the gateway's hot path, in one run on one machine:

    .venv/bin/python -m tools.bench.auth [--calls 20000]

Embedded Postgres (temporary, migrated) and a private Redis; the first start stores an admin key.
Measures, per call: the API key verified from the in-process cache (what every request after the
first pays for 5 s), the same verification without the cache (Postgres each time), a session
token (Postgres each time, never cached), and the whole ASGI authentication middleware around a
do-nothing app against that app bare. The figures to compare with the ~1 ms added-latency budget
are the cached key and the middleware's extra.
"""

from __future__ import annotations

import argparse
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

__all__ = ["main"]


def _us(seconds: float, n: int) -> float:
    return seconds / n * 1e6


async def _per_call(n: int, call: Any) -> float:
    for _ in range(min(n, 200)):  # warm-up
        await call()
    started = time.perf_counter()
    for _ in range(n):
        await call()
    return time.perf_counter() - started


async def _run(database_url: str, redis_url: str, data_dir: str, calls: int) -> None:
    from adapters.postgres.engine import create_engine
    from api.auth import CachingAuthenticator
    from api.identity import build_identity, first_start
    from api.rest.principal import authentication_middleware
    from api.settings import load_settings
    from application.identity.authenticate import Authenticate
    from application.identity.bootstrap import ActAs
    from application.identity.context import issue_session

    key = f"lum_{secrets.token_hex(6)}_{secrets.token_urlsafe(24)}"
    settings = load_settings({}, database_url=database_url, redis_url=redis_url, tenant_id="bench",
                             bootstrap_api_key=key, data_dir=data_dir)
    await first_start(settings, database_url)
    engine = create_engine(database_url, pool_size=4)
    identity = build_identity(settings, engine)
    try:
        cached = identity.authenticator
        uncached = CachingAuthenticator(Authenticate(identity.ctx), ttl=0)
        admin = await ActAs(identity.ctx)("bench", "admin@localhost")
        async with identity.ctx.uow() as uow:
            user = await uow.users.get("bench", admin.user_id)
            assert user is not None
            session = await issue_session(identity.ctx, uow, user, assurance_level=1)
            await uow.commit()

        slow = max(200, calls // 20)  # the database-bound variants: fewer calls
        t_cached = await _per_call(calls, lambda: cached.authenticate(key, client="127.0.0.1"))
        t_key_db = await _per_call(slow, lambda: uncached.authenticate(key, client="127.0.0.1"))
        t_session = await _per_call(slow, lambda: cached.authenticate(session.token, client="127.0.0.1"))

        async def bare(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        wrapped = authentication_middleware(cached)(bare)
        scope = {"type": "http", "path": "/v1/chat/completions", "method": "POST", "client": ("127.0.0.1", 5000),
                 "headers": [(b"host", b"lumina"), (b"content-type", b"application/json"),
                             (b"authorization", b"Bearer " + key.encode()), (b"user-agent", b"OpenAI/Python 1.0")]}

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(_: Any) -> None:
            return None

        t_bare = await _per_call(calls, lambda: bare(scope, receive, send))
        t_wrapped = await _per_call(calls, lambda: wrapped(scope, receive, send))
    finally:
        await identity.aclose()
        await engine.dispose()

    c, k, s = _us(t_cached, calls), _us(t_key_db, slow), _us(t_session, slow)
    b, w = _us(t_bare, calls), _us(t_wrapped, calls)
    print(f"API key, cached (every request within {settings.api_key_cache_seconds:g} s): {c:8.2f} µs/call")
    print(f"API key, from Postgres (cache off):                    {k:8.1f} µs/call  ({k / c:,.0f}x the cached)")
    print(f"session token, from Postgres (never cached):           {s:8.1f} µs/call  ({s / c:,.0f}x the cached)")
    print(f"ASGI do-nothing app, bare:                             {b:8.2f} µs/request")
    print(f"  behind the authentication middleware:                {w:8.2f} µs/request  (+{w - b:.2f} µs, "
          f"{(w - b) / 1000 / 1.0 * 100:.2f}% of a 1 ms budget)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench.auth")
    p.add_argument("--calls", type=int, default=20_000)
    args = p.parse_args(argv)
    from adapters.embedded.postgres import start_embedded_postgres
    from adapters.embedded.redis import ensure_redis
    from adapters.postgres.migrate import upgrade

    with tempfile.TemporaryDirectory(prefix="lumina-bench-auth-") as tmp:
        pg = start_embedded_postgres(Path(tmp) / "pg")
        redis = ensure_redis(Path(tmp), port=0)
        try:
            upgrade(pg.url)
            uvloop.run(_run(pg.url, redis.url, tmp, args.calls))
        finally:
            redis.stop()
            pg.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
