"""Domain events. Aggregates record them; the unit of work writes them to the outbox."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

import msgspec

__all__ = [
    "AuthenticationAudited",
    "BudgetThresholdCrossed",
    "ChatCompleted",
    "ChatTurnCompleted",
    "DomainEvent",
    "MemoryIngested",
    "ModelHealthChanged",
    "RegistryChanged",
    "RouteDecided",
]


class _Event(msgspec.Struct, frozen=True):
    """What every event shares: its subject, ``lumina.<tenant>.<aggregate>.<event_type>``."""

    aggregate: ClassVar[str]
    event_type: ClassVar[str]

    @property
    def subject(self) -> str:
        return f"lumina.{self.tenant_id}.{self.aggregate}.{self.event_type}"  # type: ignore[attr-defined]


class ChatCompleted(_Event, frozen=True, tag="chat_completed"):
    event_id: str
    tenant_id: str
    occurred_at: datetime
    request_id: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_micros: int
    latency_ms: int
    finish_reason: str
    conversation_id: str = ""
    user_id: str = ""
    api_key_id: str = ""  # empty unless the principal called with an API key

    aggregate = "chat"
    event_type = "completed"

    @property
    def aggregate_id(self) -> str:
        return self.request_id


class RegistryChanged(_Event, frozen=True, tag="registry_changed"):
    """A provider or model was added, changed, disabled or removed (``entity``: "provider" or
    "model"; ``action``: "upserted", "removed", "key_set", "discovered"). Replicas reload on it."""

    event_id: str
    tenant_id: str
    occurred_at: datetime
    entity: str
    name: str
    action: str

    aggregate = "registry"
    event_type = "changed"

    @property
    def aggregate_id(self) -> str:
        return f"{self.entity}:{self.name}"


class ModelHealthChanged(_Event, frozen=True, tag="model_health_changed"):
    """A model's health state changed as seen by one replica (``replica``)."""

    event_id: str
    tenant_id: str
    occurred_at: datetime
    provider: str
    model: str
    previous: str
    current: str
    error_rate: float
    latency_ms: int
    ttft_ms: int
    replica: str = ""

    aggregate = "health"
    event_type = "changed"

    @property
    def aggregate_id(self) -> str:
        return f"{self.provider}/{self.model}"


class AuthenticationAudited(_Event, frozen=True, tag="authentication_audited"):
    """One authentication outcome, for the audit trail (ASVS V6.3, V16). ``method``: "password",
    "totp", "recovery_code", "passkey", "api_key", "session", "password_reset", "oidc";
    ``outcome``: "succeeded", "failed", "locked_out", "enrolled", "revoked", "requested";
    ``reason`` is the server-side cause of a failure (never shown to the caller, never a secret);
    ``user_id`` is empty when no account matched."""

    event_id: str
    tenant_id: str
    occurred_at: datetime
    method: str
    outcome: str
    user_id: str = ""
    reason: str = ""
    client_address: str = ""

    aggregate = "auth"
    event_type = "audited"

    @property
    def aggregate_id(self) -> str:
        return self.user_id or "-"


class BudgetThresholdCrossed(_Event, frozen=True, tag="budget_threshold_crossed"):
    """A budget's settled spend reached ``threshold_percent`` of its limit in the period
    ``period_key`` (published once per budget, period and threshold). ``enforcement``: "hard" or
    "soft"; ``scope``: "tenant", "team", "user" or "api_key"."""

    event_id: str
    tenant_id: str
    occurred_at: datetime
    budget_id: str
    budget_name: str
    scope: str
    scope_id: str
    period_key: str
    threshold_percent: int
    limit_micros: int
    spent_micros: int
    enforcement: str
    provider: str = ""
    model: str = ""

    aggregate = "budget"
    event_type = "threshold_crossed"

    @property
    def aggregate_id(self) -> str:
        return self.budget_id


class ChatTurnCompleted(_Event, frozen=True, tag="chat_turn_completed"):
    """One exchange of a conversation finished: what the user said and what the assistant
    answered. The worker remembers it (memory ingest, then consolidation). Published only when
    memory is on for the request and the tenant; carries conversation text, so it stays inside the
    platform's own stream."""

    event_id: str
    tenant_id: str
    occurred_at: datetime
    request_id: str
    user_id: str
    conversation_id: str
    user_text: str
    assistant_text: str
    model: str = ""

    aggregate = "chat"
    event_type = "turn_completed"

    @property
    def aggregate_id(self) -> str:
        return self.request_id


class MemoryIngested(_Event, frozen=True, tag="memory_ingested"):
    """Memories were stored for a user outside the chat path (the MemoryService); the worker
    consolidates that user's memories."""

    event_id: str
    tenant_id: str
    occurred_at: datetime
    user_id: str
    conversation_id: str
    memory_count: int

    aggregate = "memory"
    event_type = "ingested"

    @property
    def aggregate_id(self) -> str:
        return self.user_id


class RouteDecided(_Event, frozen=True, tag="route_decided"):
    """The routing policy chose a model for a request (for the console's activity view): the
    choice, its fallbacks (comma-separated route names), how many candidates were eligible and
    rejected, the model cost-aware step-down replaced (else empty), and the whole explanation
    (``domain.routing.RouteDecision``) as JSON."""

    event_id: str
    tenant_id: str
    occurred_at: datetime
    request_id: str
    requested: str
    strategy: str
    provider: str
    model: str
    fallbacks: str = ""
    eligible: int = 0
    rejected: int = 0
    stepped_down_from: str = ""
    explanation_json: str = ""

    aggregate = "route"
    event_type = "decided"

    @property
    def aggregate_id(self) -> str:
        return self.request_id


DomainEvent = ChatCompleted | RegistryChanged | ModelHealthChanged | AuthenticationAudited | BudgetThresholdCrossed | ChatTurnCompleted | MemoryIngested | RouteDecided
