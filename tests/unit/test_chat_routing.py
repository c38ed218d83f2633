"""The request path of ``StreamChat`` against in-memory fakes: retries (backoff, Retry-After),
fallback order, never a fallback once content was sent, timeouts, hedging, circuit breakers,
cost-aware step-down with real budget use cases over an in-memory ledger, rate limits, hooks, and
one settlement carrying the usage row with every event."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import msgspec
import pytest

from application.budgets import (
    BudgetDraft,
    BudgetGuard,
    EnforceRateLimits,
    ManageBudgets,
    ManageRateLimits,
    RateLimitDraft,
)
from application.catalog import RegistryCatalog
from application.chat import CompleteChat, StreamChat
from application.chat_hooks import CompletedTurn, PreparedChat
from application.routing import Routing, RoutingSettings
from domain.budgets import BudgetScope, Period, RateLimitScope
from domain.chat import (
    ChatMessage,
    ChatRequest,
    Chunk,
    ErrorChunk,
    Finish,
    FinishReason,
    Role,
    TextDelta,
    Usage,
    UsageChunk,
)
from domain.cost import Price
from domain.errors import (
    BudgetExceeded,
    RateLimited,
    RateLimitExceeded,
    Unavailable,
    UpstreamInvalidRequest,
    UpstreamUnavailable,
)
from domain.events import ChatCompleted, ChatTurnCompleted, DomainEvent, RouteDecided
from domain.health import HealthState, ModelHealth
from domain.identity import Principal
from domain.registry import ModelRoute, ProviderKind, ProviderSpec
from domain.routing import (
    BreakerPolicy,
    HedgingPolicy,
    RetryPolicy,
    StepDownPolicy,
    Strategy,
    TenantRules,
    Timeouts,
)
from domain.usage import UsageRecord
from tests.unit.auth_fakes import principal
from tests.unit.budgets.fakes import FakeRateLimiter, admin, make_world
from tests.unit.chat_fakes import FixedClock, SequentialIds
from tests.unit.fakes import FakeUnitOfWorkFactory

T1 = principal("acme")
HI = (ChatMessage(Role.USER, "hello"),)


def answer(*words: str, usage: Usage | None = None) -> list[object]:
    return [*(TextDelta(w) for w in words), UsageChunk(usage or Usage(input_tokens=100, output_tokens=10)), Finish(FinishReason.STOP)]


class Pause(msgspec.Struct, frozen=True):
    seconds: float


class Scripted:
    """A provider whose successive calls per upstream model follow ``scripts`` in turn (the last
    one repeats): chunks are yielded, exceptions raised, ``Pause``s slept. Records every call and
    which streams were closed."""

    def __init__(self, name: str, scripts: dict[str, list[list[object]]], log: list[str]) -> None:
        self.name = name
        self.scripts = scripts
        self.calls: list[str] = []
        self.closed: list[str] = []
        self.log = log  # every provider's calls, in order

    async def stream(self, upstream_model: str, request: ChatRequest) -> AsyncIterator[Chunk]:
        n = sum(1 for c in self.calls if c == upstream_model)
        self.calls.append(upstream_model)
        self.log.append(upstream_model)
        runs = self.scripts[upstream_model]
        try:
            for item in runs[min(n, len(runs) - 1)]:
                if isinstance(item, Exception):
                    raise item
                if isinstance(item, Pause):
                    await asyncio.sleep(item.seconds)
                    continue
                yield item  # type: ignore[misc]
        finally:
            self.closed.append(upstream_model)

    async def aclose(self) -> None:
        pass


class Whole(Scripted):
    """A ``Scripted`` provider that can also answer whole (``complete``); ``ways`` records how
    each call was made."""

    def __init__(self, name: str, scripts: dict[str, list[list[object]]], log: list[str]) -> None:
        super().__init__(name, scripts, log)
        self.ways: list[str] = []

    async def stream(self, upstream_model: str, request: ChatRequest) -> AsyncIterator[Chunk]:
        self.ways.append("stream")
        async for chunk in super().stream(upstream_model, request):
            yield chunk

    async def complete(self, upstream_model: str, request: ChatRequest) -> AsyncIterator[Chunk]:
        self.ways.append("whole")
        async for chunk in super().stream(upstream_model, request):
            yield chunk


class Providers:
    def __init__(self, *clients: Scripted) -> None:
        self.clients = {c.name: c for c in clients}
        self.log = clients[0].log if clients else []

    def get(self, name: str) -> Scripted:
        return self.clients[name]


class Settled:
    """``Settlements`` recording each call: one usage row and all of its events."""

    def __init__(self) -> None:
        self.calls: list[tuple[UsageRecord, tuple[DomainEvent, ...]]] = []

    async def settle(self, record: UsageRecord, *events: DomainEvent) -> None:
        self.calls.append((record, events))


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class Rng:
    def random(self) -> float:
        return 0.5


def three_routes() -> list[ModelRoute]:
    """Three models at three providers: "a" dear, "b" middle, "c" cheap. Made per test: once any
    test started the SQLAlchemy mappers, only instances made after that are usable."""
    return [
        ModelRoute("a", "pa", "up-a", Price(10, 40), is_default=True),
        ModelRoute("b", "pb", "up-b", Price(2, 8)),
        ModelRoute("c", "pc", "up-c", Price(0.1, 0.4)),
    ]
FAST_RETRY = RetryPolicy(max_attempts=2, base_delay_s=0.2, max_delay_s=1.0, max_retry_after_s=1.0)


class Rig:
    def __init__(self, chat: StreamChat, providers: Providers, settled: Settled, sleeps: Sleeps) -> None:
        self.chat = chat
        self.providers = providers
        self.settled = settled
        self.sleeps = sleeps

    def calls(self) -> list[str]:
        return self.providers.log

    async def collect(self, request: ChatRequest, who: Principal = T1) -> list[Chunk]:
        return [c async for c in await self.chat(who, request)]


async def rig(
    scripts: dict[str, list[list[object]]],
    *,
    routes: Sequence[ModelRoute] | None = None,
    clock: FixedClock | None = None,
    whole: bool = False,
    **settings: object,
) -> Rig:
    routes = routes if routes is not None else three_routes()
    uow = FakeUnitOfWorkFactory()
    async with uow() as u:
        for provider in sorted({r.provider for r in routes}):
            await u.providers.upsert_provider(ProviderSpec(provider, ProviderKind.OPENAI_COMPATIBLE, label=provider))
        for route in routes:
            await u.providers.upsert_model(route)
        await u.commit()
    clock = clock or FixedClock(step=0.01)
    settings.setdefault("retry", FAST_RETRY)
    extra = {k: settings.pop(k) for k in ("budgets", "limiter", "hooks", "definitions") if k in settings}
    catalog = RegistryCatalog(uow, clock)
    routing = Routing(catalog, clock, settings=RoutingSettings(**settings))  # type: ignore[arg-type]
    by_provider: dict[str, dict[str, list[list[object]]]] = {}
    for route in routes:
        by_provider.setdefault(route.provider, {})[route.upstream_model] = scripts.get(route.name, [answer("?")])
    log: list[str] = []
    kind = Whole if whole else Scripted
    providers = Providers(*(kind(p, s, log) for p, s in by_provider.items()))
    settled, sleeps = Settled(), Sleeps()
    chat = StreamChat(
        catalog=catalog, providers=providers, uow=uow, clock=clock, ids=SequentialIds(), settlements=settled,
        routing=routing, rng=Rng(), sleep=sleeps, **extra,  # type: ignore[arg-type]
    )
    return Rig(chat, providers, settled, sleeps)


def ask(model: str = "a", **kw: object) -> ChatRequest:
    return ChatRequest(messages=HI, model=model, **kw)  # type: ignore[arg-type]


def texts(chunks: Sequence[Chunk]) -> str:
    return "".join(c.text for c in chunks if isinstance(c, TextDelta))


def finish(chunks: Sequence[Chunk]) -> Finish:
    last = chunks[-1]
    assert isinstance(last, Finish), chunks
    return last


# --- retries and fallbacks ----------------------------------------------------------------------


async def test_a_transient_failure_is_retried_after_a_jittered_backoff() -> None:
    r = await rig({"a": [[UpstreamUnavailable("reset")], answer("ok")]})
    chunks = await r.collect(ask())
    assert texts(chunks) == "ok" and r.calls() == ["up-a", "up-a"]
    assert r.sleeps.delays == [pytest.approx(0.1)]  # full jitter: 0.5 (the fake draw) of the 0.2 s cap
    meta = finish(chunks).metadata
    assert meta is not None and (meta.attempts, meta.fallbacks_tried, meta.model) == (2, (), "a")


async def test_retry_after_is_honoured_and_a_longer_one_goes_to_the_next_candidate() -> None:
    r = await rig(
        {"a": [[RateLimited("slow", retry_after=0.7)], [RateLimited("slower", retry_after=30)]], "b": [answer("from b")]},
        fallbacks={"a": ("b",)},
    )
    chunks = await r.collect(ask())
    # first: waits the provider's 0.7 s (more than the jitter); second: 30 s is too long -> b
    assert r.sleeps.delays == [0.7]
    assert r.calls() == ["up-a", "up-a", "up-b"] and texts(chunks) == "from b"
    meta = finish(chunks).metadata
    assert meta is not None and (meta.model, meta.fallbacks_tried, meta.attempts) == ("b", ("a",), 3)


async def test_fallbacks_are_tried_in_their_configured_order() -> None:
    r = await rig(
        {"a": [[UpstreamUnavailable("down")]], "c": [[RateLimited("busy", retry_after=60)]], "b": [answer("b wins")]},
        fallbacks={"a": ("c", "b")},
    )
    chunks = await r.collect(ask())
    assert texts(chunks) == "b wins"
    assert r.calls() == ["up-a", "up-a", "up-c", "up-b"]  # a retried once, then c, then b
    assert finish(chunks).metadata.fallbacks_tried == ("a", "c")  # type: ignore[union-attr]


async def test_a_named_model_without_fallbacks_fails_with_its_own_error() -> None:
    r = await rig({"a": [[UpstreamUnavailable("down")]]})
    with pytest.raises(UpstreamUnavailable):
        await r.collect(ask())
    assert r.calls() == ["up-a", "up-a"]  # one retry, and no other model: pinned_fallback_only
    assert r.settled.calls == []


async def test_errors_every_model_would_repeat_are_not_retried_or_passed_on() -> None:
    r = await rig({"a": [[UpstreamInvalidRequest("bad schema")]]}, fallbacks={"a": ("b",)})
    with pytest.raises(UpstreamInvalidRequest):
        await r.collect(ask())
    assert r.calls() == ["up-a"]


async def test_an_error_chunk_before_any_content_counts_as_a_failure_before_the_first_byte() -> None:
    r = await rig({"a": [[ErrorChunk(code="overloaded", message="busy", retryable=True)]], "b": [answer("b")]},
                     fallbacks={"a": ("b",)}, retry=RetryPolicy(max_attempts=1))
    chunks = await r.collect(ask())
    assert texts(chunks) == "b" and r.calls() == ["up-a", "up-b"]


async def test_after_content_was_sent_a_failure_is_one_error_chunk_never_a_second_answer() -> None:
    r = await rig({"a": [[TextDelta("Hel"), TextDelta("lo"), UpstreamUnavailable("dropped")]], "b": [answer("other")]},
                     fallbacks={"a": ("b",)})
    chunks = await r.collect(ask())
    assert [type(c) for c in chunks] == [TextDelta, TextDelta, ErrorChunk]
    assert texts(chunks) == "Hello"  # the text once, nothing of b's
    assert chunks[-1].code == "upstream_unavailable" and chunks[-1].retryable  # type: ignore[union-attr]
    assert r.calls() == ["up-a"] and r.settled.calls == []


# --- timeouts and hedging -----------------------------------------------------------------------


async def test_a_stalled_first_token_times_out_and_the_next_candidate_answers() -> None:
    r = await rig({"a": [[Pause(5), TextDelta("late")]], "b": [answer("b")]},
                     fallbacks={"a": ("b",)}, retry=RetryPolicy(max_attempts=1),
                     timeouts=Timeouts(connect_s=0.05, first_token_s=0.05, total_s=5))
    chunks = await r.collect(ask())
    assert texts(chunks) == "b" and r.providers.get("pa").closed == ["up-a"]


async def test_the_total_timeout_ends_a_stream_with_one_error_chunk() -> None:
    r = await rig({"a": [[TextDelta("partial"), Pause(5), TextDelta("never")]]},
                     timeouts=Timeouts(connect_s=0.05, first_token_s=0.1, total_s=0.15))
    for read_ahead in (True, False):
        stream = await r.chat.open(T1, ask(), read_ahead=read_ahead)
        chunks = [c async for c in stream]
        assert texts(chunks) == "partial" and isinstance(chunks[-1], ErrorChunk), read_ahead
        assert chunks[-1].code == "upstream_timeout"  # type: ignore[union-attr]


async def test_a_hedged_request_wins_when_the_first_is_slow_and_the_loser_is_closed() -> None:
    r = await rig({"a": [[Pause(5), *answer("slow a")]], "b": [answer("fast b")]},
                     fallbacks={"a": ("b",)}, hedging=HedgingPolicy(enabled=True, min_delay_s=0.02, default_delay_s=0.02))
    chunks = await r.collect(ask())
    assert texts(chunks) == "fast b"
    meta = finish(chunks).metadata
    assert meta is not None and meta.hedged and meta.model == "b"
    assert r.providers.get("pa").closed == ["up-a"]  # the loser's request was cancelled


# --- whole answers -------------------------------------------------------------------------------


def answers_in(r: Rig, seconds: float, provider: str = "pa", model: str = "up-a", state: HealthState = HealthState.HEALTHY) -> None:
    """What the health monitor would have told routing: the model's latency EWMA and state."""
    r.chat.routing.view.update_health(ModelHealth(provider, model, state=state, latency_s=seconds, samples=5))


async def test_a_client_that_wants_the_whole_answer_gets_it_in_one_call_from_a_model_known_to_answer_fast() -> None:
    r = await rig({"a": [answer("Hel", "lo")]}, whole=True,
                  timeouts=Timeouts(connect_s=0.5, first_token_s=4, total_s=60))
    provider = r.providers.get("pa")
    assert isinstance(provider, Whole)
    complete = CompleteChat(r.chat)
    assert (await complete(T1, ask())).text == "Hello"  # no latency known yet: streamed
    answers_in(r, 0.9)  # a quarter of the first-token timeout is 1 s
    whole = await complete(T1, ask())
    assert whole.text == "Hello" and whole.usage.output_tokens == 10
    assert texts(await r.collect(ask())) == "Hello"  # a streaming client is streamed
    answers_in(r, 1.5)  # usually slower than a quarter of the timeout: streamed
    assert (await complete(T1, ask())).text == "Hello"
    answers_in(r, 0.1, state=HealthState.DEGRADED)  # not healthy: streamed
    assert (await complete(T1, ask())).text == "Hello"
    assert provider.ways == ["stream", "whole", "stream", "stream", "stream"]
    assert len(r.settled.calls) == 5  # settled alike


async def test_a_stalled_whole_answer_is_left_after_the_first_token_timeout_like_a_stream() -> None:
    r = await rig({"a": [[Pause(5), *answer("late")]], "b": [answer("from b")]}, whole=True,
                  fallbacks={"a": ("b",)}, retry=RetryPolicy(max_attempts=1),
                  timeouts=Timeouts(connect_s=0.05, first_token_s=0.2, total_s=5))
    answers_in(r, 0.01)
    answers_in(r, 0.01, provider="pb", model="up-b")
    whole = await CompleteChat(r.chat)(T1, ask())
    assert whole.text == "from b"
    assert whole.finish.metadata is not None and whole.finish.metadata.fallbacks_tried == ("a",)
    assert r.providers.get("pa").ways == ["whole"] and r.providers.get("pa").closed == ["up-a"]  # type: ignore[attr-defined]
    assert r.chat.routing.view.ttft_p95("pb", "up-b") is None  # a whole answer is no first-token sample


async def test_with_a_hedge_armed_a_whole_answer_is_streamed_so_first_tokens_can_race() -> None:
    r = await rig({"a": [[Pause(5), *answer("slow a")]], "b": [answer("fast b")]}, whole=True,
                  fallbacks={"a": ("b",)}, hedging=HedgingPolicy(enabled=True, min_delay_s=0.02, default_delay_s=0.02))
    answers_in(r, 0.01)
    whole = await CompleteChat(r.chat)(T1, ask())
    assert whole.text == "fast b" and whole.finish.metadata is not None and whole.finish.metadata.hedged
    ways = [w for name in ("pa", "pb") for w in r.providers.get(name).ways]  # type: ignore[attr-defined]
    assert ways == ["stream", "stream"]


# --- circuit breakers ---------------------------------------------------------------------------


async def test_a_breaker_opens_after_consecutive_failures_and_routing_skips_the_model() -> None:
    r = await rig({"a": [[UpstreamUnavailable("down")]], "b": [answer("b")]}, fallbacks={"a": ("b",)},
                     retry=RetryPolicy(max_attempts=1), breaker=BreakerPolicy(consecutive_failures=2, cooldown_s=60))
    for _ in range(2):
        assert texts(await r.collect(ask())) == "b"
    assert r.calls() == ["up-a", "up-b", "up-a", "up-b"]
    r.chat.routing.breakers.tick()
    assert "pa" in r.chat.routing.view.open_providers
    chunks = await r.collect(ask())  # a is not even called now
    assert texts(chunks) == "b" and r.calls()[-1:] == ["up-b"] and r.calls().count("up-a") == 2
    meta = finish(chunks).metadata
    assert meta is not None and meta.fallbacks_tried == () and meta.attempts == 1


# --- budgets, step-down and rate limits ----------------------------------------------------------


async def budget_rig(limit: int, scripts: dict[str, list[list[object]]] | None = None, **settings: object):  # type: ignore[no-untyped-def]
    world = make_world()
    guard = BudgetGuard(world.ctx)
    await ManageBudgets(world.ctx).create(
        admin(), BudgetDraft(name="acme monthly", scope=BudgetScope.TENANT, scope_id="", limit_micros=limit, period=Period.daily())
    )
    r = await rig(scripts or {}, budgets=guard, definitions=world.ctx.directory, **settings)
    return r, world, guard


async def test_budget_reservation_is_settled_to_the_actual_cost() -> None:
    r, _, guard = await budget_rig(1_000_000, {"a": [answer("x", usage=Usage(input_tokens=1000, output_tokens=100))]})
    chunks = await r.collect(ask(max_tokens=200))
    meta = finish(chunks).metadata
    assert meta is not None and meta.estimate_micros > 0
    (status,) = await guard.statuses(_subject())
    assert status.spent_micros == 1000 * 10 + 100 * 40 == meta.cost_micros and status.held_micros == 0


def _subject():  # type: ignore[no-untyped-def]
    from domain.budgets import BudgetSubject

    return BudgetSubject("acme", user_id="user-1", api_key_id="key-1")


async def test_a_hard_budget_refuses_before_the_provider_is_called_and_failures_release() -> None:
    r, _, guard = await budget_rig(5_000, {"a": [[UpstreamInvalidRequest("bad")]]})
    with pytest.raises(UpstreamInvalidRequest):
        await r.collect(ask(max_tokens=50))
    (status,) = await guard.statuses(_subject())
    assert status.held_micros == 0 and status.spent_micros == 0  # released
    with pytest.raises(BudgetExceeded) as refused:
        await r.collect(ask(max_tokens=4000))  # 4000 output tokens at $40/M: far past $0.005
    assert refused.value.budget_name == "acme monthly"
    assert r.calls() == ["up-a"]  # the refused request never reached a provider


async def test_low_headroom_steps_down_to_a_cheaper_model_and_says_so() -> None:
    rules = TenantRules(strategy=Strategy.PINNED, step_down=StepDownPolicy(allowed=True, below_headroom=0.5, override_pinned=True))
    r, _, guard = await budget_rig(100_000, {"a": [answer("dear")], "c": [answer("cheap")]}, rules=rules,
                                       fallbacks={"a": ("b", "c")})
    first = await r.collect(ask(max_tokens=100))
    assert texts(first) == "dear"  # plenty of headroom: the model asked for
    # spend most of the budget elsewhere
    hold = await guard.reserve(_subject(), 70_000)
    await guard.settle(hold, 70_000)
    chunks = await r.collect(ask(max_tokens=100))
    assert texts(chunks) == "cheap"
    meta = finish(chunks).metadata
    assert meta is not None and (meta.model, meta.stepped_down_from) == ("c", "a")
    decided = [e for e in r.settled.calls[-1][1] if isinstance(e, RouteDecided)]
    assert decided and decided[0].stepped_down_from == "a"


async def test_rate_limits_are_acquired_before_and_adjusted_after() -> None:
    world = make_world()
    limits = EnforceRateLimits(world.ctx, FakeRateLimiter(world.clock))
    await ManageRateLimits(world.ctx).put(
        admin(), RateLimitDraft(scope=RateLimitScope.TENANT, scope_id="", requests_per_minute=2, tokens_per_minute=100_000)
    )
    r = await rig({"a": [answer("x")]}, limiter=limits, definitions=world.ctx.directory)
    stream = await r.chat(T1, ask())
    assert stream.rate_limit is not None and stream.rate_limit.requests is not None
    assert stream.rate_limit.requests.limit == 2 and stream.rate_limit.requests.remaining == 1
    assert texts([c async for c in stream]) == "x"
    await r.chat.open(T1, ask())  # the second of the minute
    with pytest.raises(RateLimitExceeded) as refused:
        await r.chat(T1, ask())
    assert refused.value.retry_after and refused.value.retry_after > 0
    assert r.calls() == ["up-a", "up-a"]


# --- hooks and the one settlement ----------------------------------------------------------------


class NoteHook:
    def __init__(self) -> None:
        self.prepared: list[ChatRequest] = []
        self.turns: list[CompletedTurn] = []

    async def prepare(self, principal: Principal, request: ChatRequest) -> PreparedChat:
        self.prepared.append(request)
        changed = msgspec.structs.replace(request, messages=(ChatMessage(Role.SYSTEM, "remember: tea"), *request.messages))
        return PreparedChat(changed, {"memories": "1"})

    def completed(self, principal: Principal, turn: CompletedTurn) -> Sequence[DomainEvent]:
        self.turns.append(turn)
        return [ChatTurnCompleted(
            event_id=f"turn-{turn.request_id}", tenant_id=principal.tenant_id, occurred_at=turn.occurred_at,
            request_id=turn.request_id, user_id=principal.user_id, conversation_id="c1",
            user_text="hello", assistant_text=turn.answer_text,
        )]


async def test_hooks_run_around_the_call_and_every_event_is_settled_in_one_call() -> None:
    hook = NoteHook()
    r = await rig({"a": [answer("Hi ", "there")]}, hooks=[hook])
    chunks = await r.collect(ask())
    sent = r.providers.get("pa")
    assert hook.prepared[0].messages == HI  # the caller's request went to the hook
    assert hook.turns[0].answer_text == "Hi there" and hook.turns[0].request.messages == HI
    meta = finish(chunks).metadata
    assert meta is not None and meta.notes == {"memories": "1"}
    [(record, events)] = r.settled.calls
    assert [type(e) for e in events] == [ChatCompleted, RouteDecided, ChatTurnCompleted]
    assert {getattr(e, "request_id", None) for e in events} == {record.request_id}
    assert sent.calls == ["up-a"]


async def test_complete_chat_carries_the_rate_limit_status_and_the_route() -> None:
    r = await rig({"a": [answer("whole")]})
    result = await CompleteChat(r.chat)(T1, ask())
    assert result.text == "whole" and result.rate_limit is None
    assert result.finish.metadata is not None and result.finish.metadata.strategy == "pinned"


async def test_settlement_failure_still_ends_with_unavailable() -> None:
    r = await rig({"a": [answer("x")]})

    async def broken(record: UsageRecord, *events: DomainEvent) -> None:
        raise Unavailable("database down")

    r.settled.settle = broken  # type: ignore[method-assign]
    chunks = await r.collect(ask())
    assert isinstance(chunks[-1], ErrorChunk) and chunks[-1].code == "unavailable"


async def test_a_team_budget_applies_to_its_members_only() -> None:
    import msgspec

    world = make_world()
    guard = BudgetGuard(world.ctx)
    await ManageBudgets(world.ctx).create(
        admin(), BudgetDraft(name="research daily", scope=BudgetScope.TEAM, scope_id="team-r", limit_micros=5_000,
                             period=Period.daily())
    )
    r = await rig({"a": [answer("x")]}, budgets=guard, definitions=world.ctx.directory)
    member = msgspec.structs.replace(T1, team_ids=("team-r",))
    with pytest.raises(BudgetExceeded) as refused:
        await r.collect(ask(max_tokens=4000), who=member)  # 4000 output tokens at $40/M: past $0.005
    assert refused.value.budget_name == "research daily"
    assert texts(await r.collect(ask(max_tokens=4000))) == "x"  # not in the team: the budget does not apply


# --- rate limits of the routed model; hedging and budget holds -------------------------------------


async def _model_limits(*models: str, rpm: int = 1):  # type: ignore[no-untyped-def]
    world = make_world()
    limits = EnforceRateLimits(world.ctx, FakeRateLimiter(world.clock))
    for model in models:
        await ManageRateLimits(world.ctx).put(
            admin(), RateLimitDraft(scope=RateLimitScope.MODEL, scope_id=model, requests_per_minute=rpm)
        )
    return world, limits


async def test_a_model_rate_limit_counts_the_model_routed_to_not_the_one_requested() -> None:
    world, limits = await _model_limits("b")
    r = await rig({"a": [[UpstreamUnavailable("down")]], "b": [answer("from b")]}, fallbacks={"a": ("b",)},
                  retry=RetryPolicy(max_attempts=1), limiter=limits, definitions=world.ctx.directory)
    stream = await r.chat(T1, ask("a"))  # asked for a, served by b: b's limit is charged
    assert texts([c async for c in stream]) == "from b"
    assert stream.rate_limit is not None and stream.rate_limit.requests is not None
    assert stream.rate_limit.requests.remaining == 0
    with pytest.raises(RateLimitExceeded) as refused:  # a fails again, b's minute is used up
        await r.collect(ask("a"))
    assert "model b" in refused.value.message and refused.value.retry_after
    assert r.calls() == ["up-a", "up-b", "up-a"]


async def test_an_exhausted_model_limit_skips_that_candidate_and_the_decision_says_why() -> None:
    world, limits = await _model_limits("a")
    r = await rig({"a": [answer("from a")], "b": [answer("from b")]}, fallbacks={"a": ("b",)},
                  limiter=limits, definitions=world.ctx.directory)
    assert texts(await r.collect(ask("a"))) == "from a"
    chunks = await r.collect(ask("a"))  # a's one request a minute is spent: b serves
    assert texts(chunks) == "from b" and r.calls() == ["up-a", "up-b"]
    decided = [e for e in r.settled.calls[-1][1] if isinstance(e, RouteDecided)]
    explained = msgspec.json.decode(decided[0].explanation_json)
    assert list(explained["skipped"]) == ["a"] and "rate limit of model a" in explained["skipped"]["a"]


async def test_with_every_candidate_rate_limited_the_caller_gets_a_429_naming_the_limit() -> None:
    world, limits = await _model_limits("a")
    r = await rig({"a": [answer("from a")]}, limiter=limits, definitions=world.ctx.directory)
    await r.collect(ask("a"))
    with pytest.raises(RateLimitExceeded) as refused:
        await r.collect(ask("a"))
    assert refused.value.limit_id and "model a: 1 requests per minute" in refused.value.message
    assert r.calls() == ["up-a"]


async def test_a_hedge_that_wins_holds_and_settles_the_budget_at_its_own_model() -> None:
    world = make_world()
    guard = BudgetGuard(world.ctx)
    manage = ManageBudgets(world.ctx)
    for name, model in (("tenant", ""), ("on a", "a"), ("on b", "b")):
        await manage.create(admin(), BudgetDraft(
            name=name, scope=BudgetScope.TENANT, scope_id="", limit_micros=10_000_000, period=Period.daily(), model=model))
    r = await rig({"a": [[Pause(5), *answer("slow a")]], "b": [answer("fast b", usage=Usage(input_tokens=1000, output_tokens=100))]},
                  fallbacks={"a": ("b",)}, budgets=guard, definitions=world.ctx.directory,
                  hedging=HedgingPolicy(enabled=True, min_delay_s=0.02, default_delay_s=0.02))
    chunks = await r.collect(ask(max_tokens=100))
    meta = finish(chunks).metadata
    assert meta is not None and meta.hedged and meta.model == "b"
    await r.chat.drain()
    by_name = {s.budget.name: s for s in await guard.statuses(_subject())}
    b_statuses = {s.budget.name: s for s in await guard.statuses(msgspec.structs.replace(_subject(), model="b"))}
    assert meta.cost_micros == 1000 * 2 + 100 * 8  # b's price
    assert by_name["tenant"].spent_micros == meta.cost_micros and by_name["tenant"].held_micros == 0
    assert b_statuses["on b"].spent_micros == meta.cost_micros and b_statuses["on b"].held_micros == 0
    a_statuses = {s.budget.name: s for s in await guard.statuses(msgspec.structs.replace(_subject(), model="a"))}
    assert a_statuses["on a"].spent_micros == 0 and a_statuses["on a"].held_micros == 0  # released
    assert meta.estimate_micros < 2_000  # b's estimate (about 800), not a's (about 4,000)


async def test_no_hedge_when_the_backup_model_cannot_be_reserved() -> None:
    world = make_world()
    guard = BudgetGuard(world.ctx)
    await ManageBudgets(world.ctx).create(admin(), BudgetDraft(
        name="b is nearly spent", scope=BudgetScope.TENANT, scope_id="", limit_micros=10, period=Period.daily(), model="b"))
    r = await rig({"a": [[Pause(0.2), *answer("slow a")]], "b": [answer("fast b")]},
                  fallbacks={"a": ("b",)}, budgets=guard, definitions=world.ctx.directory,
                  hedging=HedgingPolicy(enabled=True, min_delay_s=0.02, default_delay_s=0.02))
    chunks = await r.collect(ask(max_tokens=100))
    meta = finish(chunks).metadata
    assert texts(chunks) == "slow a" and meta is not None and not meta.hedged
    assert r.calls() == ["up-a"]  # the backup's reservation was refused: no second request
    (b_budget,) = await guard.statuses(msgspec.structs.replace(_subject(), model="b"))
    assert b_budget.held_micros == 0 and b_budget.spent_micros == 0
