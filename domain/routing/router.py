"""The routing policy: from a request's requirements, the tenant's rules and the live view of
each model, an ordered, explained list of candidates.

Filtering runs on the compiled ``RouteTable`` (bitmasks); its static part (everything but health
and breakers) depends only on the tenant's rules, what the request asked for and its requirement
flags, so it is cached per such shape. Every model of the registry ends up either eligible (with a
score) or rejected (with the first reason that excluded it, in this order): not in the requested
group / not the requested model or its fallbacks / not at the requested provider; disabled;
unavailable upstream; not a chat model; tenant rules (providers, models, tags); context window;
max output; images; tools; parallel tool calls; JSON schema; JSON mode; streaming; reasoning;
unhealthy; circuit breaker open.

Scores are in [0, 1], higher better. Cost and latency scores are relative to the best eligible
candidate: the cheapest (fastest) scores 1, one twice as dear (slow) 0.5, ten times 0.1 (estimated
cost of this request from its token counts; expected time to first token when streaming, else
whole latency, from the live EWMAs). Quality is configured. Balanced is their weighted sum. Ties
keep name order. Degraded and half-open candidates keep their score but rank after the healthy
ones (except in an explicit pinned order). Models nobody priced are costed at the dearest known
rates, so "cheapest" never prefers a model whose cost is unknown."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from operator import itemgetter
from typing import TypeVar

from domain.errors import NotFound
from domain.health import HealthState
from domain.registry import ModelRoute
from domain.routing.config import RoutingConfig, Strategy, TenantRules
from domain.routing.decision import Candidate, RouteDecision, StepDown
from domain.routing.requirements import Requirements
from domain.routing.table import RouteTable, bits_of
from domain.routing.view import RuntimeView

__all__ = ["Router"]

T = TypeVar("T")

_DEMOTED = 2.0  # subtracted from a degraded / half-open candidate's rank (scores are in [0, 1])
_CACHE_LIMIT = 2048

R_DISABLED = "disabled by the operator"
R_UNAVAILABLE = "no longer listed by its provider"
R_NOT_CHAT = "not a chat model"
R_PROVIDER_DENIED = "provider denied by the tenant's rules"
R_PROVIDER_NOT_ALLOWED = "provider not in the tenant's allow list"
R_MODEL_DENIED = "model denied by the tenant's rules"
R_MODEL_NOT_ALLOWED = "model not in the tenant's allow list"
R_CONTEXT = "context window too small for the prompt and its output"
R_OUTPUT = "max output below the requested max_tokens"
R_IMAGES = "no image input"
R_TOOLS = "no tool calling"
R_PARALLEL = "no parallel tool calls"
R_JSON_SCHEMA = "no JSON schema output"
R_JSON_MODE = "no JSON output (needs JSON schema or tool support)"
R_STREAMING = "no streaming"
R_REASONING = "not a reasoning model"
R_UNHEALTHY = "unhealthy"
R_PROVIDER_OPEN = "circuit breaker open (provider)"
R_MODEL_OPEN = "circuit breaker open (model)"


class _Resolved:
    __slots__ = ("kind", "order", "reasoning", "scope", "scope_reason", "strategy")

    def __init__(
        self,
        kind: str,
        strategy: Strategy | None = None,
        order: tuple[int, ...] = (),
        scope: int | None = None,
        scope_reason: str = "",
        reasoning: bool = False,
    ) -> None:
        self.kind = kind
        self.strategy = strategy
        self.order = order  # explicit attempt order (pinned), table indices
        self.scope = scope  # None: every model
        self.scope_reason = scope_reason
        self.reasoning = reasoning


class _Static:
    __slots__ = ("eligible", "pool", "rejected", "resolved")

    def __init__(self, pool: int, rejected: dict[str, str], resolved: _Resolved) -> None:
        self.pool = pool
        self.eligible = bits_of(pool)
        self.rejected = rejected
        self.resolved = resolved


class _ViewMasks:
    __slots__ = ("demoted", "half_open", "open_model", "open_provider", "unhealthy", "version", "view")

    def __init__(
        self, view: RuntimeView, version: int, unhealthy: int, open_p: int, open_m: int, demoted: int, half: int
    ) -> None:
        self.view = view
        self.version = version
        self.unhealthy = unhealthy
        self.open_provider = open_p
        self.open_model = open_m
        self.demoted = demoted
        self.half_open = half


class _Live:
    """The candidates of one static shape under one health/breaker state, with their per-candidate
    constants laid out as lists for the scoring loops."""

    __slots__ = ("_position", "capable", "demoted", "eligible", "keys", "names", "quality", "rates", "rejected")

    def __init__(self, table: RouteTable, static: _Static, masks: _ViewMasks) -> None:
        pool = static.pool
        rejected = dict(static.rejected)
        for blocked, reason in (
            (masks.unhealthy, R_UNHEALTHY),
            (masks.open_provider, R_PROVIDER_OPEN),
            (masks.open_model, R_MODEL_OPEN),
        ):
            gone = pool & blocked
            if gone:
                rejected.update(dict.fromkeys(table.names_of(gone), reason))
                pool ^= gone
        eligible = static.eligible if pool == static.pool else bits_of(pool)
        self.eligible = eligible
        self.rejected = rejected
        self.capable = len(static.eligible)
        self.names = _gather(table.names, eligible)
        self.keys = _gather(table.keys, eligible)
        self.rates = _gather(table.rates, eligible)
        self.quality = list(_gather(table.quality, eligible))
        demoted = masks.demoted & pool
        self.demoted = [j for j, i in enumerate(eligible) if demoted >> i & 1] if demoted else []
        self._position: dict[int, int] | None = None

    @property
    def position(self) -> dict[int, int]:
        """Table index -> position among the eligible."""
        if self._position is None:
            self._position = {idx: j for j, idx in enumerate(self.eligible)}
        return self._position


class _Vectors:
    """Per-candidate estimated cost (micro-dollars, plus 1 so a free model divides safely) and
    expected seconds, each computed once and only when a strategy or the explanation needs it."""

    __slots__ = ("_cand", "_costs", "_default", "_expected", "_out", "_prompt", "_seen")

    def __init__(self, cand: _Live, req: Requirements, config: RoutingConfig, view: RuntimeView) -> None:
        self._cand = cand
        self._prompt = float(req.prompt_tokens)
        self._out = float(req.max_output_tokens or config.expected_output_tokens)
        if req.streaming:
            self._seen, self._default = view.ttft_s, config.default_ttft_s
        else:
            self._seen, self._default = view.latency_s, config.default_latency_s
        self._costs: list[float] | None = None
        self._expected: list[float] | None = None

    def costs(self) -> list[float]:
        if self._costs is None:
            p, o = self._prompt, self._out
            self._costs = [p * a + o * b + 1.0 for a, b in self._cand.rates]
        return self._costs

    def expected(self) -> list[float]:
        if self._expected is None:
            keys = self._cand.keys
            self._expected = list(map(self._seen.get, keys, repeat(self._default, len(keys))))
        return self._expected

    def cost_of(self, j: int) -> float:
        if self._costs is not None:
            return self._costs[j] - 1.0
        a, b = self._cand.rates[j]
        return self._prompt * a + self._out * b

    def expected_of(self, j: int) -> float:
        if self._expected is not None:
            return self._expected[j]
        return self._seen.get(self._cand.keys[j], self._default)


_NO_VIEW = RuntimeView()
_HEALTH_TEXT = {state: state.value for state in HealthState}


class Router:
    """Holds the compiled registry, the routing config, the caches and the weighted round-robin
    state of one replica. ``load(routes)`` after the catalogue changes (cheap when it has not);
    ``decide(...)`` per request. Not thread-safe (one event loop)."""

    def __init__(self, config: RoutingConfig | None = None, routes: Sequence[ModelRoute] = ()) -> None:
        self.config = config or RoutingConfig()
        self._fingerprint: tuple[int, ...] = ()
        self._held: tuple[ModelRoute, ...] = ()
        self._rr: dict[str, float] = {}
        self._build(routes)

    # --- set-up ----------------------------------------------------------------------------

    def _build(self, routes: Sequence[ModelRoute]) -> None:
        self.table = RouteTable(routes, self.config)
        self._held = tuple(routes)  # keeps the objects alive, so their ids stay unique
        self._fingerprint = tuple(map(id, routes))
        self._static: dict[tuple[object, ...], _Static] = {}
        self._resolved: dict[tuple[str, str | None, int], _Resolved] = {}
        self._view_masks: _ViewMasks | None = None
        self._live: dict[_Static, _Live] = {}
        self._rr_pick = 0

    def load(self, routes: Sequence[ModelRoute]) -> bool:
        """Use ``routes`` (e.g. ``RegistryCatalog.models()``); recompiles only when they are not
        the very objects already loaded. True when it recompiled."""
        if tuple(map(id, routes)) == self._fingerprint:
            return False
        self._build(routes)
        return True

    def configure(self, config: RoutingConfig) -> None:
        self.config = config
        self._build(self._held)

    # --- the decision ----------------------------------------------------------------------

    def decide(
        self,
        requirements: Requirements,
        *,
        tenant_id: str = "",
        model: str = "",
        provider: str | None = None,
        view: RuntimeView | None = None,
        headroom: float | None = None,
    ) -> RouteDecision:
        """Rank the candidates for one request. ``model``: a route name, alias or group ('' or
        "auto": the tenant's strategy over every model); ``provider``: only that provider's models;
        ``headroom``: the fraction of the tightest applicable budget still free (None: unknown),
        for cost-aware step-down. Raises ``NotFound`` for a name that is neither model, alias nor
        group; otherwise always returns a decision (``chosen`` None when nothing is eligible:
        ``RouteDecision.require()`` raises the right error)."""
        config = self.config
        table = self.table
        rules = config.tenants.get(tenant_id, config.rules)
        static = self._static_for(requirements, rules, model, provider)
        resolved = static.resolved
        strategy = resolved.strategy or rules.strategy
        if strategy is Strategy.PINNED and not resolved.order:
            strategy = Strategy.BALANCED  # a pinned group with no members left, e.g.

        live = view or _NO_VIEW
        masks = self._masks(live)
        cand = self._live.get(static)  # holds only entries for the current ``masks``
        if cand is None:
            if len(self._live) >= _CACHE_LIMIT:
                self._live.clear()
            cand = self._live[static] = _Live(table, static, masks)
        eligible = cand.eligible
        rejected = dict(cand.rejected)
        requested = model
        if not eligible:
            return RouteDecision(
                tenant_id=tenant_id, requested=requested, resolved=resolved.kind, strategy=strategy,
                requirements=requirements, chosen=None, fallbacks=(), eligible=(), scores=(), rejected=rejected,
                capable=cand.capable,
            )

        n = len(eligible)
        vectors = _Vectors(cand, requirements, config, live)
        scores = self._score(strategy, rules, cand, vectors, live)
        quals = cand.quality

        k = config.max_fallbacks + 1
        rank = scores
        if cand.demoted:
            rank = list(scores)
            for j in cand.demoted:
                rank[j] -= _DEMOTED
        if strategy is Strategy.ROUND_ROBIN:
            rank = list(rank)
            rank[self._rr_pick] += 1.0  # the turn goes to the pick, even when demoted ones share it
        explicit = resolved.order if strategy is Strategy.PINNED else ()
        if explicit:
            position = cand.position
            listed = [position[idx] for idx in explicit if idx in position]
            order = listed[:k]
            if len(order) < k and not (config.pinned_fallback_only and resolved.kind != "default"):
                taken = set(order)
                rest = _top(rank, k + len(order))
                order += [j for j in rest if j not in taken][: k - len(order)]
        else:
            order = _top(rank, k)

        step: StepDown | None = None
        policy = rules.step_down
        if (
            policy.allowed
            and headroom is not None
            and headroom < policy.below_headroom
            and (not explicit or policy.override_pinned)
        ):
            costs = vectors.costs()
            top = order[0]
            demoted = set(cand.demoted)
            best = -1
            for j in range(n):
                if costs[j] < costs[top] and quals[j] >= policy.min_quality and j not in demoted and (
                    best < 0 or costs[j] < costs[best] or (costs[j] == costs[best] and rank[j] > rank[best])
                ):
                    best = j
            if best >= 0:
                step = StepDown(
                    headroom=headroom, threshold=policy.below_headroom, replaced=cand.names[top],
                    chosen=cand.names[best], saved_micros=round(costs[top] - costs[best]),
                )
                order = [best, *(j for j in order if j != best)][:k]

        ranked = [
            self._candidate(eligible[j], scores[j], vectors.cost_of(j), quals[j], vectors.expected_of(j), live, masks)
            for j in order
        ]
        return RouteDecision(
            tenant_id=tenant_id,
            requested=requested,
            resolved=resolved.kind,
            strategy=strategy,
            requirements=requirements,
            chosen=ranked[0],
            fallbacks=tuple(ranked[1:]),
            eligible=cand.names,
            scores=tuple(scores),
            rejected=rejected,
            step_down=step,
            capable=cand.capable,
        )

    # --- scoring ---------------------------------------------------------------------------

    def _score(self, strategy: Strategy, rules: TenantRules, cand: _Live, v: _Vectors, view: RuntimeView) -> list[float]:
        """Each eligible candidate's score in [0, 1], higher better. Cost and latency scores are
        relative to the best candidate: the cheapest (fastest) scores 1, one costing (taking)
        twice as much 0.5, ten times 0.1. Ties keep name order."""
        match strategy:
            case Strategy.CHEAPEST:
                costs = v.costs()
                lo = min(costs)
                return [lo / c for c in costs]
            case Strategy.FASTEST:
                expected = v.expected()
                lo = min(expected)
                return [lo / t for t in expected]
            case Strategy.QUALITY:
                return cand.quality
            case Strategy.LEAST_BUSY:
                # fewest in flight first; among equals, the faster
                expected = v.expected()
                lo = min(expected)
                busy = map(view.in_flight.get, cand.keys, repeat(0, len(expected)))
                return [(1.0 + 0.5 * lo / t) / (1.5 + 1.5 * b) for t, b in zip(expected, busy, strict=True)]
            case Strategy.ROUND_ROBIN:
                return self._round_robin(cand.eligible)
            case _:  # BALANCED, and the order of candidates beyond a pinned list
                w = rules.weights
                total = w.cost + w.latency + w.quality
                costs, expected = v.costs(), v.expected()
                wc, wl, wq = w.cost / total * min(costs), w.latency / total * min(expected), w.quality / total
                return [wc / c + wl / t + wq * q for c, t, q in zip(costs, expected, cand.quality, strict=True)]

    def _round_robin(self, eligible: list[int]) -> list[float]:
        """Smooth weighted round-robin (as nginx): each candidate's current weight grows by its
        weight; the largest is served and pays back the total. Scores: current weights, scaled to
        [0, 1]; ``_rr_pick`` is the position served."""
        names, weights, cur = self.table.names, self.table.rr_weight, self._rr
        total = 0.0
        current: list[float] = []
        for i in eligible:
            w = weights[i]
            total += w
            value = cur.get(names[i], 0.0) + w
            cur[names[i]] = value
            current.append(value)
        best = max(range(len(eligible)), key=current.__getitem__)
        cur[names[eligible[best]]] -= total
        self._rr_pick = best
        lo, hi = min(current), max(current)
        span = hi - lo
        return [1.0 if span <= 0 else (v - lo) / span for v in current]

    def _candidate(
        self, idx: int, score: float, cost: float, quality: float, expected: float, view: RuntimeView, masks: _ViewMasks
    ) -> Candidate:
        table = self.table
        key = table.keys[idx]
        estimate = view.ttft.get(key)
        return Candidate(  # positional: the field order of ``Candidate``
            table.names[idx],
            table.providers[idx],
            table.upstream[idx],
            score,
            round(cost),
            quality,
            expected,
            view.in_flight.get(key, 0),
            _HEALTH_TEXT[view.health.get(key, HealthState.HEALTHY)],
            "half_open" if masks.half_open >> idx & 1 else "closed",
            None if estimate is None else estimate.p95,
        )

    # --- filtering -------------------------------------------------------------------------

    def _resolve(self, model: str, provider: str | None) -> _Resolved:
        key = (model, provider, id(self.table))
        found = self._resolved.get(key)
        if found is None:
            found = self._resolved[key] = self._resolve_uncached(model, provider)
        return found

    def _resolve_uncached(self, model: str, provider: str | None) -> _Resolved:
        table, config = self.table, self.config
        provider_mask = None if provider is None else table.by_provider.get(provider, 0)
        if not model or model == "auto":
            defaults = tuple(i for i, r in enumerate(table.routes) if r.is_default)
            return _Resolved("default", order=defaults + self._fallbacks_of(defaults), scope=provider_mask,
                             scope_reason=f"not at the requested provider {provider!r}")
        target: int | None = table.index.get(model)
        kind = "model"
        if target is None and provider is not None:
            for i, (p, upstream) in enumerate(zip(table.providers, table.upstream, strict=True)):
                if p == provider and upstream == model:
                    target = i
                    break
        if target is None and model in config.aliases:
            target = table.index.get(config.aliases[model])
            kind = "alias"
            if target is None:
                raise NotFound("model", f"{config.aliases[model]} (alias {model})")
        if target is not None:
            order = (target, *self._fallbacks_of((target,), alias=model))
            scope = provider_mask
            reason = f"not at the requested provider {provider!r}"
            if config.pinned_fallback_only:
                listed = 0
                for i in order:
                    listed |= 1 << i
                scope = listed if scope is None else scope & listed
                reason = f"not {model!r} or its fallbacks" + ("" if provider is None else f" at provider {provider!r}")
            return _Resolved(kind, Strategy.PINNED, order, scope, reason)
        group = config.groups.get(model)
        if group is None:
            raise NotFound("model", model if provider is None else f"{model} at provider {provider}")
        if group.models:
            members = tuple(table.index[m] for m in group.models if m in table.index)
        else:
            members = tuple(bits_of(table.tags_mask(group.tags)))
        scope = 0
        for i in members:
            scope |= 1 << i
        if provider_mask is not None:
            scope &= provider_mask
        where = "" if provider is None else f" at provider {provider!r}"
        return _Resolved("group", group.strategy, members if group.strategy is Strategy.PINNED else (), scope,
                         f"not in group {model!r}{where}", group.reasoning)

    def _fallbacks_of(self, targets: tuple[int, ...], alias: str = "") -> tuple[int, ...]:
        table, fallbacks = self.table, self.config.fallbacks
        out: list[int] = []
        names = [alias] if alias in fallbacks else []
        names += [table.names[t] for t in targets]
        for name in names:
            for fb in fallbacks.get(name, ()):
                i = table.index.get(fb)
                if i is not None and i not in targets and i not in out:
                    out.append(i)
        return tuple(out)

    def _static_for(self, req: Requirements, rules: TenantRules, model: str, provider: str | None) -> _Static:
        table = self.table
        window_pos, window_mask = table.at_least_window(req.context_tokens)
        if req.max_output_tokens is not None:
            output_pos, output_mask = table.at_least_output(req.max_output_tokens)
        else:
            output_pos, output_mask = -1, table.all
        key = (
            id(rules), model, provider, window_pos, output_pos, req.images, req.tools, req.parallel_tools,
            req.json_schema, req.json_mode, req.streaming, req.reasoning,
        )
        found = self._static.get(key)
        if found is not None:
            return found
        resolved = self._resolve(model, provider)
        pool = table.all
        rejected: dict[str, str] = {}

        def keep(mask: int, reason: str) -> None:
            nonlocal pool
            gone = pool & ~mask
            if gone:
                rejected.update(dict.fromkeys(table.names_of(gone), reason))
                pool &= mask

        if resolved.scope is not None:
            keep(resolved.scope, resolved.scope_reason)
        keep(table.enabled, R_DISABLED)
        keep(table.available, R_UNAVAILABLE)
        keep(table.chat, R_NOT_CHAT)
        if rules.deny_providers:
            keep(~_union(table.by_provider, rules.deny_providers) & table.all, R_PROVIDER_DENIED)
        if rules.allow_providers:
            keep(_union(table.by_provider, rules.allow_providers), R_PROVIDER_NOT_ALLOWED)
        if rules.deny_models:
            keep(~_names_mask(table, rules.deny_models) & table.all, R_MODEL_DENIED)
        if rules.allow_models:
            keep(_names_mask(table, rules.allow_models), R_MODEL_NOT_ALLOWED)
        if rules.require_tags:
            keep(table.tags_mask(rules.require_tags), "lacks required tags: " + ", ".join(sorted(rules.require_tags)))
        keep(window_mask, R_CONTEXT)
        keep(output_mask, R_OUTPUT)
        if req.images:
            keep(table.images, R_IMAGES)
        if req.tools:
            keep(table.tools, R_TOOLS)
        if req.parallel_tools:
            keep(table.parallel_tools, R_PARALLEL)
        if req.json_schema:
            keep(table.json_schema, R_JSON_SCHEMA)
        if req.json_mode:
            keep(table.json_mode, R_JSON_MODE)
        if req.streaming:
            keep(table.streaming, R_STREAMING)
        if req.reasoning or resolved.reasoning:
            keep(table.reasoning, R_REASONING)
        if len(self._static) >= _CACHE_LIMIT:
            self._static.clear()
        found = self._static[key] = _Static(pool, rejected, resolved)
        return found

    def _masks(self, view: RuntimeView) -> _ViewMasks:
        """The view's exclusions as masks over the table, recomputed when the view's state changed
        (which also drops the candidates cached under the previous state)."""
        cached = self._view_masks
        if cached is not None and cached.view is view and cached.version == view.state_version:
            return cached
        table = self.table
        unhealthy = degraded = 0
        for k, state in view.not_healthy.items():
            m = table.by_key.get(k, 0)
            if state is HealthState.UNHEALTHY:
                unhealthy |= m
            else:
                degraded |= m
        open_p = _union(table.by_provider, view.open_providers)
        open_m = _union(table.by_key, view.open_models)
        half = _union(table.by_provider, view.half_open_providers) | _union(table.by_key, view.half_open_models)
        self._live.clear()
        masks = self._view_masks = _ViewMasks(view, view.state_version, unhealthy, open_p, open_m, degraded | half, half)
        return masks


def _union(index: dict, keys: object) -> int:  # type: ignore[type-arg]
    m = 0
    for k in keys:  # type: ignore[attr-defined]
        m |= index.get(k, 0)
    return m


def _names_mask(table: RouteTable, names: frozenset[str]) -> int:
    m = 0
    for name in names:
        i = table.index.get(name)
        if i is not None:
            m |= 1 << i
    return m


def _gather(values: tuple[T, ...], indices: list[int]) -> tuple[T, ...]:
    """``tuple(values[i] for i in indices)``, gathered in C."""
    if len(indices) > 1:
        return itemgetter(*indices)(values)  # type: ignore[no-any-return]
    return tuple(values[i] for i in indices)


def _top(rank: list[float], k: int) -> list[int]:
    """Positions of the ``k`` highest ranks, best first; ties keep name order (a stable sort)."""
    return sorted(range(len(rank)), key=rank.__getitem__, reverse=True)[:k]
