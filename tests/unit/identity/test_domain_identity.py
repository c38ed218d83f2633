"""Pure identity rules: password policy, backoff, sessions, API key format, roles, tenant ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.errors import InvalidRequest
from domain.events import AuthenticationAudited
from domain.identity import (
    BackoffPolicy,
    Forbidden,
    InvalidCredentials,
    PasswordPolicy,
    Principal,
    PrincipalKind,
    Role,
    Session,
    SessionPolicy,
    StrengthReport,
    WeakPassword,
    format_api_key,
    normalize_email,
    parse_api_key,
    validate_tenant_id,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def test_password_length_bounds() -> None:
    policy = PasswordPolicy()
    with pytest.raises(WeakPassword):
        policy.check_length("a" * 7)
    policy.check_length("a" * 8)
    policy.check_length("a" * 128)  # at least 64 allowed (ASVS 6.2.9)
    with pytest.raises(WeakPassword):
        policy.check_length("a" * 129)
    assert issubclass(WeakPassword, InvalidRequest)


def test_password_strength_rejects_common_and_weak() -> None:
    policy = PasswordPolicy()
    with pytest.raises(WeakPassword, match="common"):
        policy.check_strength(StrengthReport(score=4, common=True))
    with pytest.raises(WeakPassword, match="guess"):
        policy.check_strength(StrengthReport(score=2, common=False))
    policy.check_strength(StrengthReport(score=3, common=False))


def test_backoff_grows_exponentially_and_is_capped() -> None:
    policy = BackoffPolicy(free_attempts=3, base_seconds=1, cap_seconds=60)
    assert [policy.delay(n) for n in range(0, 4)] == [0, 0, 0, 0]
    assert [policy.delay(n) for n in range(4, 9)] == [1, 2, 4, 8, 16]
    assert policy.delay(10_000) == 60  # never permanent


def test_session_timeouts_and_step_up() -> None:
    policy = SessionPolicy(idle_timeout=timedelta(minutes=30), absolute_timeout=timedelta(hours=12),
                           step_up_window=timedelta(minutes=10))
    s = Session(id="s", token_hash="h", tenant_id="t", user_id="u", created_at=T0, last_seen_at=T0,
                assurance_level=2, second_factor_at=T0)
    assert s.expired(T0 + timedelta(minutes=29), policy) == ""
    assert s.expired(T0 + timedelta(minutes=31), policy) == "idle"
    late = Session(id="s", token_hash="h", tenant_id="t", user_id="u", created_at=T0,
                   last_seen_at=T0 + timedelta(hours=12), assurance_level=1)
    assert late.expired(T0 + timedelta(hours=12, minutes=1), policy) == "absolute"
    assert s.recent_second_factor(T0 + timedelta(minutes=9), policy)
    assert not s.recent_second_factor(T0 + timedelta(minutes=11), policy)
    assert not late.recent_second_factor(T0, policy)
    pending = Session(id="p", token_hash="h", tenant_id="t", user_id="u", created_at=T0, last_seen_at=T0,
                      assurance_level=1, pending_second_factor=True)
    assert pending.expired(T0 + SessionPolicy().pending_timeout, policy) == "pending"


def test_api_key_format_round_trip_and_rejections() -> None:
    raw = format_api_key("abc123", "s" * 43)
    assert raw.startswith("lum_abc123_")
    assert parse_api_key(raw) == ("abc123", "s" * 43)
    assert parse_api_key("lum_abc123_a_b-c" + "x" * 20)[1] == "a_b-c" + "x" * 20  # '_' in the secret is fine
    for bad in ["", "sk-abc", "lum_abc", "lum__" + "x" * 30, "xyz_abc_" + "x" * 30, "lum_ab-c_" + "x" * 30, "lum_abc_short"]:
        with pytest.raises(InvalidCredentials):
            parse_api_key(bad)


def test_roles_are_ordered_and_enforced() -> None:
    assert Role.OWNER.includes(Role.ADMIN) and Role.ADMIN.includes(Role.MEMBER) and not Role.MEMBER.includes(Role.ADMIN)
    p = Principal(tenant_id="t", user_id="u", role=Role.MEMBER, kind=PrincipalKind.USER, credential_id="s")
    p.require(Role.VIEWER, "read")
    with pytest.raises(Forbidden):
        p.require(Role.ADMIN, "admin thing")


def test_tenant_ids_are_subject_safe_and_emails_normalised() -> None:
    assert validate_tenant_id("acme-1") == "acme-1"
    for bad in ["", "Acme", "a.b", "a*", "a b", "-x", "x" * 64]:
        with pytest.raises(InvalidRequest):
            validate_tenant_id(bad)
    assert normalize_email("  Ann@Example.COM ") == "ann@example.com"
    with pytest.raises(InvalidRequest):
        normalize_email("not-an-email")


def test_audit_event_subject() -> None:
    e = AuthenticationAudited(event_id="e", tenant_id="acme", occurred_at=T0, method="password", outcome="failed")
    assert e.subject == "lumina.acme.auth.audited" and e.aggregate_id == "-"
