"""The gateway's pure translation: OpenAI requests in, SSE chunks / completions / errors out."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from omnillm.actors.gateway.keys import KeyRing
from omnillm.actors.gateway.openai_in import (
    error_body,
    error_status,
    models_body,
    parse_chat,
    session_id,
)
from omnillm.actors.gateway.openai_out import DONE_EVENT, ChunkStream, Folded, completion_body
from omnillm.bus.messages import (
    ChatRequest,
    Delta,
    Done,
    ImagePart,
    RouteConstraints,
    Start,
    TextPart,
    TokenUsage,
    ToolCallDelta,
)
from omnillm.config import GatewayKey
from omnillm.errors import InvalidRequest, KeyRefused


def body(**fields: Any) -> bytes:
    return json.dumps({"model": "auto", **fields}).encode()


def openclaw_request(*, later_turn: bool = False) -> dict[str, Any]:
    """What OpenClaw 2026.9 sends on a fresh session (see reference/openclaw.md)."""
    tools = [
        {
            "type": "function",
            "function": {
                "name": f"tool_{i}",
                "description": "Does a thing. " * 40,
                "parameters": {"type": "object", "properties": {"arg": {"type": "string"}}},
                "strict": False,
            },
        }
        for i in range(12)
    ]
    messages: list[Any] = [
        {"role": "system", "content": "You are a personal agent. " * 1924},
        {"role": "user", "content": "[Tue 2026-11-24 10:00 UTC] Fix the build.\nruntime: x"},
        {"role": "user", "content": [{"type": "text", "text": "Context: repo at ~/code"}]},
    ]
    if later_turn:
        messages += [
            {"role": "assistant", "content": "Done."},
            {"role": "user", "content": "Now run the tests."},
        ]
    return {
        "model": "auto",
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": tools,
        "tool_choice": "auto",
        "max_completion_tokens": 32000,
    }


def events(data: bytes) -> list[Any]:
    """The SSE events' data, decoded; ``[DONE]`` stays a string."""
    out: list[Any] = []
    for event in data.split(b"\n\n"):
        if event:
            assert event.startswith(b"data: ")
            payload = event[len(b"data: ") :]
            out.append("[DONE]" if payload == b"[DONE]" else json.loads(payload))
    return out


# --- requests ------------------------------------------------------------------------


def test_an_openclaw_request_becomes_a_chat_request_with_everything_it_said() -> None:
    raw = openclaw_request()
    assert len(raw["messages"][0]["content"]) >= 48_000

    parsed = parse_chat(json.dumps(raw).encode())

    request = parsed.request
    assert (parsed.stream, parsed.include_usage) == (True, True)
    assert request.max_tokens == 32000
    assert [m.role for m in request.messages] == ["system", "user", "user"]
    assert request.messages[2].content == [TextPart("Context: repo at ~/code")]
    assert request.messages[0].text() == raw["messages"][0]["content"]
    assert isinstance(request.tools, list) and len(request.tools) == 12
    assert request.tools[3].function.name == "tool_3"
    assert request.tool_choice == "auto"
    assert request.model == "auto"


def test_every_turn_of_a_conversation_gets_the_same_session_and_others_another() -> None:
    first = parse_chat(json.dumps(openclaw_request()).encode()).request
    later = parse_chat(json.dumps(openclaw_request(later_turn=True)).encode()).request
    other = parse_chat(body(messages=[{"role": "user", "content": "Something else"}])).request

    assert isinstance(first.metadata, msgspec.Struct)
    sessions = [r.metadata.session for r in (first, later, other)]  # type: ignore[union-attr]
    assert sessions[0] == sessions[1] != sessions[2]
    assert isinstance(sessions[0], str) and sessions[0].startswith("h-")


def test_a_session_the_client_sends_is_kept() -> None:
    raw = body(messages=[{"role": "user", "content": "hi"}], metadata={"session": "abc"})
    metadata = parse_chat(raw).request.metadata
    assert metadata is not msgspec.UNSET and metadata.session == "abc"


def test_max_tokens_stop_temperature_and_user_are_carried() -> None:
    raw = body(
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=64,
        stop=["\n\n"],
        temperature=0.3,
        user="alice",
        top_p=0.9,
    )
    request = parse_chat(raw).request
    assert (request.max_tokens, request.stop, request.temperature) == (64, ["\n\n"], 0.3)
    assert request.metadata is not msgspec.UNSET and request.metadata.user == "alice"


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    raw = body(
        messages=[{"role": "user", "content": "hi"}], max_tokens=10, max_completion_tokens=99
    )
    assert parse_chat(raw).request.max_tokens == 99


def test_the_key_name_becomes_a_tag_and_the_idempotency_key_is_kept() -> None:
    raw = body(messages=[{"role": "user", "content": "hi"}])
    request = parse_chat(raw, key_name="team-a", idempotency_key="req-1").request
    assert request.metadata is not msgspec.UNSET and request.metadata.tags == ["key:team-a"]
    assert request.idempotency_key == "req-1"


def test_images_are_parts_whether_the_url_is_an_object_or_a_string() -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA==", "detail": "low"}},
        {"type": "image_url", "image_url": "https://example.com/cat.png"},
    ]
    request = parse_chat(body(messages=[{"role": "user", "content": content}])).request
    parts = request.messages[0].content
    assert isinstance(parts, list) and isinstance(parts[1], ImagePart)
    assert parts[1].image_url.detail == "low"
    assert isinstance(parts[2], ImagePart)
    assert parts[2].image_url.url == "https://example.com/cat.png"
    assert request.messages[0].has_image()


def test_a_tool_round_trip_in_history_is_carried() -> None:
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    request = parse_chat(body(messages=messages)).request
    assert request.messages[1].tool_calls is not msgspec.UNSET
    assert request.messages[1].tool_calls[0].function.name == "w"
    assert request.messages[2].tool_call_id == "call_1"


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "JSON object"),
        (body(messages=[]), "$.messages"),
        (body(), "messages"),
        (body(messages=[{"role": "wizard", "content": "x"}]), "$.messages[0].role"),
        (body(messages=[{"role": "user", "content": "x"}], stream="yes"), "stream"),
        (body(messages=[{"role": "user", "content": "x"}], n=2), "n:"),
        (body(messages=[{"role": "user", "content": "x"}], temperature=5), "temperature"),
        (
            body(messages=[{"role": "user", "content": [{"type": "input_audio"}]}]),
            "$.messages[0].content",
        ),
    ],
)
def test_a_bad_request_is_invalid_and_names_the_field(raw: bytes, names: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_chat(raw)
    assert names in caught.value.message


def test_session_id_hashes_the_first_user_message_only() -> None:
    def request(system: str, first: str) -> ChatRequest:
        return msgspec.convert(
            {
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": first},
                ]
            },
            ChatRequest,
        )

    assert session_id(request("a", "x")) == session_id(request("b", "x"))
    assert session_id(request("a", "x")) != session_id(request("a", "y"))


# --- SSE chunks ----------------------------------------------------------------------


def start(model: str = "mock-small") -> Start:
    return Start("rid1", 1, 0, "mock", model, tier="simple")


def done(**usage: int) -> Done:
    return Done("rid1", 1, 5, "stop", "mock", "mock-small", usage=TokenUsage(**usage))


def test_a_stream_renders_role_content_finish_usage_and_done_like_openai() -> None:
    chunks = ChunkStream("rid1", include_usage=True, created=1700000000)
    data = chunks.start(start())
    data += chunks.delta(Delta("rid1", 1, 1, text="Hel"))
    data += chunks.delta(Delta("rid1", 1, 2, text="lo"))
    data += chunks.done(
        done(input_tokens=12, cached_input_tokens=4, output_tokens=7, reasoning_tokens=2)
    )

    out = events(data)
    assert out[-1] == "[DONE]"
    first = out[0]
    assert first["object"] == "chat.completion.chunk"
    assert (first["id"], first["created"], first["model"]) == (
        "chatcmpl-rid1",
        1700000000,
        "mock/mock-small",
    )
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"].get("content") for c in out[1:3]] == ["Hel", "lo"]
    assert out[3]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert out[4]["choices"] == []
    assert out[4]["usage"] == {
        "prompt_tokens": 12,
        "completion_tokens": 7,
        "total_tokens": 19,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }
    assert all(c["usage"] is None for c in out[:4])


def test_without_include_usage_there_is_no_usage_chunk() -> None:
    chunks = ChunkStream("rid1", include_usage=False)
    out = events(chunks.start(start()) + chunks.done(done()))
    assert len(out) == 3 and out[-1] == "[DONE]"
    assert all("usage" not in c for c in out[:-1])


def test_tool_call_fragments_render_with_index_id_type_and_name_first() -> None:
    chunks = ChunkStream("rid1", include_usage=False)
    chunks.start(start())
    first = ToolCallDelta(index=0, id="call_9", name="get_weather", arguments="")
    rest = ToolCallDelta(index=0, arguments='{"city": "Lima"}')
    out = events(
        chunks.delta(Delta("rid1", 1, 1, tool_calls=[first]))
        + chunks.delta(Delta("rid1", 1, 2, tool_calls=[rest]))
    )
    assert out[0]["choices"][0]["delta"]["tool_calls"] == [
        {
            "index": 0,
            "id": "call_9",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        }
    ]
    assert out[1]["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "function": {"arguments": '{"city": "Lima"}'}}
    ]


def test_an_error_event_is_openai_error_json_with_no_done_after_it() -> None:
    data = ChunkStream.error("provider_unavailable", "mock/mock-small: 503")
    assert DONE_EVENT not in data
    assert events(data) == [
        {
            "error": {
                "message": "mock/mock-small: 503",
                "type": "api_error",
                "param": None,
                "code": "provider_unavailable",
            }
        }
    ]


def test_a_later_start_names_the_model_that_continued() -> None:
    chunks = ChunkStream("rid1", include_usage=False)
    chunks.start(start())
    assert chunks.start(start("mock-large")) == b""
    out = events(chunks.delta(Delta("rid1", 2, 1, text="more")))
    assert out[0]["model"] == "mock/mock-large"


def test_a_whole_completion_has_text_or_tool_calls_and_usage() -> None:
    folded = Folded()
    folded.add(Delta("rid1", 1, 1, text="Hi"))
    folded.add(Delta("rid1", 1, 2, text=" there"))
    body_ = json.loads(completion_body("rid1", folded, done(input_tokens=3, output_tokens=2)))
    assert body_["object"] == "chat.completion"
    assert body_["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hi there",
        "refusal": None,
    }
    assert body_["usage"]["total_tokens"] == 5

    calls = Folded()
    calls.add(Delta("rid1", 1, 1, tool_calls=[ToolCallDelta(0, id="c1", name="f")]))
    calls.add(Delta("rid1", 1, 2, tool_calls=[ToolCallDelta(0, arguments="{}")]))
    message = json.loads(completion_body("rid1", calls, done()))["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"] == [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    ]


# --- errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("invalid_request", 400),
        ("unknown_model", 404),
        ("no_candidates", 400),
        ("budget_exceeded", 429),
        ("rate_limited", 429),
        ("no_router", 503),
        ("no_caller", 503),
        ("provider_unavailable", 502),
        ("authentication_failed", 502),
        ("malformed_response", 502),
        ("deadline_exceeded", 504),
        ("content_policy", 400),
        ("context_length_exceeded", 400),
        ("invalid_api_key", 401),
        ("model_not_allowed", 403),
        ("request_too_large", 413),
    ],
)
def test_each_error_code_has_its_http_status(code: str, status: int) -> None:
    assert error_status(code) == status


def test_error_json_is_openais_shape() -> None:
    assert error_body("unknown_model", "unknown model 'x'") == {
        "error": {
            "message": "unknown model 'x'",
            "type": "not_found_error",
            "param": "model",
            "code": "unknown_model",
        }
    }
    assert error_body("budget_exceeded", "over")["error"]["type"] == "insufficient_quota"
    assert error_body("no_candidates", "none")["error"]["type"] == "invalid_request_error"


def test_models_are_listed_once_each_in_openais_list_format() -> None:
    listed = models_body([("auto", "omnillm"), ("mock/a", "mock"), ("auto", "other")])
    assert listed == {
        "object": "list",
        "data": [
            {"id": "auto", "object": "model", "created": 0, "owned_by": "omnillm"},
            {"id": "mock/a", "object": "model", "created": 0, "owned_by": "mock"},
        ],
    }


# --- keys ----------------------------------------------------------------------------


def ring() -> KeyRing:
    keys = [
        GatewayKey(name="team", key="sk-team", models=["auto", "openai/*"]),
        GatewayKey(name="ops", key_env="OPS_KEY"),
    ]
    return KeyRing(keys, env={"OPS_KEY": "sk-ops"})


def test_with_no_keys_configured_anyone_may_call() -> None:
    assert KeyRing([], env={}).identify(None) is None


@pytest.mark.parametrize("header", [None, "", "Bearer wrong", "Basic sk-team", "sk-team"])
def test_a_missing_or_wrong_key_is_refused_without_echoing_it(header: str | None) -> None:
    with pytest.raises(KeyRefused) as caught:
        ring().identify(header)
    assert caught.value.code == "invalid_api_key"
    assert "sk-" not in caught.value.message


def test_keys_from_config_and_from_the_environment_identify_their_names() -> None:
    keys = ring()
    assert [keys.identify(h).name for h in ("Bearer sk-team", "bearer sk-ops")] == ["team", "ops"]  # type: ignore[union-attr]


def test_a_key_limits_models_and_confines_auto_to_its_patterns() -> None:
    team = ring().identify("Bearer sk-team")
    request = msgspec.convert({"messages": [{"role": "user", "content": "x"}]}, ChatRequest)
    admitted = KeyRing.admit(team, request)
    assert isinstance(admitted.route, RouteConstraints) and admitted.route.allow == ["openai/*"]
    assert request.route is msgspec.UNSET  # the caller's request is left as it was

    request.model = "anthropic/claude-x"
    with pytest.raises(KeyRefused) as caught:
        KeyRing.admit(team, request)
    assert caught.value.code == "model_not_allowed"
    assert "sk-team" not in caught.value.message
