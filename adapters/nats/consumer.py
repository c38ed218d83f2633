"""A durable pull consumer loop: fetch a batch, decode each event, run the handler, ack on success,
nak with a delay on failure (JetStream redelivers), terminate undecodable messages.

Handlers must be idempotent (see ``application.spend.RecordSpend``): a message is redelivered when
the handler fails, when the process dies before the ack, or when the stream holds a duplicate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from opentelemetry.trace import SpanKind

from adapters.telemetry.tracing import extract_context, tracer
from adapters.events_codec import decode_event
from adapters.nats.errors import BusConfigError, BusUnavailable
from domain.events import DomainEvent

__all__ = ["Handler", "consume"]

Handler = Callable[[DomainEvent, str], Awaitable[None]]
"""Called with the decoded event and the subject it arrived on."""

_log = structlog.get_logger(__name__)


async def consume(
    js: JetStreamContext,
    *,
    durable: str,
    filter_subject: str,
    handler: Handler,
    stop: asyncio.Event,
    batch: int = 32,
    stream: str | None = None,
    fetch_timeout: float = 1.0,
    ack_wait: float = 30.0,
    nak_delay: float = 1.0,
) -> None:
    """Run the durable consumer ``durable`` on ``filter_subject`` until ``stop`` is set.

    ``fetch_timeout`` bounds how long ``stop`` can go unnoticed while the stream is idle. A message
    whose handler is still running when ``stop`` is set is finished; the rest of that batch is left
    nak'ed without delay so the next run gets it at once.
    """
    config = ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait,
        filter_subject=filter_subject,
    )
    log = _log.bind(consumer=durable, subject=filter_subject)
    try:
        sub = await js.pull_subscribe(filter_subject, durable=durable, stream=stream, config=config)
    except nats.js.errors.NotFoundError as exc:
        raise BusConfigError(f"no JetStream stream for {filter_subject}: {exc.description}") from exc
    except nats.js.errors.BadRequestError as exc:
        raise BusConfigError(f"JetStream refused consumer {durable}: {exc.description}") from exc
    except (nats.errors.Error, OSError) as exc:
        raise BusUnavailable(f"cannot create consumer {durable}: {exc or type(exc).__name__}") from exc
    log.info("consumer started")
    try:
        while not stop.is_set():
            try:
                messages = await sub.fetch(batch, timeout=fetch_timeout)
            except TimeoutError:  # nats' own, and the bare one fetch raises when its deadline ran out under load
                continue
            except nats.js.errors.APIError as exc:
                # a status the server answers a pull with under load (e.g. 408/409): not a lost
                # connection, so try again shortly instead of tearing the consumer down
                log.warning("fetch refused; retrying", status=exc.code, description=exc.description or "")
                await asyncio.sleep(min(fetch_timeout, 0.5))
                continue
            except (nats.errors.Error, OSError) as exc:
                raise BusUnavailable(f"fetch for {durable} failed: {exc or type(exc).__name__}") from exc
            for msg in messages:
                if stop.is_set():  # hand the rest back now rather than after ack_wait
                    await _settle(msg.nak())
                    continue
                await _handle(msg, handler, nak_delay, log)
    finally:
        try:
            await sub.unsubscribe()
        except (nats.errors.Error, OSError):
            pass
        log.info("consumer stopped")


async def _handle(msg: Msg, handler: Handler, nak_delay: float, log: structlog.typing.FilteringBoundLogger) -> None:
    try:
        event = decode_event(msg.data)
    except Exception as exc:  # noqa: BLE001 - a poison message must not block the consumer
        log.error("undecodable event terminated", error=str(exc), msg_id=_msg_id(msg))
        await _settle(msg.term())
        return
    try:
        parent = extract_context(msg.headers or {})
        with tracer("lumina.nats").start_as_current_span(f"consume {msg.subject}", context=parent, kind=SpanKind.CONSUMER):
            await handler(event, msg.subject)
    except Exception as exc:  # noqa: BLE001 - any handler failure means "try again later"
        log.warning(
            "handler failed; redelivery scheduled",
            event_id=event.event_id,
            error=str(exc) or type(exc).__name__,
            delay=nak_delay,
        )
        await _settle(msg.nak(delay=nak_delay))
        return
    await _settle(msg.ack())


async def _settle(action: Awaitable[None]) -> None:
    """Ack/nak/term are fire-and-forget; a lost one only means a redelivery, which is safe."""
    try:
        await action
    except (nats.errors.Error, OSError) as exc:
        _log.warning("ack not sent; message will be redelivered", error=str(exc) or type(exc).__name__)


def _msg_id(msg: Msg) -> str:
    return (msg.headers or {}).get("Nats-Msg-Id", "")
