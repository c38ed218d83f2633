"""Errors of the NATS adapter. Every nats-py error is translated to one of these at the boundary.

``BusError``
    ``BusUnavailable``  the server cannot be reached, or did not answer (connect, publish, fetch)
    ``BusConfigError``  JetStream refused the stream or consumer configuration (e.g. subjects that
                        overlap another stream's)
"""

from __future__ import annotations

__all__ = ["BusConfigError", "BusError", "BusUnavailable"]


class BusError(Exception):
    """Base of the event-bus adapter's errors."""


class BusUnavailable(BusError):
    """NATS or JetStream is unreachable or did not answer in time."""


class BusConfigError(BusError):
    """JetStream rejected a stream or consumer definition."""
