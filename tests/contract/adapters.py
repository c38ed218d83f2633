"""Building each provider adapter against the simulator, for the contract suite.

``make_provider(kind, sim_base_url, headers)`` returns a ``ProviderClient`` talking real HTTP to
the simulator through the vendor's own SDK; ``headers`` (``x-sim-*`` knobs) go with every
request. ``MODELS[kind]`` is the upstream model name the suite asks that adapter for.

A kind whose adapter module does not exist yet is skipped (pytest.skip), not failed; once the
module exists its branch below must build it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping

import pytest

from domain.ports import ProviderClient

__all__ = ["KINDS", "MODELS", "SIM_KEY", "make_provider"]

KINDS = ("openai", "anthropic", "gemini", "deepseek", "xai", "local")

MODELS: dict[str, str] = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-haiku-4-5",
    "gemini": "gemini-2.5-flash",
    "deepseek": "deepseek-chat",
    "xai": "grok-3-mini",
    "local": "llama3.1",
}

SIM_KEY = "sim-key"

_OPENAI_COMPATIBLE = frozenset({"openai", "deepseek", "xai", "local"})


def _require_module(module: str, kind: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{kind}: adapter module {module} does not exist yet")


def make_provider(kind: str, sim_base_url: str, headers: Mapping[str, str] | None = None) -> ProviderClient:
    """``sim_base_url`` is ``http://127.0.0.1:PORT/v1`` as ``running_simulator`` yields it."""
    extra = dict(headers or {})
    if kind in _OPENAI_COMPATIBLE:
        from adapters.providers.openai import openai_compatible

        key = None if kind == "local" else SIM_KEY  # local servers: the adapter's placeholder key
        return openai_compatible(kind, kind, api_key=key, base_url=sim_base_url, default_headers=extra)
    root = sim_base_url.rstrip("/").removesuffix("/v1")
    if kind == "anthropic":
        _require_module("adapters.providers.anthropic", kind)
        from adapters.providers.anthropic import AnthropicProvider  # type: ignore[import-not-found]

        return AnthropicProvider(kind, api_key=SIM_KEY, base_url=root, default_headers=extra)  # type: ignore[no-any-return]
    if kind == "gemini":
        _require_module("adapters.providers.gemini", kind)
        from adapters.providers.gemini import GeminiProvider  # type: ignore[import-not-found]

        return GeminiProvider(kind, api_key=SIM_KEY, base_url=root, default_headers=extra)  # type: ignore[no-any-return]
    raise ValueError(f"unknown provider kind {kind!r}; expected one of {KINDS}")
