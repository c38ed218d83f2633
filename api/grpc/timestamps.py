"""``google.protobuf.Timestamp`` from the datetimes the servicers return (aware or naive UTC)."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

__all__ = ["timestamp"]


def timestamp(at: datetime | None) -> Timestamp | None:
    """``at`` as a Timestamp (None stays None: the field is left unset)."""
    if at is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(at.astimezone(UTC))
    return stamp
