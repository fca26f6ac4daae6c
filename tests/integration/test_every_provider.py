"""All 15 providers through the real bus, their HTTP replaced by recorded-shape fixtures.

For each built-in provider the caller gets an httpx ``MockTransport`` that
records the request and answers with that family's fixture. The test checks what the
provider would receive (URL, auth header, body format) and what the client gets back
(text, tool calls, usage), the latter against the family parser fed the same bytes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest

from omnillm.actors.caller.actor import CallerActor
from omnillm.actors.classifier.actor import ClassifierActor
from omnillm.actors.planner.actor import PlannerActor
from omnillm.bus.connection import Bus
from omnillm.client import Completion
from omnillm.config import Config, Settings, resolve
from omnillm.embedded import EmbeddedNats
from omnillm.errors import NoCandidates
from omnillm.providers.base import StreamUpdate
from omnillm.providers.families import family_for
from omnillm.providers.opencode import route_for
from omnillm.providers.registry import BUILTIN_PROVIDERS
from tests.conftest import client_for

pytestmark = pytest.mark.anyio

FIXTURES = Path(__file__).parents[1] / "fixtures"
KEY = "test-key-123"
BASE_URLS = {"azure": "https://acme.openai.azure.com/openai", "anyscale": "https://svc.example/v1"}
STREAMS = {
    # family (or OpenCode route): (text fixture, tool-call fixture)
    "openai": ("openai/stream_text.sse", "openai/stream_tool_call.sse"),
    "chat": ("openai/stream_text.sse", "openai/stream_tool_call.sse"),
    "anthropic": ("anthropic/stream_text.sse", "anthropic/stream_tool_use.sse"),
    "messages": ("anthropic/stream_text.sse", "anthropic/stream_tool_use.sse"),
    "gemini": ("gemini/stream_text.sse", "gemini/stream_function_call.sse"),
    "cohere": ("cohere/stream_text.sse", "cohere/stream_tool_call.sse"),
    "responses": ("responses/stream_text.sse", "responses/stream_function_call.sse"),
}
AUTH = {
    "bearer": ("authorization", f"Bearer {KEY}"),
    "api-key": ("api-key", KEY),
    "x-api-key": ("x-api-key", KEY),
    "x-goog-api-key": ("x-goog-api-key", KEY),
}
IMAGE = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGBg"
    "AAAABQABpfZFQAAAAABJRU5ErkJggg=="
)
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def settings_for(provider: str) -> Settings:
    row = BUILTIN_PROVIDERS[provider]
    declared: dict[str, Any] = {}
    if provider in BASE_URLS:
        declared["base_url"] = BASE_URLS[provider]
    config = msgspec.convert({"providers": {provider: declared}}, Config)
    assert row.key_env is not None
    return resolve(config, env={row.key_env: KEY})


def pick_model(settings: Settings, provider: str, *needs: str) -> str:
    models = [
        m
        for m in settings.catalog.for_provider(provider)
        if all(need in m.capabilities for need in needs)
    ]
    assert models, f"{provider} has no model with {needs}"
    return models[0].id


def route(provider: str, model: str) -> str:
    family = BUILTIN_PROVIDERS[provider].family
    return route_for(model) if family == "opencode" else family


def expected(provider: str, model: str, fixture: str) -> StreamUpdate:
    """What the family parser makes of the fixture on its own."""
    settings = settings_for(provider)
    spec = settings.catalog.get(model)
    assert spec is not None
    parser = family_for(settings.providers[provider].spec.family).stream_parser(spec.model)
    first, last = parser.feed((FIXTURES / fixture).read_bytes()), parser.close()
    return StreamUpdate(
        text=first.text + last.text,
        tool_calls=first.tool_calls + last.tool_calls,
        usage=last.usage or first.usage,
    )


class Body(httpx.AsyncByteStream):
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data


@asynccontextmanager
async def router(
    url: str, settings: Settings, provider: str, fixture: str, seen: list[httpx.Request]
) -> AsyncIterator[None]:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, stream=Body((FIXTURES / fixture).read_bytes()))

    transport = httpx.MockTransport(answer)
    bus = await Bus.connect(url)
    actors = [
        ClassifierActor(bus),
        PlannerActor(bus, settings),
        CallerActor(bus, settings, provider, transport=transport),
    ]
    try:
        async with anyio.create_task_group() as tg:
            for actor in actors:
                await tg.start(actor.run)
            try:
                yield
            finally:
                for actor in actors:
                    actor.stop()
    finally:
        await bus.close()
        await transport.aclose()


async def ask(
    server: EmbeddedNats, provider: str, request: dict[str, Any], fixture: str
) -> tuple[Completion, httpx.Request]:
    seen: list[httpx.Request] = []
    async with router(server.url, settings_for(provider), provider, fixture, seen):
        async with client_for(server.url) as client:
            completion = await client.complete(request)
    assert len(seen) == 1
    return completion, seen[0]


def expected_url(provider: str, model: str) -> str:
    settings = settings_for(provider)
    spec = settings.catalog.get(model)
    assert spec is not None
    base = settings.providers[provider].spec.base_url
    upstream = spec.model
    if provider == "azure":
        return f"{base}/deployments/{upstream}/chat/completions?api-version=2024-10-21"
    return {
        "chat": f"{base}/chat/completions",
        "openai": f"{base}/chat/completions",
        "responses": f"{base}/responses",
        "anthropic": f"{base}/messages",
        "messages": f"{base}/messages",
        "gemini": f"{base}/models/{upstream}:streamGenerateContent?alt=sse",
        "cohere": f"{base}/chat",
    }[route(provider, model)]


@pytest.mark.parametrize("provider", sorted(BUILTIN_PROVIDERS))
async def test_a_streamed_answer_reaches_the_client_with_the_providers_usage(
    provider: str, nats_server: EmbeddedNats
) -> None:
    settings = settings_for(provider)
    model = pick_model(settings, provider)
    fixture = STREAMS[route(provider, model)][0]
    completion, sent = await ask(
        nats_server,
        provider,
        {"model": model, "messages": [{"role": "user", "content": "Say hello"}]},
        fixture,
    )
    want = expected(provider, model, fixture)
    assert completion.text == want.text and completion.text
    assert completion.usage == want.usage
    assert completion.provider == provider
    assert str(sent.url) == expected_url(provider, model)
    header, value = AUTH[route_auth(provider, model)]
    assert sent.headers[header] == value
    assert not (
        {"authorization", "x-api-key", "api-key", "x-goog-api-key"} - {header} & set(sent.headers)
    )
    # The stream is parsed as it arrives: a compressed body would be garbage to the parser.
    assert sent.headers["accept-encoding"] == "identity"


def route_auth(provider: str, model: str) -> str:
    row = BUILTIN_PROVIDERS[provider]
    if row.family != "opencode":
        return row.auth
    return {"messages": "x-api-key", "gemini": "x-goog-api-key"}.get(
        route(provider, model), "bearer"
    )


@pytest.mark.parametrize("provider", sorted(p for p in BUILTIN_PROVIDERS if p != "perplexity"))
async def test_a_streamed_tool_call_is_assembled_for_the_client(
    provider: str, nats_server: EmbeddedNats
) -> None:
    settings = settings_for(provider)
    model = pick_model(settings, provider, "tools")
    fixture = STREAMS[route(provider, model)][1]
    completion, _ = await ask(
        nats_server,
        provider,
        {
            "model": model,
            "tools": [TOOL],
            "messages": [{"role": "user", "content": "Weather in Paris?"}],
        },
        fixture,
    )
    want = expected(provider, model, fixture)
    calls: dict[int, tuple[str, str]] = {}
    for piece in want.tool_calls:
        name, arguments = calls.get(piece.index, ("", ""))
        calls[piece.index] = (name + (piece.name or ""), arguments + piece.arguments)
    assert [(c.function.name, c.function.arguments) for c in completion.tool_calls] == [
        calls[i] for i in sorted(calls)
    ]
    assert completion.tool_calls and completion.tool_calls[0].function.name == "get_weather"
    assert all(msgspec.json.decode(c.function.arguments) for c in completion.tool_calls)


VISION_MARKERS = {
    "openai": b'"image_url"',
    "chat": b'"image_url"',
    "cohere": b'"image_url"',
    "anthropic": b'"media_type":"image/png"',
    "messages": b'"media_type":"image/png"',
    "gemini": b'"inlineData"',
    "responses": b'"input_image"',
}


@pytest.mark.parametrize("provider", sorted(BUILTIN_PROVIDERS))
async def test_an_image_is_sent_in_the_providers_own_format_or_not_at_all(
    provider: str, nats_server: EmbeddedNats
) -> None:
    settings = settings_for(provider)
    vision = [m for m in settings.catalog.for_provider(provider) if "vision" in m.capabilities]
    request = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": IMAGE}},
                ],
            }
        ]
    }
    if not vision:
        async with router(nats_server.url, settings, provider, "openai/stream_text.sse", []):
            async with client_for(nats_server.url) as client:
                with pytest.raises(NoCandidates, match=r"does not support vision|no configured"):
                    await client.complete({**request, "model": "auto"})
        return
    model = vision[0].id
    fixture = STREAMS[route(provider, model)][0]
    _, sent = await ask(nats_server, provider, {**request, "model": model}, fixture)
    assert VISION_MARKERS[route(provider, model)] in sent.content.replace(b" ", b"")
