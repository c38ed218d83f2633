"""Lumina's own chat options on the vendor-compatible REST edges, which have no field for them:

- ``x-lumina-memory: off`` (or ``on``; also ``false``/``true``, ``0``/``1``): long-term memory for
  this request; on the OpenAI edge also the body member ``"lumina": {"memory": false}``.
- ``x-lumina-conversation-id: <id>``: groups requests of one conversation (memory, usage); on the
  OpenAI edge also ``"lumina": {"conversation_id": "..."}``.

An explicit "off" in either place wins; a body value wins over the header otherwise.
"""

from __future__ import annotations

import msgspec

from domain.errors import InvalidRequest

__all__ = ["CONVERSATION_HEADER", "MEMORY_HEADER", "LuminaOptions", "conversation_option", "memory_option"]

MEMORY_HEADER = "x-lumina-memory"
CONVERSATION_HEADER = "x-lumina-conversation-id"
MAX_CONVERSATION_ID = 256
_SWITCH = {"on": True, "true": True, "1": True, "off": False, "false": False, "0": False}


class LuminaOptions(msgspec.Struct, forbid_unknown_fields=False):
    """The body member ``lumina`` of an OpenAI-compatible chat request (other servers ignore it)."""

    memory: bool | None = None
    conversation_id: str | None = None


def memory_option(header: str | None, body: bool | None = None) -> bool | None:
    """``ChatRequest.memory`` from the header and the body member: None = the tenant's default."""
    from_header = None
    if header is not None:
        key = header.strip().lower()
        if key not in _SWITCH:
            raise InvalidRequest.single(MEMORY_HEADER, "expected on or off")
        from_header = _SWITCH[key]
    if body is False or from_header is False:
        return False
    return True if body or from_header else None


def conversation_option(header: str | None, body: str | None = None) -> str | None:
    value = (body if body is not None else header or "").strip()
    if len(value) > MAX_CONVERSATION_ID:
        field = "lumina.conversation_id" if body is not None else CONVERSATION_HEADER
        raise InvalidRequest.single(field, f"at most {MAX_CONVERSATION_ID} characters")
    return value or None
