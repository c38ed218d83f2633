"""A relay process for the crash test: ``python -m tests.harness.relay_child``.

Runs one ``RelayOutbox.run_once`` against a real database and NATS stream. With
``--die-after-acks N`` the publisher kills the whole process (``os._exit``, no clean-up, no
rollback sent) right after the N-th PubAck, i.e. between publish and mark-as-sent. Prints
``{"relayed": n}`` as JSON on a clean exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from adapters.nats import JetStreamBus
from adapters.postgres import SqlAlchemyUnitOfWorkFactory, create_engine
from application.outbox import RelayOutbox
from application.ports import OutboxMessage

__all__ = ["DIED_EXIT_CODE", "main"]

DIED_EXIT_CODE = 77


class DieAfterAcks:
    """Publisher wrapper: publish for real, then die after the ``limit``-th acknowledgement."""

    def __init__(self, bus: JetStreamBus, limit: int) -> None:
        self._bus = bus
        self._limit = limit
        self._acks = 0

    async def publish(self, message: OutboxMessage) -> None:
        await self._bus.publish(message)  # returns only after the PubAck
        self._acks += 1
        if self._acks >= self._limit:
            sys.stdout.flush()
            os._exit(DIED_EXIT_CODE)


async def _run(args: argparse.Namespace) -> int:
    engine = create_engine(args.database_url, pool_size=2)
    bus = await JetStreamBus.connect(args.nats_url, stream=args.stream, subjects=args.subjects)
    try:
        publisher = DieAfterAcks(bus, args.die_after_acks) if args.die_after_acks else bus
        return await RelayOutbox(SqlAlchemyUnitOfWorkFactory(engine), publisher).run_once(args.limit)
    finally:
        await bus.close()
        await engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="relay_child")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--nats-url", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--subjects", nargs="+", required=True)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--die-after-acks", type=int, default=0)
    args = parser.parse_args(argv)
    relayed = asyncio.run(_run(args))
    print(json.dumps({"relayed": relayed}), flush=True)


if __name__ == "__main__":
    main()
