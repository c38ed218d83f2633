"""Pure mapping of the Anthropic adapter and edge: requests both ways, no network."""

from __future__ import annotations

import json

import msgspec
import pytest

from adapters.providers.anthropic import to_anthropic_messages, to_anthropic_params
from api.rest.anthropic_compat import AnthropicMessagesRequest
from domain.chat import (
    ChatMessage,
    ChatRequest,
    ImagePart,
    ResponseFormat,
    ResponseFormatKind,
    Role,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
)
from domain.errors import InvalidRequest

TOOL = Tool("lookup", "find", {"type": "object", "properties": {"q": {"type": "string"}}})


def test_system_images_tool_calls_and_results_become_blocks_in_merged_turns() -> None:
    system, messages = to_anthropic_messages((
        ChatMessage(Role.SYSTEM, "be brief"),
        ChatMessage(Role.USER, "look", parts=(ImagePart(url="https://x/y.png"), ImagePart(data="QUJD", media_type="image/jpeg"),
                                              ImagePart(url="data:image/gif;base64,R0lG"), TextPart("and this"))),
        ChatMessage(Role.ASSISTANT, "", tool_calls=(ToolCall("t1", "lookup", '{"q":"a"}'), ToolCall("t2", "lookup", ""))),
        ChatMessage(Role.TOOL, "A", tool_call_id="t1"),
        ChatMessage(Role.TOOL, "B", tool_call_id="t2"),
        ChatMessage(Role.USER, "thanks"),
        ChatMessage(Role.SYSTEM, "stay kind"),
    ))
    assert system == "be brief\n\nstay kind"
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    sources = [b["source"] for b in messages[0]["content"] if b["type"] == "image"]
    assert sources == [{"type": "url", "url": "https://x/y.png"},
                       {"type": "base64", "media_type": "image/jpeg", "data": "QUJD"},
                       {"type": "base64", "media_type": "image/gif", "data": "R0lG"}]
    assert messages[1]["content"] == [{"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": "a"}},
                                      {"type": "tool_use", "id": "t2", "name": "lookup", "input": {}}]
    assert [b["type"] for b in messages[2]["content"]] == ["tool_result", "tool_result", "text"]


def test_bad_tool_arguments_name_the_field() -> None:
    with pytest.raises(InvalidRequest, match=r"messages\[0\].tool_calls\[0\].arguments"):
        to_anthropic_messages((ChatMessage(Role.ASSISTANT, "", tool_calls=(ToolCall("t", "f", "[1]"),)),))


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (ToolChoice(ToolChoiceMode.AUTO), None, {"type": "auto"}),
        (ToolChoice(ToolChoiceMode.NONE), None, {"type": "none"}),
        (ToolChoice(ToolChoiceMode.REQUIRED), False, {"type": "any", "disable_parallel_tool_use": True}),
        (ToolChoice(name="lookup"), None, {"type": "tool", "name": "lookup"}),
    ],
)
def test_tool_choice(choice: ToolChoice, parallel: bool | None, expected: dict) -> None:
    req = ChatRequest((ChatMessage(Role.USER, "x"),), tools=(TOOL,), tool_choice=choice, parallel_tool_calls=parallel)
    params, json_tool = to_anthropic_params("m", req)
    assert params["tool_choice"] == expected and json_tool is None
    assert params["tools"] == [{"name": "lookup", "description": "find", "input_schema": TOOL.parameters}]


def test_json_schema_output_is_a_forced_tool_and_sampling_goes_in_the_body() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    req = ChatRequest((ChatMessage(Role.USER, "x"),), temperature=1.5, top_p=0.5, stop=("END",), max_tokens=9,
                      response_format=ResponseFormat(ResponseFormatKind.JSON_SCHEMA, schema=schema, name="my answer"))
    params, json_tool = to_anthropic_params("m", req)
    assert json_tool == "my_answer" and params["tools"][0]["input_schema"] == schema
    assert params["tool_choice"] == {"type": "tool", "name": "my_answer"}
    assert params["extra_body"] == {"temperature": 1.0, "top_p": 0.5}
    assert params["stop_sequences"] == ["END"] and params["max_tokens"] == 9 and "thinking" not in params
    # with tools of its own, some tool is required and the JSON tool's name does not clash
    clash = ChatRequest((ChatMessage(Role.USER, "x"),), tools=(Tool("response"),),
                        response_format=ResponseFormat(ResponseFormatKind.JSON_OBJECT))
    params, json_tool = to_anthropic_params("m", clash)
    assert json_tool == "response_json" and params["tool_choice"] == {"type": "any"}


def test_thinking_only_when_the_budget_fits_and_no_tool_is_forced() -> None:
    req = ChatRequest((ChatMessage(Role.USER, "x"),), temperature=0.3)
    params, _ = to_anthropic_params("m", req, default_max_tokens=4096, thinking_budget_tokens=1024)
    assert params["thinking"] == {"type": "enabled", "budget_tokens": 1024} and "extra_body" not in params
    small, _ = to_anthropic_params("m", ChatRequest(req.messages, max_tokens=500), thinking_budget_tokens=1024)
    assert "thinking" not in small


def test_edge_request_becomes_a_domain_request() -> None:
    body = {
        "model": "claude", "max_tokens": 20, "system": [{"type": "text", "text": "sys"}],
        "stop_sequences": ["x"], "temperature": 0.5,
        "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "see"},
                                         {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}]},
            {"role": "assistant", "content": [{"type": "text", "text": "calling"},
                                              {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": 1}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "42"}]},
                                         {"type": "text", "text": "so?"}]},
        ],
    }
    chat = msgspec.convert(body, AnthropicMessagesRequest).to_domain()
    assert [m.role for m in chat.messages] == [Role.SYSTEM, Role.USER, Role.ASSISTANT, Role.TOOL, Role.USER]
    assert chat.messages[1].parts == (TextPart("see"), ImagePart(data="AA==", media_type="image/png"))
    assert chat.messages[2].content == "calling" and json.loads(chat.messages[2].tool_calls[0].arguments) == {"q": 1}
    assert chat.messages[3].tool_call_id == "t1" and chat.messages[3].content == "42"
    assert chat.tool_choice == ToolChoice(ToolChoiceMode.REQUIRED) and chat.parallel_tool_calls is False
    assert chat.stop == ("x",) and chat.max_tokens == 20 and chat.tools[0].name == "lookup"
