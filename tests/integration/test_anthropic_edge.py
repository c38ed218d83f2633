"""The Anthropic-compatible REST edge (``POST /v1/messages``) driven by the unmodified anthropic
SDK and by raw HTTP, on an in-process backend whose provider is AnthropicProvider against the
provider simulator."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import anthropic
import httpx
import pytest
import pytest_asyncio

from adapters.providers.anthropic import AnthropicProvider
from api.bootstrap import Backend, build_backend
from api.settings import load_settings
from domain.cost import Price
from domain.registry import ModelCapabilities, ModelRoute, ProviderKind, ProviderSpec
from tests.unit.auth_fakes import KEY, authenticator
from tests.unit.fakes import FakeUnitOfWorkFactory
from tools.provider_sim.testing import running_simulator

pytestmark = pytest.mark.timeout(60)

USER = [{"role": "user", "content": "hello there"}]
TOOLS = [{"name": "lookup", "description": "find", "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}}}]


@pytest.fixture(scope="module")
def sim() -> Iterator[str]:
    with running_simulator() as base_url:
        yield base_url


async def start_backend(sim: str, headers: dict[str, str] | None = None) -> tuple[Backend, FakeUnitOfWorkFactory]:
    provider = AnthropicProvider("claude", api_key="sk-ant-sim", base_url=sim, default_headers=headers, timeout=10)
    seed = (
        [ProviderSpec("claude", ProviderKind.ANTHROPIC, label="simulated")],
        [ModelRoute("claude-sim", "claude", "sim-small", Price(1, 2), is_default=True,
                    capabilities=ModelCapabilities(tools=True))],  # routing admits tool requests to it
    )
    uow = FakeUnitOfWorkFactory()
    backend = build_backend(load_settings({}, tenant_id="acme"), uow=uow, providers=[provider], seed=seed,
                            authenticator=authenticator("acme"))
    await backend.start(grpc_port=0, http_port=0)
    return backend, uow


@pytest_asyncio.fixture
async def backends() -> AsyncIterator:
    made: list[Backend] = []

    async def make(sim: str, headers: dict[str, str] | None = None) -> tuple[str, FakeUnitOfWorkFactory]:
        backend, uow = await start_backend(sim, headers)
        made.append(backend)
        return f"http://127.0.0.1:{backend.http_port}", uow

    yield make
    for b in made:
        await b.stop()


def sdk(root: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key=KEY, base_url=root, max_retries=0)  # sent as x-api-key


async def test_non_stream_message_through_the_sdk(backends, sim: str) -> None:
    root, uow = await backends(sim)
    async with sdk(root) as client:
        msg = await client.messages.create(model="claude-sim", max_tokens=100, system="be brief", messages=USER)
        direct = await anthropic.AsyncAnthropic(api_key="k", base_url=sim.removesuffix("/v1"), max_retries=0).messages.create(
            model="sim-small", max_tokens=100, system="be brief", messages=USER)
    assert msg.type == "message" and msg.role == "assistant" and msg.model == "claude-sim"
    assert msg.content[0].type == "text" and msg.content[0].text == direct.content[0].text
    assert msg.stop_reason == "end_turn"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (5, 16)
    assert uow.db.unsent()[0].subject == "lumina.acme.chat.completed"


async def test_stream_through_the_sdk_helper_accumulates_text_and_usage(backends, sim: str) -> None:
    root, _ = await backends(sim, {"x-sim-cached-tokens": "2"})
    async with sdk(root) as client:
        async with client.messages.stream(model="claude-sim", max_tokens=100, messages=USER) as stream:
            pieces = [text async for text in stream.text_stream]
            final = await stream.get_final_message()
    assert len(pieces) == 8 and final.content[0].text == "".join(pieces)
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 16 and final.usage.cache_read_input_tokens == 2
    assert final.usage.input_tokens == 1  # 3 prompt tokens, 2 of them read from the cache


async def test_tool_use_stream_and_second_turn(backends, sim: str) -> None:
    root, _ = await backends(sim, {"x-sim-tool-call": "lookup"})
    async with sdk(root) as client:
        async with client.messages.stream(model="claude-sim", max_tokens=100, messages=USER, tools=TOOLS) as stream:
            final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    call = final.content[0]
    assert call.type == "tool_use" and call.name == "lookup" and isinstance(call.input["query"], str)

    plain_root, _ = await backends(sim)
    turn = [*USER, {"role": "assistant", "content": [call.model_dump(include={"type", "id", "name", "input"})]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "cedar"}]}]
    async with sdk(plain_root) as client:
        msg = await client.messages.create(model="claude-sim", max_tokens=100, messages=turn, tools=TOOLS)
    assert msg.stop_reason == "end_turn" and msg.content[0].text


async def test_thinking_is_streamed_as_a_thinking_block(backends, sim: str) -> None:
    provider = AnthropicProvider("claude", api_key="k", base_url=sim, thinking_budget_tokens=64)
    seed = ([ProviderSpec("claude", ProviderKind.ANTHROPIC)], [ModelRoute("claude-sim", "claude", "sim-small", is_default=True)])
    backend = build_backend(load_settings({}), uow=FakeUnitOfWorkFactory(), providers=[provider], seed=seed,
                            authenticator=authenticator())
    await backend.start(grpc_port=0, http_port=0)
    try:
        async with sdk(f"http://127.0.0.1:{backend.http_port}") as client:
            async with client.messages.stream(model="claude-sim", max_tokens=100, messages=USER) as stream:
                final = await stream.get_final_message()
    finally:
        await backend.stop()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert len(final.content[0].thinking.split()) == 8


@pytest.mark.parametrize(
    ("fault", "status", "etype", "sdk_error"),
    [
        ("429", 429, "rate_limit_error", anthropic.RateLimitError),
        ("529", 503, "overloaded_error", anthropic.InternalServerError),
        ("context_length", 400, "invalid_request_error", anthropic.BadRequestError),
        ("401", 502, "api_error", anthropic.InternalServerError),
    ],
)
async def test_errors_are_anthropic_error_bodies(backends, sim: str, fault, status, etype, sdk_error) -> None:
    root, _ = await backends(sim, {"x-sim-fault": fault})
    async with sdk(root) as client:
        with pytest.raises(sdk_error) as info:
            await client.messages.create(model="claude-sim", max_tokens=10, messages=USER)
    assert info.value.status_code == status
    assert info.value.body["type"] == "error" and info.value.body["error"]["type"] == etype
    if fault == "429":
        assert info.value.response.headers["retry-after"] == "2"
    if fault == "context_length":
        assert "prompt is too long" in info.value.body["error"]["message"]


async def test_bad_requests_are_anthropic_errors_too(backends, sim: str) -> None:
    root, _ = await backends(sim)
    async with httpx.AsyncClient(base_url=root, headers={"x-api-key": KEY}) as http:
        r = await http.post("/v1/messages", json={"model": "claude-sim", "messages": USER})  # no max_tokens
        assert r.status_code == 400 and r.json()["type"] == "error"
        assert r.json()["error"]["type"] == "invalid_request_error" and "max_tokens" in r.json()["error"]["message"]
        r = await http.post("/v1/messages", json={"model": "nope", "max_tokens": 5, "messages": USER})
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


async def test_raw_sse_event_names_in_order(backends, sim: str) -> None:
    root, _ = await backends(sim, {"x-sim-chunks": "2"})
    body = {"model": "claude-sim", "max_tokens": 50, "stream": True, "messages": USER}
    async with httpx.AsyncClient(base_url=root, headers={"x-api-key": KEY}) as http:
        async with http.stream("POST", "/v1/messages", json=body) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            raw = (await r.aread()).decode()
    events = [block.splitlines() for block in raw.strip().split("\n\n")]
    names = [lines[0].removeprefix("event: ") for lines in events]
    assert names == ["message_start", "ping", "content_block_start", "content_block_delta", "content_block_delta",
                     "content_block_stop", "message_delta", "message_stop"]
    payloads = [json.loads(lines[1].removeprefix("data: ")) for lines in events]
    assert all(p["type"] == n for p, n in zip(payloads, names, strict=True))
    assert payloads[3]["delta"]["type"] == "text_delta"
    assert payloads[6]["delta"]["stop_reason"] == "end_turn" and payloads[6]["usage"]["output_tokens"] == 16
    assert payloads[6]["lumina"]["provider"] == "claude"


async def test_midstream_failure_is_an_error_event(backends, sim: str) -> None:
    root, _ = await backends(sim, {"x-sim-fault": "midstream"})
    async with sdk(root) as client:
        with pytest.raises(anthropic.APIStatusError) as info:
            async with client.messages.stream(model="claude-sim", max_tokens=50, messages=USER) as stream:
                async for _ in stream:
                    pass
    assert info.value.body["error"]["type"] == "api_error"
