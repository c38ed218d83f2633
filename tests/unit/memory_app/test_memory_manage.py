"""MemoryService rules that need no store: the caller's scope, filters, cursors."""

from __future__ import annotations

import pytest

from application.memory.manage import (
    decode_cursor,
    encode_cursor,
    memory_filter,
    scope_for,
)
from domain.errors import InvalidRequest
from domain.identity import Forbidden, Principal, PrincipalKind, Role
from domain.memory.tiers import Tier


def principal(role: Role, tenant: str = "acme", user: str = "alice") -> Principal:
    return Principal(tenant, user, role, PrincipalKind.USER, "s1")


def test_scope_is_the_callers_own_tenant_and_user() -> None:
    assert scope_for(principal(Role.MEMBER)) == ("acme", "alice")
    assert scope_for(principal(Role.VIEWER), "alice") == ("acme", "alice")


def test_only_admins_act_for_another_user_and_never_in_another_tenant() -> None:
    with pytest.raises(Forbidden):
        scope_for(principal(Role.MEMBER), "bob")
    assert scope_for(principal(Role.ADMIN), "bob") == ("acme", "bob")
    assert scope_for(principal(Role.OWNER, tenant="other"), "bob") == ("other", "bob")
    with pytest.raises(InvalidRequest):
        scope_for(principal(Role.ADMIN), "x" * 300)


def test_filters() -> None:
    assert memory_filter() is None
    f = memory_filter(topics=["topic:1"], entities=["Carla  Smith"], tiers=[Tier.SEMANTIC], start=1.0, end=2.0)
    assert f is not None and f.entities == frozenset({"carla smith"}) and f.tiers == frozenset({Tier.SEMANTIC})
    with pytest.raises(InvalidRequest) as bad:
        memory_filter(start=2.0, end=1.0, topics=[""])
    assert {v.field for v in bad.value.violations} == {"filter.end", "filter.topic_ids"}


def test_cursors_round_trip_and_garbage_is_invalid() -> None:
    assert decode_cursor(encode_cursor(1750000000.25, "01abc")) == (1750000000.25, "01abc")
    for garbage in ("not-a-cursor", "W10", encode_cursor(1.0, "x")[:-3] + "!!!"):
        with pytest.raises(InvalidRequest):
            decode_cursor(garbage)
