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
    ContextLengthExceeded,
    MalformedResponse,
    ModelNotFound,
    Overloaded,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)
from omnillm.providers.anthropic_messages import FAMILY
from omnillm.providers.base import ParsedResponse, StreamUpdate, WireOptions
from tests.unit._streams import Collected, collect, one_byte_at_a_time

FIXTURES = Path(__file__).parents[1] / "fixtures" / "anthropic"
MODEL = "claude-sonnet-4-6"
SYSTEM = Message(role="system", content="You are a terse assistant.")
PNG_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGBgAAAA"
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
PARIS_CALL = ToolCall(
    id="toolu_fx01", function=FunctionCall(name="get_weather", arguments='{"location":"Paris"}')
)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def user(content: str) -> Message:
    return Message(role="user", content=content)


def tool_result(call_id: str, content: str) -> Message:
    return Message(role="tool", tool_call_id=call_id, content=content)


def body_of(request: ChatRequest, *, stream: bool = False) -> Any:
    wire = FAMILY.build_request(request, model=MODEL, stream=stream, options=WireOptions())
    return json.loads(wire.body)


def messages_of(*messages: Message) -> Any:
    return body_of(ChatRequest(messages=list(messages)))["messages"]


def event(kind: str, **fields: Any) -> bytes:
    data = msgspec.json.encode({"type": kind, **fields})
    return f"event: {kind}\n".encode() + b"data: " + data + b"\n\n"


def message_start(**usage: int) -> bytes:
    return event("message_start", message={"id": "msg_t", "content": [], "usage": usage})


def block_start(index: int, **block: Any) -> bytes:
    return event("content_block_start", index=index, content_block=block)


def block_delta(index: int, **delta: Any) -> bytes:
    return event("content_block_delta", index=index, delta=delta)


def text_delta(text: str, index: int = 0) -> bytes:
    return block_delta(index, type="text_delta", text=text)


def json_delta(index: int, partial: str) -> bytes:
    return block_delta(index, type="input_json_delta", partial_json=partial)


def message_delta(stop_reason: str | None = None, **usage: int) -> bytes:
    return event("message_delta", delta={"stop_reason": stop_reason}, usage=usage)


def stream(*reads: bytes) -> Collected:
    parser = FAMILY.stream_parser(MODEL)
    return collect([*(parser.feed(data) for data in reads), parser.close()])


def error_body(kind: str, message: str, **extra: Any) -> bytes:
    return json.dumps(
        {"type": "error", "error": {"type": kind, "message": message, **extra}}
    ).encode()


def parse_error(status: int, body: bytes, headers: dict[str, str] | None = None) -> ProviderError:
    return FAMILY.parse_error(status, body, headers or {}, provider="anthropic")


# --- request -------------------------------------------------------------------------


def test_family_is_named_anthropic():
    assert FAMILY.name == "anthropic"


def test_text_request_matches_the_documented_body():
    request = ChatRequest(messages=[SYSTEM, user("Say hello in five words.")], max_tokens=256)

    wire = FAMILY.build_request(request, model=MODEL, stream=False, options=WireOptions())

    assert wire.method == "POST"
    assert wire.path == "/messages"
    assert wire.headers == {"Content-Type": "application/json"}
    assert json.loads(wire.body) == json.loads(fixture("request_text.json"))


def test_vision_tools_and_tool_result_request_matches_the_documented_body():
    photo = ImagePart(image_url=ImageUrl(url=f"data:image/png;base64,{PNG_BASE64}", detail="auto"))
    street = ImagePart(image_url=ImageUrl(url="https://example.com/street.jpg"))
    question = TextPart(text="What is the weather where these photos were taken?")
    request = ChatRequest(
        messages=[
            Message(role="system", content=[TextPart(text="You are a terse assistant.")]),
            Message(role="user", content=[photo, street, question]),
            Message(
                role="assistant",
                content="I'll check the weather in Paris.",
                tool_calls=[PARIS_CALL],
            ),
            tool_result("toolu_fx01", '{"temp_c":18,"sky":"cloudy"}'),
        ],
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        max_tokens=1024,
    )

    assert body_of(request) == json.loads(fixture("request_tools_vision.json"))


def test_max_tokens_defaults_to_4096_and_unset_fields_are_not_sent():
    body = body_of(ChatRequest(messages=[user("hi")]))

    assert body == {
        "model": MODEL,
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "hi"}],
    }


def test_streaming_sets_stream():
    assert body_of(ChatRequest(messages=[user("hi")]), stream=True)["stream"] is True


def test_a_zero_temperature_is_sent_and_one_above_anthropics_range_is_capped():
    cold = ChatRequest(messages=[user("hi")], temperature=0.0)
    hot = ChatRequest(messages=[user("hi")], temperature=1.7)

    assert body_of(cold)["temperature"] == 0.0
    assert body_of(hot)["temperature"] == 1.0


@pytest.mark.parametrize(
    ("stop", "sequences"), [("END", ["END"]), (["\n\nHuman:", "END"], ["\n\nHuman:", "END"])]
)
def test_stop_becomes_a_list_of_stop_sequences(stop, sequences):
    body = body_of(ChatRequest(messages=[user("hi")], stop=stop))

    assert body["stop_sequences"] == sequences
    assert "stop" not in body


def test_system_and_developer_messages_join_into_the_top_level_system():
    body = body_of(
        ChatRequest(
            messages=[
                SYSTEM,
                user("hi"),
                Message(role="developer", content="Answer in French."),
                user("again"),
            ]
        )
    )

    assert body["system"] == "You are a terse assistant.\n\nAnswer in French."
    assert body["messages"] == [{"role": "user", "content": [text("hi"), text("again")]}]


def text(value: str) -> dict[str, str]:
    return {"type": "text", "text": value}


def test_consecutive_tool_results_and_the_next_user_message_share_one_user_turn():
    lyon = ToolCall(id="toolu_fx02", function=FunctionCall("get_weather", '{"location":"Lyon"}'))

    messages = messages_of(
        user("Weather in Paris and Lyon?"),
        Message(role="assistant", tool_calls=[PARIS_CALL, lyon]),
        tool_result("toolu_fx01", "18C"),
        tool_result("toolu_fx02", "21C"),
        user("Which is warmer?"),
    )

    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == [
        {
            "type": "tool_use",
            "id": "toolu_fx01",
            "name": "get_weather",
            "input": {"location": "Paris"},
        },
        {
            "type": "tool_use",
            "id": "toolu_fx02",
            "name": "get_weather",
            "input": {"location": "Lyon"},
        },
    ]
    assert messages[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_fx01", "content": "18C", "is_error": False},
        {"type": "tool_result", "tool_use_id": "toolu_fx02", "content": "21C", "is_error": False},
        text("Which is warmer?"),
    ]


def test_tool_results_come_first_in_their_user_turn():
    messages = messages_of(
        user("weather?"),
        Message(role="assistant", tool_calls=[PARIS_CALL]),
        user("Use Celsius."),
        tool_result("toolu_fx01", "18C"),
    )

    assert [block["type"] for block in messages[2]["content"]] == ["tool_result", "text"]


def test_consecutive_assistant_messages_merge_and_blank_messages_are_dropped():
    messages = messages_of(
        user("hi"),
        Message(role="assistant", content="Hello."),
        user("   "),
        Message(role="assistant", content="How can I help?"),
        user("Tell me a joke."),
    )

    assert messages == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [text("Hello."), text("How can I help?")]},
        {"role": "user", "content": "Tell me a joke."},
    ]


def test_a_last_assistant_message_stays_last_as_a_prefill_without_trailing_space():
    messages = messages_of(user("Give me JSON."), Message(role="assistant", content='{"answer": '))

    assert messages[-1] == {"role": "assistant", "content": '{"answer":'}


@pytest.mark.parametrize("arguments", ["", "{not json", "[1, 2]"])
def test_tool_call_arguments_that_are_not_a_json_object_become_an_empty_input(arguments):
    call = ToolCall(id="toolu_x", function=FunctionCall(name="clock", arguments=arguments))

    messages = messages_of(user("time?"), Message(role="assistant", tool_calls=[call]))

    assert messages[1]["content"] == [
        {"type": "tool_use", "id": "toolu_x", "name": "clock", "input": {}}
    ]


def test_tool_ids_from_other_providers_are_made_acceptable_to_anthropic_alike():
    call = ToolCall(id="functions.get_weather:0", function=FunctionCall("get_weather", "{}"))

    messages = messages_of(
        user("weather?"),
        Message(role="assistant", tool_calls=[call]),
        tool_result("functions.get_weather:0", "18C"),
    )

    assert messages[1]["content"][0]["id"] == "functions_get_weather_0"
    assert messages[2]["content"][0]["tool_use_id"] == "functions_get_weather_0"


def test_a_tool_result_with_parts_keeps_text_and_images():
    photo = ImagePart(image_url=ImageUrl(url="data:image/jpeg;base64,/9j/AA=="))
    result = Message(role="tool", tool_call_id="toolu_1", content=[TextPart(text="chart"), photo])

    block = messages_of(result)[0]["content"][0]

    assert block["content"] == [
        text("chart"),
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/AA=="},
        },
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "tool", "name": "get_weather"},
        ),
        ({"type": "any"}, {"type": "any"}),
    ],
)
def test_tool_choice_is_translated(choice, expected):
    body = body_of(ChatRequest(messages=[user("hi")], tools=[WEATHER_TOOL], tool_choice=choice))

    assert body["tool_choice"] == expected


def test_tool_choice_without_tools_is_not_sent():
    body = body_of(ChatRequest(messages=[user("hi")], tool_choice="auto"))

    assert "tool_choice" not in body
    assert "tools" not in body


def test_a_tool_without_parameters_gets_an_empty_object_schema():
    bare = Tool(function=FunctionDef(name="clock"))

    body = body_of(ChatRequest(messages=[user("time?")], tools=[bare]))

    assert body["tools"] == [
        {"name": "clock", "input_schema": {"type": "object", "properties": {}}}
    ]


def test_a_route_path_and_query_from_options_are_used():
    options = WireOptions(chat_path="/v1/messages", query={"beta": "true"})

    wire = FAMILY.build_request(
        ChatRequest(messages=[user("hi")]), model=MODEL, stream=False, options=options
    )

    assert wire.path == "/v1/messages?beta=true"


# --- streams -------------------------------------------------------------------------


def test_text_stream_gives_text_finish_reason_and_usage():
    result = stream(fixture("stream_text.sse"))

    assert result == Collected(
        text="Hello there.",
        tool_calls={},
        finish_reason="stop",
        usage=TokenUsage(input_tokens=14, output_tokens=6),
        done=True,
    )


def test_one_read_carrying_a_whole_stream_becomes_one_update():
    update = FAMILY.stream_parser(MODEL).feed(fixture("stream_text.sse"))

    assert update == StreamUpdate(
        text="Hello there.",
        finish_reason="stop",
        usage=TokenUsage(input_tokens=14, output_tokens=6),
        done=True,
    )


def test_tool_use_stream_reassembles_the_call_with_its_id_name_and_json_arguments():
    result = stream(fixture("stream_tool_use.sse"))

    call_id, name, arguments = result.tool_calls[0]
    assert (call_id, name) == ("toolu_fx01", "get_weather")
    assert json.loads(arguments) == {"location": "Paris"}
    assert list(result.tool_calls) == [0]
    assert result.text == "Checking Paris."
    assert result.finish_reason == "tool_calls"
    assert result.usage == TokenUsage(input_tokens=602, output_tokens=47)


@pytest.mark.parametrize(
    "name", ["stream_text.sse", "stream_tool_use.sse", "stream_error_overloaded.sse"]
)
def test_a_stream_fed_one_byte_at_a_time_gives_the_same_result(name):
    data = fixture(name)

    try:
        whole: Collected | str = stream(data)
    except ProviderError as exc:
        whole = exc.message
    try:
        bytewise: Collected | str = stream(*one_byte_at_a_time(data))
    except ProviderError as exc:
        bytewise = exc.message

    assert bytewise == whole


@pytest.mark.parametrize("eol", [b"\r\n", b"\r"], ids=["crlf", "cr"])
def test_a_stream_with_other_line_endings_gives_the_same_result(eol):
    data = fixture("stream_tool_use.sse")

    assert stream(data.replace(b"\n", eol)) == stream(data)


def test_tool_calls_are_numbered_among_tool_use_blocks_not_content_blocks():
    result = stream(
        message_start(input_tokens=50, output_tokens=1),
        block_start(0, type="thinking", thinking=""),
        block_delta(0, type="thinking_delta", thinking="Two cities..."),
        block_start(1, type="text", text=""),
        text_delta("Checking both.", index=1),
        block_start(2, type="tool_use", id="toolu_a", name="get_weather", input={}),
        json_delta(2, ""),
        json_delta(2, '{"location":'),
        block_start(3, type="tool_use", id="toolu_b", name="clock", input={}),
        json_delta(2, '"Paris"}'),
        event("content_block_stop", index=2),
        event("content_block_stop", index=3),
        message_delta("tool_use", output_tokens=40),
        event("message_stop"),
    )

    assert result.tool_calls == {
        0: ("toolu_a", "get_weather", '{"location":"Paris"}'),
        1: ("toolu_b", "clock", "{}"),
    }
    assert result.text == "Checking both."


def test_a_tool_call_start_and_its_arguments_in_one_read_are_one_delta():
    parser = FAMILY.stream_parser(MODEL)

    update = parser.feed(
        block_start(1, type="tool_use", id="toolu_a", name="get_weather", input={})
        + json_delta(1, '{"location":')
        + json_delta(1, '"Paris"}')
    )

    assert update.tool_calls == [
        ToolCallDelta(index=0, id="toolu_a", name="get_weather", arguments='{"location":"Paris"}')
    ]


def test_cache_reads_and_writes_are_counted_in_input_once():
    result = stream(
        message_start(
            input_tokens=20,
            cache_read_input_tokens=1000,
            cache_creation_input_tokens=300,
            output_tokens=1,
        ),
        text_delta("ok"),
        message_delta(
            "end_turn",
            input_tokens=20,
            cache_read_input_tokens=1000,
            cache_creation_input_tokens=300,
            output_tokens=12,
        ),
        event("message_stop"),
    )

    assert result.usage == TokenUsage(
        input_tokens=1320, cached_input_tokens=1000, cache_write_tokens=300, output_tokens=12
    )


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "pause_turn"),
    ],
)
def test_stop_reasons_are_normalised(stop_reason, finish_reason):
    assert stream(message_delta(stop_reason, output_tokens=3)).finish_reason == finish_reason


def test_done_is_reported_only_once_message_stop_arrives_and_then_stays():
    parser = FAMILY.stream_parser(MODEL)

    assert parser.feed(text_delta("Hi")).done is False
    assert parser.feed(message_delta("end_turn")).done is False
    assert parser.feed(event("message_stop")).done is True
    assert parser.close().done is True


def test_events_after_message_stop_are_ignored():
    cost_ping = b'event: ping\ndata: {"type":"ping","cost":"0.0004"}\n\n'

    result = stream(fixture("stream_text.sse"), cost_ping, text_delta("late"), b"data: junk\n\n")

    assert result.text == "Hello there."


def test_a_stream_cut_before_message_stop_is_not_done():
    result = stream(text_delta("Hi"), text_delta(" there"))

    assert result.text == "Hi there"
    assert result.done is False


def test_close_flushes_a_last_event_without_a_blank_line():
    parser = FAMILY.stream_parser(MODEL)

    assert parser.feed(text_delta("Hi").rstrip(b"\n")).text == ""
    assert parser.close().text == "Hi"


def test_an_overloaded_error_event_raises_overloaded():
    parser = FAMILY.stream_parser(MODEL)

    with pytest.raises(Overloaded) as caught:
        parser.feed(fixture("stream_error_overloaded.sse"))

    assert caught.value.message == "529 Overloaded (inside a 200 response)"
    assert caught.value.status_code == 529
    assert caught.value.retryable


@pytest.mark.parametrize(
    ("kind", "message", "expected"),
    [
        ("rate_limit_error", "Number of request tokens has exceeded your rate limit", RateLimited),
        ("api_error", "Internal server error", ProviderUnavailable),
        (
            "invalid_request_error",
            "prompt is too long: 213021 tokens > 200000 maximum",
            ContextLengthExceeded,
        ),
        ("permission_error", "Your API key does not have permission", AuthenticationFailed),
        ("something_new_error", "Surprise", ProviderUnavailable),
    ],
)
def test_error_event_types_map_like_their_http_statuses(kind, message, expected):
    frame = event("error", error={"type": kind, "message": message})

    with pytest.raises(expected) as caught:
        stream(text_delta("Hi"), frame)

    assert type(caught.value) is expected
    assert message in caught.value.message


def test_an_event_that_is_not_json_raises_malformed_response():
    with pytest.raises(MalformedResponse) as caught:
        stream(b"event: content_block_delta\ndata: {not json\n\n")

    assert caught.value.message == "stream event is not valid JSON: b'{not json'"
    assert caught.value.retryable


def test_an_event_of_the_wrong_shape_raises_malformed_response():
    with pytest.raises(MalformedResponse, match=r"unexpected shape .*\$\.delta"):
        stream(b'data: {"type":"content_block_delta","index":0,"delta":"hi"}\n\n')


# --- non-streaming responses ----------------------------------------------------------


def test_text_response_is_parsed():
    parsed = FAMILY.parse_response(fixture("response_text.json"), MODEL)

    assert parsed == ParsedResponse(
        text="Hello there, nice to meet!",
        finish_reason="stop",
        usage=TokenUsage(input_tokens=14, output_tokens=9),
        model="claude-sonnet-4-6",
    )


def test_tool_use_response_is_parsed_with_arguments_as_json_text():
    parsed = FAMILY.parse_response(fixture("response_tool_use.json"), MODEL)

    assert parsed.text == "I'll check the weather in Paris."
    assert parsed.finish_reason == "tool_calls"
    assert parsed.usage == TokenUsage(input_tokens=602, output_tokens=61)
    assert parsed.tool_calls == [
        ToolCall(id="toolu_fx01", function=FunctionCall("get_weather", '{"location":"Paris"}'))
    ]


def test_response_text_blocks_join_and_thinking_is_left_out():
    body = {
        "model": MODEL,
        "content": [
            {"type": "thinking", "thinking": "Hmm.", "signature": "sig"},
            {"type": "text", "text": "Paris is "},
            {"type": "text", "text": "the capital."},
        ],
        "stop_reason": "max_tokens",
        "usage": {"input_tokens": 5, "output_tokens": 7, "cache_read_input_tokens": 40},
    }

    parsed = FAMILY.parse_response(json.dumps(body).encode(), MODEL)

    assert parsed.text == "Paris is the capital."
    assert parsed.finish_reason == "length"
    assert parsed.usage == TokenUsage(input_tokens=45, cached_input_tokens=40, output_tokens=7)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"<html>502</html>", "not valid JSON"),
        (b'{"id": "msg_x"}', "no content"),
        (b'{"content": "hi"}', "unexpected shape"),
    ],
)
def test_a_response_without_content_is_malformed(body, problem):
    with pytest.raises(MalformedResponse, match=problem):
        FAMILY.parse_response(body, MODEL)


def test_an_error_in_a_200_body_raises_the_mapped_error():
    with pytest.raises(Overloaded):
        FAMILY.parse_response(fixture("error_529.json"), MODEL)


# --- errors --------------------------------------------------------------------------


def test_529_is_overloaded_and_retryable():
    error = parse_error(529, fixture("error_529.json"))

    assert type(error) is Overloaded
    assert error.retryable
    assert error.message == "anthropic: 529 Overloaded"
    assert error.provider == "anthropic"
    assert error.status_code == 529


def test_prompt_too_long_is_context_length_exceeded():
    error = parse_error(400, fixture("error_prompt_too_long.json"))

    assert isinstance(error, ContextLengthExceeded)
    assert error.message == "anthropic: 400 prompt is too long: 213021 tokens > 200000 maximum"
    assert not error.retryable


def test_rate_limit_carries_retry_after():
    body = error_body("rate_limit_error", "Number of request tokens has exceeded your rate limit")

    error = parse_error(429, body, {"retry-after": "17", "request-id": "req_1"})

    assert isinstance(error, RateLimited)
    assert error.retryable
    assert error.retry_after == 17.0


def test_a_spend_limit_429_is_not_retryable():
    body = error_body(
        "rate_limit_error",
        "You have reached your monthly spend limit",
        details={"error_code": "enforced_spend_limit_reached"},
    )

    error = parse_error(429, body, {"retry-after": "60"})

    assert isinstance(error, AuthenticationFailed)
    assert not error.retryable


@pytest.mark.parametrize(
    ("status", "kind", "expected"),
    [
        (400, "invalid_request_error", BadUpstreamRequest),
        (401, "authentication_error", AuthenticationFailed),
        (403, "permission_error", AuthenticationFailed),
        (404, "not_found_error", ModelNotFound),
        (413, "request_too_large", BadUpstreamRequest),
        (500, "api_error", ProviderUnavailable),
        (529, "overloaded_error", Overloaded),
    ],
)
def test_statuses_map_to_what_the_caller_can_do(status, kind, expected):
    error = parse_error(status, error_body(kind, "something went wrong"))

    assert type(error) is expected
    assert error.retryable is issubclass(expected, ProviderUnavailable)
    assert error.message == f"anthropic: {status} something went wrong"


def test_overloaded_error_type_is_overloaded_whatever_the_status():
    error = parse_error(500, error_body("overloaded_error", "Overloaded"))

    assert type(error) is Overloaded


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (
            413,
            b"<html>Request Entity Too Large</html>",
            "anthropic: 413 <html>Request Entity Too Large</html>",
        ),
        (502, b"", "anthropic: 502 Bad Gateway"),
        (400, b'{"error": "bad input"}', "anthropic: 400 bad input"),
        (400, b'{"message": "invalid model id"}', "anthropic: 400 invalid model id"),
    ],
    ids=["html", "empty", "error-string", "message"],
)
def test_error_bodies_that_are_not_anthropic_shaped_still_give_a_message(status, body, message):
    assert parse_error(status, body).message == message
