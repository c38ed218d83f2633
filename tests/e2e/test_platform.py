"""One real request through every layer: `lumina up` as a subprocess, a gRPC stream, the REST
edge with the unmodified OpenAI SDK, usage in Postgres, the event on JetStream, and the console in
real Chromium."""

from __future__ import annotations

import asyncio

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import openai
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from lumina.v1 import chat_pb2 as pb
from lumina.v1 import chat_pb2_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from adapters.events_codec import decode_event
from domain.events import ChatCompleted
from tests.e2e.platform import Platform, lumina_up, platform_env

pytestmark = pytest.mark.e2e

PROMPT = "Tell me about the walking skeleton"


@pytest.fixture(scope="module")
def platform(database_url: str, platform_nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    tenant = f"e2e{uuid.uuid4().hex[:8]}"
    env = platform_env(
        tmp_path_factory.mktemp("lumina-e2e"),
        LUMINA_DATABASE_URL=database_url, LUMINA_NATS_URL=platform_nats_url, LUMINA_TENANT_ID=tenant,
        LUMINA_OUTBOX_POLL_INTERVAL="0.1",
    )
    with lumina_up(env) as running:
        yield running
    assert running.process.returncode == 0, "\n".join(running.lines)
    assert "lumina stopped" in running.lines[-1]


def request(content: str = PROMPT, **params: object) -> pb.StreamCompleteRequest:
    return pb.StreamCompleteRequest(
        parameters=pb.ChatParameters(messages=[pb.ChatMessage(role=pb.ROLE_USER, content=content)], **params)
    )


async def stream(platform: Platform, req: pb.StreamCompleteRequest, metadata=()) -> tuple[list, list[float]]:  # type: ignore[no-untyped-def]
    chunks, arrivals = [], []
    async with grpc.aio.insecure_channel(platform.grpc_target) as channel:
        async for chunk in chat_pb2_grpc.ChatServiceStub(channel).StreamComplete(req, metadata=(*platform.metadata, *metadata)):
            chunks.append(chunk)
            arrivals.append(time.perf_counter())
    return chunks, arrivals


def sim_answer(platform: Platform, content: str = PROMPT) -> str:
    client = openai.OpenAI(base_url=platform.sim_url, api_key="direct")
    reply = client.chat.completions.create(model="sim-small", messages=[{"role": "user", "content": content}])
    return reply.choices[0].message.content or ""


async def test_the_bootstrap_key_is_stored_at_first_start_and_calls_without_it_are_refused(platform: Platform) -> None:
    out = "\n".join(platform.lines)
    assert "admin:       admin@localhost" in out and "LUMINA_BOOTSTRAP_API_KEY is its API key" in out
    assert platform.api_key not in out and platform.api_key not in platform.log("backend")
    with httpx.Client(base_url=platform.http_url) as http:
        refused = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": PROMPT}]})
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
        assert refused.json()["detail"] == "invalid credentials"
        assert http.get("/v1/models", headers=platform.headers).status_code == 200
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async with grpc.aio.insecure_channel(platform.grpc_target) as channel:
            await chat_pb2_grpc.ChatServiceStub(channel).Complete(pb.CompleteRequest(parameters=request().parameters))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_startup_prints_every_url_and_ready(platform: Platform) -> None:
    out = "\n".join(platform.lines)
    for port in (platform.grpc_port, platform.http_port, platform.web_port, platform.sim_port):
        assert f":{port}" in out
    assert "simulated" in out
    assert platform.lines[-1].startswith("lumina is ready")


async def test_grpc_stream_returns_the_simulated_answer_incrementally_and_records_everything(
    platform: Platform, database_url: str, platform_nats_url: str
) -> None:
    import nats

    nc = await nats.connect(platform_nats_url)
    js = nc.jetstream()
    subject = f"lumina.{platform.tenant}.chat.completed"
    sub = await js.subscribe(subject, ordered_consumer=True)
    try:
        req = request()
        req.parameters.conversation_id = "conv-1"
        chunks, arrivals = await stream(platform, req, metadata=(("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),))
        kinds = [c.WhichOneof("chunk") for c in chunks]
        assert kinds.count("text_delta") >= 2
        assert kinds[-2:] == ["usage", "finish"]
        text_ = "".join(c.text_delta.text for c in chunks if c.HasField("text_delta"))
        assert text_ == sim_answer(platform)  # deterministic simulator, same prompt
        assert arrivals[-1] - arrivals[0] > 0  # chunks arrived over time, not in one batch
        finish = chunks[-1].finish
        usage = chunks[-2].usage
        assert finish.reason == pb.FINISH_REASON_STOP
        assert (finish.metadata.provider, finish.metadata.model) == ("simulator", "sim-small")
        assert finish.metadata.provider_label == "simulated"
        assert usage.output_tokens > 0 and usage.cost_micros == finish.metadata.cost_micros > 0

        engine = create_async_engine(database_url)
        async with engine.connect() as conn:
            row = (await conn.execute(
                text("SELECT provider, model, input_tokens, output_tokens, cost_micros, conversation_id, user_id, api_key_id"
                 " FROM usage_records WHERE request_id = :id"),
                {"id": finish.metadata.request_id},
            )).one()
            key = (await conn.execute(text("SELECT id, user_id FROM api_keys WHERE prefix = :p"),
                                      {"p": platform.api_key.split("_")[1]})).one()
        await engine.dispose()
        assert tuple(row) == ("simulator", "sim-small", usage.input_tokens, usage.output_tokens, usage.cost_micros, "conv-1",
                              key.user_id, key.id)  # the bootstrap key's admin called

        deadline = time.monotonic() + 15
        event = None
        while time.monotonic() < deadline and event is None:
            msg = await sub.next_msg(timeout=deadline - time.monotonic())
            candidate = decode_event(msg.data)
            if isinstance(candidate, ChatCompleted) and candidate.request_id == finish.metadata.request_id:
                event, headers = candidate, msg.headers or {}
        assert event is not None, "ChatCompleted did not reach JetStream"
        assert event.cost_micros == usage.cost_micros and event.tenant_id == platform.tenant
        assert headers.get("Nats-Msg-Id") == event.event_id
        assert "0af7651916cd43dd8448eb211c80319c" in headers.get("traceparent", "")  # one trace: request -> relay
    finally:
        await nc.close()
    assert "0af7651916cd43dd8448eb211c80319c" in platform.log("backend")  # logs carry the trace id
    # the worker's spend consumer logs under the request's trace; other consumers (memory) may log
    # under it first, so wait for that line itself (the worker can lag on a loaded machine)
    def spend_lines() -> list[str]:
        return [
            ln for ln in platform.log("worker").splitlines()
            if "0af7651916cd43dd8448eb211c80319c" in ln and json.loads(ln).get("event") == "spend recorded"
        ]

    deadline = time.monotonic() + 30
    while not spend_lines() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert spend_lines(), "consumer did not join the trace"


async def test_complete_returns_the_same_answer_as_the_stream(platform: Platform) -> None:
    async with grpc.aio.insecure_channel(platform.grpc_target) as channel:
        reply = await chat_pb2_grpc.ChatServiceStub(channel).Complete(
            # memory off: the turns before this one would be recalled into the prompt
            pb.CompleteRequest(parameters=request(memory=False).parameters), metadata=platform.metadata
        )
    assert reply.text == sim_answer(platform)
    assert reply.metadata.provider == "simulator" and reply.usage.output_tokens > 0


async def test_typed_python_client_sdk_streams(platform: Platform) -> None:
    from grpclib.client import Channel
    from lumina_client.lumina.v1 import ChatMessage, ChatParameters, ChatServiceStub, Role, StreamCompleteRequest

    channel = Channel("127.0.0.1", platform.grpc_port)
    try:
        req = StreamCompleteRequest(  # memory off: earlier turns with this prompt would be recalled
            parameters=ChatParameters(messages=[ChatMessage(role=Role.USER, content=PROMPT)], memory=False)
        )
        stream = ChatServiceStub(channel).stream_complete(req, metadata=dict(platform.metadata))
        texts = [c.text_delta.text async for c in stream if c.text_delta]
    finally:
        channel.close()
    assert "".join(texts) == sim_answer(platform)


async def test_invalid_grpc_requests_get_invalid_argument_with_field_details(platform: Platform) -> None:
    async with grpc.aio.insecure_channel(platform.grpc_target) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Complete(pb.CompleteRequest(parameters=pb.ChatParameters(temperature=9)), metadata=platform.metadata)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(info.value)
        bad = error_details_pb2.BadRequest()
        assert status.details[0].Unpack(bad)
        fields = {v.field for v in bad.field_violations}
        assert {"parameters.messages", "parameters.temperature"} <= fields

        raw = channel.unary_unary("/lumina.v1.ChatService/Complete")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw(b"\xff\xff\xff garbage", metadata=platform.metadata)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed" in (info.value.details() or "")

        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in stub.StreamComplete(request(model="no-such-model"), metadata=platform.metadata):
                pass
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_openai_sdk_against_lumina_stream_and_not(platform: Platform) -> None:
    client = openai.OpenAI(base_url=f"{platform.http_url}/v1", api_key=platform.api_key)
    expected = sim_answer(platform)
    off = {"x-lumina-memory": "off"}  # earlier turns with this prompt would be recalled into it
    reply = client.chat.completions.create(
        model="sim-small", messages=[{"role": "user", "content": PROMPT}], extra_headers=off
    )
    assert reply.choices[0].message.content == expected
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    parts = []
    usage = None
    for chunk in client.chat.completions.create(
        model="sim-small", messages=[{"role": "user", "content": PROMPT}], stream=True, stream_options={"include_usage": True},
        extra_body={"lumina": {"memory": False}},
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    assert "".join(parts) == expected
    assert usage is not None and usage.completion_tokens == reply.usage.completion_tokens


def test_rest_errors_are_problem_json_and_health_and_metrics_answer(platform: Platform) -> None:
    with httpx.Client(base_url=platform.http_url, headers=platform.headers) as http:
        bad = http.post("/v1/chat/completions", content=b"{not json")
        assert bad.status_code == 400 and bad.headers["content-type"].startswith("application/problem+json")
        assert bad.json()["status"] == 400
        invalid = http.post("/v1/chat/completions", json={"messages": [], "model": "sim-small"})
        assert invalid.status_code == 422
        assert invalid.headers["content-type"].startswith("application/problem+json")
        assert invalid.json()["errors"][0]["field"] == "messages"
        wrong_type = http.post("/v1/chat/completions", json={"messages": "hello"})
        assert wrong_type.status_code == 400 and "messages" in json.dumps(wrong_type.json())
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["database"] == "ok"
        metrics = http.get("/metrics").text
    assert 'lumina_tokens_total{direction="output",model="sim-small",provider="simulator"}' in metrics
    assert "lumina_request_duration_seconds_bucket" in metrics
    assert 'lumina_requests_total{code="OK",edge="grpc",method="StreamComplete"}' in metrics


async def test_console_streams_the_same_answer_in_chromium(platform: Platform) -> None:
    from playwright.async_api import async_playwright

    from tests.e2e.browser import chat_in_console, launch_chromium, screenshot, sign_in, sign_out, sign_up

    async with async_playwright() as pw:
        browser = await launch_chromium(pw)
        try:
            context = await browser.new_context(viewport={"width": 1100, "height": 760})
            page = await context.new_page()
            # an unauthenticated visit goes to the login page; a new organisation signs up there
            await page.goto(platform.console_url + "/chat")
            assert page.url.startswith(platform.console_url + "/login?next=")
            password = "violet-harbour-lantern-42"
            tenant = await sign_up(page, platform.console_url, organisation="E2E Org", email="e2e@example.com",
                                   password=password, display_name="E2E")
            await sign_out(page)
            await sign_in(page, platform.console_url, tenant=tenant, email="e2e@example.com", password=password)
            answer = await chat_in_console(page, platform.console_url, PROMPT)
            meta = await page.locator("article.msg.assistant .meta").last.inner_text()
            await screenshot(page, "e2e-console-chat")
        finally:
            await browser.close()
    assert answer.strip() == sim_answer(platform).strip()
    assert "simulator" in meta and "sim-small" in meta and "simulated" in meta.lower()
    assert Path("test-artifacts/e2e-console-chat.png").exists()



