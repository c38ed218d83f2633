"""Lumina's chat options at the edges: the memory switch and the conversation id on the OpenAI- and
Anthropic-compatible REST edges (header, body member) and on gRPC (``ChatParameters.memory``)."""

from __future__ import annotations

import msgspec
import pytest

from api.grpc.mapping import decode_parameters
from api.rest.anthropic_compat import AnthropicMessagesRequest
from api.rest.chat_options import conversation_option, memory_option
from api.rest.openai_compat import OAChatRequest
from domain.errors import InvalidRequest
from lumina.v1 import chat_pb2 as pb


@pytest.mark.parametrize(
    ("header", "body", "expected"),
    [
        (None, None, None),
        ("off", None, False), ("OFF", None, False), ("false", None, False), ("0", None, False),
        (" on ", None, True), ("true", None, True), ("1", None, True),
        (None, False, False), (None, True, True),
        ("on", False, False), ("off", True, False),  # an explicit off wins
    ],
)
def test_memory_option(header: str | None, body: bool | None, expected: bool | None) -> None:
    assert memory_option(header, body) is expected


def test_a_bad_memory_header_names_the_header() -> None:
    with pytest.raises(InvalidRequest) as info:
        memory_option("maybe")
    assert [v.field for v in info.value.violations] == ["x-lumina-memory"]


def test_conversation_option() -> None:
    assert conversation_option(None) is None
    assert conversation_option("  ") is None
    assert conversation_option(" c-1 ") == "c-1"
    assert conversation_option("from-header", "from-body") == "from-body"
    with pytest.raises(InvalidRequest) as info:
        conversation_option(None, "x" * 257)
    assert info.value.violations[0].field == "lumina.conversation_id"
    with pytest.raises(InvalidRequest) as info:
        conversation_option("x" * 257)
    assert info.value.violations[0].field == "x-lumina-conversation-id"


def oa(body: dict[str, object]) -> OAChatRequest:
    return msgspec.convert({"messages": [{"role": "user", "content": "hi"}], **body}, OAChatRequest)


def test_openai_body_member_and_headers() -> None:
    assert oa({}).to_domain().memory is None
    assert oa({}).to_domain().conversation_id is None
    request = oa({"lumina": {"memory": False, "conversation_id": "conv-a"}}).to_domain()
    assert (request.memory, request.conversation_id) == (False, "conv-a")
    request = oa({}).to_domain("off", "conv-h")
    assert (request.memory, request.conversation_id) == (False, "conv-h")
    assert oa({"lumina": {"unknown": 1}}).to_domain().memory is None  # unknown members are ignored


def test_anthropic_headers() -> None:
    body = msgspec.convert(
        {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}, AnthropicMessagesRequest
    )
    assert body.to_domain().memory is None
    request = body.to_domain("off", "conv-z")
    assert (request.memory, request.conversation_id) == (False, "conv-z")


def test_grpc_memory_field_is_optional() -> None:
    params = pb.ChatParameters(messages=[pb.ChatMessage(role=pb.ROLE_USER, content="hi")])
    assert decode_parameters(params).memory is None
    params.memory = False
    assert decode_parameters(params).memory is False
    params.memory = True
    assert decode_parameters(params).memory is True
