"""Budget reservations per second against real Redis and Postgres: one round trip is a reserve
(Redis Lua, every applicable level at once) plus a settle (Redis Lua, then the durable ledger entry
and per-budget spend in Postgres, one statement in one transaction).

    .venv/bin/python -m tools.bench.budgets [--requests 2000] [--concurrency 1,64] [--levels 3]
        [--database-url URL] [--redis-url URL]

Without URLs it starts an embedded Postgres in a temporary directory (migrated) and uses the Redis
on 127.0.0.1:6379 (else starts ``redis-server``). Every request is charged to ``--levels``
budgets (tenant, team, user) whose limits are never reached, so every reservation is admitted.
Also prints the reserve + release rate (the same two Lua calls, Redis alone, as for a failed
provider call) for comparison, in the same run.

Each concurrency runs three times: settlements written to the durable ledger with group commit and
the spend journal (as the composition root wires it: the settle script also keeps the entry in
Redis until Postgres has it), the same without the journal (its cost), and with one transaction
per settlement.

``run_reservations(...)`` is the entry point other benchmarks call (``tools.bench.routing``); it
returns ``{(ledger write, concurrency): ReservationFigures}`` and prints one line per row.
(``measure_reservations`` is the same inside a running event loop, given the URLs.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ReservationFigures", "main", "measure_reservations", "run_reservations"]


@dataclass(frozen=True)
class ReservationFigures:
    recorder: str
    concurrency: int
    requests: int
    round_trips_per_s: float  # reserve + settle
    p50_ms: float
    p99_ms: float
    reserve_release_per_s: float

    def line(self) -> str:
        return (
            f"{self.recorder:<13} {self.concurrency:>11} {self.requests:>8} {self.round_trips_per_s:>18,.0f} {self.p50_ms:>8.2f}"
            f" {self.p99_ms:>8.2f} {self.reserve_release_per_s:>19,.0f}"
        )


HEADER = f"{'ledger write':<13} {'concurrency':>11} {'requests':>8} {'reserve+settle/s':>18} {'p50 ms':>8} {'p99 ms':>8} {'reserve+release/s':>19}"


async def measure_reservations(
    redis_url: str,
    database_url: str,
    *,
    concurrencies: Sequence[int] = (1, 64),
    requests: int = 2000,
    levels: int = 3,
    echo: bool = True,
) -> dict[tuple[str, int], ReservationFigures]:
    """The figures at each concurrency, on one replica (its own Redis pool and Postgres engine)."""
    import sqlalchemy as sa
    from redis.asyncio import BlockingConnectionPool, Redis

    from adapters.budgets import RedisLiveLedger
    from adapters.postgres import create_engine
    from adapters.postgres.budget_recorder import PostgresSpendRecorder
    from adapters.postgres.budget_uow import SqlBudgetUnitOfWorkFactory
    from adapters.system import SystemClock, TimeOrderedIds
    from application.budgets import (
        BudgetContext,
        BudgetDirectory,
        BudgetDraft,
        BudgetGuard,
        ManageBudgets,
    )
    from domain.budgets import BudgetScope, BudgetSubject, Period
    from domain.chat import Usage
    from domain.identity import Principal, PrincipalKind, Role

    tag = uuid.uuid4().hex[:8]
    tenant, namespace = f"bench-{tag}", f"lumina-bench:{tag}"
    top = max(concurrencies)
    redis = Redis(connection_pool=BlockingConnectionPool.from_url(redis_url, max_connections=max(8, top), timeout=30))
    engine = create_engine(database_url, pool_size=max(4, min(top, 32)))
    uow = SqlBudgetUnitOfWorkFactory(engine)
    clock = SystemClock()
    group = PostgresSpendRecorder(engine)
    ledger = RedisLiveLedger(redis, namespace=namespace)
    ctx = BudgetContext(  # as the composition root wires it: group commit and the spend journal
        uow=uow, ledger=ledger, clock=clock, ids=TimeOrderedIds(),
        directory=BudgetDirectory(uow, clock, ttl_seconds=60), recorder=group, journal=ledger,
    )
    guards = {
        "group commit": BudgetGuard(ctx),
        "no journal": BudgetGuard(dataclasses.replace(ctx, journal=None)),  # the crash window left open
        "transaction": BudgetGuard(dataclasses.replace(ctx, recorder=None)),
    }
    guard = guards["group commit"]
    owner = Principal(tenant_id=tenant, user_id="bench", role=Role.OWNER, kind=PrincipalKind.USER, credential_id="bench")
    nodes = [(BudgetScope.TENANT, ""), (BudgetScope.TEAM, "team-1"), (BudgetScope.USER, "user-1")][:levels]
    for scope, scope_id in nodes:
        await ManageBudgets(ctx).create(owner, BudgetDraft(
            name=f"{scope.value} budget", scope=scope, scope_id=scope_id, limit_micros=2**52, period=Period.monthly()))
    subject = BudgetSubject(tenant, user_id="user-1", team_ids=("team-1",), provider="sim", model="sim-small")
    usage = Usage(500, 200)
    results: dict[tuple[str, int], ReservationFigures] = {}
    try:
        async def round_trip(guard: BudgetGuard, latencies: list[float]) -> None:
            started = time.perf_counter()
            reservation = await guard.reserve(subject, 1_000, task="chat")
            await guard.settle(reservation, 900, usage=usage)
            latencies.append(time.perf_counter() - started)

        async def reserve_only() -> None:
            reservation = await guard.reserve(subject, 1_000)
            await guard.release(reservation)

        async def run(concurrency: int, n: int, body: Callable[[], Awaitable[None]]) -> float:
            queue = iter(range(n))

            async def worker() -> None:
                for _ in queue:
                    await body()

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return n / (time.perf_counter() - started)

        for g in guards.values():  # warm-up: pools, scripts loaded, directory cached
            await run(8, 100, functools.partial(round_trip, g, []))
        if echo:
            print(f"{levels} budget levels per request; {requests} requests per row", flush=True)
            print(HEADER, flush=True)
        for concurrency in concurrencies:
            # reserve + release: the same two Lua calls without Postgres (a failed provider call)
            reserve_rate = await run(concurrency, requests, reserve_only)
            for name, g in guards.items():
                latencies: list[float] = []
                rate = await run(concurrency, requests, functools.partial(round_trip, g, latencies))
                ordered = sorted(latencies)
                figures = ReservationFigures(
                    name, concurrency, requests, rate, statistics.median(ordered) * 1000,
                    ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, reserve_rate,
                )
                results[(name, concurrency)] = figures
                if echo:
                    print(figures.line(), flush=True)
        if echo and len(concurrencies) > 1:
            low, high = min(concurrencies), max(concurrencies)
            for name in guards:
                ratio = results[(name, high)].round_trips_per_s / results[(name, low)].round_trips_per_s
                print(f"{name}: concurrency {high} vs {low}: {ratio:.1f}x", flush=True)
            print(f"journal cost at {high}: group commit / no journal "
                  f"{results[('group commit', high)].round_trips_per_s / results[('no journal', high)].round_trips_per_s:.2f}x",
                  flush=True)
            print(f"group commit vs transaction per settlement at {high}: "
                  f"{results[('group commit', high)].round_trips_per_s / results[('transaction', high)].round_trips_per_s:.1f}x",
                  flush=True)
    finally:
        await ledger.flush()
        await group.aclose()
        keys = [k async for k in redis.scan_iter(match=f"{namespace}:*", count=1000)]
        if keys:
            await redis.delete(*keys)
        async with engine.begin() as conn:
            await conn.execute(sa.text("DELETE FROM budget_ledger WHERE tenant_id = :t"), {"t": tenant})
            await conn.execute(sa.text("DELETE FROM budgets WHERE tenant_id = :t"), {"t": tenant})
        await redis.aclose()
        await engine.dispose()
    return results


@contextlib.contextmanager
def _infrastructure(database_url: str | None, redis_url: str | None) -> Iterator[tuple[str, str]]:
    with tempfile.TemporaryDirectory(prefix="lumina-bench-budgets-") as tmp:
        stops = []
        try:
            if database_url is None:
                from adapters.embedded.postgres import start_embedded_postgres
                from adapters.postgres.migrate import upgrade

                pg = start_embedded_postgres(Path(tmp) / "pg")
                stops.append(pg.stop)
                upgrade(pg.url)
                database_url = pg.url
            if redis_url is None:
                from adapters.embedded.redis import ensure_redis

                service = ensure_redis(Path(tmp))
                stops.append(service.stop)
                redis_url = service.url
            yield database_url, redis_url
        finally:
            for stop in reversed(stops):
                stop()


def run_reservations(
    *,
    database_url: str | None = None,
    redis_url: str | None = None,
    concurrencies: Sequence[int] = (1, 64),
    requests: int = 1000,
    levels: int = 3,
    echo: bool = True,
) -> dict[tuple[str, int], ReservationFigures]:
    """Measure (starting what is not given) and print; for callers outside an event loop."""
    with _infrastructure(database_url, redis_url) as (db, redis):
        return asyncio.run(
            measure_reservations(redis, db, concurrencies=concurrencies, requests=requests, levels=levels, echo=echo)
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="budget reservations per second (reserve + settle) on Redis and Postgres")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 64])
    parser.add_argument("--levels", type=int, default=3, choices=(1, 2, 3))
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    args = parser.parse_args(argv)
    run_reservations(
        database_url=args.database_url, redis_url=args.redis_url, concurrencies=args.concurrency,
        requests=args.requests, levels=args.levels,
    )


if __name__ == "__main__":
    main()
