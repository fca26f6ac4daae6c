"""The mock provider's other wire families and OpenCode Zen's routes, over real HTTP.

Each family's answer must be the same deterministic text (and token counts) the
OpenAI route gives, in that family's own shapes, streams and errors.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from omnillm.providers.sse import SSEDecoder
from omnillm.testing.mock_provider import (
    MockProvider,
    MockSettings,
    answer_tokens,
    count_prompt_tokens,
)

PROMPT = "What is the capital of France?"
ANSWER = "".join(answer_tokens(PROMPT, 20))
SYSTEM = "Be brief."
KEY = "sk-right"
FREE_TIER = {
    "type": "error",
    "error": {
        "type": "FreeTierError",
        "message": "Error from provider (Console): OpenCode's free tier can only be used "
        "from within OpenCode",
    },
}

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def provider() -> AsyncIterator[MockProvider]:
    async with MockProvider(MockSettings(tokens=20)) as running:
        yield running


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


@dataclass
class Streamed:
    raw: bytes
    events: list[tuple[str | None, Any]]
    """``(event:, data)``, the data parsed as JSON unless it is ``[DONE]``."""

    def of(self, kind: str) -> list[Any]:
        return [data for event, data in self.events if event == kind]


async def stream(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], **headers: str
) -> Streamed:
    decoder, raw, events = SSEDecoder(), b"", []
    async with client.stream("POST", url, json=body, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for chunk in response.aiter_bytes():
            raw += chunk
            events += decoder.feed(chunk)
    events += decoder.close()
    parsed = [
        (e.event, e.data.decode() if e.data == b"[DONE]" else json.loads(e.data)) for e in events
    ]
    return Streamed(raw, parsed)


def prompt_tokens(*texts: str) -> int:
    return count_prompt_tokens([{"content": text} for text in texts])


def arguments() -> dict[str, str]:
    return {"input": PROMPT}


# Anthropic Messages ------------------------------------------------------------------


def claude(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    turns = list(messages) or [{"role": "user", "content": PROMPT}]
    return {"model": "mock-small", "max_tokens": 1024, "messages": turns, **extra}


ANTHROPIC_TOOLS = [{"name": "search", "input_schema": {}}, {"name": "weather", "input_schema": {}}]


async def test_anthropic_answer_has_the_text_stop_reason_and_usage(
    provider: MockProvider, client: httpx.AsyncClient
) -> None:
    body = claude(system=[{"type": "text", "text": SYSTEM}])
    reply = (await client.post(f"{provider.url('anthropic')}/messages", json=body)).json()
    assert reply["type"] == "message" and reply["role"] == "assistant"
    assert reply["content"] == [{"type": "text", "text": ANSWER}]
    assert reply["stop_reason"] == "end_turn"
    assert reply["usage"]["input_tokens"] == prompt_tokens(SYSTEM, PROMPT)
    assert reply["usage"]["output_tokens"] == 20


async def test_anthropic_stream_is_message_start_to_message_stop(
    provider: MockProvider, client: httpx.AsyncClient
) -> None:
    got = await stream(client, f"{provider.url('anthropic')}/messages", claude(stream=True))
    assert all(event == data["type"] for event, data in got.events)
    assert got.events[0][0] == "message_start" and got.events[-1][0] == "message_stop"
    assert got.of("message_start")[0]["message"]["usage"]["input_tokens"] == prompt_tokens(PROMPT)
    assert "".join(d["delta"]["text"] for d in got.of("content_block_delta")) == ANSWER
    [end] = got.of("message_delta")
    assert end["delta"]["stop_reason"] == "end_turn"
    assert end["usage"]["output_tokens"] == 20


async def test_anthropic_tool_use_carries_the_prompt_as_input(
    provider: MockProvider, client: httpx.AsyncClient
) -> None:
    url = f"{provider.url('anthropic')}/messages"
    choice = {"type": "tool", "name": "weather"}
    reply = (await client.post(url, json=claude(tools=ANTHROPIC_TOOLS, tool_choice=choice))).json()
    [block] = reply["content"]
    assert (block["type"], block["name"], block["input"]) == ("tool_use", "weather", arguments())
    assert block["id"].startswith("toolu_") and reply["stop_reason"] == "tool_use"
    got = await stream(client, url, claude(tools=ANTHROPIC_TOOLS, stream=True))
    assert got.of("content_block_start")[0]["content_block"]["name"] == "search"
    partial = [d["delta"]["partial_json"] for d in got.of("content_block_delta")]
    assert len(partial) == 2 and json.loads("".join(partial)) == arguments()
    assert got.of("message_delta")[0]["delta"]["stop_reason"] == "tool_use"


async def test_anthropic_answers_a_tool_result_with_text(
    provider: MockProvider, client: httpx.AsyncClient
) -> None:
    call = {"type": "tool_use", "id": "toolu_1", "name": "search", "input": {}}
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Paris"}
    turns = [
        {"role": "user", "content": [{"type": "text", "text": PROMPT}]},
        {"role": "assistant", "content": [call]},
        {"role": "user", "content": [result]},
    ]
    body = claude(*turns, tools=ANTHROPIC_TOOLS)
    reply = (await client.post(f"{provider.url('anthropic')}/messages", json=body)).json()
    assert reply["content"] == [{"type": "text", "text": ANSWER}]


async def test_anthropic_errors_use_its_envelope(
    provider: MockProvider, client: httpx.AsyncClient
) -> None:
    url = f"{provider.url('anthropic')}/messages"
    unknown = await client.post(url, json={**claude(), "model": "claude-x"})
    assert unknown.status_code == 404
    assert unknown.json()["error"] == {"type": "not_found_error", "message": "model: claude-x"}
    no_cap = await client.post(url, json={"model": "mock-small", "messages": claude()["messages"]})
    assert no_cap.status_code == 400
    assert no_cap.json()["error"]["type"] == "invalid_request_error"


async def test_anthropic_reads_the_key_from_x_api_key_or_bearer(
    provider: MockProvider, client: httpx.AsyncClient
) -> None:
    provider.settings.api_key = KEY
    url = f"{provider.url('anthropic')}/messages"
    wrong = await client.post(url, json=claude(), headers={"x-api-key": "sk-wrong"})
    assert wrong.status_code == 401
    assert wrong.json()["type"] == "error"
    assert wrong.json()["error"]["type"] == "authentication_error"
    for headers in ({"x-api-key": KEY}, {"Authorization": f"Bearer {KEY}"}):
        assert (await client.post(url, json=claude(), headers=headers)).status_code == 200


# Gemini ------------------------------------------------------------------------------


def gemini(text: str = PROMPT, **extra: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}], **extra}


GEMINI_TOOLS = [{"functionDeclarations": [{"name": "search"}, {"name": "weather"}]}]


async def test_gemini_answer_has_the_text_and_usage_metadata(
    provider: MockProvider, client: httpx.AsyncClient
) -> None:
    body = gemini(systemInstruction={"parts": [{"text": SYSTEM}]})
    url = f"{provider.url('gemini')}/models/mock-small:generateContent"
    reply = (await client.post(url, json=body)).json()
    [candidate] = reply["candidates"]
    assert candidate["content"] == {"role": "model", "parts": [{"text": ANSWER}]}
    assert candidate["finishReason"] == "STOP"
    prompt = prompt_tokens(SYSTEM, PROMPT)
    assert reply["usageMetadata"] == {
        "promptTokenCount": prompt,
        "candidatesTokenCount": 20,
        "totalTokenCount": prompt + 20,
    }


@pytest.mark.parametrize("version", ["/v1beta", "/v1"])
async def test_gemini_stream_is_crlf_framed_with_cumulative_usage_and_no_done(
    provider: MockProvider, client: httpx.AsyncClient, version: str
) -> None:
    url = f"http://127.0.0.1:{provider.port}{version}/models/mock-small:streamGenerateContent"
    got = await stream(client, f"{url}?alt=sse", gemini())
    chunks = [data for _, data in got.events]
    assert got.raw.count(b"\r\n\r\n") == len(chunks) == 21
    assert b"[DONE]" not in got.raw
    texts = [c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks]
    assert "".join(texts) == ANSWER
    counts = [c["usageMetadata"]["candidatesTokenCount"] for c in chunks]
    assert counts == [*range(1, 21), 20]
    assert [c["candidates"][0].get("finishReason") for c in chunks][-2:] == [None, "STOP"]


async def test_gemini_function_call_comes_whole(
    provider: MockProvider, client: httpx.AsyncClient
) -> None:
    base = f"{provider.url('gemini')}/models/mock-small"
    forced = {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["weather"]}}
    reply = (
        await client.post(
            f"{base}:generateContent", json=gemini(tools=GEMINI_TOOLS, toolConfig=forced)
        )
    ).json()
    [part] = reply["candidates"][0]["content"]["parts"]
    assert part == {"functionCall": {"name": "weather", "args": arguments()}}
    assert reply["candidates"][0]["finishReason"] == "STOP"
    got = await stream(client, f"{base}:streamGenerateContent?alt=sse", gemini(tools=GEMINI_TOOLS))
    first = got.events[0][1]["candidates"][0]["content"]["parts"]
    assert first == [{"functionCall": {"name": "search", "args": arguments()}}]
    assert len(got.events) == 2


async def test_gemini_answers_text_when_calling_is_off_or_the_function_answered(
    provider: MockProvider, client: httpx.AsyncClient
) -> None:
    url = f"{provider.url('gemini')}/models/mock-small:generateContent"
    off = gemini(tools=GEMINI_TOOLS, tool_config={"function_calling_config": {"mode": "NONE"}})
    answered = gemini(tools=GEMINI_TOOLS)
    answered["contents"] += [
        {"role": "model", "parts": [{"functionCall": {"name": "search", "args": {}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "search", "response": {}}}]},
    ]
    for body in (off, answered):
        reply = (await client.post(url, json=body)).json()
        assert reply["candidates"][0]["content"]["parts"] == [{"text": ANSWER}]


async def test_gemini_without_alt_sse_streams_one_json_array(
    provider: MockProvider, client: httpx.AsyncClient
) -> None:
    url = f"{provider.url('gemini')}/models/mock-small:streamGenerateContent"
    chunks = (await client.post(url, json=gemini())).json()
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == ANSWER


async def test_gemini_errors_are_google_rpc_statuses(
    provider: MockProvider, client: httpx.AsyncClient
) -> None:
    provider.settings.api_key = KEY
    base = provider.url("gemini")
    key = {"x-goog-api-key": KEY}
    unknown = await client.post(
        f"{base}/models/gemini-x:generateContent", json=gemini(), headers=key
    )
    assert unknown.status_code == 404
    assert unknown.json()["error"]["status"] == "NOT_FOUND"
    assert unknown.json()["error"]["message"].startswith("models/gemini-x is not found")
    url = f"{base}/models/mock-small:generateContent"
    wrong = await client.post(url, json=gemini(), headers={"x-goog-api-key": "bad"})
    assert (wrong.status_code, wrong.json()["error"]["status"]) == (400, "INVALID_ARGUMENT")
    assert wrong.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    missing = await client.post(url, json=gemini())
    assert (missing.status_code, missing.json()["error"]["status"]) == (403, "PERMISSION_DENIED")
    assert (await client.post(url, json=gemini(), headers=key)).status_code == 200


# Cohere v2 ---------------------------------------------------------------------------


def cohere(**extra: Any) -> dict[str, Any]:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]
    return {"model": "mock-small", "messages": messages, **extra}


COHERE_TOOLS = [{"type": "function", "function": {"name": "search", "parameters": {}}}]


async def test_cohere_answer_has_the_text_and_both_usage_counts(
    provider: MockProvider, client: httpx.AsyncClient
) -> None:
    reply = (await client.post(f"{provider.url('cohere')}/chat", json=cohere())).json()
    assert reply["message"]["content"] == [{"type": "text", "text": ANSWER}]
    assert reply["finish_reason"] == "COMPLETE"
    counts = {"input_tokens": prompt_tokens(SYSTEM, PROMPT), "output_tokens": 20}
    assert reply["usage"] == {"billed_units": counts, "tokens": counts}


async def test_cohere_stream_ends_with_message_end_then_done(
    provider: MockProvider, client: httpx.AsyncClient
) -> None:
    got = await stream(client, f"{provider.url('cohere')}/chat", cohere(stream=True))
    assert got.events[-1] == (None, "[DONE]")
    assert all(event == data["type"] for event, data in got.events[:-1])
    assert got.events[0][0] == "message-start"
    texts = [d["delta"]["message"]["content"]["text"] for d in got.of("content-delta")]
    assert "".join(texts) == ANSWER
    [end] = got.of("message-end")
    assert end["delta"]["finish_reason"] == "COMPLETE"
    assert end["delta"]["usage"]["tokens"]["output_tokens"] == 20


async def test_cohere_tool_call_has_a_plan_and_the_prompt_as_arguments(
    provider: MockProvider, client: httpx.AsyncClient
) -> None:
    url = f"{provider.url('cohere')}/chat"
    reply = (await client.post(url, json=cohere(tools=COHERE_TOOLS))).json()
    [call] = reply["message"]["tool_calls"]
    assert call["function"]["name"] == "search"
    assert json.loads(call["function"]["arguments"]) == arguments()
    assert reply["message"]["tool_plan"] and reply["finish_reason"] == "TOOL_CALL"
    got = await stream(client, url, cohere(tools=COHERE_TOOLS, stream=True))
    [start] = got.of("tool-call-start")
    assert start["delta"]["message"]["tool_calls"]["id"] == call["id"]
    parts = [
        d["delta"]["message"]["tool_calls"]["function"]["arguments"]
        for d in got.of("tool-call-delta")
    ]
    assert json.loads("".join(parts)) == arguments()
    assert got.of("message-end")[0]["delta"]["finish_reason"] == "TOOL_CALL"
    refused = (await client.post(url, json=cohere(tools=COHERE_TOOLS, tool_choice="NONE"))).json()
    assert refused["message"]["content"][0]["text"] == ANSWER


async def test_cohere_errors_are_a_message(
    provider: MockProvider, client: httpx.AsyncClient
) -> None:
    provider.settings.api_key = KEY
    url, key = f"{provider.url('cohere')}/chat", {"Authorization": f"Bearer {KEY}"}
    unknown = await client.post(url, json={**cohere(), "model": "command-x"}, headers=key)
    assert unknown.status_code == 404
    assert unknown.json()["message"].startswith("model 'command-x' not found")
    wrong = await client.post(url, json=cohere(), headers={"Authorization": "Bearer no"})
    assert (wrong.status_code, wrong.json()["message"]) == (401, "invalid api token")


# OpenAI Responses --------------------------------------------------------------------


def responses(**extra: Any) -> dict[str, Any]:
    return {"model": "mock-small", "instructions": SYSTEM, "input": PROMPT, **extra}


RESPONSES_TOOLS = [{"type": "function", "name": "search"}, {"type": "function", "name": "weather"}]


def responses_usage(output_tokens: int) -> dict[str, Any]:
    prompt = prompt_tokens(SYSTEM, PROMPT)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + output_tokens,
    }


async def test_responses_answer_is_one_message_item_with_usage(
    provider: MockProvider, client: httpx.AsyncClient
) -> None:
    reply = (
        await client.post(f"{provider.url('openai-responses')}/responses", json=responses())
    ).json()
    assert (reply["object"], reply["status"]) == ("response", "completed")
    [item] = reply["output"]
    assert (item["type"], item["role"]) == ("message", "assistant")
    assert item["content"] == [{"type": "output_text", "text": ANSWER, "annotations": []}]
    assert reply["usage"] == responses_usage(20)


async def test_responses_stream_is_created_to_completed_in_sequence(
    provider: MockProvider, client: httpx.AsyncClient
) -> None:
    url = f"{provider.url('openai-responses')}/responses"
    got = await stream(client, url, responses(stream=True))
    kinds = [event for event, _ in got.events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-2:] == ["response.output_item.done", "response.completed"]
    assert [data["sequence_number"] for _, data in got.events] == list(range(len(kinds)))
    assert "".join(d["delta"] for d in got.of("response.output_text.delta")) == ANSWER
    assert got.of("response.completed")[0]["response"]["usage"] == responses_usage(20)


async def test_responses_cap_ends_incomplete(
    provider: MockProvider, client: httpx.AsyncClient
) -> None:
    url = f"{provider.url('openai-responses')}/responses"
    reply = (await client.post(url, json=responses(max_output_tokens=3))).json()
    assert (reply["status"], reply["incomplete_details"]) == (
        "incomplete",
        {"reason": "max_output_tokens"},
    )
    assert reply["output"][0]["content"][0]["text"] == "".join(answer_tokens(PROMPT, 3))
    got = await stream(client, url, responses(max_output_tokens=3, stream=True))
    assert got.events[-1][0] == "response.incomplete"
    assert got.events[-1][1]["response"]["usage"]["output_tokens"] == 3


async def test_responses_function_call_item_and_argument_deltas(
    provider: MockProvider, client: httpx.AsyncClient
) -> None:
    url = f"{provider.url('openai-responses')}/responses"
    choice = {"type": "function", "name": "weather"}
    reply = (
        await client.post(url, json=responses(tools=RESPONSES_TOOLS, tool_choice=choice))
    ).json()
    [item] = reply["output"]
    assert (item["type"], item["name"]) == ("function_call", "weather")
    assert item["call_id"].startswith("call_") and json.loads(item["arguments"]) == arguments()
    got = await stream(client, url, responses(tools=RESPONSES_TOOLS, stream=True))
    deltas = [d["delta"] for d in got.of("response.function_call_arguments.delta")]
    assert len(deltas) == 2 and json.loads("".join(deltas)) == arguments()
    assert got.of("response.output_item.added")[0]["item"]["name"] == "search"


async def test_responses_answers_a_function_output_with_text(
    provider: MockProvider, client: httpx.AsyncClient
) -> None:
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": PROMPT}]},
        {"type": "function_call", "call_id": "call_1", "name": "search", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "Paris"},
    ]
    body = responses(input=items, tools=RESPONSES_TOOLS)
    reply = (await client.post(f"{provider.url('openai-responses')}/responses", json=body)).json()
    assert reply["output"][0]["content"][0]["text"] == ANSWER


async def test_responses_errors_are_openai_errors(
    provider: MockProvider, client: httpx.AsyncClient
) -> None:
    provider.settings.api_key = KEY
    url = f"{provider.url('openai-responses')}/responses"
    unknown = await client.post(
        url, json=responses(model="gpt-x"), headers={"Authorization": f"Bearer {KEY}"}
    )
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "model_not_found")
    wrong = await client.post(url, json=responses(), headers={"Authorization": "Bearer no"})
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (401, "invalid_api_key")


# Every family ------------------------------------------------------------------------


async def test_each_familys_max_tokens_field_truncates_with_its_length_reason(
    provider: MockProvider, client: httpx.AsyncClient
) -> None:
    capped = "".join(answer_tokens(PROMPT, 3))
    url = f"{provider.url('anthropic')}/messages"
    reply = (await client.post(url, json=claude(max_tokens=3))).json()
    assert (reply["content"][0]["text"], reply["stop_reason"]) == (capped, "max_tokens")
    url = f"{provider.url('gemini')}/models/mock-small:generateContent"
    body = gemini(generationConfig={"maxOutputTokens": 3})
    [candidate] = (await client.post(url, json=body)).json()["candidates"]
    assert candidate["content"]["parts"][0]["text"] == capped
    assert candidate["finishReason"] == "MAX_TOKENS"
    reply = (await client.post(f"{provider.url('cohere')}/chat", json=cohere(max_tokens=3))).json()
    assert (reply["message"]["content"][0]["text"], reply["finish_reason"]) == (
        capped,
        "MAX_TOKENS",
    )


STREAMS = [
    ("anthropic", "/messages", claude(stream=True), '"text_delta"'),
    ("gemini", "/models/mock-small:streamGenerateContent?alt=sse", gemini(), '"text"'),
    ("cohere", "/chat", cohere(stream=True), '"content-delta"'),
    ("openai-responses", "/responses", responses(stream=True), '"response.output_text.delta"'),
]


@pytest.mark.parametrize(("family", "path", "body", "token"), STREAMS, ids=[s[0] for s in STREAMS])
async def test_a_stream_is_in_flight_between_paced_tokens_and_ends_when_stopped(
    family: str, path: str, body: dict[str, Any], token: str
) -> None:
    settings = MockSettings(tokens=2, token_delay_s=60.0)
    async with MockProvider(settings) as provider, httpx.AsyncClient() as client:
        async with client.stream("POST", provider.url(family) + path, json=body) as response:
            async for line in response.aiter_lines():
                if token in line:
                    break  # the first token, a minute before the second one is due
            assert provider.in_flight == 1
    assert provider.in_flight == 0


async def test_requests_are_counted_across_families_rejected_ones_included(
    provider: MockProvider, client: httpx.AsyncClient
) -> None:
    await client.post(f"{provider.url('anthropic')}/messages", json=claude())
    await client.post(f"{provider.url('gemini')}/models/nope:generateContent", json=gemini())
    await client.post(f"{provider.url('cohere')}/chat", content=b"{not json")
    await client.post(f"{provider.url('opencode')}/responses", json=responses())
    assert provider.requests_served == 4


async def test_url_names_each_familys_base(provider: MockProvider) -> None:
    root = f"http://127.0.0.1:{provider.port}"
    assert provider.url("anthropic") == f"{root}/v1"
    assert provider.url("gemini") == f"{root}/v1beta"
    assert provider.url("cohere") == f"{root}/v2"
    assert provider.url("opencode") == f"{root}/zen/v1"
    assert provider.base_url == provider.url("openai") == f"{root}/v1"
    with pytest.raises(ValueError, match="unknown family"):
        provider.url("bedrock")


# OpenCode Zen ------------------------------------------------------------------------


def zen_chat(**extra: Any) -> dict[str, Any]:
    return {"model": "mock-small", "messages": [{"role": "user", "content": PROMPT}], **extra}


async def test_zen_chat_appends_the_cost_frame_after_done(
    provider: MockProvider, client: httpx.AsyncClient
) -> None:
    url = f"{provider.url('opencode')}/chat/completions"
    reply = (await client.post(url, json=zen_chat())).json()
    assert reply["choices"][0]["message"]["content"] == ANSWER
    assert reply["cost"] == "0.0000485"
    got = await stream(client, url, zen_chat(stream=True))
    assert got.events[-2:] == [(None, "[DONE]"), (None, {"choices": [], "cost": "0.0000485"})]
    texts = [d["choices"][0]["delta"].get("content", "") for _, d in got.events[:-2]]
    assert "".join(texts) == ANSWER


async def test_zen_messages_reads_only_x_api_key_and_pings_the_cost_after_stop(
    provider: MockProvider, client: httpx.AsyncClient
) -> None:
    provider.settings.api_key = KEY
    url = f"{provider.url('opencode')}/messages"
    bearer = await client.post(url, json=claude(), headers={"Authorization": f"Bearer {KEY}"})
    assert bearer.status_code == 401
    assert bearer.json() == {
        "type": "error",
        "error": {"type": "AuthError", "message": "Invalid API key."},
    }
    got = await stream(client, url, claude(stream=True), **{"x-api-key": KEY})
    assert [e for e, _ in got.events[-2:]] == ["message_stop", "ping"]
    assert got.events[-1][1] == {"type": "ping", "cost": "0.0000485"}
    assert "".join(d["delta"]["text"] for d in got.of("content_block_delta")) == ANSWER


async def test_zen_responses_and_gemini_routes_answer_with_their_own_headers(
    provider: MockProvider, client: httpx.AsyncClient
) -> None:
    provider.settings.api_key = KEY
    base = provider.url("opencode")
    bearer = {"Authorization": f"Bearer {KEY}"}
    reply = (await client.post(f"{base}/responses", json=responses(), headers=bearer)).json()
    assert reply["output"][0]["content"][0]["text"] == ANSWER
    url = f"{base}/models/mock-small:generateContent"
    reply = (await client.post(url, json=gemini(), headers={"x-goog-api-key": KEY})).json()
    assert reply["candidates"][0]["content"]["parts"] == [{"text": ANSWER}]
    assert (await client.post(url, json=gemini(), headers=bearer)).status_code == 401


async def test_zen_unknown_model_is_its_own_401_model_error(
    provider: MockProvider, client: httpx.AsyncClient
) -> None:
    url = f"{provider.url('opencode')}/chat/completions"
    response = await client.post(url, json=zen_chat(model="gpt-x"))
    assert response.status_code == 401
    assert response.json()["error"] == {
        "type": "ModelError",
        "message": "Model gpt-x not supported",
    }


async def test_zen_free_tier_refusal_is_403_on_every_route(
    provider: MockProvider, client: httpx.AsyncClient
) -> None:
    provider.settings.free_tier_refused = True
    base = provider.url("opencode")
    posts = {
        "/chat/completions": zen_chat(),
        "/messages": claude(),
        "/responses": responses(),
        "/models/mock-small:streamGenerateContent?alt=sse": gemini(),
    }
    for path, body in posts.items():
        response = await client.post(base + path, json=body)
        assert (response.status_code, response.json()) == (403, FREE_TIER)
    listing = await client.get(f"{base}/models")
    assert (listing.status_code, listing.json()) == (403, FREE_TIER)
    plain = await client.post(f"{provider.url('anthropic')}/messages", json=claude())
    assert plain.status_code == 200
