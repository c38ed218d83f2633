"""The gRPC and REST edges over a real in-process server, with the ports swapped for fakes
through the composition root (`build_backend` overrides): chunk encoding, the error table,
rich status details, problem+json."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from lumina.v1 import chat_pb2 as pb
from lumina.v1 import chat_pb2_grpc

from api.bootstrap import Backend, build_backend
from api.settings import load_settings
from domain.chat import Finish, FinishReason, TextDelta, ToolCallDelta, Usage, UsageChunk
from domain.cost import Price
from domain.errors import RateLimited, UpstreamUnavailable
from domain.registry import ModelRoute, ProviderKind, ProviderSpec
from tests.unit.auth_fakes import METADATA, authenticator, bearer
from tests.unit.chat_fakes import FixedClock, ScriptedProvider, SequentialIds
from tests.unit.fakes import FakeUnitOfWorkFactory

def seed() -> tuple[list[ProviderSpec], list[ModelRoute]]:
    # built per test: entities made before SQLAlchemy's imperative mapping starts (another test
    # may start it) would lack its instrumentation
    return (
        [ProviderSpec("scripted", ProviderKind.OPENAI_COMPATIBLE, label="test")],
        [ModelRoute("m", "scripted", "m-upstream", Price(1, 2), is_default=True)],
    )


async def started(script: list) -> tuple[Backend, ScriptedProvider, FakeUnitOfWorkFactory]:
    provider = ScriptedProvider("scripted", script)
    uow = FakeUnitOfWorkFactory()
    backend = build_backend(
        load_settings({}, tenant_id="acme"), uow=uow, providers=[provider], seed=seed(),
        clock=FixedClock(step=0.01), ids=SequentialIds(), authenticator=authenticator("acme"),
    )
    await backend.start(grpc_port=0, http_port=0)
    return backend, provider, uow


def req(**params: object) -> pb.StreamCompleteRequest:
    params.setdefault("messages", [pb.ChatMessage(role=pb.ROLE_USER, content="hi")])
    return pb.StreamCompleteRequest(parameters=pb.ChatParameters(**params))


async def call_stream(backend: Backend, request: pb.StreamCompleteRequest) -> list[pb.StreamCompleteResponse]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{backend.grpc_port}") as channel:
        return [c async for c in chat_pb2_grpc.ChatServiceStub(channel).StreamComplete(request, metadata=METADATA)]


@pytest.fixture
async def cleanup() -> AsyncIterator[list[Backend]]:
    backends: list[Backend] = []
    yield backends
    for b in backends:
        await b.stop()


async def test_every_chunk_kind_is_encoded_in_order(cleanup: list[Backend]) -> None:
    backend, provider, uow = await started([
        TextDelta("a"),
        ToolCallDelta(index=0, id="c1", name="f", arguments_fragment="{}"),
        UsageChunk(Usage(input_tokens=1_000_000, output_tokens=1_000_000)),
        Finish(FinishReason.TOOL_CALLS),
    ])
    cleanup.append(backend)
    chunks = await call_stream(backend, req())
    assert [c.WhichOneof("chunk") for c in chunks] == ["text_delta", "tool_call_delta", "usage", "finish"]
    assert chunks[1].tool_call_delta.name == "f"
    assert chunks[2].usage.cost_micros == 3_000_000  # $1 + $2 per 1M tokens
    assert chunks[3].finish.reason == pb.FINISH_REASON_TOOL_CALLS
    assert chunks[3].finish.metadata.provider_label == "test"
    assert provider.requests[0][0] == "m-upstream"
    assert uow.db.unsent()[0].subject == "lumina.acme.chat.completed"


async def test_rate_limit_before_first_byte_is_resource_exhausted_with_retry_info(cleanup: list[Backend]) -> None:
    backend, _, _ = await started([RateLimited("slow down", provider="scripted", retry_after=2.5)])
    cleanup.append(backend)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call_stream(backend, req())
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(info.value)
    kinds = {d.type_url.rsplit("/", 1)[-1]: d for d in status.details}
    retry = error_details_pb2.RetryInfo()
    kinds["google.rpc.RetryInfo"].Unpack(retry)
    assert retry.retry_delay.ToMilliseconds() == 2500
    err = error_details_pb2.ErrorInfo()
    kinds["google.rpc.ErrorInfo"].Unpack(err)
    assert err.reason == "RATE_LIMITED"

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{backend.http_port}", headers=bearer()) as http:
        r = await http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 429 and r.headers["retry-after"] == "3"
    assert r.headers["content-type"].startswith("application/problem+json") and r.json()["code"] == "rate_limited"


async def test_failure_after_content_is_a_final_error_chunk(cleanup: list[Backend]) -> None:
    backend, _, uow = await started([TextDelta("partial"), UpstreamUnavailable("reset")])
    cleanup.append(backend)
    chunks = await call_stream(backend, req())
    assert [c.WhichOneof("chunk") for c in chunks] == ["text_delta", "error"]
    assert chunks[1].error.code == "upstream_unavailable" and chunks[1].error.retryable
    await backend.stream_chat.drain()  # what was streamed is recorded, marked as cut off
    assert [(r.finish_reason, r.output_tokens > 0) for r in uow.db.usage.values()] == [("interrupted", True)]


async def test_unexpected_errors_are_a_generic_internal_status_without_internals(cleanup: list[Backend]) -> None:
    backend, _, _ = await started([RuntimeError("secret internals sk-abcdefghijklmnop")])
    cleanup.append(backend)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call_stream(backend, req())
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (info.value.details() or "") and "sk-" not in (info.value.details() or "")


async def test_unknown_role_is_invalid_argument_naming_the_field(cleanup: list[Backend]) -> None:
    backend, _, _ = await started([Finish(FinishReason.STOP)])
    cleanup.append(backend)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call_stream(backend, req(messages=[pb.ChatMessage(role=pb.ROLE_UNSPECIFIED, content="x")]))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = error_details_pb2.BadRequest()
    rpc_status.from_call(info.value).details[0].Unpack(bad)
    assert bad.field_violations[0].field == "parameters.messages[0].role"


async def test_busy_ports_fail_with_one_line_naming_them(cleanup: list[Backend]) -> None:
    backend, _, _ = await started([Finish(FinishReason.STOP)])
    cleanup.append(backend)
    other = build_backend(load_settings({}), uow=FakeUnitOfWorkFactory(), providers=[], seed=seed(), authenticator=authenticator())
    with pytest.raises(OSError, match=rf"HTTP port {backend.http_port} on 127.0.0.1 is busy"):
        await other.start(grpc_port=0, http_port=backend.http_port)
    with pytest.raises(OSError, match=rf"gRPC port {backend.grpc_port} on 127.0.0.1 is busy"):
        await other.start(grpc_port=backend.grpc_port, http_port=0)


async def test_usage_is_counted_once_per_request_whatever_the_edge(cleanup: list[Backend]) -> None:
    script = [TextDelta("a"), UsageChunk(Usage(input_tokens=7, output_tokens=3)), Finish(FinishReason.STOP)]
    backend, _, _ = await started(script)
    cleanup.append(backend)
    await call_stream(backend, req())  # gRPC
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{backend.http_port}", headers=bearer()) as http:  # OpenAI REST edge
        r = await http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200
    text = backend.metrics.render().decode()
    assert 'lumina_tokens_total{direction="output",model="m",provider="scripted"} 6.0' in text
    assert 'lumina_tokens_total{direction="input",model="m",provider="scripted"} 14.0' in text



def test_rest_request_metrics_are_labelled_by_route_template_not_by_path() -> None:
    """Paths carry ids: labelling by path would grow the metrics (and their label cache) without bound."""
    from litestar import Litestar, get
    from litestar.testing import TestClient

    from adapters.telemetry.metrics import Metrics
    from api.rest.app import _telemetry_middleware

    @get("/items/{item_id:str}", sync_to_thread=False)
    def item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    metrics = Metrics()
    with TestClient(Litestar([item], middleware=[_telemetry_middleware(metrics)])) as client:
        for item_id in ("a1", "b2", "c3"):
            assert client.get(f"/items/{item_id}").json() == {"id": item_id}
    text = metrics.render().decode()
    assert 'lumina_requests_total{code="200",edge="rest",method="/items/{item_id}"} 3.0' in text
    assert "/items/a1" not in text


async def test_chat_completions_bodies_that_are_not_requests_are_client_errors(cleanup: list[Backend]) -> None:
    """The raw ASGI chat handler (api/rest/raw_asgi.py) gives the errors Litestar's body
    parameters give: 400 naming the field, 413 over the size limit (announced or streamed),
    405 with Allow; a string number is taken as Litestar converted it."""
    backend, provider, _ = await started([TextDelta("hi"), Finish(FinishReason.STOP)])
    cleanup.append(backend)
    limit = 10_000_000  # Litestar's default request_max_body_size

    async def chunked() -> AsyncIterator[bytes]:
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(11):
            yield b"a" * 1_000_000
        yield b'"}]}'

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{backend.http_port}", headers=bearer()) as http:
        async def post(**kw: object) -> httpx.Response:
            return await http.post("/v1/chat/completions", **kw)  # type: ignore[arg-type]

        r = await post(content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["detail"].startswith("JSON is malformed")
        assert r.headers["content-type"].startswith("application/problem+json")
        r = await post(content=b"")
        assert r.status_code == 400 and r.json()["errors"] == [{"field": "data", "message": "a JSON object is required"}]
        r = await post(json={"messages": [{"role": "bot", "content": "hi"}]})
        assert r.status_code == 400 and r.json()["code"] == "invalid_request"
        assert r.json()["errors"] == [{"field": "messages[0].role", "message": "Invalid enum value 'bot'"}]
        r = await post(json={"model": "m"})
        assert r.json()["errors"][0]["message"] == "Object missing required field `messages`"
        r = await post(json={"messages": [{"role": "user", "content": "hi"}], "temperature": 5})
        assert (r.status_code, r.json()["errors"][0]["field"]) == (400, "temperature")
        assert (await post(content=b"x" * (limit + 1))).status_code == 413  # announced: refused unread
        assert (await post(content=chunked())).status_code == 413  # streamed: refused once over
        r = await http.get("/v1/chat/completions")
        assert (r.status_code, r.headers["allow"]) == (405, "POST")
        assert not provider.requests  # none of them reached the provider
        r = await post(json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": "7"})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "hi"
        assert r.headers["x-lumina-route"] == "scripted/m" and int(r.headers["content-length"]) == len(r.content)
    assert provider.requests[0][1].max_tokens == 7
