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
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)
from omnillm.providers.base import ParsedResponse, WireOptions
from omnillm.providers.openai_responses import FAMILY
from tests.unit._streams import Collected, collect, one_byte_at_a_time

FIXTURES = Path(__file__).parents[1] / "fixtures" / "responses"
MODEL = "gpt-5.4-mini"
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
PARIS, LYON = '{"location":"Paris"}', '{"location":"Lyon"}'


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def body_of(request: ChatRequest, *, stream: bool = False) -> Any:
    wire = FAMILY.build_request(request, model=MODEL, stream=stream, options=WireOptions())
    return json.loads(wire.body)


def event(kind: str, **fields: Any) -> bytes:
    payload = msgspec.json.encode({"type": kind, **fields})
    return f"event: {kind}\n".encode() + b"data: " + payload + b"\n\n"


def text_delta(text: str) -> bytes:
    return event("response.output_text.delta", item_id="msg_1", output_index=0, delta=text)


def completed(status: str = "completed", **response: Any) -> bytes:
    return event("response.completed", response={"status": status, "output": [], **response})


def stream(*reads: bytes) -> Collected:
    parser = FAMILY.stream_parser(MODEL)
    return collect([*(parser.feed(data) for data in reads), parser.close()])


def parse_error(
    status: int, body: bytes | dict[str, Any], headers: dict[str, str] | None = None
) -> ProviderError:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return FAMILY.parse_error(status, raw, headers or {}, provider="openai")


# --- request -------------------------------------------------------------------------


def test_family_is_named_responses():
    assert FAMILY.name == "responses"


def test_text_request_matches_the_documented_body():
    request = ChatRequest(
        messages=[SYSTEM, Message(role="user", content="Say hello in five words.")],
        temperature=0.2,
        max_tokens=64,
    )

    wire = FAMILY.build_request(request, model=MODEL, stream=False, options=WireOptions())

    assert wire.method == "POST"
    assert wire.path == "/responses"
    assert wire.headers == {"Content-Type": "application/json"}
    assert wire.auth is None
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

    assert body_of(request, stream=True) == json.loads(fixture("request_tools_vision.json"))


def test_only_fields_the_request_set_are_sent_and_nothing_is_stored():
    request = ChatRequest(messages=[Message(role="user", content="hi")])

    assert body_of(request) == {
        "model": MODEL,
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
        "stream": False,
        "store": False,
    }


def test_system_and_developer_messages_become_one_instructions_string():
    request = ChatRequest(
        messages=[
            SYSTEM,
            Message(role="user", content="hi"),
            Message(role="developer", content="Answer in French."),
        ]
    )

    body = body_of(request)

    assert body["instructions"] == "You are a terse assistant.\n\nAnswer in French."
    assert [item["role"] for item in body["input"]] == ["user"]


def test_an_image_without_detail_sends_no_detail():
    photo = ImagePart(image_url=ImageUrl(url="https://example.com/cat.png"))
    request = ChatRequest(messages=[Message(role="user", content=[photo])])

    content = body_of(request)["input"][0]["content"]

    assert content == [{"type": "input_image", "image_url": "https://example.com/cat.png"}]


def test_tool_round_trip_becomes_function_call_items():
    call = ToolCall(id="call_fx01", function=FunctionCall("get_weather", PARIS))
    request = ChatRequest(
        messages=[
            Message(role="user", content="Weather in Paris?"),
            Message(role="assistant", content="Let me check.", tool_calls=[call]),
            Message(role="tool", tool_call_id="call_fx01", content='{"temp_c":18}'),
        ]
    )

    assert body_of(request)["input"][1:] == [
        {"role": "assistant", "content": [{"type": "output_text", "text": "Let me check."}]},
        {
            "type": "function_call",
            "call_id": "call_fx01",
            "name": "get_weather",
            "arguments": PARIS,
        },
        {"type": "function_call_output", "call_id": "call_fx01", "output": '{"temp_c":18}'},
    ]


def test_an_assistant_turn_with_only_tool_calls_sends_no_empty_message():
    call = ToolCall(id="call_fx01", function=FunctionCall("get_weather", PARIS))
    request = ChatRequest(messages=[Message(role="assistant", content=None, tool_calls=[call])])

    assert [item.get("type") for item in body_of(request)["input"]] == ["function_call"]


def test_a_tool_without_parameters_sends_an_empty_object_schema():
    request = ChatRequest(
        messages=[Message(role="user", content="What time is it?")],
        tools=[Tool(function=FunctionDef(name="clock"))],
    )

    assert body_of(request)["tools"] == [
        {
            "type": "function",
            "name": "clock",
            "parameters": {"type": "object", "properties": {}},
            "strict": False,
        }
    ]


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        ("required", "required"),
        ("none", "none"),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "function", "name": "get_weather"},
        ),
        ({"type": "function", "name": "get_weather"}, {"type": "function", "name": "get_weather"}),
    ],
    ids=["required", "none", "chat-shape", "already-flat"],
)
def test_tool_choice_is_sent_in_the_flat_responses_shape(choice, sent):
    request = ChatRequest(messages=[Message(role="user", content="hi")], tool_choice=choice)

    assert body_of(request)["tool_choice"] == sent


def test_stop_sequences_are_not_sent_because_responses_has_none():
    request = ChatRequest(messages=[Message(role="user", content="hi")], stop=["END"])

    assert "stop" not in body_of(request)


def test_the_path_honours_options():
    request = ChatRequest(messages=[Message(role="user", content="hi")])
    options = WireOptions(chat_path="/openai/v1/responses", query={"api-version": "preview"})

    wire = FAMILY.build_request(request, model=MODEL, stream=False, options=options)

    assert wire.path == "/openai/v1/responses?api-version=preview"


# --- streams -------------------------------------------------------------------------


def test_text_stream_gives_text_finish_reason_and_usage():
    assert stream(fixture("stream_text.sse")) == Collected(
        text="Hello there.",
        tool_calls={},
        finish_reason="stop",
        usage=TokenUsage(input_tokens=12, output_tokens=3),
        done=True,
    )


def test_function_call_stream_assembles_both_calls_by_ordinal():
    result = stream(fixture("stream_function_call.sse"))

    assert result.tool_calls == {
        0: ("call_fx01", "get_weather", PARIS),
        1: ("call_fx02", "get_weather", LYON),
    }
    assert result.finish_reason == "tool_calls"
    assert result.text == ""


def test_usage_counts_cached_and_reasoning_tokens():
    result = stream(fixture("stream_function_call.sse"))

    assert result.usage == TokenUsage(
        input_tokens=88, cached_input_tokens=64, output_tokens=70, reasoning_tokens=32
    )


def test_cache_write_tokens_are_read_when_reported():
    usage = {
        "input_tokens": 45,
        "input_tokens_details": {"cache_write_tokens": 40, "cached_tokens": 0},
        "output_tokens": 25,
    }

    assert stream(completed(usage=usage)).usage == TokenUsage(
        input_tokens=45, cache_write_tokens=40, output_tokens=25
    )


def test_one_read_carrying_a_whole_call_becomes_one_update():
    update = FAMILY.stream_parser(MODEL).feed(fixture("stream_function_call.sse"))

    assert update.tool_calls == [
        ToolCallDelta(index=0, id="call_fx01", name="get_weather", arguments=PARIS),
        ToolCallDelta(index=1, id="call_fx02", name="get_weather", arguments=LYON),
    ]
    assert update.done


@pytest.mark.parametrize("name", ["stream_text.sse", "stream_function_call.sse"])
def test_a_stream_fed_one_byte_at_a_time_gives_the_same_result(name):
    data = fixture(name)

    assert stream(*one_byte_at_a_time(data)) == stream(data)


def test_arguments_matched_by_output_index_when_item_id_is_missing():
    added = event(
        "response.output_item.added",
        output_index=3,
        item={"type": "function_call", "call_id": "call_x", "name": "clock", "arguments": ""},
    )
    delta = event("response.function_call_arguments.delta", output_index=3, delta="{}")

    assert stream(added, delta, completed()).tool_calls == {0: ("call_x", "clock", "{}")}


def test_arguments_sent_only_whole_in_the_done_events_are_not_lost():
    item = {"id": "fc_1", "type": "function_call", "call_id": "call_x", "name": "clock"}
    added = event("response.output_item.added", output_index=0, item={**item, "arguments": ""})
    done = event("response.output_item.done", output_index=0, item={**item, "arguments": "{}"})

    assert stream(added, done, completed()).tool_calls == {0: ("call_x", "clock", "{}")}


def test_done_events_repeating_streamed_arguments_add_nothing():
    result = stream(fixture("stream_function_call.sse"))

    assert result.tool_calls[0][2] == PARIS


def test_done_is_reported_only_once_the_response_ends_and_then_stays():
    parser = FAMILY.stream_parser(MODEL)

    assert parser.feed(text_delta("Hi")).done is False
    assert parser.feed(completed()).done is True
    assert parser.close().done is True


def test_a_stream_cut_before_the_end_is_not_done():
    result = stream(text_delta("Hi"), text_delta(" there"))

    assert result.text == "Hi there"
    assert result.finish_reason is None
    assert result.done is False


def test_events_after_the_end_are_ignored():
    ping = b'event: ping\ndata: {"type":"ping","cost":"0.0001"}\n\n'

    result = stream(text_delta("Hi"), completed(), ping, text_delta("late"), b"data: {oops\n\n")

    assert result.text == "Hi"
    assert result.done


@pytest.mark.parametrize(
    ("details", "finish_reason"),
    [
        ({"reason": "max_output_tokens"}, "length"),
        ({"reason": "content_filter"}, "content_filter"),
        ({"reason": "something_new"}, "something_new"),
        (None, "incomplete"),
    ],
)
def test_an_incomplete_response_says_why(details, finish_reason):
    end = event(
        "response.incomplete",
        response={"status": "incomplete", "incomplete_details": details, "output": []},
    )

    result = stream(text_delta("The three reasons are"), end)

    assert result.finish_reason == finish_reason
    assert result.done


def test_a_function_call_in_the_final_output_makes_the_finish_reason_tool_calls():
    output = [{"type": "function_call", "call_id": "c", "name": "clock", "arguments": "{}"}]

    assert stream(completed(output=output)).finish_reason == "tool_calls"


def test_a_keep_alive_comment_and_unknown_events_are_ignored():
    unknown = event("response.reasoning_summary_text.delta", item_id="rs_1", delta="hmm")

    result = stream(b": keep-alive\n\n", unknown, text_delta("Hi"), completed())

    assert result.text == "Hi"


def test_the_failed_event_raises_the_mapped_error():
    parser = FAMILY.stream_parser(MODEL)

    with pytest.raises(ProviderUnavailable) as caught:
        parser.feed(fixture("stream_failed.sse"))

    assert caught.value.message == (
        "500 The model failed to generate a response. (inside a 200 response)"
    )
    assert caught.value.retryable


def test_an_error_event_raises_before_the_failed_event_that_follows():
    with pytest.raises(AuthenticationFailed) as caught:
        stream(fixture("stream_error_event.sse"))

    assert "no quota or credit left: You exceeded your current quota" in caught.value.message
    assert not caught.value.retryable


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ({"code": "rate_limit_exceeded", "message": "TPM limit"}, RateLimited),
        ({"code": "invalid_prompt", "message": "Invalid prompt"}, BadUpstreamRequest),
        ({"code": "context_length_exceeded", "message": "too long"}, ContextLengthExceeded),
        ({"code": None, "message": "boom"}, ProviderUnavailable),
    ],
    ids=["rate-limit", "invalid-prompt", "context", "no-code"],
)
def test_failed_response_codes_map_to_what_the_caller_can_do(error, expected):
    failed = event("response.failed", response={"status": "failed", "error": error})

    with pytest.raises(expected) as caught:
        stream(text_delta("Hi"), failed)

    assert error["message"] in caught.value.message


def test_an_error_event_with_top_level_code_is_mapped():
    error = event("error", code="rate_limit_exceeded", message="Slow down", param=None)

    with pytest.raises(RateLimited, match="Slow down"):
        stream(error)


def test_arguments_for_an_unannounced_call_are_malformed():
    delta = event("response.function_call_arguments.delta", item_id="fc_ghost", delta="{}")

    with pytest.raises(MalformedResponse, match="never announced"):
        stream(delta)


def test_an_event_that_is_not_json_raises_malformed_response():
    with pytest.raises(MalformedResponse) as caught:
        stream(b"data: {not json\n\n")

    assert caught.value.message == "stream event is not valid JSON: b'{not json'"


def test_an_event_of_the_wrong_shape_raises_malformed_response():
    with pytest.raises(MalformedResponse, match=r"unexpected shape .*\$\.delta"):
        stream(event("response.output_text.delta", delta=["not", "text"]))


# --- non-streaming responses ----------------------------------------------------------


def test_text_response_is_parsed_skipping_reasoning_items():
    parsed = FAMILY.parse_response(fixture("response_text.json"), MODEL)

    assert parsed == ParsedResponse(
        text="Hello there, nice to meet!",
        finish_reason="stop",
        usage=TokenUsage(input_tokens=21, output_tokens=7),
        model="gpt-5.4-mini-2026-03-05",
    )


def test_function_call_response_is_parsed():
    parsed = FAMILY.parse_response(fixture("response_function_call.json"), MODEL)

    assert parsed.text == ""
    assert parsed.finish_reason == "tool_calls"
    assert parsed.usage == TokenUsage(input_tokens=88, output_tokens=38)
    assert parsed.tool_calls == [
        ToolCall(id="call_fx01", function=FunctionCall("get_weather", PARIS)),
        ToolCall(id="call_fx02", function=FunctionCall("get_weather", LYON)),
    ]


def test_an_incomplete_response_keeps_its_text_and_says_length():
    parsed = FAMILY.parse_response(fixture("response_incomplete.json"), MODEL)

    assert parsed.text == "The three reasons are"
    assert parsed.finish_reason == "length"
    assert parsed.usage == TokenUsage(input_tokens=30, output_tokens=16, reasoning_tokens=11)


def test_a_failed_response_body_raises_the_mapped_error():
    body = b'{"status": "failed", "error": {"code": "server_error", "message": "upstream died"}}'

    with pytest.raises(ProviderUnavailable, match="upstream died"):
        FAMILY.parse_response(body, MODEL)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"<html>502</html>", "not valid JSON"),
        (b'{"id": "resp_1"}', "no output"),
        (b'{"output": "hi"}', "unexpected shape"),
    ],
)
def test_a_response_without_an_answer_is_malformed(body, problem):
    with pytest.raises(MalformedResponse, match=problem):
        FAMILY.parse_response(body, MODEL)


# --- errors --------------------------------------------------------------------------


def test_context_length_error_is_mapped_with_provider_and_status():
    error = parse_error(400, fixture("error_context_length.json"))

    assert isinstance(error, ContextLengthExceeded)
    assert error.message.startswith("openai: 400 Your input exceeds the context window")
    assert error.status_code == 400


def test_rate_limit_error_reads_retry_after():
    error = parse_error(429, fixture("error_rate_limit.json"), {"retry-after-ms": "600"})

    assert isinstance(error, RateLimited)
    assert error.retry_after == 0.6
    assert "Rate limit reached for gpt-5.4-mini" in error.message


def test_a_non_json_error_body_still_gives_a_message():
    error = parse_error(502, b"<html>Bad gateway</html>")

    assert isinstance(error, ProviderUnavailable)
    assert error.message == "openai: 502 <html>Bad gateway</html>"
