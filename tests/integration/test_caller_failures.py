"""What a client sees when an upstream misbehaves: the caller's HTTP is faked with MockTransport.

The bus is real (a nats-server per test); only the provider side is scripted, chunk by chunk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import msgspec
import pytest

from omnillm.actors.base import Actor
from omnillm.actors.caller.actor import CallerActor
from omnillm.actors.classifier.actor import ClassifierActor
from omnillm.actors.planner.actor import PlannerActor
from omnillm.bus.connection import Bus
from omnillm.bus.messages import Delta, Done, Error, Start
from omnillm.config import Config, Settings, resolve
from omnillm.embedded import EmbeddedNats
from omnillm.errors import MalformedResponse
from tests.conftest import client_for

pytestmark = pytest.mark.anyio

Script = Sequence[bytes | None]
"""Chunks an upstream sends; ``None`` means: go silent until cancelled."""


def chunk(
    text: str = "", *, finish: str | None = None, usage: dict[str, Any] | None = None
) -> bytes:
    body: dict[str, Any] = {
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]
    }
    if usage is not None:
        body = {"choices": [], "usage": usage}
    return b"data: " + msgspec.json.encode(body) + b"\n\n"


DONE = b"data: [DONE]\n\n"


class ScriptedStream(httpx.AsyncByteStream):
    def __init__(self, script: Script) -> None:
        self.script = script

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.script:
            if part is None:
                await anyio.sleep_forever()
            else:
                yield part


def upstream(routes: Mapping[str, tuple[int, Script]]) -> httpx.MockTransport:
    """An HTTP client whose upstream answers per model name with (status, chunks)."""

    def handle(request: httpx.Request) -> httpx.Response:
        model = msgspec.json.decode(request.content)["model"]
        status, script = routes[model]
        return httpx.Response(status, stream=ScriptedStream(script))

    return httpx.MockTransport(handle)


def settings(**reliability: float) -> Settings:
    raw = {
        "providers": {
            "first": {"family": "openai", "base_url": "http://first.test/v1", "api_key": "k1"},
            "second": {"family": "openai", "base_url": "http://second.test/v1", "api_key": "k2"},
        },
        "models": [
            {
                "id": "first/alpha",
                "tier": "simple",
                "price": {"input": 1, "output": 2},
                "fallbacks": ["second/beta"],
            },
            {
                "id": "second/beta",
                "tier": "simple",
                "price": {"input": 1, "output": 2, "cached_input": 0.25},
            },
        ],
        "reliability": reliability,
    }
    return resolve(msgspec.convert(raw, Config), env={})


@asynccontextmanager
async def actors(url: str, config: Settings, transport: httpx.MockTransport) -> AsyncIterator[None]:
    bus = await Bus.connect(url)
    running: list[Actor] = [
        ClassifierActor(bus),
        PlannerActor(bus, config),
        CallerActor(bus, config, "first", transport=transport),
        CallerActor(bus, config, "second", transport=transport),
    ]
    try:
        async with anyio.create_task_group() as tg:
            for actor in running:
                await tg.start(actor.run)
            try:
                yield
            finally:
                for actor in running:
                    actor.stop()
    finally:
        await bus.close()


async def frames_for(
    server: EmbeddedNats, routes: Mapping[str, tuple[int, Script]], **reliability: float
) -> list[Any]:
    async with actors(server.url, settings(**reliability), upstream(routes)):
        async with client_for(server.url) as client:
            request = {"model": "first/alpha", "messages": [{"role": "user", "content": "hi"}]}
            return [frame async for frame in client.stream(request)]


def kinds(frames: list[Any]) -> list[type]:
    return [type(f) for f in frames]


BETA_OK: tuple[int, Script] = (200, [chunk("fine"), chunk(finish="stop"), DONE])


async def test_a_stream_cut_after_tokens_ends_with_an_error_not_a_short_answer(
    nats_server: EmbeddedNats,
) -> None:
    routes = {"alpha": (200, [chunk("The answer is"), chunk(" forty")]), "beta": BETA_OK}
    frames = await frames_for(nats_server, routes)
    assert kinds(frames) == [Start, Delta, Delta, Error]
    assert frames[-1].code == "malformed_response"
    assert "ended without a finish reason (truncated)" in frames[-1].message
    assert frames[-1].message.startswith("first/alpha")


async def test_complete_raises_on_a_truncated_stream(nats_server: EmbeddedNats) -> None:
    routes = {"alpha": (200, [chunk("partial")]), "beta": BETA_OK}
    async with actors(nats_server.url, settings(), upstream(routes)):
        async with client_for(nats_server.url) as client:
            with pytest.raises(MalformedResponse, match="truncated"):
                await client.complete(
                    {"model": "first/alpha", "messages": [{"role": "user", "content": "x"}]}
                )


async def test_garbage_before_any_token_falls_back_to_the_next_candidate(
    nats_server: EmbeddedNats,
) -> None:
    routes = {"alpha": (200, [b"data: {not json\n\n"]), "beta": BETA_OK}
    frames = await frames_for(nats_server, routes)
    assert kinds(frames) == [Start, Delta, Done]
    assert (frames[0].provider, frames[0].attempt) == ("second", 2)
    assert frames[-1].attempts == 2


async def test_a_rejected_key_falls_back_and_the_first_failure_is_kept(
    nats_server: EmbeddedNats,
) -> None:
    unauthorized = (
        401,
        [b'{"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}'],
    )
    frames = await frames_for(nats_server, {"alpha": unauthorized, "beta": unauthorized})
    assert kinds(frames) == [Error]
    assert frames[0].code == "authentication_failed"
    assert frames[0].message.startswith("first/alpha")
    assert "; then second/beta" in frames[0].message


async def test_no_first_token_in_time_moves_to_the_next_candidate(
    nats_server: EmbeddedNats,
) -> None:
    routes = {"alpha": (200, [None]), "beta": BETA_OK}
    frames = await frames_for(nats_server, routes, ttft_timeout_s=0.2)
    assert kinds(frames) == [Start, Delta, Done]
    assert frames[0].provider == "second"


async def test_a_stall_after_tokens_ends_with_a_timeout_error(nats_server: EmbeddedNats) -> None:
    routes = {"alpha": (200, [chunk("so far"), None]), "beta": BETA_OK}
    frames = await frames_for(nats_server, routes, stall_timeout_s=0.2)
    assert kinds(frames) == [Start, Delta, Error]
    assert frames[-1].code == "provider_timeout"
    assert "stalled" in frames[-1].message


async def test_an_error_inside_a_200_stream_after_tokens_is_reported(
    nats_server: EmbeddedNats,
) -> None:
    midstream = b'data: {"error": {"code": "server_error", "message": "Provider disconnected"}}\n\n'
    routes = {"alpha": (200, [chunk("half"), midstream]), "beta": BETA_OK}
    frames = await frames_for(nats_server, routes)
    assert kinds(frames) == [Start, Delta, Error]
    assert "Provider disconnected" in frames[-1].message


async def test_a_complete_stream_without_done_line_is_a_success(nats_server: EmbeddedNats) -> None:
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 800},
    }
    routes = {
        "alpha": (404, [b"{}"]),
        "beta": (200, [chunk("whole"), chunk(finish="stop"), chunk(usage=usage)]),
    }
    frames = await frames_for(nats_server, routes)
    done = frames[-1]
    assert kinds(frames) == [Start, Delta, Done]
    assert done.finish_reason == "stop"
    assert (done.usage.input_tokens, done.usage.cached_input_tokens) == (1000, 800)
    # 200 uncached x $1 + 800 cached x $0.25 + 10 output x $2, per million tokens
    assert done.cost_usd == pytest.approx((200 * 1 + 800 * 0.25 + 10 * 2) / 1e6)
