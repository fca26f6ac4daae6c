from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from omnillm.bus.messages import (
    ChatRequest,
    FunctionCall,
    FunctionDef,
    ImagePart,
    ImageUrl,
    Message,
    TextPart,
    TokenUsage,
    Tool,
    ToolCall,
    ToolCallDelta,
)
from omnillm.errors import (
    AuthenticationFailed,
    BadUpstreamRequest,
    ContentPolicy,
    ContextLengthExceeded,
    InvalidRequest,
    MalformedResponse,
    ModelNotFound,
    Overloaded,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)
from omnillm.providers.base import ParsedResponse, StreamUpdate, WireOptions
from omnillm.providers.gemini import FAMILY, SKIP_SIGNATURE
from tests.unit._streams import Collected, collect, one_byte_at_a_time

FIXTURES = Path(__file__).parents[1] / "fixtures" / "gemini"
MODEL = "gemini-2.5-flash"
SYSTEM = Message(role="system", content="You are a terse assistant.")
PNG_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGBgAAAABQABpfZFQAAAAABJRU5Er"
    "kJggg=="
)
WEATHER_TOOL = Tool(
    function=FunctionDef(
        name="get_weather",
        description="Current weather for a city",
        parameters={
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    )
)
STREAMS = [
    "stream_text.sse",
    "stream_function_call.sse",
    "stream_parallel_calls.sse",
    "stream_thinking.sse",
]


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def body_of(request: ChatRequest, *, stream: bool = False) -> Any:
    wire = FAMILY.build_request(request, model=MODEL, stream=stream, options=WireOptions())
    return json.loads(wire.body)


def user(text: str) -> Message:
    return Message(role="user", content=text)


def call(call_id: str, name: str, arguments: str) -> ToolCall:
    return ToolCall(id=call_id, function=FunctionCall(name=name, arguments=arguments))


def result(call_id: str, content: str) -> Message:
    return Message(role="tool", tool_call_id=call_id, content=content)


def chunk(**fields: Any) -> bytes:
    return b"data: " + msgspec.json.encode(fields) + b"\r\n\r\n"


def parts_chunk(*parts: dict[str, Any], finish: str | None = None, rid: str = "r1") -> bytes:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": list(parts)}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    return chunk(candidates=[candidate], responseId=rid)


def stream(*reads: bytes) -> Collected:
    parser = FAMILY.stream_parser(MODEL)
    return collect([*(parser.feed(data) for data in reads), parser.close()])


def parse_error(
    status: int, body: bytes | dict[str, Any], headers: dict[str, str] | None = None
) -> ProviderError:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return FAMILY.parse_error(status, raw, headers or {}, provider="google")


def google_error(code: int, status: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, **extra}}


# --- request: paths and fields ---------------------------------------------------------


def test_family_is_named_gemini():
    assert FAMILY.name == "gemini"


def test_text_request_matches_the_documented_body():
    request = ChatRequest(messages=[user("Say hello in five words.")], max_tokens=64)

    wire = FAMILY.build_request(request, model=MODEL, stream=False, options=WireOptions())

    assert wire.method == "POST"
    assert wire.path == "/models/gemini-2.5-flash:generateContent"
    assert wire.headers == {"Content-Type": "application/json"}
    assert json.loads(wire.body) == json.loads(fixture("request_text.json"))


@pytest.mark.parametrize(
    ("model", "stream_flag", "options", "path"),
    [
        (MODEL, True, WireOptions(), "/models/gemini-2.5-flash:streamGenerateContent?alt=sse"),
        ("models/gemini-2.5-pro", False, WireOptions(), "/models/gemini-2.5-pro:generateContent"),
        (
            MODEL,
            True,
            WireOptions(query={"trace": "1"}),
            "/models/gemini-2.5-flash:streamGenerateContent?alt=sse&trace=1",
        ),
        (
            MODEL,
            False,
            WireOptions(chat_path="/publishers/google/models/{model}"),
            "/publishers/google/models/gemini-2.5-flash:generateContent",
        ),
    ],
    ids=["stream", "models-prefix", "query", "chat-path"],
)
def test_request_path_names_the_model_and_method(model, stream_flag, options, path):
    request = ChatRequest(messages=[user("hi")])

    wire = FAMILY.build_request(request, model=model, stream=stream_flag, options=options)

    assert wire.path == path


def test_the_stream_body_is_the_same_as_the_plain_one():
    request = ChatRequest(messages=[user("hi")], temperature=0.5)

    assert body_of(request, stream=True) == body_of(request)


def test_only_fields_the_request_set_are_sent():
    body = body_of(ChatRequest(messages=[user("hi")]))

    assert body == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


def test_generation_config_carries_temperature_limit_and_stops():
    request = ChatRequest(messages=[user("hi")], temperature=0.0, max_tokens=10, stop="END")

    config = body_of(request)["generationConfig"]

    assert config == {"temperature": 0.0, "maxOutputTokens": 10, "stopSequences": ["END"]}


def test_system_and_developer_messages_become_the_system_instruction():
    request = ChatRequest(
        messages=[
            SYSTEM,
            Message(role="developer", content=[TextPart(text="Answer in French.")]),
            user("hi"),
        ]
    )

    body = body_of(request)

    assert body["systemInstruction"] == {
        "parts": [{"text": "You are a terse assistant."}, {"text": "Answer in French."}]
    }
    assert body["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]


def test_tools_become_function_declarations():
    bare = Tool(function=FunctionDef(name="clock"))
    request = ChatRequest(messages=[user("hi")], tools=[WEATHER_TOOL, bare])

    tools = body_of(request)["tools"]

    assert tools == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Current weather for a city",
                    "parameters": WEATHER_TOOL.function.parameters,
                },
                {"name": "clock"},
            ]
        }
    ]


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("required", {"mode": "ANY"}),
        ("none", {"mode": "NONE"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ],
    ids=["auto", "required", "none", "named"],
)
def test_tool_choice_maps_to_a_function_calling_mode(choice, config):
    request = ChatRequest(messages=[user("hi")], tools=[WEATHER_TOOL], tool_choice=choice)

    assert body_of(request)["toolConfig"] == {"functionCallingConfig": config}


# --- request: images -------------------------------------------------------------------


def test_vision_and_tools_request_matches_the_documented_body():
    question = TextPart(text="What is the weather where this photo was taken?")
    photo = ImagePart(image_url=ImageUrl(url=f"data:image/png;base64,{PNG_BASE64}"))
    upload = ImagePart(
        image_url=ImageUrl(url="https://generativelanguage.googleapis.com/v1beta/files/abc123")
    )
    request = ChatRequest(
        messages=[
            SYSTEM,
            Message(role="user", content=[question, photo, upload]),
            Message(
                role="assistant", tool_calls=[call("fx01", "get_weather", '{"location":"Paris"}')]
            ),
            result("fx01", '{"temp_c":18,"sky":"cloudy"}'),
        ],
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        temperature=0.2,
        max_tokens=1024,
        stop=[],
    )

    body = body_of(request)

    # Two deliberate differences from the documented body (which mirrors the AI SDK): the
    # real signature is not kept, so the sentinel replaces it; a JSON-object tool result
    # is sent as that object, not wrapped as {name, content}.
    expected = json.loads(fixture("request_tools_vision.json"))
    model_turn, result_turn = expected["contents"][1:]
    model_turn["parts"][0]["thoughtSignature"] = SKIP_SIGNATURE
    result_turn["parts"][0]["functionResponse"]["response"] = {"temp_c": 18, "sky": "cloudy"}
    assert body == expected


@pytest.mark.parametrize(
    ("url", "mime_type"),
    [
        ("https://example.com/cat.png", "image/png"),
        ("https://example.com/CAT.JPG?size=large#top", "image/jpeg"),
        ("http://example.com/a.b/photo.webp", "image/webp"),
        ("https://example.com/photo", "image/jpeg"),
        ("https://example.com/archive.tar", "image/jpeg"),
    ],
    ids=["png", "upper-case-with-query", "dotted-path", "no-extension", "unknown-extension"],
)
def test_an_image_url_becomes_file_data_typed_by_its_extension(url, mime_type):
    request = ChatRequest(messages=[Message(role="user", content=[ImagePart(ImageUrl(url))])])

    parts = body_of(request)["contents"][0]["parts"]

    assert parts == [{"fileData": {"mimeType": mime_type, "fileUri": url}}]


def test_a_data_url_that_is_not_base64_is_encoded():
    svg = ImagePart(image_url=ImageUrl(url="data:image/svg+xml,%3Csvg%2F%3E"))

    parts = body_of(ChatRequest(messages=[Message(role="user", content=[svg])]))["contents"][0]

    assert parts["parts"] == [{"inlineData": {"mimeType": "image/svg+xml", "data": "PHN2Zy8+"}}]


# --- request: turns and function-call replay ----------------------------------------------


def test_parallel_calls_are_replayed_by_name_in_call_order():
    request = ChatRequest(
        messages=[
            user("Weather and time in Paris?"),
            Message(
                role="assistant",
                content="Checking both.",
                tool_calls=[
                    call("call_a", "get_weather", '{"location":"Paris"}'),
                    call("call_b", "get_time", '{"timezone":"Europe/Paris"}'),
                ],
            ),
            result("call_b", "14:05"),
            result("call_a", '{"temp_c":18}'),
            user("And tomorrow?"),
        ]
    )

    contents = body_of(request)["contents"]

    assert contents == [
        {"role": "user", "parts": [{"text": "Weather and time in Paris?"}]},
        {
            "role": "model",
            "parts": [
                {"text": "Checking both."},
                {
                    "functionCall": {"name": "get_weather", "args": {"location": "Paris"}},
                    "thoughtSignature": SKIP_SIGNATURE,
                },
                {"functionCall": {"name": "get_time", "args": {"timezone": "Europe/Paris"}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"temp_c": 18}}},
                {"functionResponse": {"name": "get_time", "response": {"result": "14:05"}}},
                {"text": "And tomorrow?"},
            ],
        },
    ]


def test_a_repeated_call_id_answers_the_latest_call():
    request = ChatRequest(
        messages=[
            Message(role="assistant", tool_calls=[call("call_0", "get_weather", "{}")]),
            result("call_0", "sunny"),
            Message(role="assistant", tool_calls=[call("call_0", "get_time", "{}")]),
            result("call_0", "noon"),
        ]
    )

    contents = body_of(request)["contents"]

    names = [turn["parts"][0]["functionResponse"]["name"] for turn in contents[1::2]]
    assert names == ["get_weather", "get_time"]


@pytest.mark.parametrize(
    ("content", "response"),
    [
        ('{"temp_c": 18}', {"temp_c": 18}),
        ("[1, 2]", {"result": "[1, 2]"}),
        ("42", {"result": "42"}),
        ("not json", {"result": "not json"}),
        ("", {"result": ""}),
    ],
    ids=["object", "array", "number", "text", "empty"],
)
def test_a_function_response_is_always_an_object(content, response):
    request = ChatRequest(
        messages=[
            Message(role="assistant", tool_calls=[call("c1", "lookup", "{}")]),
            result("c1", content),
        ]
    )

    part = body_of(request)["contents"][1]["parts"][0]

    assert part == {"functionResponse": {"name": "lookup", "response": response}}


@pytest.mark.parametrize("arguments", ["", "{not json", "[1, 2]"])
def test_call_arguments_that_are_not_a_json_object_are_replayed_empty(arguments):
    request = ChatRequest(
        messages=[Message(role="assistant", tool_calls=[call("c1", "lookup", arguments)])]
    )

    part = body_of(request)["contents"][0]["parts"][0]

    assert part["functionCall"] == {"name": "lookup", "args": {}}


def test_a_tool_result_for_an_unknown_call_uses_its_name_when_given():
    message = Message(role="tool", tool_call_id="elsewhere", name="lookup", content="ok")

    contents = body_of(ChatRequest(messages=[user("hi"), message]))["contents"]

    assert contents == [
        {
            "role": "user",
            "parts": [
                {"text": "hi"},
                {"functionResponse": {"name": "lookup", "response": {"result": "ok"}}},
            ],
        }
    ]


def test_a_tool_result_answering_no_earlier_call_is_refused():
    request = ChatRequest(messages=[user("hi"), result("call_x", "ok")])

    with pytest.raises(InvalidRequest, match="'call_x' answers no earlier assistant tool call"):
        FAMILY.build_request(request, model=MODEL, stream=False, options=WireOptions())


def test_consecutive_turns_of_one_role_merge_and_empty_messages_are_dropped():
    request = ChatRequest(
        messages=[
            user("one"),
            user("two"),
            Message(role="assistant", content=""),
            Message(role="assistant", content="three"),
            Message(role="assistant", content=None),
            Message(role="assistant", content="four"),
        ]
    )

    assert body_of(request)["contents"] == [
        {"role": "user", "parts": [{"text": "one"}, {"text": "two"}]},
        {"role": "model", "parts": [{"text": "three"}, {"text": "four"}]},
    ]


# --- streams ---------------------------------------------------------------------------


def test_text_stream_gives_text_finish_reason_and_usage_without_done():
    data = fixture("stream_text.sse")

    result = stream(data)

    assert b"\r\n\r\n" in data
    assert b"[DONE]" not in data
    assert result == Collected(
        text="Hello there, nice to meet!",
        tool_calls={},
        finish_reason="stop",
        usage=TokenUsage(input_tokens=9, output_tokens=7),
        done=False,
    )


def test_one_read_carrying_several_frames_becomes_one_update():
    update = FAMILY.stream_parser(MODEL).feed(fixture("stream_text.sse"))

    assert update == StreamUpdate(
        text="Hello there, nice to meet!",
        finish_reason="stop",
        usage=TokenUsage(input_tokens=9, output_tokens=7),
    )


@pytest.mark.parametrize("name", STREAMS)
def test_a_stream_fed_one_byte_at_a_time_gives_the_same_result(name):
    data = fixture(name)

    assert stream(*one_byte_at_a_time(data)) == stream(data)


@pytest.mark.parametrize("name", STREAMS)
def test_a_stream_with_lf_line_endings_gives_the_same_result(name):
    data = fixture(name)

    assert stream(data.replace(b"\r\n", b"\n")) == stream(data)


def test_close_flushes_a_last_frame_without_a_blank_line():
    parser = FAMILY.stream_parser(MODEL)

    assert parser.feed(parts_chunk({"text": "Hi"}).rstrip(b"\r\n")).text == ""
    assert parser.close().text == "Hi"


def test_a_streamed_function_call_arrives_whole_with_a_minted_id():
    result = stream(fixture("stream_function_call.sse"))

    assert result == Collected(
        text="",
        tool_calls={0: ("call_fxResp0004_0", "get_weather", '{"location":"Paris"}')},
        finish_reason="tool_calls",
        usage=TokenUsage(input_tokens=29, output_tokens=60, reasoning_tokens=45),
        done=False,
    )


def test_parallel_streamed_calls_get_their_own_index_and_id():
    update = FAMILY.stream_parser(MODEL).feed(fixture("stream_parallel_calls.sse"))

    assert update.tool_calls == [
        ToolCallDelta(
            index=0, id="call_fxResp0007_0", name="get_weather", arguments='{"location":"Paris"}'
        ),
        ToolCallDelta(
            index=1,
            id="call_fxResp0007_1",
            name="get_time",
            arguments='{"timezone":"Europe/Paris"}',
        ),
    ]
    assert update.finish_reason == "tool_calls"


def test_calls_in_later_chunks_continue_the_numbering():
    first = parts_chunk({"functionCall": {"name": "a", "args": {}}})
    second = parts_chunk({"functionCall": {"name": "b"}}, finish="STOP")

    result = stream(first, second)

    assert result.tool_calls == {0: ("call_r1_0", "a", "{}"), 1: ("call_r1_1", "b", "{}")}
    assert result.finish_reason == "tool_calls"


def test_a_call_id_sent_by_the_model_is_kept():
    data = parts_chunk({"functionCall": {"id": "fc_77", "name": "a", "args": {"x": 1}}})

    assert stream(data).tool_calls == {0: ("fc_77", "a", '{"x":1}')}


def test_a_response_id_is_cleaned_before_it_names_a_call():
    data = parts_chunk({"functionCall": {"name": "a"}}, rid="ab/c+d=")

    assert stream(data).tool_calls == {0: ("call_abcd_0", "a", "{}")}


def test_thoughts_are_not_text_and_usage_counts_cache_and_thinking():
    result = stream(fixture("stream_thinking.sse"))

    assert result.text == "Hello!"
    assert result.usage == TokenUsage(
        input_tokens=2056, cached_input_tokens=2048, output_tokens=66, reasoning_tokens=64
    )


def test_a_chunk_without_usage_reports_none():
    update = FAMILY.stream_parser(MODEL).feed(parts_chunk({"text": "Hi"}))

    assert update.usage is None
    assert update.text == "Hi"


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "MALFORMED_FUNCTION_CALL"),
    ],
)
def test_finish_reasons_are_normalised(reason, expected):
    assert stream(parts_chunk({"text": "x"}, finish=reason)).finish_reason == expected


def test_a_length_stop_after_a_call_stays_length():
    data = parts_chunk({"functionCall": {"name": "a"}}, finish="MAX_TOKENS")

    assert stream(data).finish_reason == "length"


def test_a_prompt_blocked_in_a_stream_raises_content_policy():
    with pytest.raises(ContentPolicy) as caught:
        stream(fixture("stream_prompt_blocked.sse"))

    assert caught.value.message == "the prompt was blocked (PROHIBITED_CONTENT)"
    assert not caught.value.retryable


def test_an_error_inside_the_stream_raises_the_mapped_error():
    error = google_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")

    with pytest.raises(Overloaded) as caught:
        stream(parts_chunk({"text": "Hi"}), chunk(**error))

    assert caught.value.message == (
        "503 The model is overloaded. Please try again later. (inside a 200 response)"
    )
    assert caught.value.retryable


def test_a_frame_that_is_not_json_raises_malformed_response():
    with pytest.raises(MalformedResponse) as caught:
        stream(b"data: {not json\r\n\r\n")

    assert caught.value.message == "stream frame is not valid JSON: b'{not json'"


def test_a_frame_of_the_wrong_shape_raises_malformed_response():
    with pytest.raises(MalformedResponse, match=r"unexpected shape .*\$\.candidates"):
        stream(chunk(candidates="none"))


# --- non-streaming responses ---------------------------------------------------------------


def test_text_response_is_parsed():
    parsed = FAMILY.parse_response(fixture("response_text.json"), MODEL)

    assert parsed == ParsedResponse(
        text="Hello there, nice to meet!",
        finish_reason="stop",
        usage=TokenUsage(input_tokens=9, output_tokens=31, reasoning_tokens=24),
        model="gemini-2.5-flash",
    )


def test_function_call_response_is_parsed_with_a_minted_id():
    parsed = FAMILY.parse_response(fixture("response_function_call.json"), MODEL)

    assert parsed == ParsedResponse(
        text="",
        finish_reason="tool_calls",
        usage=TokenUsage(input_tokens=29, output_tokens=91, reasoning_tokens=76),
        tool_calls=[call("call_fxResp0002_0", "get_weather", '{"location":"Paris"}')],
        model="gemini-3-pro-preview",
    )


def test_a_blocked_answer_finishes_as_content_filter():
    parsed = FAMILY.parse_response(fixture("response_safety_finish.json"), MODEL)

    assert parsed.text == ""
    assert parsed.finish_reason == "content_filter"
    assert parsed.usage == TokenUsage(input_tokens=14)


def test_a_blocked_prompt_raises_content_policy_naming_the_reason():
    with pytest.raises(ContentPolicy) as caught:
        FAMILY.parse_response(fixture("response_prompt_blocked.json"), MODEL)

    assert caught.value.message == "the prompt was blocked (SAFETY)"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"<html>502</html>", "not valid JSON"),
        (b'{"modelVersion": "x"}', "no candidates"),
        (b'{"candidates": []}', "no candidates"),
        (b'{"candidates": [{"content": "hi"}]}', "unexpected shape"),
    ],
)
def test_a_response_without_an_answer_is_malformed(body, problem):
    with pytest.raises(MalformedResponse, match=problem):
        FAMILY.parse_response(body, MODEL)


def test_an_error_in_a_200_body_raises_the_mapped_error():
    body = json.dumps(google_error(500, "INTERNAL", "An internal error has occurred.")).encode()

    with pytest.raises(ProviderUnavailable, match="An internal error has occurred"):
        FAMILY.parse_response(body, MODEL)


# --- errors ----------------------------------------------------------------------------


def test_rate_limit_waits_for_the_retry_info_delay():
    error = parse_error(429, fixture("error_429_retryinfo.json"))

    assert isinstance(error, RateLimited)
    assert error.retryable
    assert error.retry_after == 21.5
    assert error.message == (
        "google: 429 You exceeded your current quota, please check your plan and billing details."
    )


def test_a_retry_after_header_wins_over_retry_info():
    body = google_error(
        429,
        "RESOURCE_EXHAUSTED",
        "Quota exceeded.",
        details=[{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "34.4s"}],
    )

    assert parse_error(429, body).retry_after == 34.4
    assert parse_error(429, body, {"Retry-After": "3"}).retry_after == 3.0


@pytest.mark.parametrize("delay", ["soon", ""])
def test_an_unreadable_retry_delay_is_no_retry_after(delay):
    details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}]

    error = parse_error(429, google_error(429, "RESOURCE_EXHAUSTED", "slow", details=details))

    assert isinstance(error, RateLimited)
    assert error.retry_after is None


def test_context_length_error_is_mapped():
    error = parse_error(400, fixture("error_context.json"))

    assert isinstance(error, ContextLengthExceeded)
    assert error.message == (
        "google: 400 The input token count exceeds the maximum number of tokens allowed 1048576."
    )
    assert error.status_code == 400
    assert not error.retryable


def test_an_invalid_key_is_an_authentication_failure_not_a_bad_request():
    error = parse_error(400, fixture("error_api_key_invalid.json"))

    assert type(error) is AuthenticationFailed
    assert error.message == "google: 400 API key not valid. Please pass a valid API key."
    assert error.provider == "google"
    assert error.status_code == 400


def test_a_free_tier_closed_to_the_country_is_an_authentication_failure():
    body = google_error(
        400,
        "FAILED_PRECONDITION",
        "User location is not supported for the API use without a billing account linked.",
    )

    assert type(parse_error(400, body)) is AuthenticationFailed


@pytest.mark.parametrize(
    ("status", "name", "message", "expected"),
    [
        (400, "INVALID_ARGUMENT", "Invalid JSON payload received.", BadUpstreamRequest),
        (401, "UNAUTHENTICATED", "Request had invalid authentication.", AuthenticationFailed),
        (403, "PERMISSION_DENIED", "The caller does not have permission", AuthenticationFailed),
        (404, "NOT_FOUND", "models/gemini-9 is not found", ModelNotFound),
        (500, "INTERNAL", "An internal error has occurred.", ProviderUnavailable),
        (503, "UNAVAILABLE", "The service is currently unavailable.", ProviderUnavailable),
        (503, "UNAVAILABLE", "The model is overloaded. Please try again later.", Overloaded),
        (504, "DEADLINE_EXCEEDED", "Deadline expired before operation.", ProviderUnavailable),
    ],
)
def test_statuses_map_to_what_the_caller_can_do(status, name, message, expected):
    error = parse_error(status, google_error(status, name, message))

    assert type(error) is expected
    assert error.retryable is issubclass(expected, ProviderUnavailable)
    assert error.message == f"google: {status} {message}"


def test_the_overloaded_fixture_is_overloaded():
    assert type(parse_error(503, fixture("error_503_overloaded.json"))) is Overloaded


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (502, b"<html>Bad gateway</html>", "google: 502 <html>Bad gateway</html>"),
        (503, b"", "google: 503 Service Unavailable"),
        (400, b'{"error": "bad"}', 'google: 400 {"error": "bad"}'),
        (
            400,
            b'{"error": {"code": 400, "status": "INVALID_ARGUMENT"}}',
            "google: 400 INVALID_ARGUMENT",
        ),
    ],
    ids=["html", "empty", "error-string", "no-message"],
)
def test_error_bodies_that_are_not_google_shaped_still_give_a_message(status, body, message):
    assert parse_error(status, body).message == message
