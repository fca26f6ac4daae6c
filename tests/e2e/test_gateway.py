"""The OpenAI-compatible gateway, driven by the official OpenAI SDK, over real NATS and
real actors, to the mock provider over HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import openai
import pytest
from openai import AsyncOpenAI

from omnillm.actors.gateway.actor import GatewayActor
from omnillm.bus.connection import Bus
from omnillm.config import Settings
from omnillm.embedded import EmbeddedNats
from omnillm.testing.demo import MOCK_MODELS
from omnillm.testing.mock_provider import MockProvider, answer_tokens, count_prompt_tokens
from tests.conftest import SERVING, mock_settings, running

pytestmark = pytest.mark.anyio

WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"input": {"type": "string"}}},
    },
}


def expected_text(prompt: str, n: int = 20) -> str:
    return "".join(answer_tokens(prompt, n))


def user(prompt: str) -> list[Any]:
    return [{"role": "user", "content": prompt}]


@asynccontextmanager
async def serving_gateway(settings: Settings, url: str) -> AsyncIterator[GatewayActor]:
    """The gateway on a free port (``gateway.port`` once started), over ``url``."""
    bus = await Bus.connect(url, name="gateway-test")
    try:
        gateway = GatewayActor(bus, settings, host="127.0.0.1", port=0, env={})
        async with anyio.create_task_group() as tg:
            await tg.start(gateway.run)
            try:
                yield gateway
            finally:
                gateway.stop()
    finally:
        await bus.close()


@asynccontextmanager
async def serving(settings: Settings, url: str) -> AsyncIterator[int]:
    async with serving_gateway(settings, url) as gateway:
        yield gateway.port


@asynccontextmanager
async def gateway_sdk(
    settings: Settings, url: str, *, api_key: str = "x", actors: bool = True
) -> AsyncIterator[AsyncOpenAI]:
    async with running(settings, url, kinds=SERVING if actors else ()):
        async with serving(settings, url) as port:
            sdk = AsyncOpenAI(
                base_url=f"http://127.0.0.1:{port}/v1", api_key=api_key, max_retries=0
            )
            async with sdk:
                yield sdk


def with_vision(provider: MockProvider) -> Settings:
    models = [
        {
            "id": model_id,
            "context_window": 128000,
            "max_output": 4096,
            "price": {"input": price_in, "output": price_out},
            "capabilities": ["tools", "vision"],
            "tier": tier,
        }
        for model_id, tier, price_in, price_out in MOCK_MODELS
    ]
    return mock_settings(provider, models=models)


async def test_a_streamed_answer_has_the_exact_text_finish_and_usage(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    prompt = "Name three rivers in Europe."
    async with gateway_sdk(mock_settings(mock_provider), nats_server.url) as sdk:
        raw = await sdk.chat.completions.with_raw_response.create(
            model="auto",
            messages=user(prompt),
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in raw.parse()]

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected_text(prompt)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    prompt_tokens = count_prompt_tokens(user(prompt))
    assert (usage.prompt_tokens, usage.completion_tokens) == (prompt_tokens, 20)
    assert usage.total_tokens == prompt_tokens + 20
    assert {c.model for c in chunks} == {"mock/mock-small"}
    assert len({c.id for c in chunks}) == 1
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.headers["x-omnillm-provider"] == "mock"
    assert raw.headers["x-omnillm-model"] == "mock/mock-small"
    assert raw.headers["x-omnillm-tier"] == "simple"
    assert raw.headers["x-omnillm-request-id"]
    assert float(raw.headers["x-omnillm-overhead-ms"]) > 0


async def test_a_whole_answer_is_one_chat_completion_with_routing_headers(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    prompt = "What is the capital of Peru?"
    async with gateway_sdk(mock_settings(mock_provider), nats_server.url) as sdk:
        raw = await sdk.chat.completions.with_raw_response.create(
            model="auto", messages=user(prompt), max_completion_tokens=200
        )
        completion = raw.parse()

    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == expected_text(prompt)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "mock/mock-small"
    assert completion.usage is not None and completion.usage.completion_tokens == 20
    assert raw.headers["x-omnillm-attempts"] == "1"
    assert raw.headers["x-omnillm-provider"] == "mock"
    assert raw.headers["x-omnillm-request-id"] in completion.id


async def test_a_tool_call_round_trip_streams_the_call_then_answers_the_result(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    prompt = "What's the weather in Lima?"
    async with gateway_sdk(mock_settings(mock_provider), nats_server.url) as sdk:
        stream = await sdk.chat.completions.create(
            model="auto", messages=user(prompt), tools=[WEATHER_TOOL], stream=True
        )
        calls: dict[int, dict[str, str]] = {}
        finish = None
        async for chunk in stream:
            choice = chunk.choices[0]
            finish = choice.finish_reason or finish
            for piece in choice.delta.tool_calls or []:
                call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
                call["id"] = piece.id or call["id"]
                if piece.function is not None:
                    call["name"] += piece.function.name or ""
                    call["arguments"] += piece.function.arguments or ""
        assert finish == "tool_calls"
        assert [c["name"] for c in calls.values()] == ["get_weather"]
        assert json.loads(calls[0]["arguments"]) == {"input": prompt}
        assert calls[0]["id"]

        messages: list[Any] = [
            *user(prompt),
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": calls[0]["id"],
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": calls[0]["arguments"]},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": calls[0]["id"], "content": '{"temp_c": 19}'},
        ]
        answer = await sdk.chat.completions.create(
            model="auto", messages=messages, tools=[WEATHER_TOOL]
        )

    assert answer.choices[0].message.content == expected_text(prompt)
    assert answer.choices[0].message.tool_calls is None
    assert answer.choices[0].finish_reason == "stop"


async def test_a_whole_answer_with_a_tool_call_carries_it_and_no_text(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    prompt = "Weather in Oslo, please."
    async with gateway_sdk(mock_settings(mock_provider), nats_server.url) as sdk:
        completion = await sdk.chat.completions.create(
            model="auto", messages=user(prompt), tools=[WEATHER_TOOL], tool_choice="auto"
        )

    message = completion.choices[0].message
    assert message.content is None
    assert message.tool_calls is not None
    call = message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"input": prompt}
    assert completion.choices[0].finish_reason == "tool_calls"


async def test_an_image_goes_to_a_vision_model(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    prompt = "What is in this picture?"
    content: Any = [
        {"type": "text", "text": prompt},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    async with gateway_sdk(with_vision(mock_provider), nats_server.url) as sdk:
        completion = await sdk.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": content}]
        )

    assert completion.choices[0].message.content == expected_text(prompt)
    assert completion.model.startswith("mock/")


async def test_models_lists_the_aliases_and_the_live_models(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    settings = mock_settings(mock_provider, routing={"aliases": {"mine": ["mock/mock-large"]}})
    async with gateway_sdk(settings, nats_server.url) as sdk:
        ids = [model.id async for model in sdk.models.list()]

    assert ids[:6] == ["auto", "fast", "cheap", "smart", "free", "vision"]
    assert "mine" in ids
    assert {"mock/mock-small", "mock/mock-medium", "mock/mock-large"} <= set(ids)


async def test_an_unknown_model_is_a_404_the_sdk_raises_as_not_found(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    async with gateway_sdk(mock_settings(mock_provider), nats_server.url) as sdk:
        with pytest.raises(openai.NotFoundError) as caught:
            await sdk.chat.completions.create(model="nope/x", messages=user("hi"), stream=True)

    body: Any = caught.value.body
    assert body["code"] == "unknown_model"
    assert "nope/x" in body["message"]


async def test_with_no_router_the_gateway_answers_503(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    async with gateway_sdk(mock_settings(mock_provider), nats_server.url, actors=False) as sdk:
        with pytest.raises(openai.InternalServerError) as caught:
            await sdk.chat.completions.create(model="auto", messages=user("hi"))

    assert caught.value.status_code == 503
    body: Any = caught.value.body
    assert body["code"] == "no_router"


async def test_a_stream_cut_mid_answer_raises_instead_of_finishing(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    prompt = "Tell me a long story about rivers."
    mock_provider.settings.fault = "cut"
    texts: list[str] = []
    finishes: list[str] = []
    async with gateway_sdk(mock_settings(mock_provider), nats_server.url) as sdk:
        stream = await sdk.chat.completions.create(model="auto", messages=user(prompt), stream=True)
        with pytest.raises(openai.APIError) as caught:
            async for chunk in stream:
                texts.append(chunk.choices[0].delta.content or "")
                finishes.extend([chunk.choices[0].finish_reason or ""])

    assert not any(finishes)
    received = "".join(texts)
    assert received and expected_text(prompt).startswith(received)
    assert received != expected_text(prompt)
    assert caught.value.body is not None


async def test_keys_when_configured_are_required_and_limit_models(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    secret = "sk-team-0123456789"
    gateway = {"keys": [{"name": "team", "key": secret, "models": ["auto", "mock/mock-s*"]}]}
    settings = mock_settings(mock_provider, gateway=gateway)
    prompt = "Hello there"
    async with running(settings, nats_server.url), serving(settings, nats_server.url) as port:
        base_url = f"http://127.0.0.1:{port}/v1"
        async with AsyncOpenAI(base_url=base_url, api_key="wrong", max_retries=0) as anonymous:
            with pytest.raises(openai.AuthenticationError) as refused:
                await anonymous.chat.completions.create(model="auto", messages=user(prompt))
        async with AsyncOpenAI(base_url=base_url, api_key=secret, max_retries=0) as sdk:
            completion = await sdk.chat.completions.create(model="auto", messages=user(prompt))
            with pytest.raises(openai.PermissionDeniedError):
                await sdk.chat.completions.create(model="mock/mock-large", messages=user(prompt))
            ids = [model.id async for model in sdk.models.list()]

    assert refused.value.status_code == 401
    assert secret not in str(refused.value.body)
    assert completion.choices[0].message.content == expected_text(prompt)
    assert ids == ["auto", "mock/mock-small"]


async def test_two_hundred_concurrent_streams_each_get_their_own_answer(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    settings = mock_settings(
        mock_provider,
        providers={
            "mock": {
                "family": "openai",
                "base_url": mock_provider.base_url,
                "api_key": "none",
                "max_concurrency": 256,
            }
        },
    )
    results: dict[int, str] = {}

    async def one(sdk: AsyncOpenAI, i: int) -> None:
        stream = await sdk.chat.completions.create(
            model="auto", messages=user(f"Question number {i}?"), stream=True
        )
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        results[i] = "".join(parts)

    async with running(settings, nats_server.url), serving(settings, nats_server.url) as port:
        base_url = f"http://127.0.0.1:{port}/v1"
        async with AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0) as sdk:
            async with anyio.create_task_group() as tg:
                for i in range(200):
                    tg.start_soon(one, sdk, i)

    assert len(results) == 200
    assert all(results[i] == expected_text(f"Question number {i}?") for i in range(200))


async def test_stop_lets_an_answer_in_flight_finish_and_refuses_new_connections(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    prompt = "A slow answer, please."
    mock_provider.settings.token_delay_s = 0.02
    settings = mock_settings(mock_provider)
    async with running(settings, nats_server.url):
        async with serving_gateway(settings, nats_server.url) as gateway:
            base_url = f"http://127.0.0.1:{gateway.port}/v1"
            async with AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0) as sdk:
                stream = await sdk.chat.completions.create(
                    model="auto", messages=user(prompt), stream=True
                )
                parts: list[str] = []
                finish = None
                async for chunk in stream:
                    if not parts:
                        gateway.stop()  # mid-answer
                    parts.append(chunk.choices[0].delta.content or "")
                    finish = chunk.choices[0].finish_reason or finish
        async with AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0) as late:
            with pytest.raises(openai.APIConnectionError):
                await late.chat.completions.create(model="auto", messages=user(prompt))

    assert "".join(parts) == expected_text(prompt)
    assert finish == "stop"


async def test_admin_routes_mirror_the_bus_for_http_tools(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    settings = mock_settings(mock_provider)
    async with running(settings, nats_server.url):
        async with serving(settings, nats_server.url) as port:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                providers = (await http.get("/v1/admin/providers")).json()
                models = (await http.get("/v1/admin/models")).json()
                switched = (await http.post("/v1/admin/switch", json={"provider": "mock"})).json()
                unknown = await http.get("/v1/admin/nothing")
    assert {row["name"]: row["state"] for row in providers}["mock"] == "live"
    assert "mock/mock-small" in {row["id"] for row in models}
    assert switched["provider"] == "mock"
    assert unknown.status_code == 404
