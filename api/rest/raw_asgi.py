"""For a raw ASGI route handler (Litestar's ``@asgi``): its JSON request body and its streamed
response.

- ``read_body`` and ``decode_json_body``: the body read within the app's size limit and decoded
  straight into its ``msgspec`` type, with the errors Litestar's own body parameters give
  (problem+json through ``api.rest.problems``): 413 over the limit, 400 "JSON is malformed" and
  400 "Validation failed for POST <path>" naming each field.
- ``send_stream``: a response body sent as its parts come, stopped (and its iterator closed, so
  the upstream request is closed) as soon as the client disconnects, as Litestar's ``Stream``
  does, with one watcher task instead of an anyio task group.

Litestar decodes a ``JSONBody[T]`` parameter to Python objects first and converts them to ``T``
afterwards, behind its signature model, kwargs extraction and response conversion; for the chat
edge's hot path that machinery was about a tenth of the backend's instructions per request.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeVar

import msgspec
from litestar.exceptions import (
    ClientException,
    InternalServerException,
    ValidationException,
)
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.types import Message, Receive, Scope, Send

__all__ = ["decode_json_body", "read_body", "send_stream"]

T = TypeVar("T")

_AT = re.compile(r"^(?P<message>.*) - at `\$(?:\.)?(?P<path>[^`]*)`$", re.DOTALL)


async def read_body(scope: Scope, receive: Receive, limit: int | None) -> bytes:
    """The whole request body, at most ``limit`` bytes (the app's ``request_max_body_size``; an
    announced ``Content-Length`` over it is refused before anything is read)."""
    if limit is not None:
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > limit:
                    raise RequestEntityTooLarge
                break
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InternalServerException("client disconnected prematurely")
        body = message.get("body", b"")
        if body:
            size += len(body)
            if limit is not None and size > limit:
                raise RequestEntityTooLarge
            parts.append(body)
        if not message.get("more_body", False):
            return parts[0] if len(parts) == 1 else b"".join(parts)


def decode_json_body(scope: Scope, body: bytes, decoder: msgspec.json.Decoder[T]) -> T:
    """``body`` decoded by ``decoder``; a body that is not JSON, or not the type, is a client error."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise _invalid(scope, str(exc)) from None
    except msgspec.DecodeError as exc:
        if not body.strip():
            raise _invalid(scope, "a JSON object is required") from None
        raise ClientException(detail=str(exc)) from None  # "JSON is malformed: ..."


def _invalid(scope: Scope, message: str) -> ValidationException:
    found = _AT.match(message)
    field, text = ("data", message) if found is None else (found["path"] or "data", found["message"])
    extra: list[dict[str, Any]] = [{"key": field, "message": text}]
    return ValidationException(detail=f"Validation failed for {scope['method']} {scope['path']}", extra=extra)


async def send_stream(
    receive: Receive, send: Send, headers: Sequence[tuple[bytes, bytes]], parts: AsyncIterator[bytes]
) -> None:
    """A 200 response with ``headers`` whose body is ``parts`` as they come (chunked). A client
    that disconnects stops it at once: the task sending it is cancelled (``parts`` is closed, which
    closes the upstream request) and the handler returns normally."""
    task = asyncio.current_task()
    assert task is not None
    gone = False

    def watch(message: asyncio.Future[Message]) -> None:
        nonlocal gone
        if not message.cancelled() and message.exception() is None and message.result()["type"] == "http.disconnect":
            gone = True
            task.cancel()

    watcher = asyncio.ensure_future(receive())  # the body was read: the next message is the disconnect
    watcher.add_done_callback(watch)
    try:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        async for part in parts:
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except asyncio.CancelledError:
        if not gone or task.uncancel() > 0:  # cancelled for another reason too: that one goes on
            raise
    finally:
        watcher.remove_done_callback(watch)
        watcher.cancel()
        await parts.aclose()  # type: ignore[attr-defined]
