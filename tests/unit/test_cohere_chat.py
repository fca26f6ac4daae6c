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
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)
from omnillm.providers.base import ParsedResponse, StreamUpdate, WireOptions
from omnillm.providers.cohere_chat import FAMILY
from tests.unit._streams import Collected, collect, one_byte_at_a_time

FIXTURES = Path(__file__).parents[1] / "fixtures" / "cohere"
MODEL = "command-a-03-2025"
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
CLOCK_TOOL = Tool(function=FunctionDef(name="get_time", description="The time now"))
PARIS_CALL = ToolCall(
    id="get_weather_fx01",
    function=FunctionCall(name="get_weather", arguments='{"location":"Paris"}'),
)
STREAMS = ["stream_text.sse", "stream_tool_call.sse", "stream_two_tool_calls.sse"]


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def body_of(request: ChatRequest, *, stream: bool = False, model: str = MODEL) -> Any:
    wire = FAMILY.build_request(request, model=model, stream=stream, options=WireOptions())
    return json.loads(wire.body)


def ask(*messages: Message, **fields: Any) -> ChatRequest:
    return ChatRequest(messages=list(messages), **fields)


def frame(**fields: Any) -> bytes:
    kind = str(fields["type"]).encode()
    return b"event: " + kind + b"\ndata: " + msgspec.json.encode(fields) + b"\n\n"


def text_frame(text: str) -> bytes:
    return frame(type="content-delta", index=0, delta={"message": {"content": {"text": text}}})


def call_start(index: int, call_id: str, name: str, arguments: str = "") -> bytes:
    function = {"name": name, "arguments": arguments}
    call = {"id": call_id, "type": "function", "function": function}
    return frame(type="tool-call-start", index=index, delta={"message": {"tool_calls": call}})


def call_delta(arguments: str, index: int | None = 0) -> bytes:
    delta = {"message": {"tool_calls": {"function": {"arguments": arguments}}}}
    if index is None:
        return frame(type="tool-call-delta", delta=delta)
    return frame(type="tool-call-delta", index=index, delta=delta)


def message_end(finish_reason: str = "COMPLETE", **delta: Any) -> bytes:
    return frame(type="message-end", delta={"finish_reason": finish_reason, **delta})


def stream(*reads: bytes) -> Collected:
    parser = FAMILY.stream_parser(MODEL)
    return collect([*(parser.feed(data) for data in reads), parser.close()])


def parse_error(
    status: int, body: bytes | dict[str, Any], headers: dict[str, str] | None = None
) -> ProviderError:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return FAMILY.parse_error(status, raw, headers or {}, provider="cohere")


# --- request -------------------------------------------------------------------------


def test_family_is_named_cohere():
    assert FAMILY.name == "cohere"


def test_text_request_posts_the_documented_body_to_chat():
    request = ask(Message(role="user", content="Say hello in five words."))

    wire = FAMILY.build_request(request, model=MODEL, stream=False, options=WireOptions())

    assert wire.method == "POST"
    assert wire.path == "/chat"
    assert wire.headers == {"Content-Type": "application/json"}
    assert json.loads(wire.body) == {**json.loads(fixture("request_text.json")), "stream": False}


def test_tool_round_trip_request_matches_the_documented_body():
    request = ask(
        SYSTEM,
        Message(role="user", content="What's the weather in Paris?"),
        Message(
            role="assistant",
            content="I will look up the weather in Paris.",
            tool_calls=[PARIS_CALL],
        ),
        Message(
            role="tool", tool_call_id="get_weather_fx01", content='{"temp_c":18,"sky":"cloudy"}'
        ),
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        max_tokens=512,
        temperature=0.3,
    )

    assert body_of(request) == json.loads(fixture("request_tools.json"))


def test_vision_request_uses_cohere_content_blocks():
    question = TextPart(text="What is in this photo?")
    photo = ImagePart(image_url=ImageUrl(url=TINY_PNG, detail="auto"))
    request = ask(SYSTEM, Message(role="user", content=[question, photo]), max_tokens=256)

    body = body_of(request, stream=True, model="command-a-vision-07-2025")

    assert body == json.loads(fixture("request_vision.json"))


def test_only_fields_the_request_set_are_sent():
    body = body_of(ask(Message(role="user", content="hi")))

    assert body == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": False,
    }


def test_a_zero_temperature_is_still_sent():
    assert body_of(ask(Message(role="user", content="hi"), temperature=0.0))["temperature"] == 0.0


@pytest.mark.parametrize(
    ("stop", "sequences"), [("END", ["END"]), (["\n\n", "END"], ["\n\n", "END"])]
)
def test_stop_is_sent_as_a_list_of_stop_sequences(stop, sequences):
    body = body_of(ask(Message(role="user", content="hi"), stop=stop))

    assert body["stop_sequences"] == sequences
    assert "stop" not in body


def test_an_assistant_turn_without_tool_calls_sends_its_text_as_content():
    request = ask(Message(role="assistant", content=[TextPart(text="Hi"), TextPart(text="there")]))

    assert body_of(request)["messages"] == [{"role": "assistant", "content": "Hi\nthere"}]


def test_an_assistant_turn_with_only_tool_calls_sends_no_plan_and_no_content():
    request = ask(Message(role="assistant", content=None, tool_calls=[PARIS_CALL]))

    assert body_of(request)["messages"] == [
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "get_weather_fx01",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
                }
            ],
        }
    ]


def test_a_tool_result_given_as_parts_is_sent_as_its_text():
    result = Message(
        role="tool",
        tool_call_id="get_weather_fx01",
        content=[TextPart(text='{"temp_c":18}'), TextPart(text='{"sky":"cloudy"}')],
    )

    assert body_of(ask(result))["messages"] == [
        {
            "role": "tool",
            "tool_call_id": "get_weather_fx01",
            "content": '{"temp_c":18}\n{"sky":"cloudy"}',
        }
    ]


def test_a_developer_turn_is_sent_as_system():
    request = ask(
        Message(role="developer", content="Be brief."), Message(role="user", content="hi")
    )

    assert body_of(request)["messages"][0] == {"role": "system", "content": "Be brief."}


@pytest.mark.parametrize(
    ("choice", "sent"),
    [("auto", None), ("required", "REQUIRED"), ("none", "NONE")],
)
def test_tool_choice_maps_to_cohere_values(choice, sent):
    body = body_of(
        ask(Message(role="user", content="hi"), tools=[WEATHER_TOOL], tool_choice=choice)
    )

    assert body.get("tool_choice") == sent
    assert [tool["function"]["name"] for tool in body["tools"]] == ["get_weather"]


def test_a_named_tool_choice_requires_a_call_and_sends_only_that_tool():
    choice = {"type": "function", "function": {"name": "get_time"}}
    request = ask(
        Message(role="user", content="hi"), tools=[WEATHER_TOOL, CLOCK_TOOL], tool_choice=choice
    )

    body = body_of(request)

    assert body["tool_choice"] == "REQUIRED"
    assert body["tools"] == [
        {"type": "function", "function": {"name": "get_time", "description": "The time now"}}
    ]


@pytest.mark.parametrize(
    ("choice", "problem"),
    [
        ({"type": "function", "function": {"name": "get_stock"}}, "'get_stock', which is not"),
        ("any", "has no Cohere equivalent"),
    ],
    ids=["unknown-tool", "unknown-choice"],
)
def test_a_tool_choice_cohere_cannot_express_is_refused(choice, problem):
    request = ask(Message(role="user", content="hi"), tools=[WEATHER_TOOL], tool_choice=choice)

    with pytest.raises(BadUpstreamRequest, match=problem):
        body_of(request)


def test_a_configured_chat_path_and_query_are_used():
    options = WireOptions(chat_path="/v2/chat", query={"client": "omni"})
    request = ask(Message(role="user", content="hi"))

    wire = FAMILY.build_request(request, model=MODEL, stream=False, options=options)

    assert wire.path == "/v2/chat?client=omni"


# --- streams -------------------------------------------------------------------------


def test_streamed_text_is_assembled_with_usage_and_finish():
    result = stream(fixture("stream_text.sse"))

    assert result == Collected(
        text="Hello there.",
        tool_calls={},
        finish_reason="stop",
        usage=TokenUsage(input_tokens=12, output_tokens=3),
        done=True,
    )


def test_a_streamed_tool_call_is_assembled():
    result = stream(fixture("stream_tool_call.sse"))

    assert result == Collected(
        text="",
        tool_calls={0: ("get_weather_fx01", "get_weather", '{"location": "Paris"}')},
        finish_reason="tool_calls",
        usage=TokenUsage(input_tokens=119, output_tokens=24),
        done=True,
    )


def test_two_streamed_tool_calls_are_numbered_in_order_and_null_arguments_become_empty():
    result = stream(fixture("stream_two_tool_calls.sse"))

    assert result == Collected(
        text="",
        tool_calls={
            0: ("get_weather_fx05", "get_weather", '{\n    "location": "Paris"\n}'),
            1: ("get_time_fx06", "get_time", "{}"),
        },
        finish_reason="tool_calls",
        usage=TokenUsage(input_tokens=131, output_tokens=40),
        done=True,
    )


def test_one_read_carrying_a_whole_tool_stream_becomes_one_update():
    update = FAMILY.stream_parser(MODEL).feed(fixture("stream_tool_call.sse"))

    assert update == StreamUpdate(
        tool_calls=[
            ToolCallDelta(
                index=0,
                id="get_weather_fx01",
                name="get_weather",
                arguments='{"location": "Paris"}',
            )
        ],
        finish_reason="tool_calls",
        usage=TokenUsage(input_tokens=119, output_tokens=24),
        done=True,
    )


@pytest.mark.parametrize("name", STREAMS)
def test_a_stream_fed_one_byte_at_a_time_gives_the_same_result(name):
    data = fixture(name)

    assert stream(*one_byte_at_a_time(data)) == stream(data)


@pytest.mark.parametrize("eol", [b"\r\n", b"\r"], ids=["crlf", "cr"])
def test_a_stream_with_other_line_endings_gives_the_same_result(eol):
    data = fixture("stream_two_tool_calls.sse")

    assert stream(data.replace(b"\n", eol)) == stream(data)


def test_tool_arguments_are_passed_on_as_they_arrive():
    parser = FAMILY.stream_parser(MODEL)

    opened = parser.feed(call_start(0, "get_weather_fx01", "get_weather"))
    first = parser.feed(call_delta('{"loc'))

    assert opened.tool_calls == [ToolCallDelta(index=0, id="get_weather_fx01", name="get_weather")]
    assert first.tool_calls == [ToolCallDelta(index=0, arguments='{"loc')]


def test_a_no_argument_call_streams_nothing_until_it_ends_then_empty_arguments():
    parser = FAMILY.stream_parser(MODEL)
    parser.feed(call_start(0, "get_time_fx01", "get_time"))

    reads = [parser.feed(call_delta("nu")), parser.feed(call_delta("ll"))]
    ended = parser.feed(frame(type="tool-call-end", index=0))

    assert [read.tool_calls for read in reads] == [[], []]
    assert ended.tool_calls == [ToolCallDelta(index=0, arguments="{}")]


def test_a_no_argument_call_left_open_at_message_end_still_gets_empty_arguments():
    result = stream(call_start(0, "get_time_fx01", "get_time", "null"), message_end("TOOL_CALL"))

    assert result.tool_calls == {0: ("get_time_fx01", "get_time", "{}")}


def test_tool_call_deltas_without_an_index_continue_the_latest_call():
    result = stream(
        call_start(0, "a", "lookup"),
        call_delta('{"q":1}', index=None),
        call_start(1, "b", "lookup"),
        call_delta('{"q":2}', index=None),
    )

    assert result.tool_calls == {0: ("a", "lookup", '{"q":1}'), 1: ("b", "lookup", '{"q":2}')}


def test_thinking_and_tool_plans_are_not_answer_text():
    thinking = frame(
        type="content-delta", index=0, delta={"message": {"content": {"thinking": "hmm"}}}
    )
    plan = frame(type="tool-plan-delta", delta={"message": {"tool_plan": "I will look."}})

    assert stream(thinking, plan, text_frame("Answer.")).text == "Answer."


def test_message_end_counts_as_done_and_later_frames_are_ignored():
    parser = FAMILY.stream_parser(MODEL)

    assert parser.feed(text_frame("Hi")).done is False
    assert parser.feed(message_end()).done is True
    assert parser.feed(text_frame("late") + b"data: not json\n\n") == StreamUpdate(done=True)
    assert parser.close().done is True


def test_done_alone_ends_the_stream():
    result = stream(text_frame("Hi"), b"data: [DONE]\n\n")

    assert result.done is True
    assert result.finish_reason is None


def test_a_stream_cut_before_message_end_is_not_done():
    result = stream(text_frame("Hi"), text_frame(" there"))

    assert result.text == "Hi there"
    assert result.done is False
    assert result.finish_reason is None


def test_close_flushes_a_last_frame_without_a_blank_line():
    parser = FAMILY.stream_parser(MODEL)

    assert parser.feed(message_end().rstrip(b"\n")).done is False
    assert parser.close() == StreamUpdate(finish_reason="stop", done=True)


@pytest.mark.parametrize(
    ("reason", "normalised"),
    [
        ("COMPLETE", "stop"),
        ("STOP_SEQUENCE", "stop"),
        ("MAX_TOKENS", "length"),
        ("TOOL_CALL", "tool_calls"),
        ("ERROR_TOXIC", "content_filter"),
        ("USER_CANCEL", "USER_CANCEL"),
    ],
)
def test_finish_reasons_are_normalised(reason, normalised):
    assert stream(message_end(reason)).finish_reason == normalised


@pytest.mark.parametrize("split", [False, True], ids=["whole", "byte-by-byte"])
def test_a_finish_reason_of_error_raises_provider_unavailable(split):
    data = fixture("stream_error.sse")

    with pytest.raises(ProviderUnavailable) as caught:
        stream(*(one_byte_at_a_time(data) if split else [data]))

    assert caught.value.message == ("500 internal error during generation (inside a 200 response)")
    assert caught.value.retryable


def test_usage_is_what_cohere_bills_not_its_template_inflated_count():
    usage = {
        "billed_units": {"input_tokens": 12, "output_tokens": 3},
        "tokens": {"input_tokens": 507, "output_tokens": 5},
        "cached_tokens": 448,
    }

    assert stream(message_end(usage=usage)).usage == TokenUsage(input_tokens=12, output_tokens=3)


def test_usage_falls_back_to_tokens_when_nothing_is_billed():
    usage = {"tokens": {"input_tokens": 507, "output_tokens": 5}, "cached_tokens": 448}

    assert stream(message_end(usage=usage)).usage == TokenUsage(
        input_tokens=507, cached_input_tokens=448, output_tokens=5
    )


def test_usage_given_as_decimal_numbers_is_counted_in_whole_tokens():
    usage = {"tokens": {"input_tokens": 20.0, "output_tokens": 7.0}}

    assert stream(message_end(usage=usage)).usage == TokenUsage(input_tokens=20, output_tokens=7)


def test_a_message_end_without_usage_reports_none():
    assert stream(message_end()).usage is None


def test_a_frame_without_a_type_is_dispatched_on_its_event_line():
    data = b'event: content-delta\ndata: {"delta":{"message":{"content":{"text":"Hi"}}}}\n\n'

    assert stream(data).text == "Hi"


def test_a_frame_that_is_not_json_raises_malformed_response():
    with pytest.raises(MalformedResponse) as caught:
        stream(b"event: content-delta\ndata: {not json\n\n")

    assert caught.value.message == "stream frame is not valid JSON: b'{not json'"


def test_a_frame_of_the_wrong_shape_raises_malformed_response():
    with pytest.raises(MalformedResponse, match=r"unexpected shape .*\$\.delta"):
        stream(frame(type="content-delta", delta="Hi"))


# --- non-streaming responses ----------------------------------------------------------


def test_text_response_is_parsed():
    parsed = FAMILY.parse_response(fixture("response_text.json"), MODEL)

    assert parsed == ParsedResponse(
        text="Hello there, nice to meet!",
        finish_reason="stop",
        usage=TokenUsage(input_tokens=12, output_tokens=7),
        model=MODEL,
    )


def test_tool_call_response_is_parsed_without_the_plan_as_text():
    parsed = FAMILY.parse_response(fixture("response_tool_call.json"), MODEL)

    assert parsed == ParsedResponse(
        text="",
        finish_reason="tool_calls",
        usage=TokenUsage(input_tokens=119, output_tokens=52),
        tool_calls=[
            PARIS_CALL,
            ToolCall(
                id="get_weather_fx02",
                function=FunctionCall(name="get_weather", arguments='{"location":"Lyon"}'),
            ),
        ],
        model=MODEL,
    )


def test_response_text_blocks_are_joined_and_thinking_is_left_out():
    body = {
        "message": {
            "content": [
                {"type": "thinking", "thinking": "Let me greet."},
                {"type": "text", "text": "Hello"},
                {"type": "text", "text": " there."},
            ]
        },
        "finish_reason": "MAX_TOKENS",
    }

    parsed = FAMILY.parse_response(json.dumps(body).encode(), MODEL)

    assert (parsed.text, parsed.finish_reason, parsed.usage) == (
        "Hello there.",
        "length",
        TokenUsage(),
    )


def test_a_response_call_with_null_arguments_gets_empty_arguments():
    call = {"id": "t1", "type": "function", "function": {"name": "get_time", "arguments": "null"}}
    body = {"message": {"tool_calls": [call]}, "finish_reason": "TOOL_CALL"}

    parsed = FAMILY.parse_response(json.dumps(body).encode(), MODEL)

    assert parsed.tool_calls == [ToolCall(id="t1", function=FunctionCall("get_time", "{}"))]


def test_a_response_finishing_with_error_raises_provider_unavailable():
    body = b'{"message": {"content": []}, "finish_reason": "ERROR"}'

    with pytest.raises(ProviderUnavailable, match="finish_reason ERROR"):
        FAMILY.parse_response(body, MODEL)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"<html>502</html>", "not valid JSON"),
        (b'{"id": "x"}', "no message"),
        (b'{"message": "hi"}', "unexpected shape"),
    ],
)
def test_a_response_without_an_answer_is_malformed(body, problem):
    with pytest.raises(MalformedResponse, match=problem):
        FAMILY.parse_response(body, MODEL)


# --- errors --------------------------------------------------------------------------


def test_too_many_tokens_is_context_length_exceeded():
    error = parse_error(400, fixture("error_too_many_tokens.json"))

    assert isinstance(error, ContextLengthExceeded)
    assert error.message.startswith("cohere: 400 too many tokens: total number of tokens")
    assert (error.provider, error.status_code, error.retryable) == ("cohere", 400, False)


def test_a_trial_key_rate_limit_is_retryable_after_the_given_delay():
    error = parse_error(429, fixture("error_trial_rate_limit.json"), {"Retry-After": "12"})

    assert isinstance(error, RateLimited)
    assert error.retryable
    assert error.retry_after == 12.0
    assert error.message == (
        "cohere: 429 trial token rate limit exceeded, limit is 100000 tokens per minute"
    )


@pytest.mark.parametrize(
    ("status", "name", "expected", "message"),
    [
        (401, "error_invalid_api_token.json", AuthenticationFailed, "invalid api token"),
        (403, "error_invalid_api_token.json", AuthenticationFailed, "invalid api token"),
        (404, "error_model_not_found.json", ModelNotFound, "model 'command-z' not found"),
        (422, "error_invalid_request.json", BadUpstreamRequest, "invalid request: message"),
        (400, "error_invalid_request.json", BadUpstreamRequest, "invalid request: message"),
        (500, "error_internal.json", ProviderUnavailable, "internal server error"),
        (503, "error_internal.json", ProviderUnavailable, "internal server error"),
    ],
)
def test_statuses_map_to_what_the_caller_can_do(status, name, expected, message):
    error = parse_error(status, fixture(name))

    assert type(error) is expected
    assert error.retryable is (expected is ProviderUnavailable)
    assert error.message.startswith(f"cohere: {status} {message}")
    assert error.status_code == status


def test_a_billing_limit_is_not_retryable_and_says_so():
    error = parse_error(402, {"message": "Please add a payment method."})

    assert isinstance(error, AuthenticationFailed)
    assert not error.retryable
    assert error.message == (
        "cohere: 402 the account has no quota or credit left: Please add a payment method."
    )


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (502, b"<html>Bad gateway</html>", "cohere: 502 <html>Bad gateway</html>"),
        (503, b"", "cohere: 503 Service Unavailable"),
        (400, b'{"id": "x"}', 'cohere: 400 {"id": "x"}'),
        (400, b"[1, 2]", "cohere: 400 [1, 2]"),
    ],
    ids=["html", "empty", "no-message", "json-not-object"],
)
def test_error_bodies_without_a_message_still_give_one(status, body, message):
    assert parse_error(status, body).message == message
