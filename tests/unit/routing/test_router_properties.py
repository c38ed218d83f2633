"""Properties of the router over random registries, live states, tenant rules and requests:
it never picks (or lists as a fallback) an incapable, disabled, unhealthy, broken-circuit or
denied model, whatever the strategy; it accounts for every model (eligible with a score, or
rejected with a reason); it rejects nothing an independent oracle accepts; step-down happens only
when the tenant allows it and the headroom is below its threshold."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.cost import Price
from domain.errors import NotFound
from domain.health import HealthState, ModelHealth
from domain.registry import Modality, ModelCapabilities, ModelRoute
from domain.routing import (
    BreakerState,
    Group,
    Requirements,
    Router,
    RoutingConfig,
    RuntimeView,
    StepDownPolicy,
    Strategy,
    TenantRules,
    breaker_key,
)

PROVIDERS = ("alpha", "beta", "gamma", "delta")
TAGS = ("eu", "us", "no-training")
WINDOWS = (4096, 8192, 32_000, 128_000, 1_000_000)
OUTPUTS = (1024, 4096, 16_384)


@st.composite
def routes(draw: st.DrawFn) -> list[ModelRoute]:
    """Up to 30 routes; each route's properties decoded from one drawn integer (drawing each
    field separately makes generation, not the router, the cost of this test). Zero digits decode
    to the common case (enabled, available, priced, a chat model), as hypothesis favours them."""
    n = draw(st.integers(1, 30))
    seeds = draw(st.lists(st.integers(0, 2**40 - 1), min_size=n, max_size=n))
    out: list[ModelRoute] = []
    for i, x in enumerate(seeds):
        def take(k: int) -> int:
            nonlocal x
            v = x % k
            x //= k
            return v

        window = WINDOWS[take(len(WINDOWS))]
        tools = take(2) == 1
        caps = ModelCapabilities(
            context_window=window,
            max_output_tokens=min(OUTPUTS[take(len(OUTPUTS))], window),
            input_modalities=(Modality.TEXT, Modality.IMAGE) if take(2) else (Modality.TEXT,),
            tools=tools,
            parallel_tool_calls=tools and take(2) == 1,
            json_schema=take(2) == 1,
            streaming=take(4) != 3,
            reasoning=take(2) == 1,
            embeddings=take(10) == 9,
            tags=tuple(t for t in TAGS if take(2)),
        )
        out.append(
            ModelRoute(
                name=f"m{i:02d}",
                provider=PROVIDERS[take(len(PROVIDERS))],
                upstream_model=f"up-{i % 7}",
                price=Price(float(take(80)), float(take(200)), 0.0),
                capabilities=caps,
                enabled=take(10) != 9,
                available=take(10) != 9,
                priced=take(5) != 4,
                is_default=take(7) == 6,
            )
        )
    return out


@dataclass
class Case:
    routes: list[ModelRoute]
    config: RoutingConfig
    tenant: str
    requirements: Requirements
    model: str
    provider: str | None
    view: RuntimeView
    health: dict[tuple[str, str], HealthState]
    breakers: dict[str, BreakerState]
    headroom: float | None


@st.composite
def cases(draw: st.DrawFn) -> Case:
    rs = draw(routes())
    names = [r.name for r in rs]
    some_names = st.one_of(st.just(frozenset()), st.frozensets(st.sampled_from(names), max_size=4))
    some_providers = st.one_of(st.just(frozenset()), st.frozensets(st.sampled_from(PROVIDERS), max_size=2))
    rarely = st.integers(0, 3).map(lambda x: x == 0)
    rules = TenantRules(
        strategy=draw(st.sampled_from(list(Strategy))),
        allow_providers=draw(some_providers),
        deny_providers=draw(some_providers),
        allow_models=draw(some_names),
        deny_models=draw(some_names),
        require_tags=draw(st.one_of(st.just(frozenset()), st.frozensets(st.sampled_from(TAGS), max_size=1))),
        step_down=StepDownPolicy(
            allowed=draw(st.booleans()),
            below_headroom=draw(st.sampled_from([0.0, 0.2, 0.5, 1.0])),
            min_quality=draw(st.sampled_from([0.0, 0.0, 0.4, 0.9])),
            override_pinned=draw(st.booleans()),
        ),
    )
    groups = {
        "fast": Group(models=tuple(draw(st.lists(st.sampled_from(names), max_size=5, unique=True))) or (names[0],),
                      strategy=draw(st.sampled_from([None, Strategy.FASTEST, Strategy.PINNED]))),
        "euro": Group(tags=frozenset({"eu"})),
        "smart": Group(models=tuple(names), reasoning=True),
    }
    config = RoutingConfig(
        rules=TenantRules() if draw(st.booleans()) else rules,
        tenants={"t1": rules},
        aliases={"best": draw(st.sampled_from(names))},
        groups=groups,
        fallbacks={n: tuple(draw(st.lists(st.sampled_from(names), max_size=3))) for n in names[:5]},
        pinned_fallback_only=draw(rarely),
        quality={n: draw(st.sampled_from([0.2, 0.5, 0.8, 1.0])) for n in names},
        rr_weights={n: draw(st.floats(0.1, 5)) for n in names[:4]},
        model_tags={names[0]: frozenset({"eu"})},
        max_fallbacks=draw(st.integers(0, 30)),
    )
    max_tokens = draw(st.one_of(st.none(), st.integers(1, 4000), st.integers(1, 20_000)))
    requirements = Requirements(
        prompt_tokens=draw(st.one_of(st.integers(0, 6000), st.integers(0, 200_000))),
        max_output_tokens=max_tokens,
        tools=draw(rarely),
        parallel_tools=draw(rarely),
        images=draw(rarely),
        json_schema=draw(rarely),
        json_mode=draw(rarely),
        reasoning=draw(rarely),
        streaming=draw(st.booleans()),
    )
    view = RuntimeView()
    health: dict[tuple[str, str], HealthState] = {}
    breakers: dict[str, BreakerState] = {}
    live = draw(st.lists(st.integers(0, 2**30 - 1), min_size=len(rs) + 1, max_size=len(rs) + 1))
    breaker_states = [BreakerState.CLOSED] * 8 + [BreakerState.OPEN, BreakerState.HALF_OPEN]
    health_states = [HealthState.HEALTHY] * 3 + [HealthState.DEGRADED, HealthState.UNHEALTHY]
    for r, x in zip(rs, live, strict=False):
        key = (r.provider, r.upstream_model)
        if x % 2:
            state = health_states[(x >> 1) % 5]
            health[key] = state
            view.update_health(ModelHealth(provider=r.provider, model=r.upstream_model, state=state,
                                           ttft_s=0.01 + (x >> 4) % 900 / 100, latency_s=0.1 + (x >> 14) % 600 / 10))
        for _ in range((x >> 24) % 3):
            view.started(*key)
        breakers[breaker_key(r.provider, r.upstream_model)] = breaker_states[(x >> 26) % 10]
    for k, p in enumerate(PROVIDERS):
        breakers[breaker_key(p)] = breaker_states[(live[-1] >> (4 * k)) % 10]
    view.set_breakers(breakers)
    model = draw(st.one_of(st.sampled_from(["", "", "auto", "best", "fast", "euro", "smart"]), st.sampled_from(names)))
    return Case(
        routes=rs, config=config, tenant=draw(st.sampled_from(["t1", "other"])), requirements=requirements,
        model=model, provider=draw(st.sampled_from([None, None, None, None, *PROVIDERS])), view=view,
        health=health, breakers=breakers, headroom=draw(st.one_of(st.none(), st.sampled_from([0.0, 0.1, 0.3, 0.9]), st.floats(0, 1))),
    )


def capable(case: Case, r: ModelRoute) -> bool:
    """The oracle, written independently of the router: may ``r`` serve this request now?"""
    rules = case.config.tenants.get(case.tenant, case.config.rules)
    req, caps = case.requirements, r.capabilities
    tags = set(caps.tags) | set(case.config.model_tags.get(r.name, ()))
    needed = req.prompt_tokens + (req.max_output_tokens if req.max_output_tokens is not None else req.output_reserve)
    group = case.config.groups.get(case.model)
    checks = [
        r.enabled,
        r.available,
        not caps.embeddings and Modality.TEXT in caps.output_modalities,
        r.provider not in rules.deny_providers,
        not rules.allow_providers or r.provider in rules.allow_providers,
        r.name not in rules.deny_models,
        not rules.allow_models or r.name in rules.allow_models,
        rules.require_tags <= tags,
        caps.context_window >= needed,
        req.max_output_tokens is None or caps.max_output_tokens >= req.max_output_tokens,
        not req.images or Modality.IMAGE in caps.input_modalities,
        not req.tools or caps.tools,
        not req.parallel_tools or caps.parallel_tool_calls,
        not req.json_schema or caps.json_schema,
        not req.json_mode or caps.json_schema or caps.tools,
        not req.streaming or caps.streaming,
        not (req.reasoning or (group is not None and group.reasoning)) or caps.reasoning,
        case.health.get((r.provider, r.upstream_model)) is not HealthState.UNHEALTHY,
        case.breakers[breaker_key(r.provider)] is not BreakerState.OPEN,
        case.breakers[breaker_key(r.provider, r.upstream_model)] is not BreakerState.OPEN,
        case.provider is None or r.provider == case.provider,
    ]
    return all(checks)


def in_scope(case: Case, r: ModelRoute, pinned: str | None) -> bool:
    group = case.config.groups.get(case.model)
    if group is not None:
        return r.name in group.models if group.models else set(group.tags) <= (
            set(r.capabilities.tags) | set(case.config.model_tags.get(r.name, ()))
        )
    if pinned is not None and case.config.pinned_fallback_only:
        return r.name == pinned or r.name in case.config.fallbacks.get(pinned, ()) or r.name in case.config.fallbacks.get(case.model, ())
    return True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_router_picks_only_capable_allowed_healthy_models_and_explains_every_other(case: Case) -> None:
    router = Router(case.config, case.routes)
    by_name = {r.name: r for r in case.routes}
    try:
        decision = router.decide(
            case.requirements, tenant_id=case.tenant, model=case.model, provider=case.provider,
            view=case.view, headroom=case.headroom,
        )
    except NotFound:
        # only a name the router cannot resolve: an alias's target at another provider is still a name
        assert case.provider is not None and case.model not in ("", "auto", "fast", "euro", "smart")
        return

    pinned = None
    if case.model in by_name:
        pinned = case.model
    elif case.model == "best":
        pinned = case.config.aliases["best"]
    # 1. never an incapable, disabled, unhealthy, open-circuit or denied model
    for c in decision.candidates:
        route = by_name[c.model]
        assert capable(case, route), (c.model, decision.rejected)
        assert in_scope(case, route, pinned)
        assert decision.rejected.get(c.model) is None
    # 2. every model accounted for exactly once, every rejection with a reason
    assert set(decision.eligible) | set(decision.rejected) == set(by_name)
    assert not set(decision.eligible) & set(decision.rejected)
    assert all(reason.strip() for reason in decision.rejected.values())
    assert {c.model for c in decision.candidates} <= set(decision.eligible)
    assert len({c.model for c in decision.candidates}) == len(decision.candidates)
    # 3. nothing wrongly rejected: the oracle's capable models in scope are all eligible
    for name, route in by_name.items():
        if capable(case, route) and in_scope(case, route, pinned):
            assert name in decision.eligible, (name, decision.rejected.get(name))
    # 4. a choice whenever something is eligible, and fallbacks bounded by the config
    assert (decision.chosen is not None) == bool(decision.eligible)
    assert len(decision.fallbacks) <= case.config.max_fallbacks
    assert len(decision.scores) == len(decision.eligible) and list(decision.eligible) == sorted(decision.eligible)
    for score in decision.scores:
        assert -1e-9 <= score <= 1.0 + 1e-9
    # 5. step-down only when allowed and the headroom is low, and always to a cheaper model
    rules = case.config.tenants.get(case.tenant, case.config.rules)
    if decision.step_down is not None:
        assert rules.step_down.allowed
        assert case.headroom is not None and case.headroom < rules.step_down.below_headroom
        assert decision.chosen is not None and decision.chosen.model == decision.step_down.chosen
        assert decision.step_down.saved_micros >= 0
        assert case.config.quality.get(decision.chosen.model, case.config.default_quality) >= rules.step_down.min_quality


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_without_step_down_permission_headroom_changes_nothing(case: Case) -> None:
    """A tenant that does not allow step-down gets the same choice whatever its budget headroom."""
    config = case.config
    rules = config.tenants.get(case.tenant, config.rules)
    forbidding = TenantRules(
        strategy=rules.strategy if rules.strategy is not Strategy.ROUND_ROBIN else Strategy.BALANCED,
        allow_providers=rules.allow_providers, deny_providers=rules.deny_providers,
        allow_models=rules.allow_models, deny_models=rules.deny_models, require_tags=rules.require_tags,
        step_down=StepDownPolicy(allowed=False, below_headroom=1.0),
    )
    config = RoutingConfig(
        rules=forbidding, tenants={}, aliases=config.aliases, groups=config.groups, fallbacks=config.fallbacks,
        quality=config.quality, max_fallbacks=config.max_fallbacks,
    )
    group = config.groups.get(case.model)
    if group is not None and group.strategy is Strategy.ROUND_ROBIN:
        return
    try:
        low = Router(config, case.routes).decide(case.requirements, model=case.model, view=case.view, headroom=0.0)
        none = Router(config, case.routes).decide(case.requirements, model=case.model, view=case.view, headroom=None)
    except NotFound:
        return
    assert low.step_down is None
    assert low.candidates == none.candidates
