"""Chat use cases: the request path of a chat completion, end to end.

Per request, ``StreamChat`` runs:

1. rate limits — ``acquire`` one request and the estimated tokens (prompt + ``max_tokens``) on
   every applicable meter, or refuse with ``RateLimitExceeded`` (429);
2. ``ChatHook.prepare`` of every hook (e.g. memories injected), in order;
3. the request's requirements (tools, images, JSON, context tokens: the ``TokenCounter``);
4. the routing decision (``Routing.decide``): capable, allowed, healthy candidates ranked by the
   strategy, the named model with its fallbacks, or a cheaper one when the budget headroom is low;
5. per candidate, in order: its circuit breaker admits the call; a budget reservation holds its
   estimate (``BudgetExceeded``, 429, when a hard budget cannot afford it); the provider is called
   with a first-token timeout (and, optionally, a hedged second request after the model's p95
   time to first token); a retryable failure is retried with backoff and full jitter (honouring
   Retry-After), then the next candidate is tried — all of it before the first byte reaches the
   client. Once content was sent, a failure ends the stream with one clean ``ErrorChunk``: never a
   second answer, never duplicated text;
6. the stream is relayed through a bounded buffer (backpressure) under the total timeout; breakers
   learn each outcome;
7. settlement: the budget reservation is settled to the actual cost (released when nothing was
   produced), and the usage row, ``ChatCompleted``, ``RouteDecided`` and the hooks' events are made
   durable in one ``Settlements`` call (one transaction, group-committed) before ``Finish`` is
   yielded; the token meters are corrected to the actual count.

Everything beyond the provider call is optional: without a limiter, budgets, hooks or routing
settings the path costs no network round trip besides the provider call and the settlement.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from application.budgets.holds import (
    HedgeHolds,
    RequestHolds,
    budget_subject,
    release_reservation,
)
from application.budgets.reservations import Reservation
from application.chat_hooks import ChatHook, CompletedTurn
from application.ports import ProviderClients, Settlements, UnitOfWorkFactory
from application.routing import RouteCatalog, Routing
from application.settlement import UnitOfWorkSettlements
from application.streaming import DEFAULT_BUFFER, buffered, whole_answer
from domain.budgets import BudgetSubject, RateLimitStatus, task_label
from domain.chat import (
    ChatRequest,
    Chunk,
    ErrorChunk,
    Finish,
    FinishReason,
    ReasoningDelta,
    ResponseMetadata,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageChunk,
)
from domain.cost import Price
from domain.errors import (
    DomainError,
    ProviderError,
    RateLimitExceeded,
    Unavailable,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from domain.events import ChatCompleted, DomainEvent
from domain.identity import Principal, PrincipalKind
from domain.ports import Clock, IdGenerator, ProviderClient
from domain.registry import ModelRoute
from domain.routing import (
    Candidate,
    NoHealthyRoute,
    RandomSource,
    RouteDecision,
    requirements_for,
    route_decided,
    should_fall_back,
)
from domain.usage import FINISH_CANCELLED, FINISH_INTERRUPTED, UsageRecord

__all__ = ["ChatAnswer", "ChatBudgets", "ChatRateLimits", "ChatStream", "CompleteChat", "StreamChat"]

log = logging.getLogger("lumina.chat")


class ChatBudgets(Protocol):
    """The budget side of the chat path (``application.budgets.BudgetGuard``)."""

    async def estimate(
        self, price: Price, input_tokens: int, *, model: str, task: str = "chat", max_tokens: int | None = None,
        model_max_output: int | None = None,
    ) -> int: ...

    async def reserve(self, subject: BudgetSubject, amount_micros: int, *, task: str = "") -> Reservation: ...

    async def settle(
        self, reservation: Reservation, actual_micros: int, *, usage: Usage | None = None, request_id: str = ""
    ) -> object: ...

    async def release(self, reservation: Reservation) -> bool: ...

    async def headroom(self, subject: BudgetSubject) -> float: ...


class BudgetDefinitions(Protocol):
    """Each tenant's budget and rate-limit definitions, cached (``application.budgets.BudgetDirectory``):
    a tenant with none skips the limiter and the reservation altogether."""

    async def budgets(self, tenant_id: str) -> Sequence[object]: ...

    async def rate_limits(self, tenant_id: str) -> Sequence[object]: ...


class ChatRateLimits(Protocol):
    """The rate limits of the chat path (``application.budgets.EnforceRateLimits``)."""

    async def acquire(self, subject: BudgetSubject, *, tokens: int = 0, models: bool | None = None) -> RateLimitStatus:
        """``models``: False the caller's limits only, True only ``subject.model``'s, None all."""
        ...

    async def adjust(self, subject: BudgetSubject, *, tokens: int, models: bool | None = None) -> None: ...


class ChatStream:
    """The chunks of one answer (an async iterator; ``aclose`` closes the upstream request), plus
    what an edge needs before the first chunk goes out: the route that serves it and the rate-limit
    status (for ``x-lumina-route`` and ``x-ratelimit-*``)."""

    __slots__ = ("_chunks", "_unread", "model", "provider", "rate_limit", "request_id")

    def __init__(
        self, chunks: AsyncIterator[Chunk], *, request_id: str, provider: str, model: str,
        rate_limit: RateLimitStatus | None, unread: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._chunks = chunks
        self.request_id = request_id
        self.provider = provider
        self.model = model
        self.rate_limit = rate_limit
        self._unread = unread  # closes the upstream when the stream is closed before its first read

    def __aiter__(self) -> ChatStream:
        return self

    def __anext__(self) -> Awaitable[Chunk]:
        return self._chunks.__anext__()

    async def aclose(self) -> None:
        await self._chunks.aclose()  # type: ignore[attr-defined]
        unread, self._unread = self._unread, None
        if unread is not None:
            await unread()


@dataclass(slots=True)
class _Call:
    """One request after the provider answered: what the relay and the settlement need."""

    principal: Principal
    request: ChatRequest  # as the caller sent it
    sent: ChatRequest  # after the hooks
    decision: RouteDecision
    route: ModelRoute
    label: str
    request_id: str
    started: float  # Clock.monotonic
    deadline: float  # loop time by which the whole answer must be in
    prompt_tokens: int
    tried: tuple[str, ...]
    attempts: int
    hedged: bool
    notes: dict[str, str]
    estimate: int
    reservation: Reservation | None
    limit_subject: BudgetSubject | None
    limit_tokens: int
    begun: bool = False  # the relay ran (a relay closed before its first read never does)


class _Deadline:
    """The total timeout of a relay read in the consumer's own task (no read-ahead): one timer per
    request, which cancels that task only while it waits for the upstream (``reading``)."""

    __slots__ = ("_handle", "_task", "expired", "reading")

    def __init__(self, when: float, task: asyncio.Task[Any]) -> None:
        self.expired = False
        self.reading = False
        self._task = task
        self._handle = asyncio.get_running_loop().call_at(when, self._fire)

    def _fire(self) -> None:
        self.expired = True
        if self.reading:
            self._task.cancel()

    def caused(self, before: int) -> bool:
        """Whether the cancellation being handled is this deadline's (and only its)."""
        return self.expired and self._task.uncancel() <= before

    def cancel(self) -> None:
        self._handle.cancel()


_TOO_LONG = "the answer took longer than the total timeout"


class StreamChat:
    """Stream one chat completion as unified chunks (the request path: see the module docstring).

    Errors before the first chunk (unknown model, nothing can serve it, a Lumina limit or budget,
    every candidate failed) are raised, so the edge answers with a proper status. Usage is settled
    and the events recorded before ``Finish`` is yielded, so a client that saw ``Finish`` can rely
    on the usage row and the outbox events existing; when settling fails, the stream ends with an
    ``unavailable`` ``ErrorChunk`` instead of ``Finish``.

    The provider is read ahead through a bounded buffer of ``buffer`` chunks (backpressure: a slow
    client pauses the upstream read). Closing the returned stream, or cancelling its consumer,
    closes the upstream request. ``request.provider`` limits routing to that provider's models.

    ``routing``: the router, live view and breakers (default: the default ``RoutingSettings`` over
    ``catalog``, breakers in this process). ``budgets`` / ``limiter``: off when None. ``hooks``:
    called around every request; the list may grow after construction (``add_hook``)."""

    def __init__(
        self,
        *,
        catalog: RouteCatalog,
        providers: ProviderClients,
        uow: UnitOfWorkFactory,
        clock: Clock,
        ids: IdGenerator,
        buffer: int = DEFAULT_BUFFER,
        settlements: Settlements | None = None,
        routing: Routing | None = None,
        budgets: ChatBudgets | None = None,
        limiter: ChatRateLimits | None = None,
        definitions: BudgetDefinitions | None = None,
        hooks: Sequence[ChatHook] = (),
        rng: RandomSource | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._buffer = buffer
        self._settlements = settlements or UnitOfWorkSettlements(uow)
        self._catalog = catalog
        self._providers = providers
        self._clock = clock
        self._ids = ids
        self.routing = routing or Routing(catalog, clock)
        self._budgets = budgets
        self._limiter = limiter
        self._definitions = definitions
        self.hooks: list[ChatHook] = list(hooks)
        self._rng: RandomSource = rng or random.Random()  # retry jitter, not a secret
        self._sleep = sleep
        self._tasks: set[asyncio.Task[Any]] = set()

    def add_hook(self, hook: ChatHook) -> None:
        self.hooks.append(hook)

    async def __call__(self, principal: Principal, request: ChatRequest) -> ChatStream:
        return await self.open(principal, request)

    # --- before the first byte ---------------------------------------------------------------

    async def open(self, principal: Principal, request: ChatRequest, *, read_ahead: bool = True) -> ChatStream:
        """``__call__`` with a choice: ``read_ahead=False`` is for a consumer that wants the whole
        answer at once (``CompleteChat``). The provider is read in the consumer's own task, without
        the bounded buffer's reader task and queue (backpressure buys nothing there), and asked for
        the whole answer in one non-streaming call (``whole_answer``) when no hedge is armed (a
        hedge races first tokens, so it streams) and the model, healthy, usually answers whole in
        under a quarter of the first-token timeout (``RuntimeView.answers_well_within``): that
        timeout then bounds the whole answer, so a stalled provider is left as soon as with a
        stream. Such a call teaches the health monitor latency, not time to first token.
        Settlement before ``Finish`` is the same either way."""
        limiter, definitions = self._limiter, self._definitions
        if limiter is not None and definitions is not None and not await definitions.rate_limits(principal.tenant_id):
            limiter = None  # the tenant has no rate limits: nothing to ask Redis
        if limiter is None:
            return await self._open(principal, request, read_ahead, -1, None, 0, None)
        prompt_tokens = self.routing.counter.count_prompt(request)
        tokens = prompt_tokens + (request.max_tokens or self.routing.settings.expected_output_tokens)
        subject = budget_subject(principal)  # the caller's limits; the routed model's are taken per candidate
        status = await limiter.acquire(subject, tokens=tokens, models=False)
        try:
            return await self._open(principal, request, read_ahead, prompt_tokens, subject, tokens, status)
        except BaseException:
            self._soon(limiter.adjust(subject, tokens=-tokens))  # nothing was generated
            raise

    async def _open(
        self,
        principal: Principal,
        request: ChatRequest,
        read_ahead: bool,
        prompt_tokens: int,
        limit_subject: BudgetSubject | None,
        limit_tokens: int,
        rate_limit: RateLimitStatus | None,
    ) -> ChatStream:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        started = self._clock.monotonic()
        routing = self.routing
        settings = routing.settings
        sent, notes = request, {}
        for hook in self.hooks:
            prepared = await hook.prepare(principal, sent)
            sent = prepared.request
            if prepared.notes:
                notes.update(prepared.notes)
        if prompt_tokens < 0 or sent is not request:
            prompt_tokens = routing.counter.count_prompt(sent)
        reqs = requirements_for(sent, prompt_tokens, streaming=read_ahead)
        tenant = principal.tenant_id
        budgets = self._budgets
        if budgets is not None and self._definitions is not None and not await self._definitions.budgets(tenant):
            budgets = None  # the tenant has no budgets: no estimate, no reservation
        headroom = None
        if budgets is not None and routing.rules(tenant).step_down.allowed:
            headroom = await budgets.headroom(budget_subject(principal))
        decision = await routing.decide(reqs, tenant_id=tenant, model=sent.model, provider=sent.provider, headroom=headroom)
        candidates = decision.candidates
        if not candidates:
            decision.require()  # raises: nothing can serve it, or nothing is healthy now
        task = task_label(tools=reqs.tools, json_schema=reqs.json_schema or reqs.json_mode, reasoning=reqs.reasoning)
        retry = settings.retry
        tried: list[str] = []
        attempts = 0
        last_error: BaseException | None = None
        limited: RateLimitExceeded | None = None
        holds = None
        if limit_subject is not None or budgets is not None or settings.hedging.enabled:
            holds = RequestHolds(
                principal, sent, budgets=budgets, limiter=self._limiter if limit_subject is not None else None,
                tokens=limit_tokens, prompt_tokens=prompt_tokens, task=task, soon=self._soon,
            )
        for index, candidate in enumerate(candidates):
            route = routing.route(candidate)
            if not await routing.admit(route):
                continue  # its breaker is half-open and its probe slots are taken
            client = self._providers.get(route.provider)
            status, estimate, reservation, hedge = rate_limit, candidate.cost_micros, None, None
            backup = self._backup(candidates, index, route)
            if holds is not None:
                try:  # the rate limits of the model routed to, when the tenant has any
                    status = await holds.model_limits(route, rate_limit)
                except RateLimitExceeded as exc:
                    limited = exc
                    decision = decision.passed_over(route.name, f"rate limited: {exc.message}")
                    notes[f"skipped:{route.name}"] = decision.skipped[route.name]  # in the response metadata too
                    continue
                try:
                    estimate, reservation = await holds.reserve(route, estimate)
                except BaseException:
                    holds.give_back(route)
                    raise
                if backup is not None:
                    hedge = holds.hedge(estimate, reservation)
            attempt = 0
            while True:
                attempt += 1
                attempts += 1
                try:
                    served, upstream, first, hedged = await self._first_chunk(
                        route, client, sent, candidate, backup, hedge, whole=not read_ahead,
                    )
                except Exception as exc:
                    if hedge is not None:
                        hedge.drop_backup()  # a hedge's holds are taken again by the next attempt
                    if retry.should_retry(exc, attempt, False):
                        await self._sleep(retry.delay(attempt, exc, self._rng))
                        continue
                    if reservation is not None:
                        await self._release(reservation)
                    if holds is not None:
                        holds.give_back(route)
                    if index + 1 < len(candidates) and should_fall_back(exc, False):
                        last_error = exc
                        tried.append(route.name)
                        break
                    raise
                except BaseException:
                    if reservation is not None:
                        self._soon(self._release(reservation))
                    if hedge is not None:
                        hedge.drop_backup()
                    raise
                if hedge is not None:  # a hedged request may have won: keep the winner's holds only
                    estimate, reservation = hedge.keep(route, hedged)
                try:
                    spec = await routing.provider(served.provider)
                except BaseException:
                    routing.view.finished(served.provider, served.upstream_model)
                    await upstream.aclose()  # type: ignore[attr-defined]
                    if reservation is not None:
                        self._soon(self._release(reservation))
                    raise
                call = _Call(
                    principal=principal, request=request, sent=sent, decision=decision, route=served,
                    label=spec.label, request_id=self._ids.new_id(), started=started,
                    deadline=t0 + settings.timeouts.total_s, prompt_tokens=prompt_tokens, tried=tuple(tried),
                    attempts=attempts, hedged=hedged, notes=notes, estimate=estimate, reservation=reservation,
                    limit_subject=None if limit_subject is None else budget_subject(principal, served), limit_tokens=limit_tokens,
                )
                if hedge is not None and hedge.loser is not None:  # the hedge's loser had answered too
                    self._charge_loser(call, hedge)
                return ChatStream(
                    self._relay(call, upstream, first, read_ahead), request_id=call.request_id,
                    provider=served.provider, model=served.name, rate_limit=status,
                    unread=functools.partial(self._unread, call, upstream),
                )
        if limited is not None:
            raise limited  # the candidates left were rate limited: 429 naming the limit, with Retry-After
        if last_error is not None:
            raise last_error
        raise NoHealthyRoute(decision.requested)

    def _charge_loser(self, call: _Call, hedge: HedgeHolds) -> None:
        """A hedged attempt that answered but lost the race: its usage row (``cancelled``) and its
        reservation settled to what it produced (the prompt and its first chunk)."""
        assert hedge.loser is not None
        route, first = hedge.loser
        text = first.text if isinstance(first, (TextDelta, ReasoningDelta)) else ""
        lost = dataclasses.replace(
            call, route=route, request_id=self._ids.new_id(), reservation=hedge.loser_reservation, limit_subject=None,
        )
        self._soon(self._record_cut_off(lost, self._count(lost, [text], []), FINISH_CANCELLED, [text]))

    def _backup(self, candidates: tuple[Candidate, ...], index: int, route: ModelRoute) -> tuple[ModelRoute, Candidate] | None:
        """What a hedged request goes to: the next candidate, else the same model again."""
        if not self.routing.settings.hedging.enabled:
            return None
        if index + 1 < len(candidates):
            nxt = candidates[index + 1]
            return self.routing.route(nxt), nxt
        return route, candidates[index]

    async def _first_chunk(
        self,
        route: ModelRoute,
        client: ProviderClient,
        request: ChatRequest,
        candidate: Candidate,
        backup: tuple[ModelRoute, Candidate] | None,
        hedge: HedgeHolds | None = None,
        whole: bool = False,
    ) -> tuple[ModelRoute, AsyncIterator[Chunk], Chunk | None, bool]:
        """The provider's stream (``whole``: its whole answer, unless hedging) and its first chunk;
        with hedging, a second request starts after the model's p95 time to first token and the
        first to produce a chunk wins (the other is closed). Failures are recorded on the
        breakers here."""
        delay = None if backup is None else self.routing.settings.hedging.delay(candidate.hedge_after_s)
        if delay is None or backup is None:
            try:
                upstream, first = await self._start(route, client, request, whole)
            except Exception as exc:
                await self.routing.failed(route, exc)
                raise
            return route, upstream, first, False
        return await self._race(route, client, backup[0], request, delay, hedge)

    async def _start(
        self, route: ModelRoute, client: ProviderClient, request: ChatRequest, whole: bool = False
    ) -> tuple[AsyncIterator[Chunk], Chunk | None]:
        view = self.routing.view
        loop = asyncio.get_running_loop()
        timeout = self.routing.settings.timeouts.first_token_s
        # the whole answer in one call: only from a model that usually answers completely well
        # within the first-token timeout, which then bounds the whole answer as it bounds a first
        # token (a stall is caught as soon); any other model streams
        whole = whole and view.answers_well_within(route.provider, route.upstream_model, timeout)
        view.started(route.provider, route.upstream_model)
        began = loop.time()
        if whole:
            upstream = whole_answer(client, route.upstream_model, request)
        else:
            upstream = client.stream(route.upstream_model, request)
        task = asyncio.current_task()
        assert task is not None
        before = task.cancelling()
        timer = _Deadline(began + timeout, task)  # cheaper than asyncio.timeout, same semantics here
        timer.reading = True
        try:
            try:
                first = await anext(upstream)
            except StopAsyncIteration:
                first = None
            except asyncio.CancelledError:
                if timer.caused(before):
                    raise UpstreamTimeout(f"{route.name}: no answer within {timeout:g} s") from None
                raise
            finally:
                timer.cancel()
            if isinstance(first, ErrorChunk):  # an error before any content: as if raised
                raise _error_from_chunk(first.code, first.message)
        except BaseException:
            view.finished(route.provider, route.upstream_model)
            await upstream.aclose()  # type: ignore[attr-defined]
            raise
        if not whole:
            view.observe_ttft(route.provider, route.upstream_model, loop.time() - began)
        return upstream, first

    async def _race(
        self, route: ModelRoute, client: ProviderClient, backup: ModelRoute, request: ChatRequest, delay: float,
        hedge: HedgeHolds | None = None,
    ) -> tuple[ModelRoute, AsyncIterator[Chunk], Chunk | None, bool]:
        routing = self.routing
        primary = asyncio.ensure_future(self._start(route, client, request))
        owners: dict[asyncio.Future[Any], ModelRoute] = {primary: route}
        try:
            done, _ = await asyncio.wait((primary,), timeout=delay)
            if not done and (hedge is None or await hedge.take_backup(backup)):
                second = asyncio.ensure_future(self._start(backup, self._providers.get(backup.provider), request))
                owners[second] = backup
            pending: set[asyncio.Future[Any]] = set(owners)
            errors: list[BaseException] = []
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                winners = [t for t in owners if t in done and not t.cancelled() and t.exception() is None]
                for t, owner in owners.items():
                    exc = t.exception() if t in done and not t.cancelled() else None
                    if exc is not None:
                        errors.append(exc)
                        await routing.failed(owner, exc)
                if winners:
                    winner = winners[0]
                    if hedge is not None and len(winners) > 1:  # both answered: the loser is billed too
                        other = winners[1]
                        hedge.loser = (owners[other], other.result()[1])
                    await self._discard({t: r for t, r in owners.items() if t is not winner})
                    upstream, first = winner.result()
                    return owners[winner], upstream, first, winner is not primary
            raise errors[0]
        except BaseException:
            await self._discard(owners)
            raise

    async def _discard(self, attempts: dict[asyncio.Future[Any], ModelRoute]) -> None:
        """Cancel hedged attempts still waiting; close the stream of one that already answered."""
        if not attempts:
            return
        for t in attempts:
            t.cancel()
        await asyncio.wait(attempts)
        for t, route in attempts.items():
            if not t.cancelled() and t.exception() is None:
                await t.result()[0].aclose()
                self.routing.view.finished(route.provider, route.upstream_model)

    async def _unread(self, call: _Call, upstream: AsyncIterator[Chunk]) -> None:
        if not call.begun:
            call.begun = True
            await upstream.aclose()  # type: ignore[attr-defined]
            self.routing.view.finished(call.route.provider, call.route.upstream_model)
            self._abandon(call, False, [], [])

    async def _release(self, reservation: Reservation) -> None:
        assert self._budgets is not None
        await release_reservation(self._budgets, reservation)

    # --- after the first byte ------------------------------------------------------------------

    async def _relay(
        self, call: _Call, upstream: AsyncIterator[Chunk], first: Chunk | None, read_ahead: bool
    ) -> AsyncIterator[Chunk]:
        call.begun = True
        route = call.route
        usage: Usage | None = None
        reason = FinishReason.STOP
        texts: list[str] = []  # the answer's text (for hooks; counted when the provider reports no usage)
        extra: list[str] = []  # reasoning and tool-call arguments (counted likewise)
        outcome: bool | None = None  # True finished, False broke off, None: the client went away
        # the reader task starts on the first read below (the total timeout is its one timer);
        # without read-ahead, the upstream itself, under a timer that cancels this task's read
        deadline: _Deadline | None = None
        before = 0
        if read_ahead:
            rest = buffered(upstream, self._buffer, deadline=call.deadline)
        else:
            rest = upstream
            task = asyncio.current_task()
            assert task is not None
            before = task.cancelling()
            deadline = _Deadline(call.deadline, task)
        try:
            pending = first
            try:
                while True:
                    if pending is not None:
                        chunk, pending = pending, None
                    elif deadline is None:
                        chunk = await anext(rest)
                    else:
                        if deadline.expired:
                            raise UpstreamTimeout(_TOO_LONG)
                        deadline.reading = True
                        try:
                            chunk = await anext(rest)
                        finally:
                            deadline.reading = False
                    match chunk:
                        case TextDelta(text=text):
                            texts.append(text)
                            yield chunk
                        case UsageChunk(usage=reported):
                            usage = reported
                        case Finish(reason=finish_reason):
                            reason = finish_reason
                        case ReasoningDelta(text=text):
                            extra.append(text)
                            yield chunk
                        case ToolCallDelta(name=name, arguments_fragment=fragment):
                            extra.append((name or "") + fragment)
                            yield chunk
                        case ErrorChunk():
                            outcome = False
                            yield chunk
                            return
            except StopAsyncIteration:
                outcome = True
            except asyncio.CancelledError:
                if deadline is None or not deadline.caused(before):
                    raise
                outcome = False
                yield _error_chunk(UpstreamTimeout(_TOO_LONG))
                return
            except TimeoutError:  # the read-ahead reader's total timeout
                outcome = False
                yield _error_chunk(UpstreamTimeout(_TOO_LONG))
                return
            except Exception as exc:  # noqa: BLE001 - after content: one clean error chunk
                outcome = False
                yield _error_chunk(exc)
                return
        finally:
            if deadline is not None:
                deadline.cancel()
            if rest is not upstream:
                await rest.aclose()  # type: ignore[attr-defined]  # cancels the reader, closes upstream
            await upstream.aclose()  # type: ignore[attr-defined]
            self.routing.view.finished(route.provider, route.upstream_model)
            if outcome is not True:
                self._abandon(call, outcome is False, texts, extra, usage)
        for chunk in await self._settle(call, usage, reason, texts, extra):
            yield chunk

    def _count(self, call: _Call, texts: list[str], extra: list[str]) -> Usage:
        """Usage from tiktoken counts, for a provider that reported none (or an answer cut short)."""
        counter = self.routing.counter
        model = call.route.upstream_model
        output = sum(counter.count_text(t, model) for t in (*texts, *extra) if t)
        return Usage(input_tokens=call.prompt_tokens, output_tokens=output)

    def _abandon(
        self, call: _Call, failed: bool, texts: list[str], extra: list[str], reported: Usage | None = None
    ) -> None:
        """A stream that did not finish (``failed``: it broke off; else the client went away): the
        breakers learn of a failure. When anything was produced (or the provider reported usage),
        the usage row (``finish_reason`` ``interrupted`` or ``cancelled``), ``ChatCompleted`` and
        ``RouteDecided`` are written and the reservation is settled to that usage (the provider
        bills it: reported tokens, else tiktoken counts of what was streamed); when nothing was,
        the reservation is released and no row is written. The token meters are corrected. All
        without waiting: the upstream is already closed."""
        if failed:
            self.routing.finished(call.route, False)
        produced = bool(texts or extra) or reported is not None
        usage = reported if reported is not None else (
            self._count(call, texts, extra) if produced or call.limit_subject is not None else None
        )
        if produced and usage is not None:
            ended = FINISH_INTERRUPTED if failed else FINISH_CANCELLED
            self._soon(self._record_cut_off(call, usage, ended, texts))
        elif self._budgets is not None and call.reservation is not None and call.reservation.counters:
            self._soon(self._release(call.reservation))
        if self._limiter is not None and call.limit_subject is not None and usage is not None:
            self._soon(self._limiter.adjust(call.limit_subject, tokens=usage.total_tokens - call.limit_tokens))

    async def _record_cut_off(self, call: _Call, usage: Usage, ended: str, texts: list[str]) -> None:
        record, events = self._outcome(call, usage, ended, texts, turn=False)
        try:
            await self._persist(call, record, events, usage)
        except Unavailable as exc:
            log.warning("usage of the cut-off request %s not recorded: %s", call.request_id, exc.message)

    def _outcome(
        self, call: _Call, usage: Usage, finish_reason: str, texts: list[str], *, turn: bool
    ) -> tuple[UsageRecord, list[DomainEvent]]:
        """The usage row and the events of an answer (``turn``: with the hooks' events, for an
        answer that finished)."""
        route, principal = call.route, call.principal
        model, provider = route.name, route.provider
        cost = route.price.cost_micros(usage)
        latency_ms = round((self._clock.monotonic() - call.started) * 1000)
        now = self._clock.now()
        tenant_id, user_id = principal.tenant_id, principal.user_id
        api_key_id = principal.credential_id if principal.kind is PrincipalKind.API_KEY else ""
        request_id = call.request_id
        record = UsageRecord(
            request_id=request_id,
            tenant_id=tenant_id,
            provider=provider,
            model=model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cost_micros=cost,
            latency_ms=latency_ms,
            finish_reason=finish_reason,
            created_at=now,
            conversation_id=call.request.conversation_id,
            user_id=user_id or None,
            api_key_id=api_key_id or None,
        )
        events: list[DomainEvent] = [
            ChatCompleted(
                event_id=self._ids.new_id(),
                tenant_id=tenant_id,
                occurred_at=now,
                request_id=request_id,
                provider=provider,
                model=model,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cost_micros=cost,
                latency_ms=latency_ms,
                finish_reason=finish_reason,
                conversation_id=call.request.conversation_id or "",
                user_id=user_id,
                api_key_id=api_key_id,
            )
        ]
        if self.routing.settings.publish_decisions:
            events.append(
                route_decided(call.decision, event_id=self._ids.new_id(), tenant_id=tenant_id, occurred_at=now, request_id=request_id)
            )
        if turn and self.hooks:
            completed = CompletedTurn(
                request_id=request_id, request=call.request, answer_text="".join(texts), provider=provider, model=model,
                occurred_at=now,
            )
            for hook in self.hooks:
                events.extend(hook.completed(principal, completed))
        return record, events

    async def _persist(self, call: _Call, record: UsageRecord, events: list[DomainEvent], usage: Usage) -> None:
        """The usage row and events (one ``Settlements`` call) and the budget settlement, together;
        raises ``Unavailable`` when the row could not be written (a failed budget settlement is
        logged: its journal entry reaches the durable ledger later)."""
        reservation, budgets = call.reservation, self._budgets
        if budgets is not None and reservation is not None and reservation.counters:
            done, charged = await asyncio.gather(
                self._settlements.settle(record, *events),
                budgets.settle(reservation, record.cost_micros, usage=usage, request_id=record.request_id),
                return_exceptions=True,
            )
            if isinstance(charged, BaseException):
                log.warning("budget settlement of %s failed: %r", record.request_id, charged)
            if isinstance(done, BaseException):
                raise done
        else:
            await self._settlements.settle(record, *events)

    async def _settle(
        self, call: _Call, usage: Usage | None, reason: FinishReason, texts: list[str], extra: list[str]
    ) -> tuple[Chunk, ...]:
        """Settle a finished answer; its last chunks (usage and ``Finish``, or the error)."""
        route = call.route
        if usage is None:
            usage = self._count(call, texts, extra)
        record, events = self._outcome(call, usage, reason.value, texts, turn=True)
        try:
            if call.reservation is None:  # the common path: no budget, one call
                await self._settlements.settle(record, *events)
            else:
                await self._persist(call, record, events, usage)
        except Unavailable as exc:
            return (ErrorChunk(code=Unavailable.code, message=f"usage could not be recorded: {exc.message}", retryable=True),)
        model, provider, request_id = route.name, route.provider, call.request_id
        cost, latency_ms, decision = record.cost_micros, record.latency_ms, call.decision
        self.routing.finished(route, True)
        if self._limiter is not None and call.limit_subject is not None:
            self._soon(self._limiter.adjust(call.limit_subject, tokens=usage.total_tokens - call.limit_tokens))
        step = decision.step_down
        return UsageChunk(usage=usage, cost_micros=cost), Finish(
            reason=reason,
            metadata=ResponseMetadata(
                request_id=request_id, provider=provider, model=model, latency_ms=latency_ms, cost_micros=cost,
                provider_label=call.label, requested=decision.requested, strategy=decision.strategy.value,
                fallbacks_tried=call.tried, attempts=call.attempts, stepped_down_from=step.replaced if step else "",
                estimate_micros=call.estimate, hedged=call.hedged, notes=call.notes,
            ),
        )

    # --- background work -----------------------------------------------------------------------

    def _soon(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("chat clean-up failed: %r", task.exception())

    async def drain(self) -> None:
        """Wait for the clean-up still running (settlements of broken streams, meter corrections)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)


def _error_chunk(exc: BaseException) -> ErrorChunk:
    if isinstance(exc, ProviderError):
        return ErrorChunk(code=exc.code, message=exc.message, retryable=exc.retryable)
    if isinstance(exc, DomainError):
        return ErrorChunk(code=exc.code, message=exc.message, retryable=False)
    log.warning("provider stream broke off: %r", exc)
    return ErrorChunk(code=UpstreamUnavailable.code, message="the provider's stream broke off", retryable=True)


@dataclass(frozen=True, slots=True)
class ChatAnswer:
    text: str
    tool_calls: tuple[ToolCallDelta, ...]
    usage: Usage
    cost_micros: int
    finish: Finish
    reasoning: str = ""
    rate_limit: RateLimitStatus | None = None  # the limiter's status for x-ratelimit-* (None: no limit)


class CompleteChat:
    """The whole answer at once: the same path as streaming, gathered."""

    def __init__(self, stream: StreamChat) -> None:
        self._stream = stream

    async def __call__(self, principal: Principal, request: ChatRequest) -> ChatAnswer:
        parts: list[str] = []
        thoughts: list[str] = []
        calls: dict[int, ToolCallDelta] = {}
        usage, cost, finish = Usage(), 0, Finish(reason=FinishReason.STOP)
        # drained at once here: no read-ahead task and queue between the provider and this loop
        chunks = await self._stream.open(principal, request, read_ahead=False)
        try:
            async for chunk in chunks:
                match chunk:
                    case TextDelta(text=text):
                        parts.append(text)
                    case ReasoningDelta(text=text):
                        thoughts.append(text)
                    case ToolCallDelta(index=index):
                        prev = calls.get(index)
                        calls[index] = chunk if prev is None else ToolCallDelta(
                            index=index,
                            id=prev.id or chunk.id,
                            name=prev.name or chunk.name,
                            arguments_fragment=prev.arguments_fragment + chunk.arguments_fragment,
                        )
                    case UsageChunk(usage=u, cost_micros=c):
                        usage, cost = u, c
                    case Finish():
                        finish = chunk
                    case ErrorChunk(code=code, message=message):
                        raise _error_from_chunk(code, message)
        finally:
            await chunks.aclose()  # an error chunk ends the loop early
        return ChatAnswer(
            "".join(parts), tuple(calls[i] for i in sorted(calls)), usage, cost, finish, "".join(thoughts),
            chunks.rate_limit,
        )


def _error_from_chunk(code: str, message: str) -> ProviderError | Unavailable:
    if code == Unavailable.code:
        return Unavailable(message)
    for cls in _provider_errors():
        if cls.code == code:
            return cls(message)
    return UpstreamUnavailable(message)


def _provider_errors() -> list[type[ProviderError]]:
    found: list[type[ProviderError]] = []
    todo: list[type[ProviderError]] = [ProviderError]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            found.append(sub)
            todo.append(sub)
    return found
