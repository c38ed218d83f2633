"""NATS JetStream adapter: the event publisher (``JetStreamBus``) and a durable pull consumer loop."""

from adapters.nats.bus import DEFAULT_STREAM, DEFAULT_SUBJECTS, JetStreamBus
from adapters.nats.consumer import Handler, consume
from adapters.nats.errors import BusConfigError, BusError, BusUnavailable

__all__ = [
    "DEFAULT_STREAM",
    "DEFAULT_SUBJECTS",
    "BusConfigError",
    "BusError",
    "BusUnavailable",
    "Handler",
    "JetStreamBus",
    "consume",
]
