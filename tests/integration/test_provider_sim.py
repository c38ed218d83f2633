"""The provider simulator over loopback HTTP: wire format, determinism, knobs, faults, stats, CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tools.provider_sim.testing import fetch_stats, running_simulator

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
AUTH = {"authorization": "Bearer test-key"}
HELLO = {"model": "sim-small", "messages": [{"role": "user", "content": "hello there"}]}


@pytest.fixture(scope="module")
def sim() -> Iterator[str]:
    with running_simulator() as base_url:
        yield base_url


@pytest.fixture(scope="module")
def http(sim: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim, headers=AUTH, timeout=10) as client:
        yield client


def sse_events(text: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order; asserts the framing."""
    assert text.endswith("\n\n")
    events = []
    for block in text.split("\n\n")[:-1]:
        assert block.startswith("data: "), block
        events.append(block.removeprefix("data: "))
    return events


def stream(http: httpx.Client, body: dict, headers: dict | None = None) -> tuple[list[dict], str]:
    resp = http.post("/chat/completions", json={**body, "stream": True}, headers=headers or {})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = sse_events(resp.text)
    return [json.loads(e) for e in events[:-1]], events[-1]


def complete(http: httpx.Client, body: dict, headers: dict | None = None) -> dict:
    resp = http.post("/chat/completions", json=body, headers=headers or {})
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_models_are_listed(http: httpx.Client) -> None:
    resp = http.get("/models")
    assert resp.status_code == 200
    ids = {m["id"] for m in resp.json()["data"]}
    assert {"sim-small", "sim-large", "deepseek-reasoner", "sim-embed", "text-embedding-3-small"} <= ids


def test_same_prompt_same_answer_and_other_prompt_other_answer(http: httpx.Client) -> None:
    first = complete(http, HELLO)
    second = complete(http, HELLO)
    other = complete(http, {**HELLO, "messages": [{"role": "user", "content": "something else"}]})
    text = first["choices"][0]["message"]["content"]
    assert first["object"] == "chat.completion"
    assert text and text == second["choices"][0]["message"]["content"]
    assert other["choices"][0]["message"]["content"] != text
    assert first["choices"][0]["finish_reason"] == "stop"
    usage = first["usage"]
    assert usage["completion_tokens"] == len(text.split()) == 16
    assert usage["prompt_tokens"] == 3  # 2 words * 4/3, rounded
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_stream_has_openai_chunk_format_and_same_text(http: httpx.Client) -> None:
    chunks, done = stream(http, {**HELLO, "stream_options": {"include_usage": True}})
    assert done == "[DONE]"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    *body, finish, usage_chunk = chunks
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert usage_chunk["choices"] == []
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in body)
    assert text == complete(http, HELLO)["choices"][0]["message"]["content"]
    assert usage_chunk["usage"]["completion_tokens"] == 16
    assert usage_chunk["usage"]["total_tokens"] == usage_chunk["usage"]["prompt_tokens"] + 16
    assert all(c["usage"] is None for c in chunks[:-1])


def test_stream_without_include_usage_has_no_usage(http: httpx.Client) -> None:
    chunks, done = stream(http, HELLO)
    assert done == "[DONE]"
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_headers_set_tokens_and_chunks(http: httpx.Client) -> None:
    chunks, _ = stream(http, HELLO, {"x-sim-tokens": "7", "x-sim-chunks": "3"})
    contents = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert len(contents) == 3
    assert len("".join(contents).split()) == 7


def test_max_tokens_caps_with_finish_length_and_prefix_text(http: httpx.Client) -> None:
    full = complete(http, HELLO)["choices"][0]["message"]["content"]
    capped = complete(http, {**HELLO, "max_tokens": 5})
    assert capped["choices"][0]["finish_reason"] == "length"
    assert capped["usage"]["completion_tokens"] == 5
    assert full.startswith(capped["choices"][0]["message"]["content"])
    newer = complete(http, {**HELLO, "max_completion_tokens": 4})
    assert newer["usage"]["completion_tokens"] == 4


def test_latency_header_delays_first_byte(http: httpx.Client) -> None:
    started = time.perf_counter()
    complete(http, HELLO, {"x-sim-latency-ms": "150"})
    assert time.perf_counter() - started >= 0.15


def test_chunk_delay_spaces_out_chunks(http: httpx.Client) -> None:
    started = time.perf_counter()
    stream(http, HELLO, {"x-sim-chunks": "4", "x-sim-chunk-delay-ms": "40"})
    assert time.perf_counter() - started >= 0.15  # 4 pauses of 40 ms


@pytest.mark.parametrize(
    ("fault", "status", "etype"),
    [
        ("429", 429, "requests"),
        ("500", 500, "server_error"),
        ("503", 503, "server_error"),
        ("401", 401, "invalid_request_error"),
    ],
)
def test_faults_return_openai_error_bodies(http: httpx.Client, fault: str, status: int, etype: str) -> None:
    resp = http.post("/chat/completions", json=HELLO, headers={"x-sim-fault": fault})
    assert resp.status_code == status
    error = resp.json()["error"]
    assert error["type"] == etype and error["message"] and "code" in error
    assert (resp.headers.get("retry-after") == "2") is (status == 429)


def test_midstream_fault_breaks_the_stream_with_an_error_event(http: httpx.Client) -> None:
    resp = http.post(
        "/chat/completions", json={**HELLO, "stream": True}, headers={"x-sim-fault": "midstream", "x-sim-chunks": "4"}
    )
    events = sse_events(resp.text)
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["type"] == "server_error"
    assert len(events) == 1 + 2 + 1  # role chunk, half of the content, the error


def test_auth_is_required(sim: str) -> None:
    resp = httpx.post(f"{sim}/chat/completions", json=HELLO)
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{sim}/models").status_code == 401


def test_configured_api_key_rejects_other_keys() -> None:
    with running_simulator(api_key="right") as base_url:
        ok = httpx.post(f"{base_url}/chat/completions", json=HELLO, headers={"authorization": "Bearer right"})
        bad = httpx.post(f"{base_url}/chat/completions", json=HELLO, headers={"authorization": "Bearer wrong"})
    assert ok.status_code == 200
    assert bad.status_code == 401


def test_bad_requests_are_rejected(http: httpx.Client) -> None:
    assert http.post("/chat/completions", json=HELLO, headers={"x-sim-chunks": "zero"}).status_code == 400
    assert http.post("/chat/completions", json=HELLO, headers={"x-sim-fault": "teapot"}).status_code == 400
    assert http.post("/chat/completions", content=b"{not json").status_code == 400
    missing = http.post("/chat/completions", json={**HELLO, "model": "gpt-nope"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    assert http.get("/nowhere").status_code == 404


def test_prompt_beyond_the_context_window_is_rejected(http: httpx.Client) -> None:
    long_prompt = " ".join(["word"] * 6200)  # ~8267 tokens > sim-small's 8192
    body = {"model": "sim-small", "messages": [{"role": "user", "content": long_prompt}]}
    resp = http.post("/chat/completions", json=body)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "context_length_exceeded"
    assert complete(http, {**body, "model": "sim-large"})["usage"]["prompt_tokens"] > 8192


def test_early_disconnect_is_recorded(sim: str) -> None:
    before = fetch_stats(sim).disconnects
    headers = {**AUTH, "x-sim-chunks": "20", "x-sim-chunk-delay-ms": "50"}
    body = {**HELLO, "stream": True}
    with (
        httpx.Client(timeout=10) as client,
        client.stream("POST", f"{sim}/chat/completions", json=body, headers=headers) as resp,
    ):
        first = next(resp.iter_lines())
        assert first.startswith("data: ")
    deadline = time.monotonic() + 3
    while fetch_stats(sim).disconnects == before and time.monotonic() < deadline:
        time.sleep(0.02)
    stats = fetch_stats(sim)
    assert stats.disconnects == before + 1
    assert stats.recent[-1].disconnected and stats.recent[-1].stream


def test_accepted_sockets_have_tcp_nodelay(sim: str) -> None:
    with httpx.Client(timeout=5) as fresh:  # at least one new connection
        assert fresh.get(f"{sim}/models", headers=AUTH).status_code == 200
    stats = fetch_stats(sim)
    assert stats.connections >= 1
    assert stats.connections_nodelay == stats.connections


# --- the command line --------------------------------------------------------------------------


def _start_cli(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.provider_sim", "--port", "0", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line.startswith("provider simulator listening on http://127.0.0.1:"), line
    return proc, line.rsplit(" ", 1)[-1]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_serves_and_stops_cleanly_on_signal(sig: signal.Signals) -> None:
    proc, base_url = _start_cli("--tokens", "4")
    try:
        resp = httpx.post(f"{base_url}/chat/completions", json=HELLO, headers=AUTH, timeout=5)
        assert resp.json()["usage"]["completion_tokens"] == 4
    finally:
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_cli_busy_port_is_a_one_line_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "tools.provider_sim", "--port", str(port)],
            check=False,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ},
        )
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(port) in lines[0] and "Traceback" not in result.stderr
