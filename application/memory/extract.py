"""Fact extraction for consolidation: what each turn says, as ``Statement``s with their kind and
(for events) the day they happened.

- ``RuleFactExtractor`` (no provider): ``domain.memory.extraction.extract_statements`` (single-
  valued relations: lives in, works at, ``my X is``... promoted once seen in enough conversations)
  plus ``domain.memory.dialogue.extract_dialogue_facts`` (events, plans, activities, preferences,
  possessions, identities said by the speaker: facts at once). The speaker is the turn's role:
  a speaker's name (imported dialogue) or ``user``; assistant, system, tool and summary turns
  state nothing about the user and are skipped.
- ``ProviderFactExtractor``: a chat model of the registry, asked for structured JSON (a JSON
  schema: ``facts: [{turn, subject, kind, predicate, object, when}]``) over a batch of numbered
  turns; the answer is validated (turn index in range, kind known, non-empty parts, ``when`` an
  ISO date or empty) and what fails validation is dropped. On any provider error, or an answer
  that is not the JSON asked for, the batch falls back to the rules (``fallbacks`` counts them).
  Usage and cost are metered (``ProviderMeter``, operation ``memory.extraction``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

import msgspec

from application.memory.metering import ProviderMeter, complete_text
from application.memory.ports import StoredMemory
from application.ports import ModelCatalog, ProviderClients
from domain.chat import (
    ChatMessage,
    ChatRequest,
    ResponseFormat,
    ResponseFormatKind,
    Role,
)
from domain.errors import DomainError
from domain.memory.dialogue import extract_dialogue_facts
from domain.memory.extraction import Statement, extract_statements

__all__ = ["FactExtractor", "ProviderFactExtractor", "RuleFactExtractor", "speaker_of", "spoken"]

SILENT_ROLES = frozenset({"assistant", "system", "tool", "summary", "developer"})
KINDS = ("event", "plan", "activity", "preference", "has", "identity", "relation")


def spoken(memory: StoredMemory) -> str:
    """The turn's words without its ``role: `` prefix."""
    return memory.text.removeprefix(f"{memory.role}: ") if memory.role else memory.text


def speaker_of(memory: StoredMemory) -> str | None:
    """Who said the turn (the subject of its first-person statements), or None for turns that
    say nothing about the user."""
    role = (memory.role or "user").strip()
    return None if role.casefold() in SILENT_ROLES else role


class FactExtractor(Protocol):
    async def extract(self, turns: Sequence[StoredMemory]) -> list[tuple[Statement, ...]]:
        """The statements of each turn (one tuple per turn, in order)."""
        ...


class RuleFactExtractor:
    async def extract(self, turns: Sequence[StoredMemory]) -> list[tuple[Statement, ...]]:
        return [self.extract_one(t) for t in turns]

    @staticmethod
    def extract_one(turn: StoredMemory) -> tuple[Statement, ...]:
        speaker = speaker_of(turn)
        if speaker is None:
            return ()
        text = spoken(turn)
        return (*extract_statements(text, speaker), *extract_dialogue_facts(text, speaker, turn.at))


_PROMPT = (
    "Extract durable facts about the speakers from these conversation turns, for a long-term memory. "
    "Only what a speaker says about themselves (resolve I/we/my to the speaker's name): events that happened, "
    "plans, ongoing activities, preferences, possessions, identity, where they live or work. Skip greetings, "
    "opinions about the other speaker, questions. For each fact give the index of the turn it comes from, the "
    "subject (a name), the kind, a short predicate that names what the fact is about (e.g. 'lives in', "
    "'went to a pottery class', 'feels about hiking'), the object (the value that may change: a place, "
    "'loves', a date), and 'when': the ISO date the event happened (turns are dated) or null. Reply with JSON only."
)
_SCHEMA: dict[str, object] = {
    "type": "object",
    "properties": {
        "facts": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "turn": {"type": "integer", "minimum": 0},
                    "subject": {"type": "string"},
                    "kind": {"type": "string", "enum": list(KINDS)},
                    "predicate": {"type": "string"},
                    "object": {"type": "string"},
                    # the ISO date an event happened, or null
                    "when": {"anyOf": [{"type": "null"}, {"type": "string", "description": "YYYY-MM-DD"}]},
                },
                "required": ["turn", "subject", "kind", "predicate", "object", "when"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["facts"],
    "additionalProperties": False,
}


class _Fact(msgspec.Struct):
    turn: int
    subject: str
    kind: str
    predicate: str
    object: str
    when: str | None = None


class _Answer(msgspec.Struct):
    facts: list[_Fact]


def _day(value: str) -> float | None:
    try:
        parsed = datetime.fromisoformat(value.strip()[:10])
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC).timestamp()


class ProviderFactExtractor:
    def __init__(
        self,
        catalog: ModelCatalog,
        providers: ProviderClients,
        model: str,
        *,
        meter: ProviderMeter | None = None,
        batch: int = 20,
        fallback: RuleFactExtractor | None = None,
    ) -> None:
        self._catalog = catalog
        self._providers = providers
        self._model = model
        self._meter = meter
        self._batch = max(1, batch)
        self._fallback = fallback or RuleFactExtractor()
        self.fallbacks = 0  # batches answered by the rules instead

    async def extract(self, turns: Sequence[StoredMemory]) -> list[tuple[Statement, ...]]:
        out: list[tuple[Statement, ...]] = []
        for start in range(0, len(turns), self._batch):
            out += await self._extract_batch(turns[start : start + self._batch])
        return out

    def _request(self, turns: Sequence[StoredMemory]) -> ChatRequest:
        lines = [
            f"[{i}] {datetime.fromtimestamp(t.at, UTC):%Y-%m-%d} {t.role or 'user'}: {spoken(t)[:2000]}"
            for i, t in enumerate(turns)
        ]
        schema = json.loads(json.dumps(_SCHEMA))
        schema["properties"]["facts"]["items"]["properties"]["turn"]["maximum"] = len(turns) - 1
        return ChatRequest(
            messages=(ChatMessage(Role.SYSTEM, _PROMPT), ChatMessage(Role.USER, "\n".join(lines))),
            model=self._model,
            max_tokens=1500,
            temperature=0.0,
            response_format=ResponseFormat(ResponseFormatKind.JSON_SCHEMA, schema=schema, name="memory_facts", strict=True),
        )

    async def _extract_batch(self, turns: Sequence[StoredMemory]) -> list[tuple[Statement, ...]]:
        speaking = [t for t in turns if speaker_of(t) is not None]
        if not speaking:
            return [() for _ in turns]
        try:
            text = await complete_text(
                self._catalog, self._providers, self._request(speaking), meter=self._meter,
                tenant_id=speaking[0].tenant_id, user_id=speaking[0].user_id, operation="memory.extraction",
            )
            answer = msgspec.json.decode(text.strip().removeprefix("```json").removesuffix("```"), type=_Answer)
        except (DomainError, msgspec.ValidationError, msgspec.DecodeError):
            self.fallbacks += 1
            return await self._fallback.extract(turns)
        found: dict[str, list[Statement]] = {t.id: [] for t in turns}
        for fact in answer.facts:
            statement = self._statement(fact, speaking)
            if statement is not None:
                found[speaking[fact.turn].id].append(statement)
        return [tuple(found[t.id]) for t in turns]

    @staticmethod
    def _statement(fact: _Fact, turns: Sequence[StoredMemory]) -> Statement | None:
        subject, predicate, obj = (" ".join(v.split())[:200] for v in (fact.subject, fact.predicate, fact.object))
        if not 0 <= fact.turn < len(turns) or fact.kind not in KINDS or not (subject and predicate and obj):
            return None
        turn = turns[fact.turn]
        said = (fact.when or "").strip()
        when = _day(said) if said else None
        if said and when is None:
            return None  # not a date: the answer is not trusted for this fact
        if fact.kind == "event" and when is not None:
            day = datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d")
            return Statement(subject, f"{predicate} on {day}", day, f"{subject} {predicate} on {day}", kind="event", valid_from=when)
        return Statement(subject, predicate, obj, f"{subject} {predicate} {obj}", kind=fact.kind, valid_from=when or turn.at)
