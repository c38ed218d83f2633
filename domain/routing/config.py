"""Routing configuration: strategies, tenant rules, aliases and groups, per-model quality and
round-robin weights, fallback lists and the cost-aware step-down policy. Plain msgspec Structs,
so the composition root can load them from TOML/JSON with ``msgspec.convert`` (see
docs/routing.md for the file's shape). Every struct validates itself on construction."""

from __future__ import annotations

import enum

import msgspec

from domain.errors import FieldViolation, InvalidRequest

__all__ = [
    "BalancedWeights",
    "Group",
    "RoutingConfig",
    "StepDownPolicy",
    "Strategy",
    "TenantRules",
]


class Strategy(enum.StrEnum):
    CHEAPEST = "cheapest"
    FASTEST = "fastest"
    QUALITY = "quality"
    BALANCED = "balanced"
    ROUND_ROBIN = "round_robin"
    LEAST_BUSY = "least_busy"
    PINNED = "pinned"


class BalancedWeights(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Weights of the balanced score (normalised to sum 1): each term is in [0, 1], 1 best."""

    cost: float = 0.4
    latency: float = 0.3
    quality: float = 0.3

    def __post_init__(self) -> None:
        if min(self.cost, self.latency, self.quality) < 0 or self.cost + self.latency + self.quality <= 0:
            raise InvalidRequest.single("weights", "non-negative, and not all zero")


class StepDownPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Cost-aware routing: when the budget headroom (the fraction of the tightest applicable budget
    still free) is below ``below_headroom``, prefer the cheapest capable candidate that is cheaper
    than the strategy's choice and whose quality is at least ``min_quality``. Off unless
    ``allowed``; ``override_pinned`` also lets it replace a model the request named."""

    allowed: bool = False
    below_headroom: float = 0.2
    min_quality: float = 0.0
    override_pinned: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.below_headroom <= 1.0:
            raise InvalidRequest.single("step_down.below_headroom", "must be between 0 and 1")
        if not 0.0 <= self.min_quality <= 1.0:
            raise InvalidRequest.single("step_down.min_quality", "must be between 0 and 1")


class TenantRules(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One tenant's routing rules. Empty ``allow_*`` means "all"; ``deny_*`` wins over ``allow_*``.
    ``require_tags``: a candidate needs every one (its catalogue tags plus the config's
    ``model_tags``). ``strategy`` applies when the request names no model, alias or group."""

    strategy: Strategy = Strategy.BALANCED
    allow_providers: frozenset[str] = frozenset()
    deny_providers: frozenset[str] = frozenset()
    allow_models: frozenset[str] = frozenset()
    deny_models: frozenset[str] = frozenset()
    require_tags: frozenset[str] = frozenset()
    weights: BalancedWeights = BalancedWeights()
    step_down: StepDownPolicy = StepDownPolicy()


class Group(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A named set of models a request may ask for (``fast``, ``smart``): the ``models`` listed,
    else every model carrying all ``tags``; ranked by ``strategy`` (the tenant's when None).
    ``reasoning``: the group serves only reasoning models."""

    models: tuple[str, ...] = ()
    tags: frozenset[str] = frozenset()
    strategy: Strategy | None = None
    reasoning: bool = False

    def __post_init__(self) -> None:
        if not self.models and not self.tags:
            raise InvalidRequest.single("groups", "a group lists models or tags")


class RoutingConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything routing reads besides the registry and the live statistics.

    - ``rules`` / ``tenants``: the default tenant rules and per-tenant replacements (whole).
    - ``aliases``: a name clients may use -> a route name (a pinned request for that route).
    - ``groups``: group name -> ``Group``.
    - ``fallbacks``: route name -> ordered fallback route names, for pinned requests (candidates
      not listed follow in the tenant strategy's order unless ``pinned_fallback_only``).
    - ``quality``: route name -> quality in [0, 1] (an operator's or an evaluation's judgement);
      ``default_quality`` for the others.
    - ``rr_weights``: route name -> weight for weighted round-robin (default 1).
    - ``model_tags``: route name -> extra tags, for models whose catalogue row has none.
    - ``default_ttft_s`` / ``default_latency_s``: assumed for a model with no observations yet.
    - ``expected_output_tokens``: output assumed for cost ranking when the request sets no
      ``max_tokens`` (the budget reservation uses its own, more cautious, estimate).
    - ``max_fallbacks``: how many fallbacks a decision carries after its choice."""

    rules: TenantRules = TenantRules()
    tenants: dict[str, TenantRules] = {}
    aliases: dict[str, str] = {}
    groups: dict[str, Group] = {}
    fallbacks: dict[str, tuple[str, ...]] = {}
    pinned_fallback_only: bool = False
    quality: dict[str, float] = {}
    default_quality: float = 0.5
    rr_weights: dict[str, float] = {}
    model_tags: dict[str, frozenset[str]] = {}
    default_ttft_s: float = 1.0
    default_latency_s: float = 5.0
    expected_output_tokens: int = 512
    max_fallbacks: int = 3

    def __post_init__(self) -> None:
        problems: list[FieldViolation] = []
        for name, q in self.quality.items():
            if not 0.0 <= q <= 1.0:
                problems.append(FieldViolation(f"quality.{name}", "must be between 0 and 1"))
        if not 0.0 <= self.default_quality <= 1.0:
            problems.append(FieldViolation("default_quality", "must be between 0 and 1"))
        for name, w in self.rr_weights.items():
            if w <= 0:
                problems.append(FieldViolation(f"rr_weights.{name}", "must be positive"))
        clash = set(self.aliases) & set(self.groups)
        if clash:
            problems.append(FieldViolation("aliases", f"names also used by groups: {sorted(clash)}"))
        if self.default_ttft_s <= 0 or self.default_latency_s <= 0:
            problems.append(FieldViolation("default_ttft_s", "default latencies must be positive"))
        if self.expected_output_tokens < 1:
            problems.append(FieldViolation("expected_output_tokens", "must be positive"))
        if self.max_fallbacks < 0:
            problems.append(FieldViolation("max_fallbacks", "cannot be negative"))
        if problems:
            raise InvalidRequest(problems)

    def rules_for(self, tenant_id: str) -> TenantRules:
        return self.tenants.get(tenant_id, self.rules)
