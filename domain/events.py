"""Domain events. Aggregates record them; the unit of work writes them to the outbox."""

from __future__ import annotations

from datetime import datetime

import msgspec

__all__ = ["AuthenticationAudited", "ChatCompleted", "DomainEvent", "ModelHealthChanged", "RegistryChanged"]


class ChatCompleted(msgspec.Struct, frozen=True, tag="chat_completed"):
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

    aggregate = "chat"
    event_type = "completed"

    @property
    def aggregate_id(self) -> str:
        return self.request_id

    @property
    def subject(self) -> str:
        return f"lumina.{self.tenant_id}.{self.aggregate}.{self.event_type}"


class RegistryChanged(msgspec.Struct, frozen=True, tag="registry_changed"):
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

    @property
    def subject(self) -> str:
        return f"lumina.{self.tenant_id}.{self.aggregate}.{self.event_type}"


class ModelHealthChanged(msgspec.Struct, frozen=True, tag="model_health_changed"):
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

    @property
    def subject(self) -> str:
        return f"lumina.{self.tenant_id}.{self.aggregate}.{self.event_type}"


class AuthenticationAudited(msgspec.Struct, frozen=True, tag="authentication_audited"):
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

    @property
    def subject(self) -> str:
        return f"lumina.{self.tenant_id}.{self.aggregate}.{self.event_type}"


DomainEvent = ChatCompleted | RegistryChanged | ModelHealthChanged | AuthenticationAudited
