"""uvicorn's httptools protocol, sending a response's head together with its first body bytes.

uvicorn writes the status line and headers as soon as the app sends ``http.response.start``, and
the body with the next message: two writes, so on a ``TCP_NODELAY`` socket two segments, and the
client wakes up twice for one small answer (a non-streaming completion, an error, the first event
of a stream). Here the head is held until the next write on the connection and goes out with it in
one ``write``; if nothing follows before the event loop's next turn (a stream whose first event is
not ready yet), the head goes out alone then. Nothing is held across an ``await`` of the app's,
and the bytes and their order on the wire are unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["CoalescingHttpToolsProtocol"]

_HEAD = b"HTTP/1."  # every status line uvicorn writes starts so


class _CoalescingTransport:
    """The connection's transport with a write that holds a response head until the next write
    (or the loop's next turn); everything else is the transport's own."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + bytes(data))
        elif data[:7] == _HEAD:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
