"""The router, by example: each strategy, aliases and groups, pinned models with fallbacks,
provider hints, tags, health and breakers in the ranking, the errors when nothing can serve, the
explanation and its event."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import msgspec
import pytest

from adapters.events_codec import decode_event, encode_event
from domain.chat import (
    ChatMessage,
    ChatRequest,
    ImagePart,
    ResponseFormat,
    ResponseFormatKind,
    Role,
    Tool,
    ToolChoice,
)
from domain.cost import Price
from domain.errors import InvalidRequest, NotFound, Unavailable
from domain.health import HealthState, ModelHealth
from domain.registry import Modality, ModelCapabilities, ModelRoute
from domain.routing import (
    BalancedWeights,
    BreakerState,
    Group,
    NoHealthyRoute,
    NoRoute,
    Requirements,
    RouteDecision,
    Router,
    RoutingConfig,
    RuntimeView,
    Strategy,
    TenantRules,
    breaker_key,
    requirements_for,
    route_decided,
)

TEXT = Requirements(prompt_tokens=1000, max_output_tokens=500)


def route(name: str, provider: str = "p", inp: float = 1.0, out: float = 2.0, **caps: object) -> ModelRoute:
    extra = {k: v for k, v in caps.items() if k in ("enabled", "available", "priced", "is_default")}
    cap_args = {k: v for k, v in caps.items() if k not in extra}
    return ModelRoute(
        name=name, provider=provider, upstream_model=name, price=Price(inp, out),
        capabilities=ModelCapabilities(**cap_args), **extra,  # type: ignore[arg-type]
    )


def cfg(strategy: Strategy = Strategy.BALANCED, **kw: object) -> RoutingConfig:
    return RoutingConfig(rules=TenantRules(strategy=strategy), **kw)  # type: ignore[arg-type]


def health(view: RuntimeView, r: ModelRoute, state: HealthState = HealthState.HEALTHY, **kw: float) -> None:
    view.update_health(ModelHealth(provider=r.provider, model=r.upstream_model, state=state, **kw))


def test_cheapest_picks_the_lowest_estimated_cost_and_never_an_unpriced_model() -> None:
    routes = [route("dear", inp=10, out=30), route("cheap", inp=0.1, out=0.4), route("mystery", inp=0, out=0, priced=False)]
    d = Router(cfg(Strategy.CHEAPEST), routes).decide(TEXT)
    assert d.chosen is not None and d.chosen.model == "cheap"
    assert d.chosen.cost_micros == round(1000 * 0.1 + 500 * 0.4)
    assert [c.model for c in d.candidates][-1] in ("mystery", "dear")
    assert d.scores_by_model["cheap"] == 1.0 and d.scores_by_model["cheap"] > d.scores_by_model["dear"]


def test_fastest_uses_time_to_first_token_when_streaming_and_latency_otherwise() -> None:
    a, b = route("a"), route("b")
    view = RuntimeView()
    health(view, a, ttft_s=0.2, latency_s=9.0)
    health(view, b, ttft_s=1.5, latency_s=2.0)
    router = Router(cfg(Strategy.FASTEST), [a, b])
    streaming = router.decide(Requirements(prompt_tokens=10, streaming=True), view=view)
    whole = router.decide(Requirements(prompt_tokens=10, streaming=False), view=view)
    assert streaming.chosen is not None and streaming.chosen.model == "a" and streaming.chosen.expected_s == 0.2
    assert whole.chosen is not None and whole.chosen.model == "b" and whole.chosen.expected_s == 2.0


def test_quality_first_follows_the_configured_scores() -> None:
    routes = [route("a"), route("b"), route("c")]
    d = Router(cfg(Strategy.QUALITY, quality={"b": 0.9, "c": 0.7}, default_quality=0.1), routes).decide(TEXT)
    assert [c.model for c in d.candidates] == ["b", "c", "a"]
    assert d.chosen is not None and d.chosen.quality == 0.9


def test_balanced_weights_trade_cost_against_quality() -> None:
    routes = [route("cheap", inp=0.1, out=0.1), route("good", inp=10, out=10)]
    quality = {"cheap": 0.2, "good": 1.0}
    by_cost = Router(RoutingConfig(rules=TenantRules(weights=BalancedWeights(cost=1, latency=0, quality=0)), quality=quality), routes)
    by_quality = Router(RoutingConfig(rules=TenantRules(weights=BalancedWeights(cost=0, latency=0, quality=1)), quality=quality), routes)
    assert by_cost.decide(TEXT).chosen.model == "cheap"  # type: ignore[union-attr]
    assert by_quality.decide(TEXT).chosen.model == "good"  # type: ignore[union-attr]


def test_weighted_round_robin_serves_in_proportion_and_smoothly() -> None:
    routes = [route("a"), route("b"), route("c")]
    router = Router(cfg(Strategy.ROUND_ROBIN, rr_weights={"a": 3.0, "b": 1.0}), routes)
    picks = [router.decide(TEXT).chosen.model for _ in range(500)]  # type: ignore[union-attr]
    counts = Counter(picks)
    assert counts == {"a": 300, "b": 100, "c": 100}
    longest = max(len(run) for run in "".join(picks).replace("b", " ").replace("c", " ").split())
    assert longest <= 3  # smooth: "a" never runs longer than its weight


def test_least_busy_prefers_the_model_with_fewest_requests_in_flight() -> None:
    a, b = route("a"), route("b")
    view = RuntimeView()
    for _ in range(3):
        view.started("p", "a")
    view.started("p", "b")
    router = Router(cfg(Strategy.LEAST_BUSY), [a, b])
    d = router.decide(TEXT, view=view)
    assert d.chosen is not None and d.chosen.model == "b" and d.chosen.in_flight == 1
    view.finished("p", "a"), view.finished("p", "a"), view.finished("p", "a")
    assert router.decide(TEXT, view=view).chosen.model == "a"  # type: ignore[union-attr]


def test_pinned_model_comes_first_then_its_ordered_fallbacks_then_the_rest() -> None:
    routes = [route(n) for n in ("a", "b", "c", "d")]
    config = cfg(Strategy.CHEAPEST, fallbacks={"c": ("d", "a")})
    d = Router(config, routes).decide(TEXT, model="c")
    assert d.strategy is Strategy.PINNED and d.resolved == "model"
    assert [c.model for c in d.candidates] == ["c", "d", "a", "b"]


def test_unhealthy_pinned_model_falls_back_and_says_why() -> None:
    routes = [route(n) for n in ("a", "b", "c")]
    view = RuntimeView()
    health(view, routes[2], HealthState.UNHEALTHY)
    d = Router(cfg(fallbacks={"c": ("b",)}), routes).decide(TEXT, model="c", view=view)
    assert d.chosen is not None and d.chosen.model == "b"
    assert d.rejected == {"c": "unhealthy"}


def test_fallback_only_pinning_rejects_the_unlisted() -> None:
    routes = [route(n) for n in ("a", "b", "c")]
    d = Router(cfg(fallbacks={"c": ("b",)}, pinned_fallback_only=True), routes).decide(TEXT, model="c")
    assert [c.model for c in d.candidates] == ["c", "b"]
    assert d.rejected == {"a": "not 'c' or its fallbacks"}


def test_aliases_and_groups_resolve_from_config() -> None:
    routes = [
        route("mini", inp=0.1, out=0.4, tags=("eu",)),
        route("large", inp=5, out=15),
        route("thinker", inp=2, out=8, reasoning=True),
    ]
    config = RoutingConfig(
        aliases={"default-chat": "large"},
        groups={
            "fast": Group(models=("mini", "large"), strategy=Strategy.CHEAPEST),
            "smart": Group(models=("mini", "large", "thinker"), reasoning=True),
            "euro": Group(tags=frozenset({"eu"})),
        },
    )
    router = Router(config, routes)
    alias = router.decide(TEXT, model="default-chat")
    assert alias.resolved == "alias" and alias.chosen.model == "large"  # type: ignore[union-attr]
    fast = router.decide(TEXT, model="fast")
    assert fast.resolved == "group" and fast.strategy is Strategy.CHEAPEST and fast.chosen.model == "mini"  # type: ignore[union-attr]
    assert fast.rejected == {"thinker": "not in group 'fast'"}
    smart = router.decide(TEXT, model="smart")
    assert smart.chosen.model == "thinker"  # type: ignore[union-attr]
    assert smart.rejected == {"mini": "not a reasoning model", "large": "not a reasoning model"}
    assert router.decide(TEXT, model="euro").chosen.model == "mini"  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        router.decide(TEXT, model="nonesuch")


def test_provider_hint_restricts_to_that_provider_and_accepts_its_upstream_name() -> None:
    routes = [
        ModelRoute(name="gpt-4o", provider="openai", upstream_model="gpt-4o"),
        ModelRoute(name="azure-gpt-4o", provider="azure", upstream_model="gpt-4o"),
    ]
    router = Router(cfg(), routes)
    d = router.decide(TEXT, model="gpt-4o", provider="azure")
    assert d.chosen is not None and d.chosen.model == "azure-gpt-4o" and d.chosen.provider == "azure"
    assert d.rejected == {"gpt-4o": "not at the requested provider 'azure'"}


def test_tenant_rules_allow_deny_and_required_tags() -> None:
    routes = [
        route("eu-model", provider="mistral", tags=("eu", "no-training")),
        route("us-model", provider="openai"),
        route("tagged-by-config", provider="openai"),
        route("banned", provider="banned-co", tags=("eu", "no-training")),
    ]
    rules = TenantRules(deny_providers=frozenset({"banned-co"}), require_tags=frozenset({"eu", "no-training"}))
    config = RoutingConfig(tenants={"acme": rules}, model_tags={"tagged-by-config": frozenset({"eu", "no-training"})})
    d = Router(config, routes).decide(TEXT, tenant_id="acme")
    assert set(d.eligible) == {"eu-model", "tagged-by-config"}
    assert d.rejected == {
        "banned": "provider denied by the tenant's rules",
        "us-model": "lacks required tags: eu, no-training",
    }
    # another tenant has the default rules: everything is eligible
    assert len(Router(config, routes).decide(TEXT, tenant_id="other").eligible) == 4


def test_every_capability_is_a_filter_with_its_reason() -> None:
    routes = [
        route("plain", context_window=8192),
        route("vision", context_window=128_000, input_modalities=(Modality.TEXT, Modality.IMAGE)),
        route("tooly", context_window=128_000, tools=True),
        route("embedder", context_window=8192, embeddings=True),
        route("off", enabled=False),
        route("gone", available=False),
    ]
    request = ChatRequest(
        messages=(ChatMessage(role=Role.USER, content="look", parts=(ImagePart(url="https://x/y.png"),)),),
        tools=(Tool(name="f"),),
        max_tokens=1000,
    )
    reqs = requirements_for(request, prompt_tokens=100)
    d = Router(cfg(), routes).decide(reqs)
    assert d.chosen is None
    assert d.rejected == {
        "plain": "no image input",
        "vision": "no tool calling",
        "tooly": "no image input",
        "embedder": "not a chat model",
        "off": "disabled by the operator",
        "gone": "no longer listed by its provider",
    }
    with pytest.raises(NoRoute) as caught:
        d.require()
    assert isinstance(caught.value, InvalidRequest) and "no image input (2)" in caught.value.message


def test_context_window_and_max_output_limits() -> None:
    routes = [route("small", context_window=8192, max_output_tokens=8000), route("big", context_window=200_000)]
    router = Router(cfg(), routes)
    long_prompt = router.decide(Requirements(prompt_tokens=8000))
    assert long_prompt.rejected == {"small": "context window too small for the prompt and its output"}
    big_output = router.decide(Requirements(prompt_tokens=10, max_output_tokens=5000))
    assert big_output.rejected == {"big": "max output below the requested max_tokens"}
    # the cache is per window bracket: a short prompt afterwards is not rejected
    assert router.decide(Requirements(prompt_tokens=100)).rejected == {}


def test_all_capable_models_down_is_unavailable_not_invalid() -> None:
    a, b = route("a", provider="x"), route("b", provider="y")
    view = RuntimeView()
    health(view, a, HealthState.UNHEALTHY)
    view.set_breakers({breaker_key("y"): BreakerState.OPEN})
    d = Router(cfg(), [a, b]).decide(TEXT, view=view)
    assert d.chosen is None and d.capable == 2
    assert d.rejected == {"a": "unhealthy", "b": "circuit breaker open (provider)"}
    with pytest.raises(NoHealthyRoute) as caught:
        d.require()
    assert isinstance(caught.value, Unavailable)


def test_degraded_and_half_open_candidates_rank_after_healthy_ones() -> None:
    routes = [route("best", inp=0.1), route("mid", inp=1), route("worst", inp=5)]
    view = RuntimeView()
    health(view, routes[0], HealthState.DEGRADED)
    view.set_breakers({breaker_key("p", "mid"): BreakerState.HALF_OPEN})
    d = Router(cfg(Strategy.CHEAPEST), routes).decide(TEXT, view=view)
    assert [c.model for c in d.candidates] == ["worst", "best", "mid"]
    assert d.candidates[1].health == "degraded" and d.candidates[2].breaker == "half_open"
    view.set_breakers({breaker_key("p", "worst"): BreakerState.OPEN})
    d = Router(cfg(Strategy.CHEAPEST), routes).decide(TEXT, view=view)
    assert d.rejected == {"worst": "circuit breaker open (model)"}


def test_load_recompiles_only_when_the_routes_change() -> None:
    routes = [route("a"), route("b")]
    router = Router(cfg(), routes)
    assert router.load(routes) is False
    assert router.load([*routes, route("c")]) is True
    assert set(router.decide(TEXT).eligible) == {"a", "b", "c"}


def test_decision_serialises_and_becomes_an_event_that_round_trips() -> None:
    routes = [route("a", inp=0.1), route("b", inp=9), route("c", enabled=False)]
    d = Router(cfg(Strategy.CHEAPEST), routes).decide(TEXT, tenant_id="acme")
    data = msgspec.json.encode(d)
    assert msgspec.json.decode(data, type=RouteDecision) == d
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    event = route_decided(d, event_id="e1", tenant_id="acme", occurred_at=at, request_id="r1")
    assert (event.model, event.fallbacks, event.eligible, event.rejected) == ("a", "b", 2, 1)
    assert msgspec.json.decode(event.explanation_json.encode(), type=RouteDecision) == d
    message = encode_event(event)
    assert message.subject == "lumina.acme.route.decided"
    assert decode_event(message.payload) == event


def test_requirements_follow_the_request() -> None:
    msg = (ChatMessage(role=Role.USER, content="hi"),)
    plain = requirements_for(ChatRequest(messages=msg), 12, streaming=True)
    assert (plain.tools, plain.images, plain.json_schema, plain.json_mode, plain.streaming) == (False,) * 4 + (True,)
    assert plain.context_tokens == 12 + plain.output_reserve
    tools = (Tool(name="a"), Tool(name="b"))
    with_tools = requirements_for(ChatRequest(messages=msg, tools=tools, parallel_tool_calls=True, max_tokens=50), 12)
    assert with_tools.tools and with_tools.parallel_tools and with_tools.context_tokens == 62
    assert not requirements_for(ChatRequest(messages=msg, tools=tools), 1).parallel_tools
    off = ChatRequest(messages=msg, tools=tools, tool_choice=ToolChoice(mode="none"))  # type: ignore[arg-type]
    assert not requirements_for(off, 1).tools
    schema = ResponseFormat(kind=ResponseFormatKind.JSON_SCHEMA, schema={"type": "object"})
    assert requirements_for(ChatRequest(messages=msg, response_format=schema), 1).json_schema
    json_mode = ResponseFormat(kind=ResponseFormatKind.JSON_OBJECT)
    assert requirements_for(ChatRequest(messages=msg, response_format=json_mode), 1).json_mode
    assert requirements_for(ChatRequest(messages=msg), 1, reasoning=True).reasoning
