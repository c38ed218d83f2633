"""Simulator settings: server-wide defaults, overridable per request with ``x-sim-*`` headers."""

from __future__ import annotations

import msgspec

from tools.provider_sim import faults as _faults

__all__ = [
    "DEFAULT_MODELS",
    "EMBEDDING_MODELS",
    "FAULTS",
    "HEADER_FIELDS",
    "VENDOR_FAULTS",
    "Knobs",
    "SimConfig",
    "knobs_from_headers",
]

DEFAULT_MODELS: dict[str, int] = {
    "sim-small": 8_192,
    "sim-large": 131_072,
    # OpenAI-compatible vendors' names, so adapters can be tested with their real model names
    "gpt-4o-mini": 128_000,
    "gpt-4o": 128_000,
    "deepseek-chat": 65_536,
    "deepseek-reasoner": 65_536,  # streams ``reasoning_content`` before its answer
    "grok-3-mini": 131_072,
    "llama3.1": 8_192,
}
"""Chat model name -> context window (tokens). Prompts larger than the window get a 400
``context_length_exceeded`` like the real API."""

EMBEDDING_MODELS: dict[str, int] = {"sim-embed": 64, "text-embedding-3-small": 1536}
"""Embedding model name -> default vector size (``dimensions`` in a request shortens it)."""

FAULTS = frozenset({"400", "401", "403", "404", "429", "500", "503", "529", "context_length", "midstream"})
"""``400``..``529``: that HTTP status with an OpenAI error body; ``context_length``: a 400 with
code ``context_length_exceeded``; ``midstream``: a stream that breaks off with an error event
after half of its chunks (non-stream requests get a 500). Besides these, every generic fault of
``tools.provider_sim.faults`` (refuse, stall, disconnect-after-N, malformed[-after-N])."""

VENDOR_FAULTS = frozenset({"context_length", "midstream"})


class Knobs(msgspec.Struct, frozen=True):
    """The behaviour of one request. Every field has an ``x-sim-<field with dashes>`` header."""

    latency_ms: float = 0.0  # delay before the first byte
    chunks: int = 8  # content chunks in a stream
    tokens: int = 16  # completion tokens (words) before max_tokens caps them
    chunk_delay_ms: float = 0.0  # delay between stream chunks
    fault: str | None = None  # one of FAULTS
    retry_after: float = 2.0  # retry-after header of 429 faults
    cached_tokens: int = 0  # reported in usage.prompt_tokens_details (capped at the prompt)
    reasoning_tokens: int = 0  # reported in usage.completion_tokens_details, added to completion
    tool_call: str | None = None  # answer with calls of these functions (comma-separated) instead of text
    reasoning: int = 0  # words of visible reasoning before the answer (reasoner models: 8 when 0)

    def __post_init__(self) -> None:
        if self.latency_ms < 0 or self.chunk_delay_ms < 0 or self.retry_after < 0:
            raise ValueError("delays must be >= 0")
        if self.chunks < 1 or self.tokens < 1:
            raise ValueError("chunks and tokens must be >= 1")
        if self.cached_tokens < 0 or self.reasoning_tokens < 0 or self.reasoning < 0:
            raise ValueError("token counts must be >= 0")
        if self.fault is not None:
            try:
                _faults.parse(self.fault, vendor=VENDOR_FAULTS)
            except ValueError:
                raise ValueError(
                    f"fault must be one of {sorted(FAULTS)}, refuse, stall, disconnect-after-N or malformed[-after-N]"
                ) from None


class SimConfig(msgspec.Struct, frozen=True):
    """Server-wide settings. ``api_key``: when set, only this bearer token is accepted (any
    non-empty token otherwise). ``strict_models``: unknown models get a 404 (else they are served
    with the largest known context window)."""

    knobs: Knobs = Knobs()
    api_key: str | None = None
    models: dict[str, int] = msgspec.field(default_factory=lambda: dict(DEFAULT_MODELS))
    strict_models: bool = True

    @classmethod
    def build(
        cls,
        *,
        api_key: str | None = None,
        models: dict[str, int] | None = None,
        strict_models: bool = True,
        **knobs: object,
    ) -> SimConfig:
        """``SimConfig.build(tokens=32, chunk_delay_ms=5, api_key="k")``: knobs as keywords."""
        return cls(
            knobs=msgspec.convert(knobs, Knobs, strict=False),
            api_key=api_key,
            models=dict(models) if models is not None else dict(DEFAULT_MODELS),
            strict_models=strict_models,
        )


HEADER_FIELDS: dict[bytes, str] = {
    b"x-sim-" + name.replace("_", "-").encode(): name for name in Knobs.__struct_fields__
}

_FLOATS = frozenset({"latency_ms", "chunk_delay_ms", "retry_after"})
_INTS = frozenset({"chunks", "tokens", "cached_tokens", "reasoning_tokens", "reasoning"})


def knobs_from_headers(base: Knobs, overrides: dict[str, str]) -> Knobs:
    """``base`` with header overrides applied. Raises ``ValueError`` on a bad value."""
    if not overrides:
        return base
    values: dict[str, object] = {}
    for name, raw in overrides.items():
        if name in _FLOATS:
            values[name] = float(raw)
        elif name in _INTS:
            values[name] = int(raw)
        else:
            values[name] = raw or None
    return msgspec.structs.replace(base, **values)
