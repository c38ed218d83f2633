"""Prometheus metrics of one process, in a registry owned by the composition root."""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from application.ports import Settlements
from domain.events import DomainEvent
from domain.usage import UsageRecord

__all__ = ["CONTENT_TYPE_LATEST", "MeteredSettlements", "Metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
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

        # the models' health: kept as the monitor last reported it, turned into gauges when scraped
        # (an observation per request would otherwise set four gauges)
        self._health: dict[tuple[str, str], Any] = {}
        self.registry.register(_ModelHealthCollector(self._health))

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once per label set: ``labels()`` validates and
        locks on every call, and each request sets about ten of them. Label sets are few and
        long-lived (edges, methods, providers and models), so the cache stays small."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def set_model_health(self, health: object) -> None:
        """``health``: a ``domain.health.ModelHealth`` (the ``application.health.HealthSink`` port)."""
        self._health[(health.provider, health.model)] = health  # type: ignore[attr-defined]

    def observe_request(self, edge: str, method: str, code: str, seconds: float) -> None:
        self._child(self.requests, edge, method, code).inc()
        self._child(self.latency, edge, method).observe(seconds)

    def observe_usage(self, provider: str, model: str, input_tokens: int, output_tokens: int, cost_micros: int) -> None:
        self._child(self.tokens, provider, model, "input").inc(input_tokens)
        self._child(self.tokens, provider, model, "output").inc(output_tokens)
        self._child(self.cost, provider, model).inc(cost_micros / 1_000_000)

    def render(self) -> bytes:
        return generate_latest(self.registry)


_HEALTH_GAUGES = (
    ("lumina_model_health_state", "Model health as seen by this replica: 0 healthy, 1 degraded, 2 unhealthy."),
    ("lumina_model_error_rate", "EWMA of the model's request error rate."),
    ("lumina_model_latency_seconds", "EWMA of the model's request latency."),
    ("lumina_model_ttft_seconds", "EWMA of the model's time to first token."),
)


class _ModelHealthCollector:
    """The health gauges, per provider and model, from the latest ``ModelHealth`` of each."""

    def __init__(self, latest: dict[tuple[str, str], Any]) -> None:
        self._latest = latest

    def describe(self) -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily(name, text, labels=["provider", "model"]) for name, text in _HEALTH_GAUGES]

    def collect(self) -> list[GaugeMetricFamily]:
        state, errors, latency, ttft = families = self.describe()
        for (provider, model), h in sorted(self._latest.items()):
            labels = [provider, model]
            state.add_metric(labels, h.state.level)
            errors.add_metric(labels, h.error_rate)
            if h.latency_s is not None:
                latency.add_metric(labels, h.latency_s)
            if h.ttft_s is not None:
                ttft.add_metric(labels, h.ttft_s)
        return families


class MeteredSettlements:
    """A ``Settlements`` that counts tokens and spend once a request's usage is durable: every
    edge (gRPC, OpenAI, Anthropic, console) settles through here, so each request is counted once."""

    def __init__(self, inner: Settlements, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    async def settle(self, record: UsageRecord, *events: DomainEvent) -> None:
        await self._inner.settle(record, *events)
        self._metrics.observe_usage(
            record.provider, record.model, record.input_tokens, record.output_tokens, record.cost_micros
        )
