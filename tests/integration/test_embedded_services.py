"""ensure_nats / ensure_redis: reuse a running server, else start the real binary, and stop it."""

from __future__ import annotations

from pathlib import Path

import nats
import redis.asyncio as aioredis

from adapters.embedded.nats import ensure_nats, nats_jetstream_answers
from adapters.embedded.process import port_is_free
from adapters.embedded.redis import ensure_redis, redis_answers


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


async def test_ensure_nats_starts_a_jetstream_server_and_stops_it(tmp_path: Path) -> None:
    service = ensure_nats(tmp_path, port=0)
    try:
        assert service.started
        port = _port(service.url)
        nc = await nats.connect(service.url)
        try:
            info = await nc.jetstream().account_info()
            assert info.limits is not None
        finally:
            await nc.close()
        assert (tmp_path / "nats" / "jetstream").is_dir()

        again = ensure_nats(tmp_path, port=port)
        assert not again.started and again.url == service.url
        again.stop()  # not ours: does nothing
        assert nats_jetstream_answers(port)
    finally:
        service.stop()
    assert not nats_jetstream_answers(port)
    assert port_is_free(port)


async def test_ensure_redis_starts_a_server_without_persistence_and_stops_it(tmp_path: Path) -> None:
    service = ensure_redis(tmp_path, port=0)
    try:
        assert service.started
        client = aioredis.from_url(service.url)
        try:
            await client.set("k", "v")
            assert await client.get("k") == b"v"
            assert (await client.config_get("save"))["save"] == ""
        finally:
            await client.aclose()
        assert not ensure_redis(tmp_path, port=_port(service.url)).started
    finally:
        service.stop()
    assert not redis_answers(_port(service.url))
