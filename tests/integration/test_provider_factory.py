"""The registry's provider factory builds OpenAI-wire clients through ``openai_compatible``, so the
vendors' default base URLs live in one table (``adapters.providers.openai.PROVIDER_KINDS``)."""

from __future__ import annotations

import pytest

from adapters.providers.factory import (
    ProviderClientFactory,
    build_provider,
    default_base_url,
)
from adapters.providers.openai import PROVIDER_KINDS, OpenAIProvider
from domain.chat import ChatMessage, ChatRequest, Role, TextDelta
from domain.errors import UpstreamInvalidRequest
from domain.registry import ProviderKind, ProviderSpec
from tools.provider_sim.testing import async_running_simulator


@pytest.mark.parametrize(
    ("kind", "vendor"),
    [(ProviderKind.OPENAI, "openai"), (ProviderKind.DEEPSEEK, "deepseek"), (ProviderKind.XAI, "xai")],
)
async def test_vendor_default_base_urls_come_from_the_one_table(kind: ProviderKind, vendor: str) -> None:
    client = build_provider(ProviderSpec("p", kind), "sk-test")
    try:
        assert isinstance(client, OpenAIProvider)
        assert str(PROVIDER_KINDS[vendor]).rstrip("/") in repr(client)
        assert default_base_url(kind) == PROVIDER_KINDS[vendor]
    finally:
        await client.aclose()


async def test_local_servers_need_a_base_url_and_take_no_key() -> None:
    with pytest.raises(UpstreamInvalidRequest, match="needs a base_url"):
        build_provider(ProviderSpec("vllm", ProviderKind.OPENAI_COMPATIBLE), "")
    assert default_base_url(ProviderKind.OPENAI_COMPATIBLE) is None
    assert default_base_url(ProviderKind.ANTHROPIC) is None


async def test_built_local_client_streams_and_lists_from_the_simulator() -> None:
    async with async_running_simulator() as base_url:
        spec = ProviderSpec("ollama", ProviderKind.OPENAI_COMPATIBLE, base_url=base_url)
        factory = ProviderClientFactory(timeout=10)
        client = factory.build(spec, "")
        try:
            request = ChatRequest(messages=(ChatMessage(Role.USER, "hi"),), model="gpt-4o-mini")
            text = "".join([c.text async for c in client.stream("gpt-4o-mini", request) if isinstance(c, TextDelta)])
        finally:
            await client.aclose()
        listed = await factory.list_models(spec, "")
    assert text
    assert "gpt-4o-mini" in listed
