"""``send_stream``: a streamed body that stops (and closes its source) when the client leaves,
and leaves the task that sent it alone when it ends normally."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from api.rest.raw_asgi import send_stream


class Client:
    """ASGI receive/send as uvicorn gives them: ``receive`` answers ``http.disconnect`` once the
    response is complete, or when the client leaves."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.event = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.event.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.event.set()  # response complete


def parts(n: int, closed: list[bool], delay: float = 0.0) -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        try:
            for i in range(n):
                await asyncio.sleep(delay)
                yield b"part %d" % i
        finally:
            closed.append(True)

    return gen()


async def test_a_whole_stream_is_sent_and_the_task_goes_on_undisturbed() -> None:
    client, closed = Client(), []
    await send_stream(client.receive, client.send, [(b"content-type", b"text/event-stream")], parts(3, closed))
    for _ in range(5):  # the watcher saw the response complete: it must not cancel this task now
        await asyncio.sleep(0)
    assert [m.get("body") for m in client.sent[1:]] == [b"part 0", b"part 1", b"part 2", b""]
    assert client.sent[0] == {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
    assert closed == [True]


async def test_a_client_that_leaves_stops_the_stream_and_closes_its_source() -> None:
    client, closed = Client(), []

    async def leave() -> None:
        while len(client.sent) < 3:
            await asyncio.sleep(0.001)
        client.event.set()  # the client disconnected

    leaving = asyncio.ensure_future(leave())
    await asyncio.wait_for(send_stream(client.receive, client.send, [], parts(1000, closed, delay=0.001)), 5)
    await leaving
    assert 3 <= len(client.sent) < 20 and client.sent[-1].get("more_body", True)  # never completed
    assert closed == [True]


async def test_a_cancellation_from_elsewhere_is_not_swallowed() -> None:
    client, closed = Client(), []
    task = asyncio.ensure_future(send_stream(client.receive, client.send, [], parts(1000, closed, delay=0.001)))
    await asyncio.sleep(0.01)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("the cancellation was swallowed")
    assert closed == [True]
