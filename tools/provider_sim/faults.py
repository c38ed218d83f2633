"""Transport faults shared by every vendor path of the simulator (OpenAI, Anthropic, Gemini).

``x-sim-fault`` values handled here (each vendor module keeps its own error *bodies*):

    400 401 403 404 429 500 503 529   an HTTP error: ``fault.status``; the vendor writes its body,
                                      with ``retry_after_headers(knobs.retry_after)`` on 429
    refuse                            the socket is closed without any response (connection refused
                                      / reset as the client sees it)              -> ``refuse(send)``
    stall                             response headers, then nothing until the client gives up
                                                                                  -> ``stall(...)``
    disconnect-after-N                a stream whose connection drops after N events  -> ``SseWriter``
    malformed, malformed-after-N      event N (default 1) of a stream is not JSON     -> ``SseWriter``
    x-sim-chunk-delay-ms (a knob)     slow drip: a pause before every event but the first -> ``SseWriter``

Other values (``context_length``, ``midstream``, ...) are vendor-specific: ``parse`` returns them
with ``kind="vendor"`` and the vendor module decides. A vendor path uses it like this::

    fault = faults.parse(knobs.fault)                      # None when no fault was asked for
    done = await faults.before_response(fault, send, watch, stream=True, stall_headers=SSE_HEADERS)
    if done is not None:                                   # refused, stalled or dropped: record it
        return record(*done)
    if fault is not None and fault.kind == "status":
        return await my_vendor_error(send, fault.status, faults.retry_after_headers(...))
    writer = faults.SseWriter(send, watch, fault=fault, delay_ms=knobs.chunk_delay_ms)
    await writer.start(headers)
    for payload in events:                                 # JSON bytes of each event
        if not await writer.event(payload, name="content_block_delta"):   # name: the SSE event line
            return writer.gone                             # cut by a fault or the client left
    await writer.end(b"data: [DONE]\\n\\n")                 # optional raw tail
    # writer.gone: True when the client went away before the end

``watch`` is a ``DisconnectWatch(receive)`` (close it when the request ends).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import msgspec

__all__ = [
    "STATUS_FAULTS",
    "before_response",
    "DisconnectWatch",
    "Fault",
    "SseWriter",
    "drop_connection",
    "parse",
    "refuse",
    "retry_after_headers",
    "stall",
]

Message = dict[str, Any]
Send = Callable[[Message], Awaitable[None]]
Receive = Callable[[], Awaitable[Message]]

STATUS_FAULTS = frozenset({400, 401, 403, 404, 429, 500, 503, 529})
STALL_LIMIT = 120.0  # a stalled response ends by itself after this long (the server can stop)
MALFORMED = b'{"choices": [{"delta": {"content": "unterminated'

_ALIASES = {"connect-refused": "refuse", "connection-refused": "refuse", "read-stall": "stall"}
_COUNTED = re.compile(r"^(disconnect|malformed)-after-(\d+)$")


class Fault(msgspec.Struct, frozen=True):
    """A parsed ``x-sim-fault``. ``kind``: status / refuse / stall / disconnect / malformed /
    vendor; ``status`` for status faults, ``after`` (events sent before it strikes) for
    disconnect and malformed; ``raw``: the header value."""

    kind: Literal["status", "refuse", "stall", "disconnect", "malformed", "vendor"]
    raw: str
    status: int = 0
    after: int = 0


def parse(value: str | None, *, vendor: frozenset[str] = frozenset()) -> Fault | None:
    """The fault named by ``value`` (None for none). Vendor-specific names must be in
    ``vendor`` when it is given; raises ``ValueError`` for unknown values."""
    if not value:
        return None
    name = _ALIASES.get(value, value)
    if name.isdigit() and int(name) in STATUS_FAULTS:
        return Fault("status", value, status=int(name))
    if name in ("refuse", "stall"):
        return Fault(name, value)  # type: ignore[arg-type]
    if name == "malformed":
        return Fault("malformed", value, after=1)
    counted = _COUNTED.match(name)
    if counted:
        return Fault(counted.group(1), value, after=int(counted.group(2)))  # type: ignore[arg-type]
    if vendor and name not in vendor:
        raise ValueError(f"unknown fault {value!r}")
    return Fault("vendor", value)


def retry_after_headers(seconds: float) -> list[tuple[bytes, bytes]]:
    text = str(int(seconds)) if float(seconds).is_integer() else str(seconds)
    return [(b"retry-after", text.encode())]


class DisconnectWatch:
    """Notices a client that goes away while the app waits (a task reading ``receive``,
    started on the first pause only, so undelayed requests pay nothing)."""

    __slots__ = ("_receive", "_task")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._task: asyncio.Task[None] | None = None

    async def _wait(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass

    @property
    def gone(self) -> bool:
        return self._task is not None and self._task.done()

    async def pause(self, seconds: float) -> bool:
        """Sleep ``seconds``; True when the client disconnected meanwhile."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._wait())
        if self._task.done():
            return True
        done, _ = await asyncio.wait((self._task,), timeout=seconds)
        return bool(done)

    def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()


async def drop_connection(send: Send) -> None:
    """Close the connection under this request now, whatever was sent (uvicorn: the transport
    behind its ``send``). Elsewhere, raising makes the server close it (or answer 500 when
    nothing was sent yet)."""
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise ConnectionAbortedError("simulated connection drop")
    transport.close()  # pending bytes are flushed first, then the socket closes
    for _ in range(10):  # let the server notice (connection_lost) so that it sends nothing more
        if getattr(cycle, "disconnected", True):
            return
        await asyncio.sleep(0)
    cycle.disconnected = True


async def refuse(send: Send) -> None:
    """No response at all: the client sees its connection closed (``RemoteProtocolError`` /
    ``ConnectError``)."""
    await drop_connection(send)


async def stall(send: Send, watch: DisconnectWatch, headers: list[tuple[bytes, bytes]], status: int = 200) -> bool:
    """Send the response headers, then nothing until the client goes away (or ``STALL_LIMIT``).
    True when the client went away."""
    await send({"type": "http.response.start", "status": status, "headers": headers})
    gone = await watch.pause(STALL_LIMIT)
    if not gone:
        await drop_connection(send)
    return gone


async def before_response(
    fault: Fault | None, send: Send, watch: DisconnectWatch, *, stream: bool, stall_headers: list[tuple[bytes, bytes]]
) -> tuple[int, bool] | None:
    """Carry out a fault that happens before any response body — ``refuse``, ``stall``, and
    ``disconnect`` of a non-streaming request (a stream is cut by ``SseWriter`` instead) — and
    return ``(status, client_went_away)`` for the request record; None when ``fault`` is none of
    these and the vendor path goes on."""
    if fault is None:
        return None
    if fault.kind == "refuse":
        await refuse(send)
        return 0, False
    if fault.kind == "stall":
        return 200, await stall(send, watch, stall_headers)
    if fault.kind == "disconnect" and not stream:
        await drop_connection(send)
        return 0, False
    return None


class SseWriter:
    """Writes one SSE response event by event, applying the stream faults and the slow drip."""

    def __init__(self, send: Send, watch: DisconnectWatch, *, fault: Fault | None = None, delay_ms: float = 0.0) -> None:
        self._send = send
        self._watch = watch
        self._fault = fault if fault is not None and fault.kind in ("disconnect", "malformed") else None
        self._delay = delay_ms / 1000
        self.sent = 0  # events sent
        self.gone = False  # the client went away
        self.cut = False  # a fault ended the stream

    async def start(self, headers: list[tuple[bytes, bytes]], status: int = 200) -> None:
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def event(self, data: bytes, *, name: str | None = None) -> bool:
        """Send one event whose ``data:`` line is ``data``; False when the stream must stop
        (the client left, or a fault cut it)."""
        if self.gone or self.cut:
            return False
        if self._delay and self.sent and await self._watch.pause(self._delay):
            self.gone = True
            return False
        fault = self._fault
        if fault is not None and self.sent == fault.after:
            if fault.kind == "disconnect":
                self.cut = True
                await drop_connection(self._send)
                return False
            data = MALFORMED
        head = b"event: " + name.encode() + b"\n" if name else b""
        await self._send({"type": "http.response.body", "body": head + b"data: " + data + b"\n\n", "more_body": True})
        self.sent += 1
        self.gone = self._watch.gone
        return not self.gone

    async def end(self, tail: bytes = b"") -> bool:
        """Finish the response (after a pause when dripping); True when the client went away."""
        if self.gone or self.cut:
            return self.gone
        if self._fault is not None and self._fault.kind == "disconnect" and self.sent >= self._fault.after:
            self.cut = True
            await drop_connection(self._send)
            return False
        if self._delay and await self._watch.pause(self._delay):
            self.gone = True
            return True
        self.gone = self._watch.gone
        await self._send({"type": "http.response.body", "body": tail, "more_body": False})
        return self.gone
