"""Cost-aware step-down: with every candidate capable and healthy, it happens exactly when the
tenant allows it, the budget headroom is below the threshold, and a cheaper candidate of enough
quality exists; it then picks the cheapest such candidate, keeps the strategy's choice as the
first fallback, and says so in the decision."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.cost import Price
from domain.registry import ModelRoute
from domain.routing import (
    Requirements,
    Router,
    RoutingConfig,
    StepDownPolicy,
    Strategy,
    TenantRules,
)

STRATEGIES = [Strategy.CHEAPEST, Strategy.FASTEST, Strategy.QUALITY, Strategy.BALANCED, Strategy.LEAST_BUSY]


@st.composite
def setups(draw: st.DrawFn) -> tuple[list[ModelRoute], dict[str, float], StepDownPolicy, Strategy, float | None, str]:
    n = draw(st.integers(1, 12))
    routes = [
        ModelRoute(
            name=f"m{i}", provider="p", upstream_model=f"m{i}",
            price=Price(draw(st.sampled_from([0.1, 0.5, 2.5, 10.0, 30.0])), draw(st.sampled_from([0.4, 2.0, 10.0, 60.0]))),
        )
        for i in range(n)
    ]
    quality = {r.name: draw(st.sampled_from([0.1, 0.5, 0.8, 1.0])) for r in routes}
    policy = StepDownPolicy(
        allowed=draw(st.booleans()),
        below_headroom=draw(st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0])),
        min_quality=draw(st.sampled_from([0.0, 0.5, 0.9])),
        override_pinned=draw(st.booleans()),
    )
    headroom = draw(st.one_of(st.none(), st.floats(0, 1)))
    model = draw(st.one_of(st.just(""), st.sampled_from([r.name for r in routes])))
    return routes, quality, policy, draw(st.sampled_from(STRATEGIES)), headroom, model


@settings(max_examples=400, deadline=None)
@given(setups())
def test_step_down_exactly_when_allowed_low_and_possible(setup) -> None:  # type: ignore[no-untyped-def]
    routes, quality, policy, strategy, headroom, model = setup
    config = RoutingConfig(rules=TenantRules(strategy=strategy, step_down=policy), quality=quality, max_fallbacks=20)
    req = Requirements(prompt_tokens=1000, max_output_tokens=500)
    decision = Router(config, routes).decide(req, model=model, headroom=headroom)
    baseline = Router(RoutingConfig(rules=TenantRules(strategy=strategy), quality=quality, max_fallbacks=20), routes).decide(
        req, model=model
    )
    assert baseline.chosen is not None and decision.chosen is not None
    original = baseline.chosen
    cost = {c.model: c.cost_micros for c in baseline.candidates}
    cheaper = [
        name for name in cost if cost[name] < cost[original.model] and quality[name] >= policy.min_quality
    ]
    expected = (
        policy.allowed
        and headroom is not None
        and headroom < policy.below_headroom
        and (not model or policy.override_pinned)
        and bool(cheaper)
    )
    if not expected:
        assert decision.step_down is None
        assert decision.chosen.model == original.model
        return
    step = decision.step_down
    assert step is not None
    assert step.replaced == original.model and step.chosen == decision.chosen.model
    assert decision.chosen.model in cheaper
    assert cost[decision.chosen.model] == min(cost[n] for n in cheaper)
    assert step.saved_micros == cost[original.model] - cost[decision.chosen.model] or abs(
        step.saved_micros - (cost[original.model] - cost[decision.chosen.model])
    ) <= 1
    assert decision.fallbacks[0].model == original.model
