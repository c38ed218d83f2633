"""What the simulator has served, for tests and benchmarks (``GET /_sim/stats``)."""

from __future__ import annotations

from collections import deque

import msgspec

__all__ = ["RequestRecord", "Stats", "StatsSnapshot"]

RECENT_LIMIT = 256


class RequestRecord(msgspec.Struct, frozen=True):
    request_id: str
    model: str
    stream: bool
    status: int
    prompt_tokens: int
    completion_tokens: int
    disconnected: bool
    duration_ms: float
    fault: str | None = None
    ended_at: float = 0.0  # wall clock (time.time()) when the response ended or the client left
    # (role, text) of each message the request carried, as received (for tests of what was sent upstream)
    messages: list[tuple[str, str]] = []


class StatsSnapshot(msgspec.Struct, frozen=True):
    requests: int  # chat-completion requests received
    completed: int  # responses sent to the end (any status)
    disconnects: int  # clients that went away before the end of their response
    streams: int  # streaming requests among ``requests``
    errors: dict[str, int]  # HTTP status -> count, for error responses
    connections: int  # TCP connections accepted
    connections_nodelay: int  # ... of which TCP_NODELAY was verified set (getsockopt)
    recent: list[RequestRecord]  # the last few requests, oldest first
    chunks_sent: int = 0  # stream events handed to the server so far (grows live, for backpressure tests)


class Stats:
    """Counters mutated by the server's event loop only (no locking needed)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.completed = 0
        self.disconnects = 0
        self.streams = 0
        self.errors: dict[str, int] = {}
        self.connections = 0
        self.connections_nodelay = 0
        self.chunks_sent = 0
        self.recent: deque[RequestRecord] = deque(maxlen=RECENT_LIMIT)

    def record(self, rec: RequestRecord) -> None:
        if rec.disconnected:
            self.disconnects += 1
        else:
            self.completed += 1
        if rec.status >= 400:
            key = str(rec.status)
            self.errors[key] = self.errors.get(key, 0) + 1
        self.recent.append(rec)

    def snapshot(self) -> StatsSnapshot:
        return StatsSnapshot(
            requests=self.requests,
            completed=self.completed,
            disconnects=self.disconnects,
            streams=self.streams,
            errors=dict(self.errors),
            connections=self.connections,
            connections_nodelay=self.connections_nodelay,
            chunks_sent=self.chunks_sent,
            recent=list(self.recent),
        )
