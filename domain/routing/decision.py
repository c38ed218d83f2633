"""A routing decision, explained: the chosen candidate and its ordered fallbacks (with the numbers
that ranked them), every other eligible candidate's score, every rejected candidate with its
reason, the requirements, and whether cost-aware step-down changed the choice. A msgspec Struct:
the edge can return it in response metadata as it is, and ``route_decided`` makes the event."""

from __future__ import annotations

from datetime import datetime

import msgspec

from domain.errors import FieldViolation, InvalidRequest, Unavailable
from domain.events import RouteDecided
from domain.routing.config import Strategy
from domain.routing.requirements import Requirements

__all__ = ["Candidate", "NoHealthyRoute", "NoRoute", "RouteDecision", "StepDown", "route_decided"]


class NoRoute(InvalidRequest):
    """No model this tenant may use can serve the request (capabilities, rules, group)."""

    def __init__(self, requested: str, reasons: dict[str, str]) -> None:
        self.requested = requested
        counts: dict[str, int] = {}
        for reason in reasons.values():
            counts[reason] = counts.get(reason, 0) + 1
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        detail = "; ".join(f"{reason} ({n})" for reason, n in top) or "no models are configured"
        super().__init__([FieldViolation("model", f"no model can serve this request: {detail}")])


class NoHealthyRoute(Unavailable):
    """Capable models exist, but every one is unhealthy or behind an open circuit breaker."""

    def __init__(self, requested: str) -> None:
        self.requested = requested
        super().__init__(f"every model able to serve {requested or 'this request'} is unavailable right now")


class Candidate(msgspec.Struct, frozen=True, gc=False):
    """One ranked candidate. ``score`` is the strategy's, in [0, 1], higher better.
    ``cost_micros``: estimated cost of this request on it; ``expected_s``: the time to first token
    (streaming) or latency it is expected to take; ``health``/``breaker``: states at decision time;
    ``hedge_after_s``: its p95 time to first token when known."""

    model: str
    provider: str
    upstream_model: str
    score: float
    cost_micros: int
    quality: float
    expected_s: float
    in_flight: int = 0
    health: str = "healthy"
    breaker: str = "closed"
    hedge_after_s: float | None = None


class StepDown(msgspec.Struct, frozen=True):
    """Cost-aware routing replaced ``replaced`` by the cheaper ``chosen`` because the budget
    headroom was below the tenant's threshold; ``saved_micros`` is the estimated saving."""

    headroom: float
    threshold: float
    replaced: str
    chosen: str
    saved_micros: int


class RouteDecision(msgspec.Struct, frozen=True):
    """``requested``: the model, alias or group as asked ('' for the default); ``resolved``: how it
    was read ("default", "model", "alias", "group"). ``eligible``: every eligible model (name order)
    and ``scores`` their scores, position by position (``scores_by_model`` pairs them up);
    ``rejected``: every other registry model and why. Together with ``chosen`` and ``fallbacks``
    (a prefix of the eligible ones, best first), they account for every model in the registry.
    ``skipped``: candidates passed over when their turn came, and why (e.g. the routed model's
    rate limit was exhausted); ``passed_over`` adds one."""

    tenant_id: str
    requested: str
    resolved: str
    strategy: Strategy
    requirements: Requirements
    chosen: Candidate | None
    fallbacks: tuple[Candidate, ...]
    eligible: tuple[str, ...]
    scores: tuple[float, ...]
    rejected: dict[str, str]
    step_down: StepDown | None = None
    capable: int = 0  # candidates that passed every static filter (before health and breakers)
    skipped: dict[str, str] = msgspec.field(default_factory=dict)

    def passed_over(self, model: str, reason: str) -> RouteDecision:
        """This decision with candidate ``model`` skipped at call time for ``reason``."""
        return msgspec.structs.replace(self, skipped={**self.skipped, model: reason})

    @property
    def scores_by_model(self) -> dict[str, float]:
        return dict(zip(self.eligible, self.scores, strict=True))

    @property
    def candidates(self) -> tuple[Candidate, ...]:
        """The attempt order: the choice, then its fallbacks."""
        return self.fallbacks if self.chosen is None else (self.chosen, *self.fallbacks)

    def require(self) -> Candidate:
        """The choice; ``NoRoute`` (invalid request) when nothing can serve the request at all,
        ``NoHealthyRoute`` (unavailable) when capable models exist but none is usable now."""
        if self.chosen is not None:
            return self.chosen
        if self.capable:
            raise NoHealthyRoute(self.requested)
        raise NoRoute(self.requested, self.rejected)


_DECISION_JSON = msgspec.json.Encoder()


def route_decided(
    decision: RouteDecision, *, event_id: str, tenant_id: str, occurred_at: datetime, request_id: str
) -> RouteDecided:
    """The ``RouteDecided`` event for the console: headline fields, and the whole decision as JSON."""
    chosen = decision.chosen
    step = decision.step_down
    return RouteDecided(
        event_id=event_id,
        tenant_id=tenant_id,
        occurred_at=occurred_at,
        request_id=request_id,
        requested=decision.requested,
        strategy=decision.strategy.value,
        provider=chosen.provider if chosen else "",
        model=chosen.model if chosen else "",
        fallbacks=",".join(c.model for c in decision.fallbacks),
        eligible=len(decision.eligible),
        rejected=len(decision.rejected),
        stepped_down_from=step.replaced if step else "",
        explanation_json=_DECISION_JSON.encode(decision).decode(),
    )
