"""The backend's HTTP protocol sends a response's head with its first body bytes (one write, one
segment) and never holds the head past the event loop's turn; the bytes are uvicorn's own."""

from __future__ import annotations

import asyncio

import uvicorn
from uvicorn.server import ServerState

from api.rest.coalescing import CoalescingHttpToolsProtocol

REQUEST = b"GET /x HTTP/1.1\r\nhost: t\r\n\r\n"


class Recording(asyncio.Transport):
    """A transport that records each write (what one send() to the socket would carry)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def serve_one(app: object) -> Recording:
    config = uvicorn.Config(app, http=CoalescingHttpToolsProtocol, lifespan="off", log_config=None, access_log=False)  # type: ignore[arg-type]
    config.load()
    protocol = CoalescingHttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
    transport = Recording()
    protocol.connection_made(transport)
    protocol.data_received(REQUEST)
    for _ in range(50):
        await asyncio.sleep(0.01)
        if any(w.endswith(b"0\r\n\r\n") or b"content-length" in w and w.endswith(b"done") for w in transport.writes):
            break
    return transport


async def test_a_whole_response_goes_out_in_one_write() -> None:
    async def app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"done"})  # type: ignore[operator]

    transport = await serve_one(app)
    assert len(transport.writes) == 1, transport.writes
    head, _, body = transport.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"content-length: 4" in head and body == b"done"


async def test_a_stream_whose_first_event_is_late_sends_its_head_at_once_then_the_events() -> None:
    async def app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})  # type: ignore[operator]
        await asyncio.sleep(0.05)  # the first event is not ready yet
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"", "more_body": False})  # type: ignore[operator]

    transport = await serve_one(app)
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK") and transport.writes[0].endswith(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in transport.writes[0]
    assert transport.writes[1:] == [b"9\r\ndata: 1\n\n\r\n", b"0\r\n\r\n"]
