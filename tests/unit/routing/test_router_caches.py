"""The router's compiled structures agree with the plain definitions they stand for: the table's
bit helpers with a bit-by-bit loop, its masks with the capability checks of each model, and a
decision taken through warm caches (tenant-level filters, per-filter rejection lists, per-shape
candidates, view masks) with the same decision from a fresh router, down to the order of the
rejected models."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.errors import NotFound
from domain.registry import Modality, ModelRoute
from domain.routing import Requirements, Router, RoutingConfig, RuntimeView, Strategy
from domain.routing.table import RouteTable, bits_of
from tests.unit.routing.test_router_properties import Case, cases, routes


def naive_bits(mask: int) -> list[int]:
    return [i for i in range(mask.bit_length()) if mask >> i & 1]


masks = st.one_of(
    st.integers(0, 2**300),
    st.sets(st.integers(0, 299), max_size=20).map(lambda bits: sum(1 << i for i in bits)),  # sparse
)


@settings(max_examples=300, deadline=None)
@given(masks)
def test_bits_of_lists_the_set_bits_in_order(mask: int) -> None:
    assert bits_of(mask) == naive_bits(mask)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(routes(), st.data())
def test_table_helpers_and_masks_agree_with_each_model(rs: list[ModelRoute], data: st.DataObject) -> None:
    table = RouteTable(rs, RoutingConfig())
    n = len(table)
    mask = data.draw(st.integers(0, table.all))
    members = naive_bits(mask)
    assert table.names_of(mask) == [table.names[i] for i in members]
    assert list(table.selectors(mask)) == [1 if mask >> i & 1 else 0 for i in range(n)]
    for i, r in enumerate(table.routes):
        caps = r.capabilities
        bit = 1 << i
        assert bool(table.enabled & bit) == r.enabled
        assert bool(table.available & bit) == r.available
        assert bool(table.chat & bit) == (not caps.embeddings and Modality.TEXT in caps.output_modalities)
        assert bool(table.images & bit) == (Modality.IMAGE in caps.input_modalities)
        assert bool(table.tools & bit) == caps.tools
        assert bool(table.parallel_tools & bit) == caps.parallel_tool_calls
        assert bool(table.json_schema & bit) == caps.json_schema
        assert bool(table.json_mode & bit) == (caps.json_schema or caps.tools)
        assert bool(table.streaming & bit) == caps.streaming
        assert bool(table.reasoning & bit) == caps.reasoning
    tokens = data.draw(st.integers(0, 2_000_000))
    _, window = table.at_least_window(tokens)
    _, output = table.at_least_output(tokens)
    assert naive_bits(window) == [i for i, r in enumerate(table.routes) if r.capabilities.context_window >= tokens]
    assert naive_bits(output) == [i for i, r in enumerate(table.routes) if r.capabilities.max_output_tokens >= tokens]


def decide(router: Router, case: Case, requirements: Requirements | None = None, view: RuntimeView | None = None):  # type: ignore[no-untyped-def]
    return router.decide(
        requirements or case.requirements, tenant_id=case.tenant, model=case.model, provider=case.provider,
        view=view or case.view, headroom=case.headroom,
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.lists(st.integers(0, 2**20), min_size=1, max_size=4))
def test_a_decision_through_warm_caches_equals_a_fresh_routers(case: Case, others: list[int]) -> None:
    try:
        fresh = decide(Router(case.config, case.routes), case)
    except NotFound:
        return
    if fresh.strategy is Strategy.ROUND_ROBIN:
        return  # its turn moves with every decision
    warm = Router(case.config, case.routes)
    req = case.requirements
    for x in others:  # other shapes first: the tenant-level and per-filter caches fill differently
        other = Requirements(
            prompt_tokens=x, max_output_tokens=None if x % 3 else 1 + x % 5000, tools=bool(x & 1),
            images=bool(x & 2), json_schema=bool(x & 4), json_mode=bool(x & 8), reasoning=bool(x & 16),
            streaming=bool(x & 32), parallel_tools=bool(x & 64),
        )
        decide(warm, case, other)
    decide(warm, case, view=RuntimeView())  # another view's masks in between
    again = decide(warm, case)
    cached = decide(warm, case)
    for d in (again, cached):
        assert d == fresh
        assert list(d.rejected.items()) == list(fresh.rejected.items())
    assert req == case.requirements
