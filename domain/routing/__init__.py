"""Routing and resilience: which model serves a request, in what order the others are tried,
and how failures are retried, broken and hedged. Pure: stdlib and msgspec only; token counting
and the shared breaker state come through ports (``domain.routing.ports``).

Typical use from the chat use case::

    reqs = requirements_for(request, counter.count_prompt(request, request.model), streaming=True)
    decision = router.decide(reqs, tenant_id=tenant, model=request.model, provider=request.provider,
                             view=view, headroom=headroom)
    for candidate in decision.candidates: ...   # decision.require() raises when there is none
"""

from domain.routing.breaker import (
    Breaker,
    BreakerPolicy,
    BreakerState,
    breaker_key,
    counts_as_failure,
)
from domain.routing.config import (
    BalancedWeights,
    Group,
    RoutingConfig,
    StepDownPolicy,
    Strategy,
    TenantRules,
)
from domain.routing.decision import (
    Candidate,
    NoHealthyRoute,
    NoRoute,
    RouteDecision,
    StepDown,
    route_decided,
)
from domain.routing.estimate import CostEstimate, estimate_cost, price_at
from domain.routing.ports import BreakerStore, RandomSource, TokenCounter
from domain.routing.requirements import Requirements, requirements_for
from domain.routing.resilience import (
    HedgingPolicy,
    LatencyEstimate,
    RetryPolicy,
    Timeouts,
    is_retryable,
    should_fall_back,
)
from domain.routing.router import Router
from domain.routing.table import RouteTable
from domain.routing.view import RuntimeView

__all__ = [
    "BalancedWeights",
    "Breaker",
    "BreakerPolicy",
    "BreakerState",
    "BreakerStore",
    "Candidate",
    "CostEstimate",
    "Group",
    "HedgingPolicy",
    "LatencyEstimate",
    "NoHealthyRoute",
    "NoRoute",
    "RandomSource",
    "Requirements",
    "RetryPolicy",
    "RouteDecision",
    "RouteTable",
    "Router",
    "RoutingConfig",
    "RuntimeView",
    "StepDown",
    "StepDownPolicy",
    "Strategy",
    "TenantRules",
    "Timeouts",
    "TokenCounter",
    "breaker_key",
    "counts_as_failure",
    "estimate_cost",
    "is_retryable",
    "price_at",
    "requirements_for",
    "route_decided",
    "should_fall_back",
]
