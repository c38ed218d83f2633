"""Prometheus metrics of one process, in a registry owned by the composition root."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lumina_requests", "Requests handled, by edge, method and outcome code.",
            ["edge", "method", "code"], registry=self.registry,
        )
        self.latency = Histogram(
            "lumina_request_duration_seconds", "Request latency at the edge.",
            ["edge", "method"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.tokens = Counter(
            "lumina_tokens", "Tokens processed, by provider, model and direction (input/output).",
            ["provider", "model", "direction"], registry=self.registry,
        )
        self.cost = Counter(
            "lumina_cost_usd", "Spend in US dollars, by provider and model.",
            ["provider", "model"], registry=self.registry,
        )

    def observe_request(self, edge: str, method: str, code: str, seconds: float) -> None:
        self.requests.labels(edge, method, code).inc()
        self.latency.labels(edge, method).observe(seconds)

    def observe_usage(self, provider: str, model: str, input_tokens: int, output_tokens: int, cost_micros: int) -> None:
        self.tokens.labels(provider, model, "input").inc(input_tokens)
        self.tokens.labels(provider, model, "output").inc(output_tokens)
        self.cost.labels(provider, model).inc(cost_micros / 1_000_000)

    def render(self) -> bytes:
        return generate_latest(self.registry)
