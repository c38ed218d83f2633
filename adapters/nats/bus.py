"""``JetStreamBus``: the ``EventPublisher`` port on NATS JetStream.

``connect`` ensures the stream (file storage, de-duplication window) exists with the wanted
subjects; ``publish`` sends an outbox message with header ``Nats-Msg-Id`` = its event id (so a
relay that re-publishes after a crash is de-duplicated by the server within the window) plus the
message's own headers (trace context), and returns only once JetStream has acknowledged it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Self

import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig

from opentelemetry.trace import SpanKind

from adapters.telemetry.tracing import extract_context, inject_headers, tracer
from adapters.nats.errors import BusConfigError, BusUnavailable
from application.ports import OutboxMessage

__all__ = ["DEFAULT_STREAM", "DEFAULT_SUBJECTS", "JetStreamBus"]

DEFAULT_STREAM = "LUMINA"
DEFAULT_SUBJECTS = ("lumina.>",)
MSG_ID_HEADER = "Nats-Msg-Id"

_log = structlog.get_logger(__name__)


class JetStreamBus:
    """A connection to NATS with the event stream ensured. Build it with ``await connect(...)``."""

    def __init__(self, nc: Client, js: JetStreamContext, stream: str, events: _ConnectionEvents | None = None) -> None:
        self._nc = nc
        self.js = js
        self.stream = stream
        self._events = events or _ConnectionEvents()

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        stream: str = DEFAULT_STREAM,
        subjects: Sequence[str] = DEFAULT_SUBJECTS,
        duplicate_window: float = 120.0,
        publish_timeout: float = 5.0,
        connect_deadline: float = 10.0,
        name: str = "lumina",
    ) -> JetStreamBus:
        events = _ConnectionEvents()
        nc = Client()
        try:
            # nats-py retries the first connect as often as later reconnects (forever here), so
            # the first connect gets a deadline of its own.
            await asyncio.wait_for(
                nc.connect(
                    url,
                    name=name,
                    connect_timeout=2,
                    max_reconnect_attempts=-1,
                    error_cb=events.on_error,
                    disconnected_cb=events.on_disconnected,
                    reconnected_cb=events.on_reconnected,
                ),
                connect_deadline,
            )
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            events.closing = True
            with contextlib.suppress(Exception):
                await nc.close()
            reason = _describe(exc) if not isinstance(exc, TimeoutError) else f"no answer within {connect_deadline:g}s"
            raise BusUnavailable(f"cannot connect to NATS at {url}: {reason}") from exc
        js = nc.jetstream(timeout=publish_timeout)
        bus = cls(nc, js, stream, events)
        try:
            await bus._ensure_stream(list(subjects), duplicate_window)
        except BaseException:
            await nc.close()
            raise
        return bus

    async def _ensure_stream(self, subjects: list[str], duplicate_window: float) -> None:
        config = StreamConfig(
            name=self.stream,
            subjects=subjects,
            storage=StorageType.FILE,
            duplicate_window=duplicate_window,
        )
        try:
            try:
                info = await self.js.stream_info(self.stream)
            except nats.js.errors.NotFoundError:
                await self.js.add_stream(config)
                _log.info("jetstream stream created", stream=self.stream, subjects=subjects)
                return
            current = info.config
            if sorted(current.subjects or []) != sorted(subjects) or current.duplicate_window != duplicate_window:
                await self.js.update_stream(current.evolve(subjects=subjects, duplicate_window=duplicate_window))
                _log.info("jetstream stream updated", stream=self.stream, subjects=subjects)
        except nats.js.errors.BadRequestError as exc:
            raise BusConfigError(f"JetStream refused stream {self.stream} {subjects}: {exc.description}") from exc
        except (nats.errors.Error, OSError) as exc:
            raise BusUnavailable(f"cannot ensure JetStream stream {self.stream}: {_describe(exc)}") from exc

    async def publish(self, message: OutboxMessage) -> None:
        """Publish and await the PubAck. A re-publish of the same event id within the window is
        acknowledged as a duplicate and not stored twice."""
        parent = extract_context(message.headers)
        with tracer("lumina.nats").start_as_current_span(
            f"publish {message.subject}", context=parent, kind=SpanKind.PRODUCER
        ):
            # the relay's span joins the request's trace; consumers continue from it
            headers = inject_headers({**message.headers, MSG_ID_HEADER: message.event_id})
            await self._publish(message, headers)

    async def _publish(self, message: OutboxMessage, headers: dict[str, str]) -> None:
        try:
            await self.js.publish(message.subject, message.payload, stream=self.stream, headers=headers)
        except nats.js.errors.NoStreamResponseError as exc:
            raise BusConfigError(f"no JetStream stream takes subject {message.subject}") from exc
        except nats.js.errors.ServiceUnavailableError as exc:
            raise BusUnavailable(f"publish to {message.subject} failed: {_describe(exc)}") from exc
        except nats.js.errors.APIError as exc:
            raise BusConfigError(f"JetStream refused {message.subject} on {self.stream}: {_describe(exc)}") from exc
        except (nats.errors.Error, OSError) as exc:
            raise BusUnavailable(f"publish to {message.subject} failed: {_describe(exc)}") from exc

    async def close(self) -> None:
        self._events.closing = True
        if not self._nc.is_closed:
            try:
                await self._nc.drain()
            except (nats.errors.Error, OSError):
                await self._nc.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class _ConnectionEvents:
    """nats-py connection callbacks, logged; quiet once ``close`` was asked for."""

    def __init__(self) -> None:
        self.closing = False

    async def on_error(self, exc: Exception) -> None:
        if not self.closing:
            _log.warning("nats error", error=_describe(exc))

    async def on_disconnected(self) -> None:
        if not self.closing:
            _log.warning("nats disconnected")

    async def on_reconnected(self) -> None:
        _log.info("nats reconnected")
