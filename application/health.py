"""Model health monitoring of one replica: passive (every chat stream through ``ObservedProviders``
reports its outcome, latency and time to first token) and active (``ProbeProviders`` lists each
enabled provider's models on an interval). A state change records a ``ModelHealthChanged`` event
(outbox) and updates the gauges through the ``HealthSink`` port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

from application.ports import ProviderClients, UnitOfWorkFactory
from application.registry import (
    Kms,
    ProviderFactory,
    RegistryUnitOfWorkFactory,
    secret_context,
)
from application.streaming import whole_answer
from domain.chat import ChatRequest, Chunk, EmbeddingRequest, Embeddings, ErrorChunk
from domain.errors import (
    ContentFiltered,
    ContextLengthExceeded,
    InvalidRequest,
    UpstreamInvalidRequest,
)
from domain.events import ModelHealthChanged
from domain.health import HealthState, HealthThresholds, ModelHealth, Observation
from domain.ports import Clock, IdGenerator, ProviderClient

__all__ = ["HealthMonitor", "HealthSink", "ObservedProviders", "ProbeProviders"]


class HealthSink(Protocol):
    def set_model_health(self, health: ModelHealth) -> None: ...


class HealthMonitor:
    def __init__(
        self,
        *,
        uow: UnitOfWorkFactory,
        clock: Clock,
        ids: IdGenerator,
        tenant_id: str,
        thresholds: HealthThresholds | None = None,
        sink: HealthSink | None = None,
        replica: str = "",
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._ids = ids
        self._tenant = tenant_id
        self._limits = thresholds or HealthThresholds()
        self._sink = sink
        self._replica = replica
        self._health: dict[tuple[str, str], ModelHealth] = {}
        self._listeners: list[Callable[[ModelHealth], None]] = []

    def subscribe(self, listener: Callable[[ModelHealth], None]) -> None:
        """Call ``listener`` with every model's health after each observation (e.g. routing's
        live view, ``application.routing.Routing.update_health``)."""
        self._listeners.append(listener)

    def snapshot(self) -> list[ModelHealth]:
        return [self._health[k] for k in sorted(self._health)]

    def state(self, provider: str, model: str) -> HealthState:
        found = self._health.get((provider, model))
        return found.state if found else HealthState.HEALTHY

    async def observe(self, provider: str, model: str, obs: Observation) -> ModelHealth:
        key = (provider, model)
        before = self._health.get(key) or ModelHealth(provider=provider, model=model)
        after = before.observe(obs, self._limits)
        self._health[key] = after
        if self._sink is not None:
            self._sink.set_model_health(after)
        for listener in self._listeners:
            listener(after)
        if after.state is not before.state:
            async with self._uow() as uow:
                uow.record(
                    ModelHealthChanged(
                        event_id=self._ids.new_id(), tenant_id=self._tenant, occurred_at=self._clock.now(),
                        provider=provider, model=model, previous=before.state.value, current=after.state.value,
                        error_rate=round(after.error_rate, 4),
                        latency_ms=round((after.latency_s or 0) * 1000), ttft_ms=round((after.ttft_s or 0) * 1000),
                        replica=self._replica,
                    )
                )
                await uow.commit()
        return after


def _counts_against_provider(exc: BaseException) -> bool:
    """Client mistakes (bad request, context too long) say nothing about the provider's health."""
    return not isinstance(exc, (InvalidRequest, UpstreamInvalidRequest, ContextLengthExceeded, ContentFiltered))


class _ObservedClient:
    def __init__(self, inner: ProviderClient, monitor: HealthMonitor, clock: Clock) -> None:
        self.name = inner.name
        self._inner = inner
        self._monitor = monitor
        self._clock = clock

    async def stream(self, upstream_model: str, request: ChatRequest) -> AsyncIterator[Chunk]:
        started = self._clock.monotonic()
        first: float | None = None
        ok = True
        try:
            async for chunk in self._inner.stream(upstream_model, request):
                if first is None:
                    first = self._clock.monotonic() - started
                if isinstance(chunk, ErrorChunk):
                    ok = False
                yield chunk
        except GeneratorExit:
            raise  # the client went away: no verdict on the provider
        except Exception as exc:
            await self._failed(upstream_model, exc)
            raise
        else:
            total = self._clock.monotonic() - started
            await self._monitor.observe(self.name, upstream_model, Observation(ok=ok, latency_s=total, ttft_s=first))

    async def complete(self, upstream_model: str, request: ChatRequest) -> AsyncIterator[Chunk]:
        """The inner client's whole answer (``whole_answer``), observed as a stream is; there is no
        time to first token to learn from it, only the latency."""
        started = self._clock.monotonic()
        try:
            chunks = [chunk async for chunk in whole_answer(self._inner, upstream_model, request)]
        except Exception as exc:
            await self._failed(upstream_model, exc)
            raise
        ok = not any(isinstance(chunk, ErrorChunk) for chunk in chunks)
        await self._monitor.observe(self.name, upstream_model, Observation(ok=ok, latency_s=self._clock.monotonic() - started))
        for chunk in chunks:
            yield chunk

    async def _failed(self, upstream_model: str, exc: Exception) -> None:
        """A call that raised: a failure of the provider's, unless the request itself was at fault."""
        if _counts_against_provider(exc):
            await self._monitor.observe(self.name, upstream_model, Observation(ok=False))

    async def embed(self, upstream_model: str, request: EmbeddingRequest) -> Embeddings:
        return await self._inner.embed(upstream_model, request)

    async def aclose(self) -> None:
        await self._inner.aclose()


class ObservedProviders:
    """``ProviderClients`` whose clients report each stream's outcome to the monitor."""

    def __init__(self, inner: ProviderClients, monitor: HealthMonitor, clock: Clock) -> None:
        self._inner = inner
        self._monitor = monitor
        self._clock = clock

    def get(self, provider: str) -> ProviderClient:
        return _ObservedClient(self._inner.get(provider), self._monitor, self._clock)


class ProbeProviders:
    """One round of active probes: list each enabled provider's models (cheap, no tokens spent);
    the outcome is an observation for each of that provider's enabled models."""

    def __init__(
        self,
        *,
        uow: RegistryUnitOfWorkFactory,
        kms: Kms,
        factory: ProviderFactory,
        monitor: HealthMonitor,
        clock: Clock,
        skip: Callable[[str], bool] = lambda name: False,
    ) -> None:
        self._uow = uow
        self._kms = kms
        self._factory = factory
        self._monitor = monitor
        self._clock = clock
        self._skip = skip

    async def __call__(self) -> Sequence[ModelHealth]:
        async with self._uow() as uow:
            specs = [s for s in await uow.providers.list_providers() if s.enabled and not self._skip(s.name)]
            models = [m for m in await uow.providers.list_models() if m.enabled]
            secrets = await uow.providers.secrets()
        results: list[ModelHealth] = []
        for spec in specs:
            secret = secrets.get(spec.name)
            try:  # a key that cannot be decrypted fails this provider's probe, not the round
                key = self._kms.decrypt(secret.ciphertext, secret_context(spec.name)).decode() if secret else ""
                listed = set(await self._factory.list_models(spec, key))
                ok = True
            except Exception:  # noqa: BLE001 - any failure is a failed probe
                listed, ok = set(), False
            for route in (m for m in models if m.provider == spec.name):
                seen = ok and (not listed or route.upstream_model in listed)
                # a listing's latency says little about a completion's: only the verdict counts
                obs = Observation(ok=seen, probe=True)
                results.append(await self._monitor.observe(spec.name, route.upstream_model, obs))
        return results
