from __future__ import annotations

import json
from pathlib import Path

import pytest

from omnillm.bus.messages import ChatRequest, Message, TokenUsage
from omnillm.errors import (
    AuthenticationFailed,
    BadUpstreamRequest,
    ContextLengthExceeded,
    FreeTierRefused,
    ModelNotFound,
    Overloaded,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)
from omnillm.providers import openai_chat, openai_responses
from omnillm.providers.base import StreamUpdate, WireOptions
from omnillm.providers.opencode import FAMILY, ROUTE_AUTH, route_for

FIXTURES = Path(__file__).parents[1] / "fixtures" / "opencode"
REQUEST = ChatRequest(
    messages=[
        Message(role="system", content="You are a terse assistant."),
        Message(role="user", content="hi"),
    ],
    max_tokens=32,
)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def parse_error(status: int, body: bytes, headers: dict[str, str] | None = None) -> ProviderError:
    return FAMILY.parse_error(status, body, headers or {}, provider="opencode")


def merged(updates: list[StreamUpdate]) -> tuple[str, str | None, TokenUsage | None, bool]:
    finishes = [u.finish_reason for u in updates if u.finish_reason is not None]
    usages = [u.usage for u in updates if u.usage is not None]
    return (
        "".join(u.text for u in updates),
        finishes[-1] if finishes else None,
        usages[-1] if usages else None,
        updates[-1].done,
    )


def stream(model: str, data: bytes) -> tuple[str, str | None, TokenUsage | None, bool]:
    parser = FAMILY.stream_parser(model)
    return merged([parser.feed(data), parser.close()])


# --- routing -------------------------------------------------------------------------


def test_family_is_named_opencode():
    assert FAMILY.name == "opencode"


@pytest.mark.parametrize(
    ("model", "route"),
    [
        ("big-pickle", "chat"),
        ("gpt-5.4-mini", "responses"),
        ("claude-sonnet-4-6", "messages"),
        ("gemini-3-flash", "gemini"),
        ("kimi-k2.6", "chat"),
        ("glm-5.1", "chat"),
        ("qwen3-coder", "messages"),
        ("grok-4", "responses"),
        ("deepseek-v4-flash", "chat"),
        ("nemotron-3-ultra-free", "chat"),
        ("muse-spark-1.3-contributor-free", "responses"),
        ("minimax-m2.5-free", "chat"),
        ("opencode/claude-sonnet-4-6", "messages"),
        ("GPT-5.4-Mini", "responses"),
    ],
)
def test_each_model_goes_to_the_endpoint_zen_serves_it_on(model, route):
    assert route_for(model) == route


@pytest.mark.parametrize(
    ("model", "path", "auth"),
    [
        ("kimi-k2.6", "/chat/completions", "bearer"),
        ("gpt-5.4-mini", "/responses", "bearer"),
        ("claude-sonnet-4-6", "/messages", "x-api-key"),
        (
            "gemini-3-flash",
            "/models/gemini-3-flash:streamGenerateContent?alt=sse",
            "x-goog-api-key",
        ),
    ],
)
def test_each_route_gets_its_path_and_auth_header(model, path, auth):
    wire = FAMILY.build_request(REQUEST, model=model, stream=True, options=WireOptions())

    assert wire.path == path
    assert wire.auth == auth


def test_the_auth_table_names_every_route():
    assert ROUTE_AUTH == {
        "chat": "bearer",
        "responses": "bearer",
        "messages": "x-api-key",
        "gemini": "x-goog-api-key",
    }


@pytest.mark.parametrize(
    ("model", "family"),
    [("kimi-k2.6", openai_chat.FAMILY), ("gpt-5.4-mini", openai_responses.FAMILY)],
)
def test_the_body_is_the_route_familys_body(model, family):
    wire = FAMILY.build_request(REQUEST, model=model, stream=True, options=WireOptions())
    direct = family.build_request(REQUEST, model=model, stream=True, options=WireOptions())

    assert json.loads(wire.body) == json.loads(direct.body)
    assert wire.headers == direct.headers


def test_a_claude_body_is_in_the_anthropic_shape():
    wire = FAMILY.build_request(
        REQUEST, model="claude-sonnet-4-6", stream=False, options=WireOptions()
    )
    body = json.loads(wire.body)

    assert body["system"] == "You are a terse assistant."
    assert body["max_tokens"] == 32


# --- streams and responses -------------------------------------------------------------


def test_chat_stream_with_a_cost_tail_parses_and_ignores_the_cost_frame():
    assert stream("kimi-k2.6", fixture("stream_cost_tail.sse")) == (
        "",
        "stop",
        TokenUsage(input_tokens=30, output_tokens=5),
        True,
    )


def test_responses_stream_with_a_cost_ping_parses_and_ignores_the_ping():
    assert stream("gpt-5.4-mini", fixture("stream_responses_cost_tail.sse")) == (
        "Hi!",
        "stop",
        TokenUsage(input_tokens=9, output_tokens=2),
        True,
    )


def test_messages_stream_with_a_cost_ping_is_parsed_by_the_anthropic_parser():
    data = (
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"text","text":""}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"Bonjour"}}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
        b'"usage":{"output_tokens":2}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
        b'event: ping\ndata: {"type":"ping","cost":"0.00002"}\n\n'
    )

    text, finish_reason, _, done = stream("claude-sonnet-4-6", data)

    assert (text, finish_reason, done) == ("Bonjour", "stop", True)


def test_gemini_stream_with_zens_cost_frame_keeps_its_answer():
    data = (
        b'data: {"candidates":[{"content":{"parts":[{"text":"Hi"}],"role":"model"},'
        b'"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":5,'
        b'"candidatesTokenCount":1}}\r\n\r\n'
        b'data: {"type":"ping","cost":"0.00001"}\n\n'
    )

    assert stream("gemini-3-flash", data) == (
        "Hi",
        "stop",
        TokenUsage(input_tokens=5, output_tokens=1),
        False,
    )


def test_a_non_stream_body_with_zens_cost_field_is_parsed_by_the_route_family():
    body = (
        b'{"status":"completed","model":"gpt-5.4-mini","cost":"0.00001","output":[{"type":'
        b'"message","content":[{"type":"output_text","text":"Hi!"}]}],"usage":'
        b'{"input_tokens":9,"output_tokens":2}}'
    )

    parsed = FAMILY.parse_response(body, "gpt-5.4-mini")

    assert (parsed.text, parsed.finish_reason) == ("Hi!", "stop")


# --- errors --------------------------------------------------------------------------


def test_the_free_tier_refusal_is_permanent():
    error = parse_error(403, fixture("error_free_tier.json"))

    assert isinstance(error, FreeTierRefused)
    assert not error.retryable
    assert error.status_code == 403
    assert error.message == (
        "opencode: 403 Error from provider (Console): "
        "OpenCode's free tier can only be used from within OpenCode"
    )


def test_no_credit_is_an_authentication_failure_that_says_so():
    error = parse_error(401, fixture("error_credits.json"))

    assert type(error) is AuthenticationFailed
    assert not error.retryable
    assert error.message.startswith("opencode: 401 the account has no quota or credit left: ")


def test_a_bad_key_is_an_authentication_failure():
    body = b'{"type":"error","error":{"type":"AuthError","message":"Invalid API key."}}'

    error = parse_error(401, body)

    assert type(error) is AuthenticationFailed
    assert error.message == "opencode: 401 Invalid API key."


def test_zens_rate_limit_carries_retry_after():
    error = parse_error(429, fixture("error_rate_limit.json"), {"retry-after": "17"})

    assert isinstance(error, RateLimited)
    assert error.retryable
    assert error.retry_after == 17.0
    assert error.message == "opencode: 429 Rate limit exceeded. Please try again later."


def test_a_region_refusal_is_an_authentication_failure():
    body = b'{"type":"error","error":{"type":"RegionError","message":"Not available here."}}'

    assert type(parse_error(403, body)) is AuthenticationFailed


def test_an_unknown_model_is_model_not_found_not_a_bad_key():
    assert isinstance(parse_error(401, fixture("error_model.json")), ModelNotFound)


def test_zens_internal_error_is_retryable():
    error = parse_error(500, fixture("error_internal.json"))

    assert isinstance(error, ProviderUnavailable)
    assert error.retryable
    assert error.message == "opencode: 500 Internal server error"


def test_an_upstream_openai_error_keeps_zens_prefix_and_its_code():
    error = parse_error(400, fixture("error_upstream_openai.json"))

    assert isinstance(error, ContextLengthExceeded)
    assert error.message.startswith("opencode: 400 Error from provider (OpenAI): Your input")


def test_an_upstream_anthropic_error_is_mapped_by_its_type():
    error = parse_error(529, fixture("error_upstream_anthropic.json"))

    assert isinstance(error, Overloaded)
    assert error.message == "opencode: 529 Error from provider (Anthropic): Overloaded"


def test_an_upstream_404_that_zen_sent_as_400_is_reported_as_not_found():
    error = parse_error(400, fixture("error_upstream_gemini_404.json"))

    assert isinstance(error, ModelNotFound)
    assert error.status_code == 404
    assert "Error from provider (Google): models/gemini-0-missing is not found" in error.message


def test_an_ordinary_upstream_400_stays_a_bad_request():
    body = {"error": {"message": "Error from provider (OpenAI): Unsupported parameter: 'top_k'."}}

    error = parse_error(400, json.dumps(body).encode())

    assert type(error) is BadUpstreamRequest
    assert error.status_code == 400


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>Bad gateway</html>", "opencode: 502 <html>Bad gateway</html>"),
        (b"", "opencode: 502 Bad Gateway"),
        (b'{"error": "plain text error"}', "opencode: 502 plain text error"),
    ],
    ids=["html", "empty", "string-error"],
)
def test_error_bodies_of_no_known_shape_still_give_a_message(body, message):
    assert parse_error(502, body).message == message
