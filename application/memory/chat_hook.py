"""``MemoryChatHook``: long-term memory in the chat path (a ``ChatHook``).

**Before routing** (``prepare``): when memory is on for the request and the tenant and the caller is
a user, the user's memories (every conversation of theirs, this one included) are searched with the
last user message as the query (plus the message before it when that one is short, e.g. "why?"),
and what is found is injected as ONE system message, placed after the caller's own leading system
messages, delimited by ``<remembered_context>`` tags and labelled with each excerpt's date and
source. Excerpts whose hit is already in the request's messages are left out, and so are context
lines already there. The block (tags and labels included) fits ``token_budget`` tokens.

Retrieval is time-boxed (``timeout`` seconds: the tenant lookup and the search together); on a timeout or any failure the request goes on without memory, the failure is logged
(no content) and noted. Memory never fails a chat request. ``PreparedChat.notes`` says what
happened: ``memories`` and ``memory_tokens`` when something was injected, else
``memory_skipped`` (``off_request``, ``off_tenant``, ``no_user``, ``no_query``, ``none_found``,
``budget``, ``timeout``, ``error``, ``unavailable``); ``memory_ms`` once a search was tried.

**At settlement** (``completed``): a ``ChatTurnCompleted`` event (committed with the usage row; the
worker remembers it) when memory is on for the request and the tenant and the caller is a user.
Its ``user_text`` is the last user message of the caller's own request (never the injected
memories), when that message is new in this turn (after the last assistant message; a request
that continues after tool results carries only the answer). The tenant's switch is read from the
cache ``prepare`` filled (``completed`` is synchronous): when it is unknown, the turn is not
remembered.

Switches: ``ChatRequest.memory = False`` turns both off for one request; ``None`` (the default) or
``True`` follow the tenant's ``TenantPolicy.memory_enabled`` — a tenant that turned memory off is a
policy no request overrides. The tenant's policy is read through ``CachedTenantPolicies`` (a small
TTL cache over the ``TenantPolicies`` port). The global switch (``memory_enabled`` setting) decides
whether the hook is installed at all.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

import msgspec

from application.chat_hooks import CompletedTurn, PreparedChat
from application.memory.search import SearchResponse, SearchResult, approximate_tokens
from domain.chat import MAX_MESSAGES, ChatMessage, ChatRequest, Role, TextPart
from domain.events import ChatTurnCompleted, DomainEvent
from domain.identity import Principal, TenantPolicy
from domain.memory.ranking import MemoryFilter
from domain.ports import Clock, IdGenerator

__all__ = [
    "CLOSE_TAG",
    "OPEN_TAG",
    "CachedTenantPolicies",
    "Excerpt",
    "MemoryChatHook",
    "MemoryRecall",
    "TenantPolicies",
    "render_memories",
]

OPEN_TAG = "<remembered_context>"
CLOSE_TAG = "</remembered_context>"
PREAMBLE = (
    "Lumina remembered these excerpts from this user's earlier conversations (dates in UTC). They may "
    "be outdated or unrelated: use them only where they help, prefer what the user says now, and do "
    "not mention this note unless asked."
)
_SHORT_QUERY_WORDS = 6  # a last user message shorter than this takes the message before it along
_CONTEXT_CHARS = 300  # ... at most this much of it
_QUERY_CHARS = 2_000
_CONTAINED_MIN = 24  # a memory line this long or longer inside a message counts as already there
_FACTS = "_facts"


class TenantPolicies(Protocol):
    async def policy(self, tenant_id: str) -> TenantPolicy | None:
        """The tenant's policy (``None``: no such tenant)."""
        ...


class MemoryRecall(Protocol):
    """``SearchMemory``'s call."""

    async def __call__(
        self,
        tenant: str,
        user: str,
        query: str,
        k: int = 10,
        filters: MemoryFilter | None = None,
        token_budget: int = 2000,
    ) -> SearchResponse: ...


class Log(Protocol):
    def warning(self, event: str, **fields: object) -> None: ...


class CachedTenantPolicies:
    """Tenant policies for ``ttl`` seconds (a tenant without a row gets the default policy);
    ``known`` answers from the cache without I/O, even after expiry (the last value seen)."""

    def __init__(self, policies: TenantPolicies, clock: Clock, *, ttl: float = 30.0, max_entries: int = 10_000) -> None:
        self._policies = policies
        self._clock = clock
        self._ttl = ttl
        self._max = max_entries
        self._cache: dict[str, tuple[float, TenantPolicy]] = {}

    async def policy(self, tenant_id: str) -> TenantPolicy:
        hit = self._cache.get(tenant_id)
        now = self._clock.monotonic()
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        policy = await self._policies.policy(tenant_id) or TenantPolicy()
        self._cache.pop(tenant_id, None)
        while len(self._cache) >= self._max:
            del self._cache[next(iter(self._cache))]  # the oldest entry
        self._cache[tenant_id] = (now, policy)
        return policy

    def known(self, tenant_id: str) -> TenantPolicy | None:
        hit = self._cache.get(tenant_id)
        return hit[1] if hit is not None else None

    def invalidate(self, tenant_id: str) -> None:
        """Forget the tenant's cached policy (it was just changed): the next request reads it."""
        self._cache.pop(tenant_id, None)


def _message_text(message: ChatMessage) -> str:
    texts = [message.content, *(p.text for p in message.parts if isinstance(p, TextPart))]
    return "\n".join(t for t in texts if t.strip())


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def _last_user_index(messages: Sequence[ChatMessage]) -> int:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role is Role.USER:
            return i
    return -1


def _query(messages: Sequence[ChatMessage]) -> str:
    """The last user message, with the message before it when the last one is short."""
    at = _last_user_index(messages)
    if at < 0:
        return ""
    text = _message_text(messages[at])
    if len(text.split()) < _SHORT_QUERY_WORDS:
        for previous in reversed(messages[:at]):
            if previous.role in (Role.USER, Role.ASSISTANT) and (context := _message_text(previous)):
                text = f"{context[-_CONTEXT_CHARS:]}\n{text}"
                break
    return text[-_QUERY_CHARS:].strip()


def _new_user_text(messages: Sequence[ChatMessage]) -> str:
    """The last user message when it is new in this turn (after the last assistant message)."""
    at = _last_user_index(messages)
    if at < 0 or any(m.role is Role.ASSISTANT for m in messages[at + 1 :]):
        return ""
    return _message_text(messages[at])


_SPEAKER = re.compile(r"^[\w .'-]{1,40}: ")


class _Seen:
    """What the request already says: a memory line equal to a message, or (when long enough)
    inside one, is not repeated. A memory of a turn reads "<speaker>: <text>" (ingest prefixes the
    role); the text without that prefix is compared too."""

    def __init__(self, messages: Sequence[ChatMessage]) -> None:
        self._texts = [_norm(_message_text(m)) for m in messages]
        self._exact = set(self._texts)

    def __contains__(self, text: str) -> bool:
        return any(self._has(n) for n in {_norm(text), _norm(_SPEAKER.sub("", text, count=1))})

    def _has(self, n: str) -> bool:
        if not n or n in self._exact:
            return True
        return len(n) >= _CONTAINED_MIN and any(n in t for t in self._texts)


_TAG = re.compile(r"</?\s*remembered_context\s*>", re.IGNORECASE)


def _safe(text: str) -> str:
    """A memory's text inside the block: its tags neutralised, one line."""
    return _TAG.sub("[remembered context]", " ".join(text.split()))


class Excerpt(msgspec.Struct, frozen=True):
    """One search result as shown: its date, where it comes from, and its lines."""

    at: float
    source: str
    lines: tuple[str, ...]  # the memories' texts (a turn's reads "<role>: <text>"), oldest first


def render_memories(excerpts: Sequence[Excerpt]) -> str:
    parts = [OPEN_TAG, PREAMBLE]
    for n, e in enumerate(excerpts, 1):
        day = datetime.fromtimestamp(e.at, UTC).date().isoformat()
        body = "\n".join(e.lines)
        parts.append(f"\n[{n}] {day} · {e.source}\n{body}")
    parts.append(CLOSE_TAG)
    return "\n".join(parts)


def _source(result: SearchResult, conversation_id: str | None) -> str:
    if result.conversation_id == _FACTS:
        return "fact learned from earlier conversations"
    if conversation_id and result.conversation_id == conversation_id:
        return "earlier in this conversation"
    return "another conversation"


class MemoryChatHook:
    """See the module docstring. ``recall`` may be attached later (``attach``): the composition
    root builds the chat path before the memory store opens."""

    def __init__(
        self,
        *,
        tenants: CachedTenantPolicies,
        clock: Clock,
        ids: IdGenerator,
        recall: MemoryRecall | None = None,
        token_budget: int = 1000,
        max_results: int = 8,
        timeout: float = 0.15,
        count_tokens: Callable[[str], int] = approximate_tokens,
        log: Log | None = None,
    ) -> None:
        self._tenants = tenants
        self._clock = clock
        self._ids = ids
        self._recall = recall
        self._budget = token_budget
        self._k = max_results
        self._timeout = timeout
        self._count = count_tokens
        self._log = log

    def tenant_changed(self, tenant_id: str) -> None:
        """The tenant's memory switch was just set on this replica: read it again next request."""
        self._tenants.invalidate(tenant_id)

    def attach(self, recall: MemoryRecall) -> None:
        self._recall = recall

    # --- before routing ----------------------------------------------------------------------

    async def prepare(self, principal: Principal, request: ChatRequest) -> PreparedChat:
        if request.memory is False:
            return PreparedChat(request, {"memory_skipped": "off_request"})
        if not principal.user_id:
            return PreparedChat(request, {"memory_skipped": "no_user"})
        if len(request.messages) >= MAX_MESSAGES:  # no room for one more message
            return PreparedChat(request, {"memory_skipped": "budget"})
        recall = self._recall
        if recall is None:
            return PreparedChat(request, {"memory_skipped": "unavailable"})
        started = self._clock.monotonic()
        try:
            async with asyncio.timeout(self._timeout):
                policy = await self._tenants.policy(principal.tenant_id)
                if not policy.memory_enabled:
                    return PreparedChat(request, {"memory_skipped": "off_tenant"})
                query = _query(request.messages)
                if not query:
                    return PreparedChat(request, {"memory_skipped": "no_query"})
                block = await self._recall_block(recall, principal, request, query)
        except TimeoutError:
            self._warn("memory recall timed out; answering without memory", principal, started)
            return PreparedChat(request, {"memory_skipped": "timeout", "memory_ms": self._ms(started)})
        except Exception as exc:  # noqa: BLE001 - memory never fails a chat request
            self._warn("memory recall failed; answering without memory", principal, started, error=type(exc).__name__)
            return PreparedChat(request, {"memory_skipped": "error", "memory_ms": self._ms(started)})
        if isinstance(block, str):
            return PreparedChat(request, {"memory_skipped": block, "memory_ms": self._ms(started)})
        text, count, tokens = block
        notes = {"memories": str(count), "memory_tokens": str(tokens), "memory_ms": self._ms(started)}
        return PreparedChat(_inject(request, text), notes)

    def _ms(self, started: float) -> str:
        return f"{(self._clock.monotonic() - started) * 1000:.1f}"

    async def _recall_block(
        self, recall: MemoryRecall, principal: Principal, request: ChatRequest, query: str
    ) -> tuple[str, int, int] | str:
        """The rendered block, how many excerpts it shows and its tokens; or why there is none."""
        overhead = self._count(render_memories([])) + 12  # tags, preamble, one excerpt's label
        if overhead >= self._budget:
            return "budget"
        found = await recall(
            principal.tenant_id, principal.user_id, query, k=self._k, token_budget=self._budget - overhead
        )
        seen = _Seen(request.messages)
        excerpts = [
            Excerpt(
                r.at,
                _source(r, request.conversation_id),
                tuple(
                    _safe(c.text)
                    for c in (*r.before, r, *r.after)
                    if c is r or c.text not in seen  # context lines the request already has are left out
                ),
            )
            for r in found.results
            if r.text not in seen  # a hit the request already has: its excerpt is left out
        ]
        if not excerpts:
            return "none_found"
        while excerpts:
            text = render_memories(excerpts)
            tokens = self._count(text)
            if tokens <= self._budget:
                return text, len(excerpts), tokens
            excerpts.pop()  # the lowest ranked goes first
        return "budget"

    def _warn(self, event: str, principal: Principal, started: float, **fields: object) -> None:
        if self._log is not None:
            elapsed = round((self._clock.monotonic() - started) * 1000)
            self._log.warning(event, tenant=principal.tenant_id, elapsed_ms=elapsed, **fields)

    # --- at settlement -----------------------------------------------------------------------

    def completed(self, principal: Principal, turn: CompletedTurn) -> Sequence[DomainEvent]:
        request = turn.request
        if request.memory is False or not principal.user_id:
            return ()
        policy = self._tenants.known(principal.tenant_id)
        if policy is None or not policy.memory_enabled:
            return ()
        user_text = _new_user_text(request.messages)
        if not user_text.strip() and not turn.answer_text.strip():
            return ()
        return (
            ChatTurnCompleted(
                event_id=self._ids.new_id(),
                tenant_id=principal.tenant_id,
                occurred_at=turn.occurred_at,
                request_id=turn.request_id,
                user_id=principal.user_id,
                conversation_id=request.conversation_id or "",
                user_text=user_text,
                assistant_text=turn.answer_text,
                model=turn.model,
            ),
        )


def _inject(request: ChatRequest, text: str) -> ChatRequest:
    """``request`` with the block as one system message after its leading system messages."""
    messages = request.messages
    at = 0
    while at < len(messages) and messages[at].role is Role.SYSTEM:
        at += 1
    injected = (*messages[:at], ChatMessage(Role.SYSTEM, text), *messages[at:])
    return msgspec.structs.replace(request, messages=injected)
