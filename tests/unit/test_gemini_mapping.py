"""The Gemini request/response mapping and error table, on real SDK objects (no I/O); and the
simulator's pure helpers (schema placeholders, embedding vectors)."""

from __future__ import annotations

import base64
import math

import httpx2
import pytest
from google.genai import errors as genai_errors
from google.genai import types

from adapters.providers.gemini import to_contents, to_finish, to_generate_config, to_usage, translate_gemini_error
from domain.chat import (
    ChatMessage,
    ChatRequest,
    FinishReason,
    ImagePart,
    ResponseFormat,
    ResponseFormatKind,
    Role,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
    Usage,
)
from domain.errors import (
    AuthenticationFailed,
    ContextLengthExceeded,
    Overloaded,
    PermissionDenied,
    ProviderError,
    RateLimited,
    UpstreamInvalidRequest,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from tools.provider_sim.gemini import embedding_vector, placeholder

SECRET = "AIzaSyabcdefghijklmnopqrstuvwxyz012345"
REQUEST = httpx2.Request("POST", "http://upstream.test/v1beta/models/m:streamGenerateContent")
PNG = base64.b64encode(b"\x89PNG\r\n").decode()


def api_error(code: int, status: str, message: str, details: list | None = None, headers: dict | None = None):
    body: dict = {"error": {"code": code, "message": message, "status": status}}
    if details:
        body["error"]["details"] = details
    response = httpx2.Response(code, headers=headers or {}, request=REQUEST)
    cls = genai_errors.ClientError if code < 500 else genai_errors.ServerError
    return cls(code, body, response)


def translate(exc: BaseException) -> ProviderError:
    return translate_gemini_error(exc, provider="g", secret=SECRET)


# --- messages ----------------------------------------------------------------------------------------


def test_system_messages_become_the_system_instruction_and_roles_are_user_and_model() -> None:
    system, contents = to_contents(
        (
            ChatMessage(Role.SYSTEM, "be brief"),
            ChatMessage(Role.USER, "hi"),
            ChatMessage(Role.ASSISTANT, "hello"),
            ChatMessage(Role.SYSTEM, "and kind"),
            ChatMessage(Role.USER, "again"),
        )
    )
    assert system is not None and [p.text for p in system.parts] == ["be brief", "and kind"]
    assert [(c.role, [p.text for p in c.parts]) for c in contents] == [
        ("user", ["hi"]),
        ("model", ["hello"]),
        ("user", ["again"]),
    ]


def test_images_become_inline_or_file_data() -> None:
    _, [content] = to_contents(
        (
            ChatMessage(
                Role.USER,
                "what is this?",
                parts=(
                    ImagePart(data=PNG, media_type="image/png"),
                    ImagePart(url=f"data:image/jpeg;base64,{PNG}"),
                    ImagePart(url="https://example.test/cat.webp", media_type="image/webp"),
                    TextPart("and this"),
                ),
            ),
        )
    )
    text, inline, data_url, remote, more = content.parts
    assert text.text == "what is this?" and more.text == "and this"
    assert inline.inline_data == types.Blob(data=b"\x89PNG\r\n", mime_type="image/png")
    assert data_url.inline_data == types.Blob(data=b"\x89PNG\r\n", mime_type="image/jpeg")
    assert remote.file_data == types.FileData(file_uri="https://example.test/cat.webp", mime_type="image/webp")


def test_bad_base64_image_is_an_invalid_upstream_request() -> None:
    with pytest.raises(UpstreamInvalidRequest):
        to_contents((ChatMessage(Role.USER, "x", parts=(ImagePart(data="not base64!"),)),))


def test_tool_calls_and_results_become_function_parts_named_after_the_call() -> None:
    calls = (
        ToolCall(id="call_0", name="lookup", arguments='{"q": "paris"}'),
        ToolCall(id="call_1", name="convert", arguments=""),
    )
    _, contents = to_contents(
        (
            ChatMessage(Role.USER, "go"),
            ChatMessage(Role.ASSISTANT, "", tool_calls=calls),
            ChatMessage(Role.TOOL, '{"weather": "sunny"}', tool_call_id="call_0"),
            ChatMessage(Role.TOOL, "42", tool_call_id="call_1"),
            ChatMessage(Role.ASSISTANT, "", tool_calls=(ToolCall(id="call_0", name="convert", arguments="[1]"),)),
            ChatMessage(Role.TOOL, "plain text", tool_call_id="call_0"),
        )
    )
    assert [c.role for c in contents] == ["user", "model", "user", "model", "user"]
    model_turn = contents[1].parts
    assert [(p.function_call.name, p.function_call.args) for p in model_turn] == [
        ("lookup", {"q": "paris"}),
        ("convert", {}),
    ]
    results = contents[2].parts  # both results in one turn, as Gemini wants them
    assert [(p.function_response.name, p.function_response.response) for p in results] == [
        ("lookup", {"weather": "sunny"}),
        ("convert", {"output": 42}),
    ]
    assert contents[3].parts[0].function_call.args == {"value": [1]}
    latest = contents[4].parts[0].function_response
    assert (latest.name, latest.response) == ("convert", {"output": "plain text"})  # the latest call with that id


def test_a_tool_result_without_its_call_is_rejected() -> None:
    with pytest.raises(UpstreamInvalidRequest, match="call_9"):
        to_contents((ChatMessage(Role.USER, "go"), ChatMessage(Role.TOOL, "x", tool_call_id="call_9")))


# --- generation config ---------------------------------------------------------------------------------

LOOKUP = Tool(
    name="lookup", description="Look up.", parameters={"type": "object", "properties": {"q": {"type": "string"}}}
)
BARE = Tool(name="ping")


def config_for(**kw: object) -> types.GenerateContentConfig:
    request = ChatRequest(messages=(ChatMessage(Role.USER, "hi"),), **kw)  # type: ignore[arg-type]
    return to_generate_config(request, None, include_thoughts=False)


def test_sampling_parameters_are_mapped() -> None:
    config = config_for(temperature=0.3, top_p=0.9, stop=("END",), seed=11, max_tokens=64)
    assert (config.temperature, config.top_p, config.stop_sequences, config.seed, config.max_output_tokens) == (
        0.3,
        0.9,
        ["END"],
        11,
        64,
    )
    assert config.tools is None and config.tool_config is None and config.response_mime_type is None
    assert config.thinking_config is None
    request = ChatRequest(messages=(ChatMessage(Role.USER, "hi"),))
    assert to_generate_config(request, None, include_thoughts=True).thinking_config.include_thoughts is True


def test_tools_become_function_declarations_with_json_schema() -> None:
    config = config_for(tools=(LOOKUP, BARE))
    [tool] = config.tools
    first, second = tool.function_declarations
    assert (first.name, first.description, first.parameters_json_schema) == ("lookup", "Look up.", LOOKUP.parameters)
    assert (second.name, second.description, second.parameters_json_schema) == ("ping", None, None)
    assert config.automatic_function_calling.disable is True


@pytest.mark.parametrize(
    ("choice", "mode", "allowed"),
    [
        (ToolChoice(ToolChoiceMode.AUTO), "AUTO", None),
        (ToolChoice(ToolChoiceMode.NONE), "NONE", None),
        (ToolChoice(ToolChoiceMode.REQUIRED), "ANY", None),
        (ToolChoice(name="ping"), "ANY", ["ping"]),
    ],
)
def test_tool_choice_becomes_function_calling_config(choice: ToolChoice, mode: str, allowed: list | None) -> None:
    fcc = config_for(tools=(LOOKUP, BARE), tool_choice=choice).tool_config.function_calling_config
    assert fcc.mode.value == mode and fcc.allowed_function_names == allowed


def test_json_modes_set_the_mime_type_and_schema() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    plain = config_for(response_format=ResponseFormat(kind=ResponseFormatKind.JSON_OBJECT))
    assert plain.response_mime_type == "application/json" and plain.response_json_schema is None
    shaped = config_for(response_format=ResponseFormat(kind=ResponseFormatKind.JSON_SCHEMA, schema=schema))
    assert shaped.response_mime_type == "application/json" and shaped.response_json_schema == schema
    assert config_for(response_format=ResponseFormat()).response_mime_type is None


# --- response ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "called", "expected"),
    [
        (types.FinishReason.STOP, False, FinishReason.STOP),
        (types.FinishReason.STOP, True, FinishReason.TOOL_CALLS),
        (types.FinishReason.MAX_TOKENS, True, FinishReason.LENGTH),
        (types.FinishReason.SAFETY, False, FinishReason.CONTENT_FILTER),
        (types.FinishReason.RECITATION, False, FinishReason.CONTENT_FILTER),
        (types.FinishReason.PROHIBITED_CONTENT, False, FinishReason.CONTENT_FILTER),
        (types.FinishReason.MALFORMED_FUNCTION_CALL, False, FinishReason.ERROR),
        ("OTHER", False, FinishReason.STOP),
    ],
)
def test_finish_reasons(reason: object, called: bool, expected: FinishReason) -> None:
    assert to_finish(reason, called=called) is expected


def test_usage_counts_thoughts_as_output() -> None:
    meta = types.GenerateContentResponseUsageMetadata(
        prompt_token_count=100, candidates_token_count=20, thoughts_token_count=30, cached_content_token_count=40
    )
    assert to_usage(meta) == Usage(input_tokens=100, output_tokens=50, cached_input_tokens=40, reasoning_tokens=30)
    assert to_usage(types.GenerateContentResponseUsageMetadata()) == Usage()


# --- errors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (api_error(400, "INVALID_ARGUMENT", "Request contains an invalid argument."), UpstreamInvalidRequest),
        (
            api_error(
                400,
                "INVALID_ARGUMENT",
                "The input token count (9000) exceeds the maximum number of tokens allowed (8192).",
            ),
            ContextLengthExceeded,
        ),
        (
            api_error(400, "INVALID_ARGUMENT", "API key not valid.", [{"reason": "API_KEY_INVALID"}]),
            AuthenticationFailed,
        ),
        (api_error(401, "UNAUTHENTICATED", "no"), AuthenticationFailed),
        (api_error(403, "PERMISSION_DENIED", "no"), PermissionDenied),
        (api_error(404, "NOT_FOUND", "models/x is not found"), UpstreamInvalidRequest),
        (api_error(429, "RESOURCE_EXHAUSTED", "quota"), RateLimited),
        (api_error(500, "INTERNAL", "oops"), UpstreamUnavailable),
        (api_error(503, "UNAVAILABLE", "The model is overloaded."), Overloaded),
        (api_error(504, "DEADLINE_EXCEEDED", "slow"), UpstreamTimeout),
        (httpx2.ReadTimeout("timed out", request=REQUEST), UpstreamTimeout),
        (httpx2.ConnectError("refused", request=REQUEST), UpstreamUnavailable),
        (httpx2.RemoteProtocolError("peer closed", request=REQUEST), UpstreamUnavailable),
        (genai_errors.UnknownApiResponseError("bad json"), UpstreamUnavailable),
    ],
)
def test_error_table(exc: BaseException, expected: type[ProviderError]) -> None:
    error = translate(exc)
    assert type(error) is expected
    assert error.provider == "g"


def test_retry_after_comes_from_the_header_else_from_retry_info() -> None:
    with_header = translate(api_error(429, "RESOURCE_EXHAUSTED", "quota", headers={"retry-after": "5"}))
    assert isinstance(with_header, RateLimited) and with_header.retry_after == 5.0
    details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "31s"}]
    with_info = translate(api_error(429, "RESOURCE_EXHAUSTED", "quota", details))
    assert isinstance(with_info, RateLimited) and with_info.retry_after == 31.0
    bare = translate(api_error(429, "RESOURCE_EXHAUSTED", "quota"))
    assert isinstance(bare, RateLimited) and bare.retry_after is None


def test_the_key_never_shows_in_messages() -> None:
    error = translate(
        api_error(400, "INVALID_ARGUMENT", f"API key not valid: {SECRET}", [{"reason": "API_KEY_INVALID"}])
    )
    assert SECRET not in str(error) and SECRET[:20] not in str(error)
    assert "[redacted]" in str(error)


# --- simulator helpers --------------------------------------------------------------------------------


def test_placeholders_are_valid_for_their_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "n": {"type": "integer", "minimum": 3},
            "ratio": {"type": ["number", "null"]},
            "ok": {"type": "BOOLEAN"},  # Gemini Schema spells types in capitals
            "items": {"type": "array", "items": {"$ref": "#/$defs/item"}, "minItems": 2},
            "kind": {"anyOf": [{"type": "null"}, {"enum": ["a", "b"]}]},
        },
        "required": ["name", "n"],
        "$defs": {"item": {"type": "object", "properties": {"id": {"const": 7}}}},
    }
    value = placeholder(schema, ("red", "green"))
    assert value == {
        "name": "red green",
        "n": 3,
        "ratio": 2.5,
        "ok": True,
        "items": [{"id": 7}, {"id": 7}],
        "kind": "a",
    }


def test_embedding_vectors_are_deterministic_unit_vectors() -> None:
    a, b = embedding_vector("alpha", 16), embedding_vector("beta", 16)
    assert a == embedding_vector("alpha", 16) and a != b and len(a) == 16
    assert math.isclose(math.fsum(x * x for x in a), 1.0, abs_tol=1e-5)
