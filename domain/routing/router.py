"""The routing policy: from a request's requirements, the tenant's rules and the live view of
each model, an ordered, explained list of candidates.

Filtering runs on the compiled ``RouteTable`` (bitmasks); its static part (everything but health
and breakers) depends only on the tenant's rules, what the request asked for and its requirement
flags, so it is cached per such shape, in two levels: the tenant-level filters (scope, operator,
tenant rules) per tenant and name, with the rejections each requirement filter adds first; then
the requirement filters per shape, as integer operations. The candidates' arrays and the rejected
list are built once per shape and health/breaker state (the rejected list is copied into each
decision). Every model of the registry ends up either eligible (with a score) or rejected (with
the first reason that excluded it, in this order): not in the requested group / not the requested
model or its fallbacks / not at the requested provider; disabled; unavailable upstream; not a chat
model; tenant rules (providers, models, tags); context window; max output; images; tools; parallel
tool calls; JSON schema; JSON mode; streaming; reasoning; unhealthy; circuit breaker open.

Scores are in [0, 1], higher better. Cost and latency scores are relative to the best eligible
candidate: the cheapest (fastest) scores 1, one twice as dear (slow) 0.5, ten times 0.1 (estimated
cost of this request from its token counts; expected time to first token when streaming, else
whole latency, from the live EWMAs). Quality is configured. Balanced is their weighted sum. Ties
keep name order. Degraded and half-open candidates keep their score but rank after the healthy
ones (except in an explicit pinned order). Models nobody priced are costed at the dearest known
rates, so "cheapest" never prefers a model whose cost is unknown."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import accumulate, compress, repeat
from operator import add, itemgetter
from typing import Any

from domain.errors import NotFound
from domain.health import HealthState
from domain.registry import ModelRoute
from domain.routing.config import RoutingConfig, Strategy, TenantRules
from domain.routing.decision import Candidate, RouteDecision, StepDown
from domain.routing.requirements import Requirements
from domain.routing.table import RouteTable, bits_of
from domain.routing.view import RuntimeView

__all__ = ["Router"]

_DEMOTED = 2.0  # subtracted from a degraded / half-open candidate's rank (scores are in [0, 1])
_CACHE_LIMIT = 2048
_FEW = 8  # up to this many models, named one by one

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


class _Rules:
    """The part of the filtering that depends only on the tenant's rules and what was asked for
    (model, alias or group; provider), not on the request's requirements: models out of scope,
    disabled, unavailable, not chat models, or excluded by the tenant's rules. Cached per tenant
    rules and name, like name resolution. ``first(...)``: what each requirement filter, applied
    first, excludes from ``pool``, listed once per filter."""

    __slots__ = ("_first", "pool", "rejected", "resolved")

    def __init__(self, pool: int, rejected: dict[str, str], resolved: _Resolved) -> None:
        self.pool = pool
        self.rejected = rejected
        self.resolved = resolved
        self._first: dict[tuple[int, str], dict[str, str]] = {}

    def first(self, table: RouteTable, gone: int, mask: int, reason: str) -> dict[str, str]:
        """The models the filter (``mask``, ``reason``) excludes when it is the first requirement
        filter to exclude any (``gone`` = ``pool & ~mask``), each with ``reason``, in name order."""
        key = (mask, reason)
        found = self._first.get(key)
        if found is None:
            if len(self._first) >= _CACHE_LIMIT:
                self._first.clear()
            found = self._first[key] = dict.fromkeys(table.names_of(gone), reason)
        return found


def _reject(rejected: dict[str, str], table: RouteTable, gone: int, reason: str) -> None:
    """Add the models of ``gone`` to ``rejected`` with ``reason``, in name order."""
    if gone.bit_count() <= _FEW:
        names = table.names
        while gone:
            low = gone & -gone
            rejected[names[low.bit_length() - 1]] = reason
            gone ^= low
    else:
        rejected.update(dict.fromkeys(table.names_of(gone), reason))


class _Static:
    """One request shape's filtering: the models that pass every static filter, and the requirement
    filters that excluded others beyond the tenant-level ones (``base``), as (excluded, filter
    mask, reason) in filter order: integers only, the names are listed when the candidates are
    built. ``live``: the candidates under the current health/breaker state."""

    __slots__ = ("base", "live", "parts", "pool", "resolved")

    def __init__(self, pool: int, base: _Rules, parts: list[tuple[int, int, str]]) -> None:
        self.pool = pool
        self.base = base
        self.parts = parts
        self.resolved = base.resolved
        self.live: _Live | None = None


class _ViewMasks:
    __slots__ = ("_demoted_sel", "demoted", "half_open", "open_model", "open_provider", "unhealthy", "version", "view")

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
        self._demoted_sel: bytes | None = None

    def demoted_selectors(self, table: RouteTable) -> bytes:
        if self._demoted_sel is None:
            self._demoted_sel = table.selectors(self.demoted)
        return self._demoted_sel


_Gather = Callable[[Sequence[Any]], tuple[Any, ...]]


def _gatherer(indices: Sequence[Any]) -> _Gather:
    """``seq -> tuple(seq[i] for i in indices)``, in C when there are several."""
    if len(indices) > 1:
        return itemgetter(*indices)
    return lambda seq: tuple(seq[i] for i in indices)


class _Live:
    """The candidates of one static shape under one health/breaker state, and every other model
    with the reason it was excluded. Per-candidate constants are gathered from the table (in C)
    the first time a strategy needs them."""

    __slots__ = (
        "_get", "_keys", "_quality", "_rates", "_rr", "capable", "demoted", "eligible", "masks", "names", "pool",
        "rejected", "table",
    )

    def __init__(self, table: RouteTable, static: _Static, masks: _ViewMasks) -> None:
        self.table = table
        self.masks = masks
        pool = static.pool
        base = static.base
        rejected = dict(base.rejected)
        parts = static.parts
        if parts:
            gone, mask, reason = parts[0]
            rejected.update(base.first(table, gone, mask, reason))
            for gone, _, reason in parts[1:]:
                _reject(rejected, table, gone, reason)
        for blocked, reason in (
            (masks.unhealthy, R_UNHEALTHY),
            (masks.open_provider, R_PROVIDER_OPEN),
            (masks.open_model, R_MODEL_OPEN),
        ):
            gone = pool & blocked
            if gone:
                _reject(rejected, table, gone, reason)
                pool ^= gone
        self.pool = pool
        self.rejected = rejected
        self.capable = static.pool.bit_count()
        eligible = self.eligible = bits_of(pool)
        get = self._get = _gatherer(eligible)
        self.names: tuple[str, ...] = get(table.names)
        # positions among the eligible of the degraded / half-open ones
        demoted = get(masks.demoted_selectors(table)) if masks.demoted & pool else ()
        self.demoted = list(compress(range(len(eligible)), demoted))
        self._keys: tuple[str, ...] | None = None
        self._rates: tuple[tuple[float, float], ...] | None = None
        self._quality: list[float] | None = None
        self._rr: tuple[_Gather, tuple[float, ...], float] | None = None

    @property
    def keys(self) -> tuple[str, ...]:
        if self._keys is None:
            self._keys = self._get(self.table.keys)
        return self._keys

    @property
    def rates(self) -> tuple[tuple[float, float], ...]:
        if self._rates is None:
            self._rates = self._get(self.table.rates)
        return self._rates

    @property
    def quality(self) -> list[float]:
        if self._quality is None:
            self._quality = list(self._get(self.table.quality))
        return self._quality

    def quality_of(self, j: int) -> float:
        return self.table.quality[self.eligible[j]] if self._quality is None else self._quality[j]

    def position(self, idx: int) -> int:
        """Table index ``idx``'s position among the eligible; -1 when it is not eligible."""
        pool = self.pool
        return (pool & ((1 << idx) - 1)).bit_count() if pool >> idx & 1 else -1

    def round_robin(self) -> tuple[_Gather, tuple[float, ...], float]:
        """(gather of the candidates' current weights by name, their weights, the weights' total)."""
        if self._rr is None:
            weights = self._get(self.table.rr_weight)
            total = list(accumulate(weights, initial=0.0))[-1]  # summed in candidate order, in C
            self._rr = (_gatherer(self.names), weights, total)
        return self._rr


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
        cand = self._cand
        a, b = cand.table.rates[cand.eligible[j]]
        return self._prompt * a + self._out * b

    def expected_of(self, j: int) -> float:
        if self._expected is not None:
            return self._expected[j]
        cand = self._cand
        return self._seen.get(cand.table.keys[cand.eligible[j]], self._default)


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
        self._rules: dict[tuple[int, str, str | None], _Rules] = {}
        self._resolved: dict[tuple[str, str | None, int], _Resolved] = {}
        self._view_masks: _ViewMasks | None = None
        self._rr_pick = 0
        for name in self.table.names:  # round-robin state carries over by name
            self._rr.setdefault(name, 0.0)

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
        masks = self._view_masks
        if masks is None or masks.view is not live or masks.version != live.state_version:
            masks = self._masks(live)
        cand = static.live
        if cand is None or cand.masks is not masks:
            cand = static.live = _Live(table, static, masks)
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
            listed = [j for j in map(position, explicit) if j >= 0]
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
            quals = cand.quality
            top = order[0]
            limit = costs[top]
            demoted = set(cand.demoted)
            # the cheapest allowed one (then the best ranked, then the first): scan by ascending cost
            best = -1
            for j in sorted(range(n), key=costs.__getitem__):
                c = costs[j]
                if c >= limit or (best >= 0 and c > costs[best]):
                    break
                if quals[j] >= policy.min_quality and j not in demoted and (best < 0 or rank[j] > rank[best]):
                    best = j
            if best >= 0:
                step = StepDown(
                    headroom=headroom, threshold=policy.below_headroom, replaced=cand.names[top],
                    chosen=cand.names[best], saved_micros=round(costs[top] - costs[best]),
                )
                order = [best, *(j for j in order if j != best)][:k]

        names, keys, ttft, in_flight, health, half = table.names, table.keys, live.ttft, live.in_flight, live.health, masks.half_open
        ranked = []
        for j in order:
            idx = eligible[j]
            key = keys[idx]
            estimate = ttft.get(key)
            ranked.append(Candidate(  # positional: the field order of ``Candidate``
                names[idx],
                table.providers[idx],
                table.upstream[idx],
                scores[j],
                round(vectors.cost_of(j)),
                cand.quality_of(j),
                vectors.expected_of(j),
                in_flight.get(key, 0),
                _HEALTH_TEXT[health.get(key, HealthState.HEALTHY)],
                "half_open" if half >> idx & 1 else "closed",
                None if estimate is None else estimate.p95,
            ))
        return RouteDecision(  # positional: the field order of ``RouteDecision``
            tenant_id,
            requested,
            resolved.kind,
            strategy,
            requirements,
            ranked[0],
            tuple(ranked[1:]),
            cand.names,
            tuple(scores),
            rejected,
            step,
            cand.capable,
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
                return self._round_robin(cand)
            case _:  # BALANCED, and the order of candidates beyond a pinned list
                w = rules.weights
                total = w.cost + w.latency + w.quality
                costs, expected = v.costs(), v.expected()
                wc, wl, wq = w.cost / total * min(costs), w.latency / total * min(expected), w.quality / total
                return [wc / c + wl / t + wq * q for c, t, q in zip(costs, expected, cand.quality, strict=True)]

    def _round_robin(self, cand: _Live) -> list[float]:
        """Smooth weighted round-robin (as nginx): each candidate's current weight grows by its
        weight; the largest is served and pays back the total. Scores: current weights, scaled to
        [0, 1]; ``_rr_pick`` is the position served."""
        get, weights, total = cand.round_robin()
        cur = self._rr
        current = list(map(add, get(cur), weights))
        cur.update(zip(cand.names, current))
        hi = max(current)
        best = current.index(hi)  # the first of the largest
        cur[cand.names[best]] -= total
        self._rr_pick = best
        lo = min(current)
        span = hi - lo
        if span <= 0:
            return [1.0] * len(current)
        return [(v - lo) / span for v in current]

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
        base = self._rules_for(rules, model, provider)
        pool = base.pool
        parts: list[tuple[int, int, str]] = []
        for mask, reason in (
            (window_mask, R_CONTEXT),
            (output_mask, R_OUTPUT),
            (table.images if req.images else -1, R_IMAGES),
            (table.tools if req.tools else -1, R_TOOLS),
            (table.parallel_tools if req.parallel_tools else -1, R_PARALLEL),
            (table.json_schema if req.json_schema else -1, R_JSON_SCHEMA),
            (table.json_mode if req.json_mode else -1, R_JSON_MODE),
            (table.streaming if req.streaming else -1, R_STREAMING),
            (table.reasoning if req.reasoning or base.resolved.reasoning else -1, R_REASONING),
        ):
            gone = pool & ~mask  # -1: no such requirement, nothing goes
            if gone:
                parts.append((gone, mask, reason))
                pool &= mask
        if len(self._static) >= _CACHE_LIMIT:
            self._static.clear()
        found = self._static[key] = _Static(pool, base, parts)
        return found

    def _rules_for(self, rules: TenantRules, model: str, provider: str | None) -> _Rules:
        """The filters that do not depend on the requirements (scope, operator, tenant rules)."""
        key = (id(rules), model, provider)
        found = self._rules.get(key)
        if found is not None:
            return found
        table = self.table
        resolved = self._resolve(model, provider)
        pool = table.all
        rejected: dict[str, str] = {}
        steps = [] if resolved.scope is None else [(resolved.scope, resolved.scope_reason)]
        steps += [(table.enabled, R_DISABLED), (table.available, R_UNAVAILABLE), (table.chat, R_NOT_CHAT)]
        if rules.deny_providers:
            steps.append((~_union(table.by_provider, rules.deny_providers) & table.all, R_PROVIDER_DENIED))
        if rules.allow_providers:
            steps.append((_union(table.by_provider, rules.allow_providers), R_PROVIDER_NOT_ALLOWED))
        if rules.deny_models:
            steps.append((~_names_mask(table, rules.deny_models) & table.all, R_MODEL_DENIED))
        if rules.allow_models:
            steps.append((_names_mask(table, rules.allow_models), R_MODEL_NOT_ALLOWED))
        if rules.require_tags:
            steps.append((table.tags_mask(rules.require_tags), "lacks required tags: " + ", ".join(sorted(rules.require_tags))))
        for mask, reason in steps:
            gone = pool & ~mask
            if gone:
                _reject(rejected, table, gone, reason)
                pool &= mask
        if len(self._rules) >= _CACHE_LIMIT:
            self._rules.clear()
        found = self._rules[key] = _Rules(pool, rejected, resolved)
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


def _top(rank: list[float], k: int) -> list[int]:
    """Positions of the ``k`` highest ranks, best first; ties keep name order (a stable sort)."""
    return sorted(range(len(rank)), key=rank.__getitem__, reverse=True)[:k]
