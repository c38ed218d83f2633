"""The web console against a scripted stand-in for the backend's ChatService and the AuthService
calls the chat needs (a real grpc.aio server), served by uvicorn, driven by httpx and by real
Chromium. Every test signs in first; test_auth.py covers signing in against the real backend."""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc
import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Page, async_playwright

from lumina.v1 import auth_pb2, auth_pb2_grpc, chat_pb2, chat_pb2_grpc
from tests.e2e.browser import (
    ConsoleError,
    chat_in_console,
    launch_chromium,
    screenshot,
    sign_in,
)
from web.server import ServeError, running_console, serve

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

PROVIDER = "simulated-openai"
MODEL = "sim-gpt-4o-mini"
DELTAS = ("Hello", ", ", "world", "!\nSecond line:  two spaces.")


@dataclass(frozen=True)
class Abort:
    code: grpc.StatusCode
    message: str


def delta(text: str) -> chat_pb2.StreamCompleteResponse:
    return chat_pb2.StreamCompleteResponse(text_delta=chat_pb2.TextDelta(text=text))


def usage(inp: int, out: int, cost_micros: int) -> chat_pb2.StreamCompleteResponse:
    return chat_pb2.StreamCompleteResponse(
        usage=chat_pb2.Usage(input_tokens=inp, output_tokens=out, cost_micros=cost_micros)
    )


def finish(provider: str = PROVIDER, model: str = MODEL) -> chat_pb2.StreamCompleteResponse:
    return chat_pb2.StreamCompleteResponse(
        finish=chat_pb2.Finish(
            reason=chat_pb2.FINISH_REASON_STOP,
            metadata=chat_pb2.ResponseMetadata(request_id="req-1", provider=provider, model=model, latency_ms=42),
        )
    )


def thought(text: str) -> chat_pb2.StreamCompleteResponse:
    return chat_pb2.StreamCompleteResponse(reasoning_delta=chat_pb2.ReasoningDelta(text=text))


THOUGHTS = ("The user greets; ", "answer <briefly>.")


def reasoned_answer(*texts: str) -> list[object]:
    return [*(thought(t) for t in THOUGHTS), *answer(*texts)]


def answer(*texts: str) -> list[object]:
    return [*(delta(t) for t in texts), usage(12, 4, 150), finish()]


@dataclass
class ScriptedChat(chat_pb2_grpc.ChatServiceServicer):
    """Streams ``script``: responses are sent, ``asyncio.Event``s are waited for, ``Abort`` aborts."""

    script: list[object] = field(default_factory=lambda: answer(*DELTAS))
    requests: list[chat_pb2.StreamCompleteRequest] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)
    finished: int = 0
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    async def StreamComplete(self, request, context):
        self.requests.append(request)
        self.metadata.append(dict(context.invocation_metadata() or ()))
        try:
            for step in self.script:
                if isinstance(step, asyncio.Event):
                    await step.wait()
                elif isinstance(step, Abort):
                    await context.abort(step.code, step.message)
                else:
                    yield step
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        self.finished += 1


TENANT, EMAIL, PASSWORD = "acme", "ann@example.com", "stand-in-password-1"


@dataclass
class ScriptedAuth(auth_pb2_grpc.AuthServiceServicer):
    """Login for one account, WhoAmI and Logout on the sessions it handed out."""

    sessions: set[str] = field(default_factory=set)

    @staticmethod
    def _bearer(context: grpc.aio.ServicerContext) -> str:
        value = dict(context.invocation_metadata() or ()).get("authorization", "")
        return value.removeprefix("Bearer ")

    async def Login(self, request, context):
        if (request.tenant_id, request.email, request.password) != (TENANT, EMAIL, PASSWORD):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid credentials")
        token = secrets.token_urlsafe(32)
        self.sessions.add(token)
        return auth_pb2.LoginResponse(session=auth_pb2.SessionToken(token=token, assurance_level=1))

    async def WhoAmI(self, request, context):
        if self._bearer(context) not in self.sessions:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid credentials")
        return auth_pb2.WhoAmIResponse(principal=auth_pb2.Principal(
            tenant_id=TENANT, user_id="u1", role="owner", kind="user", assurance_level=1, email=EMAIL, display_name="Ann",
        ))

    async def Logout(self, request, context):
        self.sessions.discard(self._bearer(context))
        return auth_pb2.LogoutResponse()


@dataclass
class Backend:
    chat: ScriptedChat
    auth: ScriptedAuth
    target: str


@pytest_asyncio.fixture
async def backend() -> AsyncIterator[Backend]:
    server = grpc.aio.server()
    chat, auth = ScriptedChat(), ScriptedAuth()
    chat_pb2_grpc.add_ChatServiceServicer_to_server(chat, server)
    auth_pb2_grpc.add_AuthServiceServicer_to_server(auth, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield Backend(chat, auth, f"127.0.0.1:{port}")
    finally:
        await server.stop(0)


@pytest_asyncio.fixture
async def console(backend: Backend) -> AsyncIterator[str]:
    async with running_console(backend.target) as url:
        yield url


@pytest_asyncio.fixture
async def page(console: str) -> AsyncIterator[Page]:
    """Chromium, signed in to the console."""
    async with async_playwright() as pw:
        browser = await launch_chromium(pw)
        try:
            context = await browser.new_context(viewport={"width": 1100, "height": 720})
            page = await context.new_page()
            await sign_in(page, console, tenant=TENANT, email=EMAIL, password=PASSWORD)
            yield page
        finally:
            await browser.close()


def csrf_of(html: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', html)
    assert match, html[:300]
    return match.group(1)


@asynccontextmanager
async def signed_in(console: str) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client signed in through the login form, sending the page's CSRF token as htmx does."""
    async with httpx.AsyncClient(base_url=console, timeout=10) as client:
        token = csrf_of((await client.get("/login")).text)
        response = await client.post(
            "/login", data={"tenant": TENANT, "email": EMAIL, "password": PASSWORD, "csrf_token": token},
            follow_redirects=False,
        )
        assert response.status_code == 303, response.text
        client.headers["X-CSRF-Token"] = csrf_of((await client.get("/chat")).text)
        yield client


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs of a text/event-stream response, as they arrive."""
    event, data = "message", []
    async for line in response.aiter_lines():
        if line == "":
            yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


async def stream_events(client: httpx.AsyncClient, url: str) -> list[tuple[str, str]]:
    async with client.stream("GET", url) as response:
        return [e async for e in sse_events(response)]


async def post_prompt(client: httpx.AsyncClient, prompt: str, model: str = "") -> str:
    """Submit the form like htmx does; return the stream URL of the new turn."""
    response = await client.post("/chat", data={"prompt": prompt, "model": model, "conversation_id": "c1"})
    assert response.status_code == 200
    match = re.search(r'sse-connect="(/chat/stream/[\w-]+)"', response.text)
    assert match, response.text
    return match.group(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- browser --------------------------------------------------------------------------------


async def test_chat_page_loads_with_htmx(console: str, page: Page) -> None:
    response = await page.goto(console + "/")
    assert response is not None and response.ok
    assert page.url == console + "/chat"
    assert await page.title() == "Chat · Lumina console"
    for selector in ("#prompt", "#model", "#send"):
        assert await page.locator(selector).is_visible()
    assert await page.evaluate("typeof htmx !== 'undefined' && htmx.version.startsWith('2.')")
    assert await page.evaluate("typeof htmx.createEventSource === 'function'"), "SSE extension not loaded"


async def test_prompt_streams_scripted_answer_with_metadata(console: str, backend: Backend, page: Page) -> None:
    stream_requests: list[str] = []
    page.on("request", lambda r: stream_requests.append(r.url) if "/chat/stream/" in r.url else None)

    text = await chat_in_console(page, console, "Say hello\nin two lines", model=MODEL)

    assert text == "".join(DELTAS)
    turn = page.locator("article.msg.assistant").last
    meta = (await turn.locator(".meta").inner_text()).replace("\n", " ")
    assert PROVIDER in meta and MODEL in meta
    assert "12 in / 4 out tokens" in meta
    assert "$0.000150" in meta and "42 ms" in meta and "stop" in meta
    assert (await page.locator("article.msg.user .bubble").last.inner_text()) == "Say hello\nin two lines"
    [request] = backend.chat.requests
    assert request.parameters.model == MODEL
    assert [(m.role, m.content) for m in request.parameters.messages] == [
        (chat_pb2.ROLE_USER, "Say hello\nin two lines")
    ]
    assert request.parameters.conversation_id  # the page's conversation id travels along
    assert backend.chat.metadata[0]["traceparent"].startswith("00-")  # the console's trace continues in the backend
    # the browser's session is the call's credential
    assert backend.chat.metadata[0]["authorization"].removeprefix("Bearer ") in backend.auth.sessions
    # The "done" event closed the stream: the browser does not reconnect (the SSE extension would
    # retry after 500 ms).
    await page.wait_for_function("document.querySelector('article.msg.assistant').dataset.state === 'done'")
    await page.wait_for_timeout(1200)
    assert len(stream_requests) == 1
    assert await page.locator("#prompt").input_value() == ""

    # A second turn in the same transcript, then the screenshot for people to look at.
    backend.chat.script = answer("Streaming works: ", "each delta is appended as it arrives.")
    second = await chat_in_console(page, console, "And a second question?")
    assert second == "Streaming works: each delta is appended as it arrives."
    assert await page.locator("article.msg.assistant").count() == 2
    path = await screenshot(page, "console-chat")
    assert path.stat().st_size > 10_000


async def test_reasoning_shows_in_a_collapsible_thinking_block_above_the_answer(
    console: str, backend: Backend, page: Page
) -> None:
    backend.chat.script = reasoned_answer("Hi", " there.")
    text = await chat_in_console(page, console, "hello", model="deepseek-reasoner")
    assert text == "Hi there."  # the reasoning is not part of the answer
    turn = page.locator("article.msg.assistant").last
    thinking = turn.locator("details.thinking")
    assert await thinking.is_visible()
    assert await turn.locator(".bubble > details.thinking + .answer").count() == 1  # above the answer
    assert not await turn.locator(".reasoning").is_visible()  # collapsed until opened
    await thinking.locator("summary").click()
    assert await turn.locator(".reasoning").inner_text() == "".join(THOUGHTS)
    await thinking.locator("summary").click()
    assert not await turn.locator(".reasoning").is_visible()
    # a turn without reasoning shows no thinking block at all
    backend.chat.script = answer("Plain.")
    assert await chat_in_console(page, console, "again") == "Plain."
    assert not await page.locator("article.msg.assistant").last.locator("details.thinking").is_visible()


async def test_markup_in_prompt_and_answer_is_shown_as_text(console: str, backend: Backend, page: Page) -> None:
    backend.chat.script = answer("<img src=x onerror=\"document.title='pwned'\">", " & <b>bold</b>")
    text = await chat_in_console(page, console, "<script>document.title='pwned'</script>")
    assert text == "<img src=x onerror=\"document.title='pwned'\"> & <b>bold</b>"
    assert await page.locator(".transcript img, .transcript b, .transcript script").count() == 0
    assert "<script>" in await page.locator("article.msg.user .bubble").inner_text()
    assert await page.title() == "Chat · Lumina console"


async def test_backend_rejection_is_shown_as_readable_error(console: str, backend: Backend, page: Page) -> None:
    backend.chat.script = [Abort(grpc.StatusCode.INVALID_ARGUMENT, "unknown model 'nope'")]
    with pytest.raises(ConsoleError) as caught:
        await chat_in_console(page, console, "hi", model="nope")
    message = str(caught.value)
    assert "The backend rejected the request: unknown model 'nope'" in message
    assert "Traceback" not in await page.content()
    assert await page.locator("article.msg.assistant .error[role=alert]").is_visible()
    await screenshot(page, "console-error")


# --- HTTP and SSE ---------------------------------------------------------------------------


async def test_events_arrive_while_the_backend_is_still_streaming(console: str, backend: Backend) -> None:
    first_sent, second_sent = asyncio.Event(), asyncio.Event()
    backend.chat.script = [delta("one"), first_sent, delta(" <two>"), second_sent, usage(3, 2, 7), finish()]
    async with signed_in(console) as client:
        stream_url = await post_prompt(client, "count", model="m1")
        async with client.stream("GET", stream_url) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = sse_events(response)
            assert await anext(events) == ("delta", "<span>one</span>")
            assert backend.chat.finished == 0  # the first delta came before the backend went on
            first_sent.set()
            assert await anext(events) == ("delta", "<span> &lt;two&gt;</span>")
            assert backend.chat.finished == 0
            second_sent.set()
            name, meta = await anext(events)
            assert name == "meta" and PROVIDER in meta and "3 in / 2 out tokens" in meta and "$0.000007" in meta
            assert await anext(events) == ("done", "")
            assert [e async for e in events] == []  # and the response ends
        assert backend.chat.finished == 1
        # Each turn streams once: a reconnect gets a readable "no longer available", then done.
        replay = await stream_events(client, stream_url)
        assert [name for name, _ in replay] == ["failure", "done"]
        assert "no longer available" in replay[0][1]


async def test_reasoning_deltas_are_escaped_events_before_the_answer(console: str, backend: Backend) -> None:
    backend.chat.script = reasoned_answer("ok")
    async with signed_in(console) as client:
        events = await stream_events(client, await post_prompt(client, "think", model="deepseek-reasoner"))
    assert events[:3] == [
        ("reasoning", "<span>The user greets; </span>"),
        ("reasoning", "<span>answer &lt;briefly&gt;.</span>"),
        ("delta", "<span>ok</span>"),
    ]
    assert [name for name, _ in events[3:]] == ["meta", "done"]


async def test_closing_the_page_cancels_the_backend_call(console: str, backend: Backend) -> None:
    backend.chat.script = [delta("one"), asyncio.Event()]  # then waits forever
    async with signed_in(console) as client:
        response_cm = client.stream("GET", await post_prompt(client, "hi"))
        async with response_cm as response:
            assert await anext(sse_events(response)) == ("delta", "<span>one</span>")
    await asyncio.wait_for(backend.chat.cancelled.wait(), timeout=5)
    assert backend.chat.finished == 0


async def test_stream_error_chunk_is_reported(console: str, backend: Backend) -> None:
    backend.chat.script = [
        delta("partial"),
        chat_pb2.StreamCompleteResponse(
            error=chat_pb2.StreamError(code="upstream_unavailable", message="provider timed out", retryable=True)
        ),
    ]
    async with signed_in(console) as client:
        events = await stream_events(client, await post_prompt(client, "hi"))
    assert [name for name, _ in events] == ["delta", "failure", "done"]
    assert "provider timed out (upstream_unavailable). Retrying may help." in events[1][1]


async def test_unreachable_backend_is_reported() -> None:
    target = f"127.0.0.1:{free_port()}"
    async with running_console(target) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        client.headers["X-CSRF-Token"] = csrf_of((await client.get("/login")).text)  # no backend needed
        client.cookies.set("lumina_session", "a-session-the-backend-would-check")
        events = await stream_events(client, await post_prompt(client, "hi"))
        assert (await client.get("/healthz")).text == "ok"
    assert [name for name, _ in events] == ["failure", "done"]
    assert f"Cannot reach the backend at {target}" in events[0][1]


async def test_invalid_form_input_is_a_notice_not_a_turn(console: str, backend: Backend) -> None:
    async with signed_in(console) as client:
        empty = await client.post("/chat", data={"prompt": "   "})
        long = await client.post("/chat", data={"prompt": "x" * 40_000})
    assert "Type a prompt first." in empty.text and "sse-connect" not in empty.text
    assert "too long" in long.text and "sse-connect" not in long.text
    assert backend.chat.requests == []


async def test_busy_port_is_one_clear_error() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ServeError, match=f"^port {port} on 127.0.0.1 is already in use") as caught:
            serve("127.0.0.1", port, "127.0.0.1:50051")
    assert "\n" not in str(caught.value)


async def test_bad_backend_target_is_one_clear_error() -> None:
    with pytest.raises(ServeError, match="expected host:port"):
        serve("127.0.0.1", 0, "no-port-here")


async def test_a_stream_without_a_session_asks_to_sign_in(console: str, backend: Backend) -> None:
    async with httpx.AsyncClient(base_url=console, timeout=10) as client:
        events = await stream_events(client, "/chat/stream/some-turn")
    assert [name for name, _ in events] == ["failure", "done"]
    assert "Your session has ended: sign in again." in events[0][1]
    assert backend.chat.requests == []
