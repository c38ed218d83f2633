"""Routing for the chat path on one replica: the routing settings (policy plus resilience), the
live view the router reads (health, latency, in-flight requests, breaker states) and the circuit
breakers' bookkeeping, behind one ``Routing`` object that ``StreamChat`` asks for each decision.

Hot-path costs: a decision is ``Router.decide`` over a compiled table (the registry is recompiled
only when the catalogue's routes change); breaker states are read from a local snapshot, so a
healthy request makes no call to the ``BreakerStore``. The store is written only when an outcome
changes a breaker (every failure; a success only while the breaker still holds failures or has not
yet seen a full window of calls) and read back every ``breaker_refresh_s`` in the background, so
with the Redis store replicas share breaker states within that interval, and without a store the
breakers live in this process only, with no I/O at all.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from domain.chat import ChatRequest, ImagePart, TextPart
from domain.errors import InvalidRequest, Unavailable
from domain.health import ModelHealth
from domain.ports import Clock
from domain.registry import ModelRoute, ProviderSpec
from domain.routing import (
    Breaker,
    BreakerPolicy,
    BreakerState,
    BreakerStore,
    Candidate,
    HedgingPolicy,
    Requirements,
    RetryPolicy,
    RouteDecision,
    Router,
    RoutingConfig,
    RuntimeView,
    Strategy,
    TenantRules,
    Timeouts,
    TokenCounter,
    breaker_key,
    counts_as_failure,
)

__all__ = [
    "ApproximateCounter",
    "BreakerBook",
    "RouteCatalog",
    "Routing",
    "RoutingSettings",
]

log = logging.getLogger("lumina.routing")


class RoutingSettings(RoutingConfig, frozen=True, forbid_unknown_fields=True):
    """The routing policy (``RoutingConfig``: strategy rules, tenants, aliases, groups, fallbacks,
    quality) plus resilience: retries, circuit breakers, timeouts and hedging. The settings file's
    ``[routing]`` table, or ``LUMINA_ROUTING`` as JSON (docs/routing.md).

    Defaults keep the request path as it was without configuration: a named model is served by
    that model only (``pinned_fallback_only``), the default model by the default route
    (``rules.strategy`` pinned) with the others as fallbacks; one quick retry of a transient
    failure; a provider's Retry-After honoured only up to a second (longer waits go back to the
    client as 429 with its Retry-After).

    ``breaker_refresh_s``: how often a replica re-reads the shared breaker states;
    ``publish_decisions``: write a ``RouteDecided`` event with each request's settlement."""

    rules: TenantRules = TenantRules(strategy=Strategy.PINNED)
    pinned_fallback_only: bool = True
    retry: RetryPolicy = RetryPolicy(max_attempts=2, base_delay_s=0.1, max_delay_s=1.0, max_retry_after_s=1.0)
    breaker: BreakerPolicy = BreakerPolicy()
    timeouts: Timeouts = Timeouts()
    hedging: HedgingPolicy = HedgingPolicy()
    breaker_refresh_s: float = 1.0
    publish_decisions: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.breaker_refresh_s > 0:
            raise InvalidRequest.single("breaker_refresh_s", "must be positive")


class RouteCatalog(Protocol):
    """What routing reads from the registry (``application.catalog.RegistryCatalog``)."""

    async def routes(self) -> Sequence[ModelRoute]:
        """Every routable model; the same object until the catalogue changes."""
        ...

    async def provider(self, name: str) -> ProviderSpec: ...


class ApproximateCounter:
    """A ``TokenCounter`` without a tokenizer: about four characters per token, with OpenAI's
    per-message framing. For tests and for running without tiktoken; the composition root
    installs ``adapters.tokens.TiktokenCounter``."""

    def __init__(self, image_tokens: int = 765) -> None:
        self._image_tokens = image_tokens

    def count_text(self, text: str, model: str = "") -> int:
        return math.ceil(len(text) / 4)

    def count_prompt(self, request: ChatRequest, model: str = "") -> int:
        chars, framing = 0, 3
        for message in request.messages:
            framing += 3
            chars += len(message.content)
            for part in message.parts:
                if isinstance(part, TextPart):
                    chars += len(part.text)
                elif isinstance(part, ImagePart):
                    framing += self._image_tokens
            for call in message.tool_calls:
                chars += len(call.name) + len(call.arguments)
        for tool in request.tools:
            chars += len(tool.name) + len(tool.description) + 16 * len(tool.parameters)
        return math.ceil(chars / 4) + framing


_CLOSED = Breaker()


class BreakerBook:
    """This replica's copy of the breakers (provider-level and model-level, ``breaker_key``), the
    ``BreakerStore`` behind it (None: the copy is all there is, in this process), and the snapshot
    the ``RuntimeView`` (so the router) sees.

    - ``admit``: a closed breaker (as the copy knows it) admits without asking the store; an open
      or half-open one hands out its probe slot (through the store when shared).
    - ``record`` / ``record_soon``: the outcome is applied to the copy at once (this replica reacts
      immediately), then written through to the store, whose answer replaces the copy. A success
      that would change nothing (a closed breaker whose full window holds no failure) is not
      written at all; a success whose write is still in flight for the same breaker is dropped.
    - ``tick``: at most every ``refresh_s``, re-reads every tracked breaker from the store in the
      background (other replicas' outcomes) and re-publishes the snapshot (which also turns open
      breakers whose cool-down is over into half-open ones).

    A store that fails (``Unavailable``) is logged and otherwise ignored: breakers fail open."""

    def __init__(
        self,
        store: BreakerStore | None,
        policy: BreakerPolicy,
        views: Sequence[RuntimeView],
        clock: Clock,
        *,
        refresh_s: float = 1.0,
    ) -> None:
        self._store = store
        self.policy = policy
        self._views = tuple(views)
        self._clock = clock
        self._refresh_s = refresh_s
        self._known: dict[str, Breaker] = {}
        self._keys: tuple[str, ...] = ()
        self._next_refresh = -math.inf
        self._refreshing: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()
        self._writing: set[str] = set()  # keys with a success write in flight

    def _now(self) -> float:
        return self._clock.now().timestamp()

    def track(self, keys: Sequence[str]) -> None:
        """The breakers to keep current (every provider and model of the registry)."""
        self._keys = tuple(keys)
        self._next_refresh = -math.inf

    def tick(self) -> None:
        now = self._clock.monotonic()
        if now < self._next_refresh:
            return
        self._next_refresh = now + self._refresh_s
        if self._store is None:
            if self._known:
                self._publish()
        elif self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh(self._store))

    async def _refresh(self, store: BreakerStore) -> None:
        try:
            found = await store.get_many(self._keys)
        except Unavailable as exc:
            log.warning("circuit breaker states could not be read: %s", exc.message)
            return
        self._known.update(found)
        self._publish()

    def _publish(self) -> None:
        now, policy = self._now(), self.policy
        states = {k: b.current(now, policy) for k, b in self._known.items() if b.state is not BreakerState.CLOSED}
        for view in self._views:
            view.set_breakers(states)

    def _set(self, key: str, after: Breaker) -> None:
        before = self._known.get(key, _CLOSED)
        self._known[key] = after
        if after.state is not before.state:
            self._publish()

    def state(self, key: str) -> BreakerState:
        found = self._known.get(key)
        return BreakerState.CLOSED if found is None else found.current(self._now(), self.policy)

    async def admit(self, provider: str, model: str) -> bool:
        """Whether a call to ``model`` at ``provider`` may go ahead now."""
        for key in (breaker_key(provider), breaker_key(provider, model)):
            found = self._known.get(key)
            if found is None or found.state is BreakerState.CLOSED:
                continue
            now = self._now()
            after, ok = found.admit(now, self.policy)
            if self._store is not None:
                try:
                    ok = await self._store.admit(key, now, self.policy)
                except Unavailable as exc:
                    log.warning("circuit breaker %s could not be asked: %s", key, exc.message)
                    ok = True
            if ok:
                self._set(key, after)
            else:
                return False
        return True

    def _unchanged_by_success(self, key: str) -> bool:
        found = self._known.get(key)
        return (
            found is not None
            and found.state is BreakerState.CLOSED
            and found.outcomes == 0
            and found.consecutive_failures == 0
            and found.calls >= self.policy.window
        )

    def _changing(self, provider: str, model: str, ok: bool) -> list[str]:
        keys = [breaker_key(provider), breaker_key(provider, model)]
        return [k for k in keys if not self._unchanged_by_success(k)] if ok else keys

    async def record(self, provider: str, model: str, ok: bool) -> None:
        """One call's outcome, on the provider's breaker and the model's, written through."""
        keys = self._changing(provider, model, ok)
        if keys:
            await self._write(keys, ok)

    def record_soon(self, provider: str, model: str, ok: bool) -> None:
        """``record`` without waiting: applied to the copy now, written in the background."""
        keys = self._changing(provider, model, ok)
        if not keys:
            return
        if self._store is None:
            now = self._now()
            for key in keys:
                self._set(key, self._known.get(key, _CLOSED).record(ok, now, self.policy))
            return
        if ok:
            keys = [k for k in keys if k not in self._writing]
            if not keys:
                return
            self._writing.update(keys)
        task = asyncio.ensure_future(self._write(keys, ok))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, keys: list[str], ok: bool) -> None:
        now = self._now()
        try:
            for key in keys:
                self._set(key, self._known.get(key, _CLOSED).record(ok, now, self.policy))
                if self._store is None:
                    continue
                try:
                    after = await self._store.record(key, ok, now, self.policy)
                except Unavailable as exc:
                    log.warning("circuit breaker %s could not be written: %s", key, exc.message)
                    continue
                self._set(key, after)
        finally:
            if ok:
                self._writing.difference_update(keys)

    async def aclose(self) -> None:
        pending = [t for t in (self._refreshing, *self._writes) if t is not None and not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=2)


class Routing:
    """The router, its live views and the breakers, fed from the catalogue. ``decide`` per
    request; ``admit`` / ``record`` around each provider call; ``update_health`` from the health
    monitor (``HealthMonitor.subscribe``)."""

    def __init__(
        self,
        catalog: RouteCatalog,
        clock: Clock,
        *,
        settings: RoutingSettings | None = None,
        breakers: BreakerStore | None = None,
        counter: TokenCounter | None = None,
        default_model: str = "",
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings or RoutingSettings()
        self._on_close = on_close  # e.g. closes a connection made for the breaker store
        self.counter: TokenCounter = counter or ApproximateCounter()
        self.router = Router(self.settings)
        self.view = RuntimeView()
        # the same breakers without health exclusions: the last resort when every capable model
        # is unhealthy (health demotes; only an open breaker excludes for good)
        self._breakers_only = RuntimeView()
        self.breakers = BreakerBook(
            breakers, self.settings.breaker, (self.view, self._breakers_only), clock,
            refresh_s=self.settings.breaker_refresh_s,
        )
        self._catalog = catalog
        self._default_model = default_model
        self._routes: Sequence[ModelRoute] | None = None
        self._by_name: dict[str, ModelRoute] = {}

    async def _load(self) -> None:
        routes = await self._catalog.routes()
        if routes is self._routes:
            return
        self.router.load(routes)
        self._routes = routes
        self._by_name = {r.name: r for r in routes}
        keys = dict.fromkeys(breaker_key(r.provider) for r in routes)
        keys.update(dict.fromkeys(breaker_key(r.provider, r.upstream_model) for r in routes))
        self.breakers.track(list(keys))

    def rules(self, tenant_id: str) -> TenantRules:
        return self.settings.rules_for(tenant_id)

    async def decide(
        self, requirements: Requirements, *, tenant_id: str, model: str, provider: str | None, headroom: float | None = None
    ) -> RouteDecision:
        """The ranked candidates (``RouteDecision.candidates``); raises ``NotFound`` for an unknown
        model, alias or group. When health rules out every capable candidate, the unhealthy ones
        are ranked after all (breakers still exclude): a model that may be down beats none."""
        await self._load()
        self.breakers.tick()
        decision = self.router.decide(
            requirements, tenant_id=tenant_id, model=model or self._default_model, provider=provider,
            view=self.view, headroom=headroom,
        )
        if decision.chosen is None and decision.capable and self.view.not_healthy:
            view = self._breakers_only
            view.ttft_s, view.latency_s, view.ttft, view.in_flight = (
                self.view.ttft_s, self.view.latency_s, self.view.ttft, self.view.in_flight,
            )
            decision = self.router.decide(
                requirements, tenant_id=tenant_id, model=model or self._default_model, provider=provider,
                view=view, headroom=headroom,
            )
        return decision

    def route(self, candidate: Candidate) -> ModelRoute:
        return self._by_name[candidate.model]

    async def provider(self, name: str) -> ProviderSpec:
        return await self._catalog.provider(name)

    async def admit(self, route: ModelRoute) -> bool:
        return await self.breakers.admit(route.provider, route.upstream_model)

    async def failed(self, route: ModelRoute, error: BaseException) -> None:
        """A call failed before any content: the breakers learn of it (when it is the provider's
        fault: ``counts_as_failure``)."""
        if counts_as_failure(error):
            await self.breakers.record(route.provider, route.upstream_model, False)

    def finished(self, route: ModelRoute, ok: bool) -> None:
        """A stream ended (``ok`` False: it broke off); recorded without waiting."""
        self.breakers.record_soon(route.provider, route.upstream_model, ok)

    def update_health(self, health: ModelHealth) -> None:
        self.view.update_health(health)

    async def aclose(self) -> None:
        await self.breakers.aclose()
        if self._on_close is not None:
            await self._on_close()

