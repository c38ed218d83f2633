"""Names that keep tests apart on a shared NATS server, and clean-up of what they created.

Every test gets its own stream name and its own tenant id; the tenant is part of every event
subject (``lumina.<tenant>.<aggregate>.<event>``), so a stream bound to ``lumina.<tenant>.>``
never overlaps another test's or another run's stream.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
import uuid
from dataclasses import dataclass, field

__all__ = ["JetStreamNames", "delete_streams", "new_run_prefix"]


def new_run_prefix() -> str:
    """Unique per test session: ``T<pid>_<hex>`` (valid in stream names)."""
    return f"T{os.getpid()}_{uuid.uuid4().hex[:6]}".upper()


@dataclass
class JetStreamNames:
    """One test's stream and tenant. ``stream`` is the name to pass to ``JetStreamBus.connect``;
    every stream name handed out (``stream`` and ``another_stream()``) is deleted after the test."""

    prefix: str
    _counter: itertools.count[int] = field(default_factory=itertools.count)
    created: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tenant = f"t{uuid.uuid4().hex[:12]}"
        self.stream = self.another_stream()

    def another_stream(self) -> str:
        name = f"{self.prefix}_{next(self._counter)}"
        self.created.append(name)
        return name

    @property
    def subjects(self) -> tuple[str, ...]:
        return (f"lumina.{self.tenant}.>",)

    def subject(self, aggregate: str = "chat", event: str = "completed") -> str:
        return f"lumina.{self.tenant}.{aggregate}.{event}"


def delete_streams(nats_url: str, names: list[str]) -> None:
    """Delete streams (missing ones are fine), from sync code, on a private event loop."""
    if not names:
        return

    async def run() -> None:
        import nats
        import nats.js.errors

        nc = await nats.connect(nats_url, connect_timeout=2, allow_reconnect=False)
        try:
            js = nc.jetstream()
            for name in names:
                try:
                    await js.delete_stream(name)
                except nats.js.errors.NotFoundError:
                    pass
        finally:
            await nc.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: asyncio.run(run())).result()
