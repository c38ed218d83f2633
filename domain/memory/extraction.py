"""Fact-shaped statements in a turn, found by rules (no model), and the near-duplicate rule.

``extract_statements(text, speaker)`` finds first-person statements of a few single-valued
relations, sentence by sentence:

- ``I live in X`` / ``I moved to X`` / ``I'm living in X``       -> (speaker, "lives in", X)
- ``I work at|for X``                                          -> (speaker, "works at", X)
- ``I work as a X``                                            -> (speaker, "works as", X)
- ``I'm from X`` / ``I come from X``                           -> (speaker, "is from", X)
- ``I study at X``                                             -> (speaker, "studies at", X)
- ``my A is X`` (A: one to three words naming a single-valued attribute: a favourite something, a
  name, job, hometown, partner...)                               -> (speaker, "A is", X)

and retractions of the first three (``I no longer live in X``, ``I don't work at X anymore``,
``I moved out of X``, ``I quit my job at X``). Each relation is single-valued: a newer object
supersedes the older one (see ``domain.memory.consolidation``). Objects end at the clause
(punctuation or a conjunction), lose a leading article, and are at most six words; a statement
whose object is empty or too long is dropped. ``Statement.text`` is a canonical rendering
("user lives in Berlin", "user's favourite colour is blue").

``duplicate_of`` is the merge rule for near-duplicate memories: the later of two memories whose
vectors' cosine reaches the threshold is merged into the earlier one, which keeps its id and is
reinforced (``reinforced``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec

from domain.errors import InvalidRequest
from domain.memory.consolidation import split_sentences

__all__ = ["Statement", "duplicate_of", "extract_statements", "reinforced"]

MAX_OBJECT_WORDS = 6

_OBJECT = r"(?P<obj>[^.,;:!?]+)"
_RULES: tuple[tuple[re.Pattern[str], str, bool], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), predicate, retraction)
    for pattern, predicate, retraction in (
        # retractions first: "I no longer live in X" must not read as "I ... live in X"
        (r"\bi (?:no longer|don'?t|do not) live in " + _OBJECT, "lives in", True),
        (r"\bi moved out of " + _OBJECT, "lives in", True),
        (r"\bi (?:no longer|don'?t|do not) work (?:at|for) " + _OBJECT, "works at", True),
        (r"\bi quit (?:my job )?(?:at|with) " + _OBJECT, "works at", True),
        (r"\bi (?:no longer|don'?t|do not) work as (?:an? )?" + _OBJECT, "works as", True),
        (r"\bi (?:now )?(?:live|am living|'m living) in " + _OBJECT, "lives in", False),
        (r"\bi (?:just |recently )?moved to " + _OBJECT, "lives in", False),
        (r"\bi (?:now )?work (?:at|for) " + _OBJECT, "works at", False),
        (r"\bi (?:now )?work as (?:an? )?" + _OBJECT, "works as", False),
        (r"\bi(?:'m| am) from " + _OBJECT, "is from", False),
        (r"\bi come from " + _OBJECT, "is from", False),
        (r"\bi (?:now )?study at " + _OBJECT, "studies at", False),
    )
)
_MY_IS = re.compile(r"\bmy (?P<attr>[a-z][a-z'\-]*(?: [a-z][a-z'\-]*){0,2}) is " + _OBJECT, re.IGNORECASE)
# ``my A is X`` is an attribute only when A names one a person has one value of at a time ("my
# favourite colour", "my sister's name", "my job"); "my art is important to me" is an opinion
_ATTRIBUTE_HEADS = frozenset(
    "name birthday age job occupation profession title employer hometown email address number language "
    "nationality religion team colour color food book movie film song band artist sport game drink city "
    "country place hobby dish season animal show author singer actor car breed school major "
    "husband wife partner boyfriend girlfriend fiance fiancee".split()
)
# a conjunction ends the clause; a time or manner phrase ends the object ("Lisbon last month")
_CLAUSE_END = re.compile(
    r"\s+(?:and|but|because|since|so|which|where|when|while|who|though|although|if|last|this|next|for|as"
    r"|from|until|ago|yesterday|today|recently|with|now)\b.*$",
    re.IGNORECASE,
)
_LEADING = re.compile(r"^(?:the|a|an|in|at)\s+", re.IGNORECASE)
_TRAILING = re.compile(r"\s+(?:any ?more|now|too|as well|again|then|already|for now)$", re.IGNORECASE)
_VAGUE_OBJECT = re.compile(r"^(?:that|to|not|so|really|very|just|kind of|sort of|a bit|it|this|like)\b", re.IGNORECASE)


class Statement(msgspec.Struct, frozen=True):
    subject: str
    predicate: str
    object: str
    text: str
    retraction: bool = False
    # ``relation`` (the rules here: single-valued, promoted once seen in enough conversations) or a
    # kind of ``domain.memory.dialogue`` (event, plan, activity, preference, has, identity: a fact at once)
    kind: str = "relation"
    valid_from: float | None = None  # when it became true (an event's day); None: when it was said


def _clean_object(raw: str) -> str | None:
    value = _CLAUSE_END.sub("", raw.strip())
    value = _LEADING.sub("", value)
    previous = None
    while previous != value:
        previous, value = value, _TRAILING.sub("", value).strip()
    value = value.strip(" \"'()")
    if not value or _VAGUE_OBJECT.match(value) or len(value.split()) > MAX_OBJECT_WORDS:
        return None
    return value


def extract_statements(text: str, speaker: str) -> tuple[Statement, ...]:
    """Statements in ``text`` said by ``speaker`` (the subject of each), in sentence order; at
    most one per relation and sentence."""
    subject = " ".join(speaker.split())
    if not subject:
        return ()
    found: list[Statement] = []
    for sentence in split_sentences(text):
        seen: set[str] = set()
        for pattern, predicate, retraction in _RULES:
            match = pattern.search(sentence)
            if match is None or predicate in seen:
                continue
            obj = _clean_object(match.group("obj"))
            if obj is None:
                continue
            seen.add(predicate)
            rendered = f"{subject} no longer {predicate} {obj}" if retraction else f"{subject} {predicate} {obj}"
            found.append(Statement(subject, predicate, obj, rendered, retraction))
        for match in _MY_IS.finditer(sentence):
            attribute = " ".join(match.group("attr").casefold().split())
            words = attribute.split()
            if words[-1] not in _ATTRIBUTE_HEADS and not {"favourite", "favorite"} & set(words):
                continue
            obj = _clean_object(match.group("obj"))
            if obj is None:
                continue
            predicate = f"{attribute} is"
            if predicate in seen:
                continue
            seen.add(predicate)
            found.append(Statement(subject, predicate, obj, f"{subject}'s {attribute} is {obj}"))
    return tuple(found)


def duplicate_of(
    memory: tuple[float, str], others: Sequence[tuple[float, str, float]], threshold: float
) -> tuple[str, float] | None:
    """The memory that ``memory`` (``(at, id)``) should be merged into: among ``others``
    (``(at, id, cosine to memory)``), the earliest one at or above ``threshold`` that is earlier
    than ``memory`` itself (by ``at``, then id). None when ``memory`` is the earliest of its group
    (the later ones merge into it when their turn comes)."""
    if not -1.0 <= threshold <= 1.0:
        raise InvalidRequest.single("threshold", "must be a cosine in [-1, 1]")
    earlier = [(at, oid, sim) for at, oid, sim in others if oid != memory[1] and sim >= threshold and (at, oid) < memory]
    if not earlier:
        return None
    at, oid, sim = min(earlier)
    return oid, sim


def reinforced(kept: float, merged: float, boost: float = 0.1) -> float:
    """Importance of a memory that absorbed a near-duplicate: the higher of the two, plus ``boost``
    (capped at 1): something said again matters more."""
    return min(1.0, max(kept, merged) + boost)

