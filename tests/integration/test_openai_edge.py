"""The OpenAI-compatible REST edge driven by the UNMODIFIED ``openai`` SDK (and one raw SSE read
with httpx, like curl), over a real in-process backend built by the composition root, whose
provider is the real ``OpenAIProvider`` talking to the real provider simulator."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator, Iterator

import httpx
import openai
import pytest

from adapters.providers import OpenAIProvider
from api.bootstrap import Backend, build_backend
from api.settings import load_settings
from domain.cost import Price
from domain.registry import Modality, ModelCapabilities, ModelRoute, ProviderKind, ProviderSpec
from tests.unit.auth_fakes import KEY, authenticator, bearer
from tests.unit.fakes import FakeUnitOfWorkFactory
from tools.provider_sim.testing import running_simulator

pytestmark = pytest.mark.timeout(60)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    },
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
]
HI = [{"role": "user", "content": "hello there"}]


# what the simulator's models can do: routing only picks a model declaring what a request needs
CAPS = ModelCapabilities(tools=True, parallel_tool_calls=True, json_schema=True, input_modalities=(Modality.TEXT, Modality.IMAGE))


def seed() -> tuple[list[ProviderSpec], list[ModelRoute]]:
    return (
        [
            ProviderSpec("sim", ProviderKind.OPENAI_COMPATIBLE, label="simulated"),
            ProviderSpec("sim-tools", ProviderKind.OPENAI_COMPATIBLE, label="simulated"),
            ProviderSpec("sim-limited", ProviderKind.OPENAI_COMPATIBLE, label="simulated"),
        ],
        [
            ModelRoute("m", "sim", "sim-small", Price(1, 2), is_default=True, capabilities=CAPS),
            ModelRoute("reasoner", "sim", "deepseek-reasoner", Price(1, 2)),
            ModelRoute("embed", "sim", "sim-embed", Price(0.02, 0)),
            ModelRoute("m-tools", "sim-tools", "sim-small", Price(1, 2), capabilities=CAPS),
            ModelRoute("m-limited", "sim-limited", "sim-small", Price(1, 2), capabilities=CAPS),
        ],
    )


class Edge:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.base_url = f"http://127.0.0.1:{backend.http_port}/v1"
        self.full_url = self.base_url

    def client(self, base_url: str | None = None) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(api_key=KEY, base_url=base_url or self.base_url, max_retries=0, timeout=20)


@pytest.fixture(scope="module")
def sim() -> Iterator[str]:
    with running_simulator() as base_url:
        yield base_url


@pytest.fixture
async def edge(sim: str) -> AsyncIterator[Edge]:
    providers = [
        OpenAIProvider("sim", api_key="k", base_url=sim, timeout=10),
        OpenAIProvider("sim-tools", api_key="k", base_url=sim, timeout=10,
                       default_headers={"x-sim-tool-call": "get_weather,get_time", "x-sim-chunks": "3"}),
        OpenAIProvider("sim-limited", api_key="k", base_url=sim, timeout=10, default_headers={"x-sim-fault": "429"}),
    ]
    backend = build_backend(
        load_settings({}, tenant_id="acme"), uow=FakeUnitOfWorkFactory(), providers=providers, seed=seed(),
        authenticator=authenticator("acme"),
    )
    await backend.start(grpc_port=0, http_port=0)
    try:
        yield Edge(backend)
    finally:
        await backend.stop()


async def test_non_stream_and_stream_give_the_same_text(edge: Edge) -> None:
    async with edge.client() as client:
        whole = await client.chat.completions.create(model="m", messages=HI, temperature=0.3, top_p=0.9, seed=1, stop=["zzz"])
        stream = await client.chat.completions.create(
            model="m", messages=HI, stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
    text = whole.choices[0].message.content
    assert text and whole.choices[0].finish_reason == "stop"
    assert whole.usage.completion_tokens == 16 and whole.usage.prompt_tokens == 3
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 19


async def test_tool_calls_then_the_second_turn(edge: Edge) -> None:
    async with edge.client() as client:
        first = await client.chat.completions.create(model="m-tools", messages=HI, tools=TOOLS, tool_choice="auto")
        message = first.choices[0].message
        assert first.choices[0].finish_reason == "tool_calls"
        assert [c.function.name for c in message.tool_calls] == ["get_weather", "get_time"]  # parallel
        assert isinstance(json.loads(message.tool_calls[0].function.arguments)["city"], str)
        follow = [
            *HI,
            message.model_dump(exclude_none=True),
            *({"role": "tool", "tool_call_id": c.id, "content": "sunny"} for c in message.tool_calls),
        ]
        second = await client.chat.completions.create(model="m-tools", messages=follow, tools=TOOLS)
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content and not second.choices[0].message.tool_calls


async def test_streamed_tool_call_deltas(edge: Edge) -> None:
    async with edge.client() as client:
        stream = await client.chat.completions.create(
            model="m-tools", messages=HI, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}},
            stream=True,
        )
        chunks = [c async for c in stream]
    deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]
    assert deltas[0].id and deltas[0].function.name == "get_time" and deltas[0].index == 0
    assert {d.index for d in deltas} == {0}  # the named tool only
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


async def test_response_format_json_schema_and_json_object(edge: Edge) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}},
              "required": ["n", "tags"], "additionalProperties": False}
    async with edge.client() as client:
        strict = await client.chat.completions.create(
            model="m", messages=HI,
            response_format={"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": True}},
        )
        loose = await client.chat.completions.create(
            model="m", messages=HI, response_format={"type": "json_object"}, stream=True
        )
        loose_text = "".join([c.choices[0].delta.content or "" async for c in loose if c.choices])
    value = json.loads(strict.choices[0].message.content)
    assert isinstance(value["n"], int) and isinstance(value["tags"], list)
    assert isinstance(json.loads(loose_text), dict)


async def test_images_are_passed_through(edge: Edge) -> None:
    pixel = base64.b64encode(bytes(24)).decode()
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{pixel}"}},
        {"type": "image_url", "image_url": {"url": "https://example.test/a.jpg", "detail": "low"}},
    ]
    async with edge.client() as client:
        answer = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": content}])
        with pytest.raises(openai.BadRequestError) as info:  # the upstream's 400 for a bad image URL
            await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "nope"}}]}]
            )
    assert answer.choices[0].message.content
    assert "image_url" in str(info.value)


async def test_reasoning_content_deltas(edge: Edge) -> None:
    async with edge.client() as client:
        stream = await client.chat.completions.create(model="reasoner", messages=HI, stream=True)
        chunks = [c async for c in stream]
        whole = await client.chat.completions.create(model="reasoner", messages=HI)
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content", "") for c in chunks if c.choices)
    assert len(reasoning.split()) == 8
    assert (whole.choices[0].message.model_extra or {}).get("reasoning_content") == reasoning
    assert whole.usage.completion_tokens_details.reasoning_tokens == 8


async def test_models_and_embeddings(edge: Edge) -> None:
    async with edge.client(edge.full_url) as client:
        models = [m.id async for m in client.models.list()]
        result = await client.embeddings.create(model="embed", input=["one", "two", "one"])
        encoded = await client.embeddings.create(model="embed", input="one", encoding_format="base64")
    assert models == ["embed", "m", "m-limited", "m-tools", "reasoner"]
    vectors = [d.embedding for d in result.data]
    assert len(vectors) == 3 and len(vectors[0]) == 64 and vectors[0] == vectors[2] != vectors[1]
    assert result.usage.prompt_tokens == 3
    raw = base64.b64decode(encoded.data[0].embedding)  # asked for base64: the SDK hands it over as is
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(vectors[0], abs=1e-6)


async def test_errors_are_sdk_exceptions_with_the_message(edge: Edge) -> None:
    async with edge.client() as client:
        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(model="no-such-model", messages=HI)
        with pytest.raises(openai.UnprocessableEntityError) as invalid:
            await client.chat.completions.create(model="m", messages=HI, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}})
        with pytest.raises(openai.RateLimitError) as limited:
            await client.chat.completions.create(model="m-limited", messages=HI)
    assert "no-such-model" in str(missing.value)
    assert "tool_choice" in str(invalid.value)
    assert limited.value.status_code == 429 and limited.value.response.headers["retry-after"] == "2"


async def test_raw_sse_like_curl(edge: Edge) -> None:
    body = {"model": "m-tools", "messages": HI, "tools": TOOLS, "stream": True}
    async with httpx.AsyncClient(timeout=10, headers=bearer()) as http:
        async with http.stream("POST", f"{edge.base_url}/chat/completions", json=body) as resp:
            assert resp.status_code == 200, await resp.aread()
            assert resp.headers["content-type"].startswith("text/event-stream"), (resp.headers, await resp.aread())
            raw = (await resp.aread()).decode()
    blocks = raw.split("\n\n")
    assert blocks[-1] == "" and all(b.startswith("data: ") for b in blocks[:-1])
    payloads = [b.removeprefix("data: ") for b in blocks[:-1]]
    assert payloads[-1] == "[DONE]"
    events = [json.loads(p) for p in payloads[:-1]]
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    calls = [tc for e in events for tc in e["choices"][0]["delta"].get("tool_calls", [])]
    assert {c["index"] for c in calls} == {0, 1}
    assert [c["function"]["name"] for c in calls if "name" in c["function"]] == ["get_weather", "get_time"]
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert events[-1]["id"].startswith("chatcmpl-") and events[-1]["id"] != "chatcmpl-pending"
