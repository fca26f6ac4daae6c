from __future__ import annotations

import json
import time
from email.utils import formatdate
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
    MalformedResponse,
    ModelNotFound,
    Overloaded,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)
from omnillm.providers.base import ParsedResponse, StreamUpdate, WireOptions
from omnillm.providers.openai_chat import FAMILY
from tests.unit._streams import Collected, collect, one_byte_at_a_time

FIXTURES = Path(__file__).parents[1] / "fixtures" / "openai"
SYSTEM = Message(role="system", content="You are a terse assistant.")
TINY_PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGBgAAAA"
    "BQABpfZFQAAAAABJRU5ErkJggg=="
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


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def body_of(
    request: ChatRequest, *, stream: bool = False, options: WireOptions | None = None
) -> Any:
    wire = FAMILY.build_request(
        request, model="gpt-4.1-mini", stream=stream, options=options or WireOptions()
    )
    return json.loads(wire.body)


def chunk(**fields: Any) -> bytes:
    return b"data: " + msgspec.json.encode(fields) + b"\n\n"


def text_chunk(text: str) -> bytes:
    return chunk(choices=[{"index": 0, "delta": {"content": text}, "finish_reason": None}])


def tool_chunk(*calls: dict[str, Any]) -> bytes:
    return chunk(choices=[{"index": 0, "delta": {"tool_calls": list(calls)}}])


def stream(*reads: bytes) -> Collected:
    parser = FAMILY.stream_parser("gpt-4.1-mini")
    return collect([*(parser.feed(data) for data in reads), parser.close()])


def parse_error(
    status: int, body: bytes | dict[str, Any], headers: dict[str, str] | None = None
) -> ProviderError:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return FAMILY.parse_error(status, raw, headers or {}, provider="openai")


# --- request -------------------------------------------------------------------------


def test_family_is_named_openai():
    assert FAMILY.name == "openai"


def test_text_request_matches_the_documented_body():
    request = ChatRequest(
        messages=[SYSTEM, Message(role="user", content="Say hello in five words.")],
        temperature=0.2,
        max_tokens=64,
    )

    wire = FAMILY.build_request(request, model="gpt-4.1-mini", stream=False, options=WireOptions())

    assert wire.method == "POST"
    assert wire.path == "/chat/completions"
    assert wire.headers == {"Content-Type": "application/json"}
    assert json.loads(wire.body) == json.loads(fixture("request_text.json"))


def test_vision_and_tools_request_matches_the_documented_body():
    question = TextPart(text="What is the weather where this photo was taken?")
    photo = ImagePart(image_url=ImageUrl(url=TINY_PNG, detail="auto"))
    request = ChatRequest(
        messages=[SYSTEM, Message(role="user", content=[question, photo])],
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        max_tokens=512,
    )
    options = WireOptions(max_tokens_field="max_completion_tokens")

    body = body_of(request, stream=True, options=options)

    assert body == json.loads(fixture("request_tools_vision.json"))


def test_only_fields_the_request_set_are_sent():
    request = ChatRequest(messages=[Message(role="user", content="hi")])

    body = body_of(request)

    assert body == {
        "model": "gpt-4.1-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": False,
    }


def test_a_zero_temperature_is_still_sent():
    request = ChatRequest(messages=[Message(role="user", content="hi")], temperature=0.0)

    assert body_of(request)["temperature"] == 0.0


def test_stop_tool_choice_and_name_are_forwarded_as_given():
    choice = {"type": "function", "function": {"name": "get_weather"}}
    request = ChatRequest(
        messages=[Message(role="user", content="hi", name="alice")],
        stop=["\n\n", "END"],
        tool_choice=choice,
    )

    body = body_of(request)

    assert body["stop"] == ["\n\n", "END"]
    assert body["tool_choice"] == choice
    assert body["messages"] == [{"role": "user", "content": "hi", "name": "alice"}]


def test_an_image_without_detail_sends_no_detail():
    photo = ImagePart(image_url=ImageUrl(url="https://example.com/cat.png"))
    request = ChatRequest(messages=[Message(role="user", content=[photo])])

    content = body_of(request)["messages"][0]["content"]

    assert content == [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]


def test_tool_round_trip_messages_use_the_documented_shapes():
    call = ToolCall(
        id="call_fx01",
        function=FunctionCall(name="get_weather", arguments='{"location":"Paris"}'),
    )
    request = ChatRequest(
        messages=[
            Message(role="assistant", content=None, tool_calls=[call]),
            Message(role="tool", tool_call_id="call_fx01", content='{"temp_c":18,"sky":"cloudy"}'),
        ]
    )

    messages = body_of(request)["messages"]

    assert messages == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_fx01",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_fx01", "content": '{"temp_c":18,"sky":"cloudy"}'},
    ]


@pytest.mark.parametrize(
    ("stream_flag", "stream_usage", "expected"),
    [(True, True, {"include_usage": True}), (True, False, None), (False, True, None)],
)
def test_stream_options_are_sent_only_when_streaming_with_usage(
    stream_flag, stream_usage, expected
):
    request = ChatRequest(messages=[Message(role="user", content="hi")])

    body = body_of(request, stream=stream_flag, options=WireOptions(stream_usage=stream_usage))

    assert body["stream"] is stream_flag
    assert body.get("stream_options") == expected


# --- streams -------------------------------------------------------------------------


def test_text_stream_gives_text_finish_reason_and_usage():
    result = stream(fixture("stream_text.sse"))

    assert result == Collected(
        text="Hello there.",
        tool_calls={},
        finish_reason="stop",
        usage=TokenUsage(input_tokens=12, output_tokens=3),
        done=True,
    )


def test_tool_call_stream_reassembles_both_calls():
    result = stream(fixture("stream_tool_call.sse"))

    assert result.tool_calls == {
        0: ("call_fx01", "get_weather", '{"location":"Paris"}'),
        1: ("call_fx02", "get_weather", '{"location":"Lyon"}'),
    }
    assert result.finish_reason == "tool_calls"
    assert result.usage == TokenUsage(input_tokens=88, output_tokens=38)
    assert result.text == ""


def test_fragments_of_one_call_in_one_read_are_merged():
    update = FAMILY.stream_parser("gpt-4.1-mini").feed(fixture("stream_tool_call.sse"))

    paris, lyon = '{"location":"Paris"}', '{"location":"Lyon"}'
    assert update.tool_calls == [
        ToolCallDelta(index=0, id="call_fx01", name="get_weather", arguments=paris),
        ToolCallDelta(index=1, id="call_fx02", name="get_weather", arguments=lyon),
    ]


def test_one_read_carrying_several_frames_becomes_one_update():
    update = FAMILY.stream_parser("gpt-4.1-mini").feed(fixture("stream_text.sse"))

    assert update == StreamUpdate(
        text="Hello there.",
        finish_reason="stop",
        usage=TokenUsage(input_tokens=12, output_tokens=3),
        done=True,
    )


@pytest.mark.parametrize(
    "name",
    [
        "stream_text.sse",
        "stream_tool_call.sse",
        "stream_azure_filters.sse",
        "stream_opencode_cost_tail.sse",
    ],
)
def test_a_stream_fed_one_byte_at_a_time_gives_the_same_result(name):
    data = fixture(name)

    assert stream(*one_byte_at_a_time(data)) == stream(data)


@pytest.mark.parametrize("eol", [b"\r\n", b"\r"], ids=["crlf", "cr"])
def test_a_stream_with_other_line_endings_gives_the_same_result(eol):
    data = fixture("stream_tool_call.sse")

    assert stream(data.replace(b"\n", eol)) == stream(data)


def test_done_is_reported_only_once_done_arrives_and_then_stays():
    parser = FAMILY.stream_parser("gpt-4.1-mini")

    assert parser.feed(text_chunk("Hi")).done is False
    assert parser.feed(b"data: [DONE]\n\n").done is True
    assert parser.close().done is True


def test_a_stream_cut_before_done_is_not_done():
    result = stream(text_chunk("Hi"), text_chunk(" there"))

    assert result.text == "Hi there"
    assert result.done is False


def test_close_flushes_a_last_frame_without_a_blank_line():
    parser = FAMILY.stream_parser("gpt-4.1-mini")

    assert parser.feed(text_chunk("Hi").rstrip(b"\n")).text == ""
    assert parser.close().text == "Hi"


def test_usage_details_are_normalised():
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 30,
        "prompt_tokens_details": {"cached_tokens": 40},
        "completion_tokens_details": {"reasoning_tokens": 25},
    }

    result = stream(chunk(choices=[], usage=usage))

    assert result.usage == TokenUsage(
        input_tokens=100, cached_input_tokens=40, output_tokens=30, reasoning_tokens=25
    )


def test_null_usage_details_count_as_zero():
    usage = {
        "prompt_tokens": 5,
        "completion_tokens": 2,
        "prompt_tokens_details": None,
        "completion_tokens_details": {"reasoning_tokens": None},
    }

    assert stream(chunk(choices=[], usage=usage)).usage == TokenUsage(
        input_tokens=5, output_tokens=2
    )


def test_null_usage_is_no_usage():
    update = FAMILY.stream_parser("gpt-4.1-mini").feed(chunk(choices=[], usage=None))

    assert update.usage is None


def test_the_last_finish_reason_of_a_read_wins():
    finish = chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "length"}])

    update = FAMILY.stream_parser("gpt-4.1-mini").feed(finish + text_chunk("") + chunk(choices=[]))

    assert update.finish_reason == "length"


def test_tool_calls_without_index_fall_back_to_position():
    first = {"id": "call_a", "function": {"name": "lookup", "arguments": '{"q":'}}
    rest = {"function": {"arguments": '"paris"}'}}
    second = {"id": "call_b", "function": {"name": "lookup", "arguments": "{}"}}
    third = {"id": "call_c", "function": {"name": "clock", "arguments": "{}"}}

    result = stream(tool_chunk(first), tool_chunk(rest), tool_chunk(second, third))

    assert result.tool_calls == {
        0: ("call_a", "lookup", '{"q":"paris"}'),
        1: ("call_b", "lookup", "{}"),
        2: ("call_c", "clock", "{}"),
    }


def test_keep_alive_comments_are_ignored():
    result = stream(b": OPENROUTER PROCESSING\n\n", text_chunk("Hi"), b": ping\n\n")

    assert result.text == "Hi"


def test_azure_filter_chunks_without_choices_or_delta_are_ignored():
    result = stream(fixture("stream_azure_filters.sse"))

    assert result == Collected(
        text="Hello",
        tool_calls={},
        finish_reason="stop",
        usage=TokenUsage(input_tokens=12, output_tokens=1),
        done=True,
    )


def test_null_content_and_empty_data_frames_add_nothing():
    null_content = chunk(choices=[{"index": 0, "delta": {"content": None}}])

    result = stream(null_content, b"data:\n\n", text_chunk("ok"))

    assert result.text == "ok"


def test_frames_after_done_are_ignored():
    result = stream(fixture("stream_opencode_cost_tail.sse"), b"data: not json\n\n")

    assert result == Collected(
        text="",
        tool_calls={},
        finish_reason="stop",
        usage=TokenUsage(input_tokens=30, output_tokens=5),
        done=True,
    )


def test_an_error_inside_the_stream_raises_the_mapped_error():
    parser = FAMILY.stream_parser("gpt-4.1-mini")

    with pytest.raises(ProviderUnavailable) as caught:
        parser.feed(fixture("stream_openrouter_midstream_error.sse"))

    assert "Provider disconnected unexpectedly" in caught.value.message
    assert caught.value.status_code == 500
    assert caught.value.retryable


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ({"code": 429, "message": "Rate limit exceeded"}, RateLimited),
        ({"code": "context_length_exceeded", "message": "too long"}, ContextLengthExceeded),
        ({"code": 401, "message": "User not found"}, AuthenticationFailed),
        ({"type": "server_error", "message": "boom"}, ProviderUnavailable),
    ],
)
def test_in_stream_error_codes_map_like_http_statuses(error, expected):
    with pytest.raises(expected) as caught:
        stream(text_chunk("Hi"), chunk(error=error, choices=[]))

    assert error["message"] in caught.value.message


def test_a_frame_that_is_not_json_raises_malformed_response():
    with pytest.raises(MalformedResponse) as caught:
        stream(b"data: {not json\n\n")

    assert caught.value.message == "stream frame is not valid JSON: b'{not json'"
    assert caught.value.retryable


def test_a_long_bad_frame_is_quoted_only_in_part():
    with pytest.raises(MalformedResponse) as caught:
        stream(b"data: <" + b"x" * 5000 + b"\n\n")

    assert len(caught.value.message) < 300


def test_a_frame_of_the_wrong_shape_raises_malformed_response():
    with pytest.raises(MalformedResponse, match=r"unexpected shape .*\$\.choices"):
        stream(chunk(choices="none"))


# --- non-streaming responses ----------------------------------------------------------


def test_text_response_is_parsed():
    parsed = FAMILY.parse_response(fixture("response_text.json"), "gpt-4.1-mini")

    assert parsed == ParsedResponse(
        text="Hello there, nice to meet!",
        finish_reason="stop",
        usage=TokenUsage(input_tokens=21, output_tokens=7),
        model="gpt-4.1-mini-2025-04-14",
    )


def test_tool_call_response_is_parsed():
    parsed = FAMILY.parse_response(fixture("response_tool_call.json"), "gpt-4.1-mini")

    assert parsed.text == ""
    assert parsed.finish_reason == "tool_calls"
    assert parsed.usage == TokenUsage(input_tokens=88, output_tokens=38)
    assert parsed.tool_calls == [
        ToolCall(id="call_fx01", function=FunctionCall("get_weather", '{"location":"Paris"}')),
        ToolCall(id="call_fx02", function=FunctionCall("get_weather", '{"location":"Lyon"}')),
    ]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"<html>502</html>", "not valid JSON"),
        (b'{"id": "x"}', "no choices"),
        (b'{"choices": []}', "no choices"),
        (b'{"choices": [{"message": "hi"}]}', "unexpected shape"),
    ],
)
def test_a_response_without_an_answer_is_malformed(body, problem):
    with pytest.raises(MalformedResponse, match=problem):
        FAMILY.parse_response(body, "gpt-4.1-mini")


def test_an_error_in_a_200_body_raises_the_mapped_error():
    body = b'{"error": {"code": 502, "message": "upstream died"}}'

    with pytest.raises(ProviderUnavailable, match="upstream died"):
        FAMILY.parse_response(body, "gpt-4.1-mini")


# --- errors --------------------------------------------------------------------------


def test_context_length_error_is_mapped_with_provider_and_status():
    error = parse_error(400, fixture("error_context_length.json"))

    assert isinstance(error, ContextLengthExceeded)
    assert error.message.startswith("openai: 400 This model's maximum context length is 128000")
    assert error.provider == "openai"
    assert error.status_code == 400
    assert not error.retryable


DEEPSEEK_TOO_LONG = (
    "This model's maximum context length is 65536 tokens. However, you requested 70000 tokens "
    "(69000 in the messages, 1000 in the completion)."
)
OPENROUTER_TOO_LONG = (
    "This endpoint's maximum context length is 200000 tokens. However, you requested about "
    "250000 tokens."
)
XAI_TOO_LONG = (
    "This model's maximum prompt length is 131072 but the request contains 149617 tokens."
)
MOONSHOT_TOO_LONG = (
    "Invalid request: Your request exceeded model token limit: 262144 (requested: 269030)"
)
MISTRAL_TOO_LONG = (
    "Prompt contains 40000 tokens, too large for model with 32768 maximum context length"
)


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (
            {"error": {"message": DEEPSEEK_TOO_LONG, "type": "invalid_request_error"}},
            DEEPSEEK_TOO_LONG,
        ),
        ({"error": {"code": 400, "message": OPENROUTER_TOO_LONG}}, OPENROUTER_TOO_LONG),
        ({"code": "Client specified an invalid argument", "error": XAI_TOO_LONG}, XAI_TOO_LONG),
        (
            {"error": {"message": MOONSHOT_TOO_LONG, "type": "invalid_request_error"}},
            MOONSHOT_TOO_LONG,
        ),
        ({"object": "error", "message": MISTRAL_TOO_LONG, "code": None}, MISTRAL_TOO_LONG),
    ],
    ids=["deepseek", "openrouter", "xai", "moonshot", "mistral"],
)
def test_context_length_is_recognised_from_the_message_alone(body, text):
    error = parse_error(400, body)

    assert isinstance(error, ContextLengthExceeded)
    assert error.message == f"openai: 400 {text}"


def test_unsupported_max_tokens_is_a_bad_upstream_request_naming_the_fix():
    error = parse_error(400, fixture("error_max_tokens_unsupported.json"))

    assert isinstance(error, BadUpstreamRequest)
    assert "Use 'max_completion_tokens' instead" in error.message


@pytest.mark.parametrize(
    "error_body",
    [
        {"message": "Your request was rejected as a result of our safety system.", "code": None},
        {"message": "Your prompt was blocked.", "code": "content_policy_violation"},
        {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's "
            "content management policy.",
            "code": "content_filter",
        },
    ],
    ids=["safety-system", "content-policy-code", "azure-filter"],
)
def test_content_policy_refusals_are_mapped(error_body):
    error = parse_error(400, {"error": error_body})

    assert isinstance(error, ContentPolicy)
    assert error.message == f"openai: 400 {error_body['message']}"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, AuthenticationFailed),
        (403, AuthenticationFailed),
        (404, ModelNotFound),
        (408, ProviderUnavailable),
        (409, ProviderUnavailable),
        (422, BadUpstreamRequest),
        (500, ProviderUnavailable),
        (502, ProviderUnavailable),
        (503, ProviderUnavailable),
        (529, Overloaded),
    ],
)
def test_statuses_map_to_what_the_caller_can_do(status, expected):
    error = parse_error(status, {"error": {"message": "something went wrong"}})

    assert type(error) is expected
    assert error.retryable is issubclass(expected, ProviderUnavailable)
    assert error.message == f"openai: {status} something went wrong"
    assert error.status_code == status


def test_a_bad_key_message_names_the_provider_and_never_the_request_headers():
    body = {"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}

    error = parse_error(401, body, {"Authorization": "Bearer sk-secret"})

    assert isinstance(error, AuthenticationFailed)
    assert error.message == "openai: 401 Incorrect API key provided"
    assert "sk-secret" not in str(error)


def test_rate_limit_reads_retry_after_ms_before_retry_after():
    body = {"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}}

    error = parse_error(429, body, {"retry-after-ms": "1500", "retry-after": "9"})

    assert isinstance(error, RateLimited)
    assert error.retryable
    assert error.retry_after == 1.5


@pytest.mark.parametrize(
    ("headers", "retry_after"),
    [({"Retry-After": "7"}, 7.0), ({}, None), ({"retry-after": "soon"}, None)],
    ids=["seconds", "absent", "garbage"],
)
def test_rate_limit_retry_after_seconds(headers, retry_after):
    error = parse_error(429, {"error": {"message": "slow down"}}, headers)

    assert isinstance(error, RateLimited)
    assert error.retry_after == retry_after


def test_rate_limit_retry_after_as_http_date():
    headers = {"retry-after": formatdate(time.time() + 30, usegmt=True)}

    error = parse_error(429, {"error": {"message": "slow down"}}, headers)

    assert error.retry_after is not None
    assert 28 <= error.retry_after <= 31


def test_insufficient_quota_is_not_retryable():
    body = {"error": {"message": "You exceeded your current quota.", "code": "insufficient_quota"}}

    error = parse_error(429, body, {"retry-after": "1"})

    assert isinstance(error, AuthenticationFailed)
    assert not error.retryable
    assert error.message == (
        "openai: 429 the account has no quota or credit left: You exceeded your current quota."
    )


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (502, b"<html>Bad gateway</html>", "openai: 502 <html>Bad gateway</html>"),
        (503, b"", "openai: 503 Service Unavailable"),
        (404, b'{"detail": "Not Found"}', "openai: 404 Not Found"),
        (400, b'{"message": "invalid model id"}', "openai: 400 invalid model id"),
        (400, b'{"error": {"code": 400}}', 'openai: 400 {"error": {"code": 400}}'),
        (400, b"[1, 2]", "openai: 400 [1, 2]"),
    ],
    ids=["html", "empty", "detail", "message", "no-message", "json-not-object"],
)
def test_error_bodies_that_are_not_openai_shaped_still_give_a_message(status, body, message):
    error = parse_error(status, body)

    assert error.message == message


def test_a_long_non_json_error_body_is_quoted_only_in_part():
    error = parse_error(502, b"<html>" + b"x" * 5000)

    assert isinstance(error, ProviderError)
    assert len(error.message) < 230
    assert error.message.endswith("...")
