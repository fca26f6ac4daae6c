"""The mock provider, over real HTTP: what an OpenAI client sees from it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from omnillm.testing.mock_provider import (
    MockProvider,
    MockSettings,
    answer_tokens,
    count_prompt_tokens,
)

PROMPT = "What is the capital of France?"
TOOLS = [
    {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}},
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def provider() -> AsyncIterator[MockProvider]:
    async with MockProvider() as running:
        yield running


@pytest.fixture
async def client(provider: MockProvider) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=provider.base_url) as http:
        yield http


def user(content: str | list[dict[str, Any]]) -> dict[str, Any]:
    return {"role": "user", "content": content}


def request(messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"model": "mock-small", "messages": messages, **extra}


async def post_stream(client: httpx.AsyncClient, body: dict[str, Any]) -> list[str]:
    """The ``data:`` payloads of an SSE response, in order."""
    async with client.stream("POST", "/chat/completions", json={**body, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        return [line[6:] async for line in r.aiter_lines() if line.startswith("data: ")]


def chunks(events: list[str]) -> list[dict[str, Any]]:
    return [json.loads(e) for e in events if e != "[DONE]"]


def streamed_text(events: list[str]) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content", "") for c in chunks(events) if c["choices"]
    )


def streamed_arguments(events: list[str]) -> str:
    deltas = [c["choices"][0]["delta"] for c in chunks(events) if c["choices"]]
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    return "".join(call["function"]["arguments"] for call in calls)


def expected_usage(messages: list[dict[str, Any]], completion: int) -> dict[str, Any]:
    prompt = count_prompt_tokens(messages)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def test_answer_tokens_are_stable_words_with_leading_spaces_after_the_first() -> None:
    tokens = answer_tokens(PROMPT, 5)
    assert tokens == answer_tokens(PROMPT, 5)
    assert len(tokens) == 5
    assert not tokens[0].startswith(" ")
    assert all(t.startswith(" ") and t.strip() for t in tokens[1:])


def test_prompt_tokens_count_text_parts_of_every_message() -> None:
    parts = [{"type": "text", "text": "abcd"}, {"type": "image_url", "image_url": {}}]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "12345678"},
        {"role": "user", "content": parts},
    ]
    assert count_prompt_tokens(messages) == (8 // 4 + 4) + (4 // 4 + 4)


@pytest.mark.anyio
async def test_non_stream_answer_is_the_deterministic_text_with_exact_usage(
    client: httpx.AsyncClient, provider: MockProvider
) -> None:
    messages = [{"role": "system", "content": "Be brief."}, user(PROMPT)]
    response = await client.post("/chat/completions", json=request(messages))
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"] == "chatcmpl-mock-1"
    assert body["model"] == "mock-small"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["message"]["content"] == "".join(answer_tokens(PROMPT, 20))
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == expected_usage(messages, 20)
    assert provider.requests_served == 1


@pytest.mark.anyio
async def test_prompt_is_the_last_user_message_with_text_parts_joined(
    client: httpx.AsyncClient,
) -> None:
    parts = [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]
    messages = [user("earlier"), {"role": "assistant", "content": "ok"}, user(parts)]
    body = (await client.post("/chat/completions", json=request(messages))).json()
    assert body["choices"][0]["message"]["content"] == "".join(answer_tokens("first\nsecond", 20))


@pytest.mark.anyio
async def test_different_prompts_give_different_answers(client: httpx.AsyncClient) -> None:
    answers = set()
    for prompt in ("hello", "goodbye", PROMPT):
        body = (await client.post("/chat/completions", json=request([user(prompt)]))).json()
        answers.add(body["choices"][0]["message"]["content"])
    assert len(answers) == 3


@pytest.mark.anyio
async def test_stream_reassembles_to_the_same_text_and_ends_with_done(
    client: httpx.AsyncClient,
) -> None:
    events = await post_stream(client, request([user(PROMPT)]))
    assert events[-1] == "[DONE]"
    parsed = chunks(events)
    assert parsed[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert parsed[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in parsed)
    assert streamed_text(events) == "".join(answer_tokens(PROMPT, 20))
    assert len(parsed) == 1 + 20 + 1


@pytest.mark.anyio
async def test_stream_usage_chunk_comes_last_only_when_asked_for(
    client: httpx.AsyncClient,
) -> None:
    messages = [user(PROMPT)]
    options = {"stream_options": {"include_usage": True}}
    events = await post_stream(client, request(messages, **options))
    parsed = chunks(events)
    assert events[-1] == "[DONE]"
    assert parsed[-1]["choices"] == []
    assert parsed[-1]["usage"] == expected_usage(messages, 20)
    assert all(c["usage"] is None for c in parsed[:-1])
    assert streamed_text(events) == "".join(answer_tokens(PROMPT, 20))


@pytest.mark.anyio
async def test_max_tokens_caps_the_answer_with_finish_reason_length(
    client: httpx.AsyncClient,
) -> None:
    body = (
        await client.post("/chat/completions", json=request([user(PROMPT)], max_tokens=3))
    ).json()
    assert body["choices"][0]["message"]["content"] == "".join(answer_tokens(PROMPT, 3))
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3
    events = await post_stream(client, request([user(PROMPT)], max_completion_tokens=4))
    assert streamed_text(events) == "".join(answer_tokens(PROMPT, 4))
    assert chunks(events)[-1]["choices"][0]["finish_reason"] == "length"


@pytest.mark.anyio
async def test_configured_token_count_is_read_per_request(
    client: httpx.AsyncClient, provider: MockProvider
) -> None:
    provider.settings.tokens = 7
    body = (await client.post("/chat/completions", json=request([user(PROMPT)]))).json()
    assert body["choices"][0]["message"]["content"] == "".join(answer_tokens(PROMPT, 7))
    assert body["choices"][0]["finish_reason"] == "stop"


@pytest.mark.anyio
async def test_tool_call_non_stream_calls_the_first_tool_with_the_prompt(
    client: httpx.AsyncClient,
) -> None:
    body = (
        await client.post("/chat/completions", json=request([user(PROMPT)], tools=TOOLS))
    ).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and len(call["id"]) == len("call_") + 8
    assert call["function"]["name"] == "search"
    assert json.loads(call["function"]["arguments"]) == {"input": PROMPT}


@pytest.mark.anyio
async def test_tool_choice_names_the_function_to_call(client: httpx.AsyncClient) -> None:
    choice = {"type": "function", "function": {"name": "weather"}}
    body = request([user(PROMPT)], tools=TOOLS, tool_choice=choice)
    message = (await client.post("/chat/completions", json=body)).json()["choices"][0]["message"]
    assert message["tool_calls"][0]["function"]["name"] == "weather"


@pytest.mark.anyio
async def test_tool_choice_none_answers_with_text(client: httpx.AsyncClient) -> None:
    body = request([user(PROMPT)], tools=TOOLS, tool_choice="none")
    message = (await client.post("/chat/completions", json=body)).json()["choices"][0]["message"]
    assert message["content"] == "".join(answer_tokens(PROMPT, 20))
    assert "tool_calls" not in message


@pytest.mark.anyio
async def test_tool_call_streams_as_header_then_two_argument_halves(
    client: httpx.AsyncClient,
) -> None:
    events = await post_stream(client, request([user(PROMPT)], tools=TOOLS))
    deltas = [c["choices"][0]["delta"] for c in chunks(events)]
    header, first_half, second_half = (d["tool_calls"][0] for d in deltas[1:4])
    assert header["index"] == 0 and header["type"] == "function"
    assert header["id"].startswith("call_")
    assert header["function"] == {"name": "search", "arguments": ""}
    assert first_half["function"]["arguments"] and second_half["function"]["arguments"]
    assert json.loads(streamed_arguments(events)) == {"input": PROMPT}
    assert chunks(events)[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert streamed_text(events) == ""


@pytest.mark.anyio
async def test_after_a_tool_result_the_answer_is_text(client: httpx.AsyncClient) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "search", "arguments": "{}"}}
    messages = [
        user(PROMPT),
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Paris"},
    ]
    body = (await client.post("/chat/completions", json=request(messages, tools=TOOLS))).json()
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["choices"][0]["message"]["content"] == "".join(answer_tokens(PROMPT, 20))
    assert streamed_text(await post_stream(client, request(messages, tools=TOOLS))) == (
        "".join(answer_tokens(PROMPT, 20))
    )


@pytest.mark.anyio
async def test_unknown_model_is_404_model_not_found(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/chat/completions", json={**request([user(PROMPT)]), "model": "x"}
    )
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "message": "The model `x` does not exist",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }


@pytest.mark.anyio
async def test_wrong_or_missing_api_key_is_401(
    client: httpx.AsyncClient, provider: MockProvider
) -> None:
    provider.settings.api_key = "sk-right"
    for headers in ({"Authorization": "Bearer sk-wrong"}, {}):
        response = await client.post(
            "/chat/completions", json=request([user(PROMPT)]), headers=headers
        )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
    good = {"Authorization": "Bearer sk-right"}
    response = await client.post("/chat/completions", json=request([user(PROMPT)]), headers=good)
    assert response.status_code == 200


@pytest.mark.anyio
async def test_invalid_json_or_missing_messages_is_400(client: httpx.AsyncClient) -> None:
    bad_json = await client.post("/chat/completions", content=b"{not json")
    no_messages = await client.post("/chat/completions", json={"model": "mock-small"})
    for response in (bad_json, no_messages):
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.anyio
async def test_models_and_healthz_list_what_is_served(
    client: httpx.AsyncClient, provider: MockProvider
) -> None:
    models = (await client.get("/models")).json()
    assert [m["id"] for m in models["data"]] == ["mock-small", "mock-medium", "mock-large"]
    health = await client.get(f"http://127.0.0.1:{provider.port}/healthz")
    assert (health.status_code, health.text) == (200, "ok")


@pytest.mark.anyio
async def test_tokens_arrive_while_the_stream_is_in_flight_and_hanging_up_ends_it() -> None:
    settings = MockSettings(tokens=2, token_delay_s=60.0)
    async with MockProvider(settings) as provider, httpx.AsyncClient() as client:
        body = {**request([user(PROMPT)]), "stream": True}
        async with client.stream("POST", f"{provider.base_url}/chat/completions", json=body) as r:
            async for line in r.aiter_lines():
                if '"content":"' in line and '"role"' not in line:
                    break  # the first token, a minute before the second one is due
            assert provider.in_flight == 1
    assert provider.in_flight == 0


def test_module_entry_point_prints_its_url_and_serves_until_terminated() -> None:
    command = [
        sys.executable,
        "-m",
        "omnillm.testing.mock_provider",
        "--port",
        "0",
        "--tokens",
        "3",
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline().strip()
            assert line.startswith("mock provider listening on http://127.0.0.1:")
            base_url = line.removeprefix("mock provider listening on ")
            response = httpx.post(f"{base_url}/chat/completions", json=request([user(PROMPT)]))
            assert response.json()["choices"][0]["message"]["content"] == "".join(
                answer_tokens(PROMPT, 3)
            )
        finally:
            process.terminate()
            assert process.wait(timeout=10) == 0
