"""The mock provider's fault modes, over real HTTP with httpx: what a client sees.

Each fault is picked by a ``fault-<name>`` model name unless the test is about the
settings that pick it. Waits that prove silence use a 0.3 s read timeout against a
30 s fault delay, so they cannot pass by luck.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest

from omnillm.providers.sse import SSEDecoder
from omnillm.testing.mock_provider import MockProvider, MockSettings, answer_tokens

PROMPT = "What is the capital of France?"
ANSWER = "".join(answer_tokens(PROMPT, 20))
SHORT = httpx.Timeout(5.0, read=0.3)
"""A read timeout far under the faults' delays, so silence shows as ``ReadTimeout``."""

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def provider() -> AsyncIterator[MockProvider]:
    async with MockProvider(MockSettings(tokens=20, fault_delay_s=30.0)) as running:
        yield running


@pytest.fixture
async def client(provider: MockProvider) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{provider.port}") as http:
        yield http


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": PROMPT}], **extra}


@dataclass(frozen=True)
class Route:
    """One family's streaming request, and how its frames show in the raw bytes."""

    name: str
    path: str
    body: dict[str, Any]
    token: bytes
    """A pattern matching once per content frame."""
    finish: bytes
    """A pattern matching the frame that carries the finish reason."""
    done: bytes | None
    """The terminator that follows the finish, for the families that have one."""

    def url(self, model: str) -> str:
        return self.path.format(model=model)

    def request(self, model: str) -> dict[str, Any]:
        return {**self.body, "model": model} if "model" in self.body else dict(self.body)

    def tokens(self, raw: bytes) -> int:
        return len(re.findall(self.token, raw))

    def finished(self, raw: bytes) -> bool:
        return re.search(self.finish, raw) is not None


ROUTES = [
    Route(
        "openai",
        "/v1/chat/completions",
        chat("", stream=True, stream_options={"include_usage": True}),
        rb'"delta":\{"content":',
        rb'"finish_reason":"stop"',
        b"data: [DONE]",
    ),
    Route(
        "anthropic",
        "/v1/messages",
        {**chat(""), "max_tokens": 1024, "stream": True},
        rb'"type":"text_delta"',
        rb'"stop_reason":"end_turn"',
        b"event: message_stop",
    ),
    Route(
        "gemini",
        "/v1beta/models/{model}:streamGenerateContent?alt=sse",
        {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]},
        rb'"text":"[^"]',
        rb'"finishReason":"STOP"',
        None,
    ),
    Route(
        "cohere",
        "/v2/chat",
        chat("", stream=True),
        rb'"type":"content-delta"',
        rb'"finish_reason":"COMPLETE"',
        b"data: [DONE]",
    ),
    Route(
        "responses",
        "/v1/responses",
        {"model": "", "input": PROMPT, "stream": True},
        rb'"type":"response\.output_text\.delta"',
        rb"event: response\.completed",
        None,
    ),
]
BY_NAME = pytest.mark.parametrize("route", ROUTES, ids=[r.name for r in ROUTES])


async def read_all(client: httpx.AsyncClient, route: Route, model: str) -> bytes:
    """The whole body of a stream that ends by itself."""
    async with client.stream("POST", route.url(model), json=route.request(model)) as response:
        assert response.status_code == 200
        return b"".join([chunk async for chunk in response.aiter_bytes()])


async def read_until_silent(client: httpx.AsyncClient, route: Route, model: str) -> bytes:
    """What a stream sends before it goes silent with the connection open."""
    raw = b""
    with pytest.raises(httpx.ReadTimeout):
        url, body = route.url(model), route.request(model)
        async with client.stream("POST", url, json=body, timeout=SHORT) as response:
            assert response.status_code == 200
            async for chunk in response.aiter_bytes():
                raw += chunk
    return raw


def events(raw: bytes) -> list[tuple[str | None, bytes]]:
    decoder = SSEDecoder()
    decoded = decoder.feed(raw) + decoder.close()
    return [(e.event, e.data) for e in decoded]


# Refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "header", "value"),
    [("429-retry-after", "retry-after", "1"), ("429-retry-after-ms", "retry-after-ms", "200")],
)
async def test_rate_limit_faults_are_429_with_their_retry_header(
    client: httpx.AsyncClient, fault: str, header: str, value: str
) -> None:
    response = await client.post("/v1/chat/completions", json=chat(f"fault-{fault}"))
    assert response.status_code == 429
    assert response.headers[header] == value
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    other = {"retry-after", "retry-after-ms"} - {header}
    assert not other & set(response.headers)


async def test_plain_429_carries_no_retry_header(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat("fault-429"))
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert not {"retry-after", "retry-after-ms"} & set(response.headers)


@pytest.mark.parametrize(("fault", "status"), [("500", 500), ("503", 503), ("529", 529)])
async def test_server_error_faults_answer_every_request_with_their_status(
    client: httpx.AsyncClient, provider: MockProvider, fault: str, status: int
) -> None:
    for _ in range(2):
        response = await client.post("/v1/chat/completions", json=chat(f"fault-{fault}"))
        assert response.status_code == status
        assert response.json()["error"]["type"] == "server_error"
    assert provider.answered == {}


async def test_500_once_fails_the_first_request_for_the_model_then_answers(
    client: httpx.AsyncClient, provider: MockProvider
) -> None:
    first = await client.post("/v1/chat/completions", json=chat("fault-500-once"))
    second = await client.post("/v1/chat/completions", json=chat("fault-500-once"))
    assert first.status_code == 500
    assert second.status_code == 200
    assert second.json()["choices"][0]["message"]["content"] == ANSWER
    assert len(provider.attempts["fault-500-once"]) == 2
    assert provider.answered == {"fault-500-once": 1}


async def test_context_length_is_openais_400_context_length_exceeded(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/v1/chat/completions", json=chat("fault-context-length"))
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "This model's maximum context length is 8192 tokens. However, your "
        "messages resulted in 9000 tokens.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }


async def test_content_policy_is_openais_400_content_policy_violation(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/v1/chat/completions", json=chat("fault-content-policy"))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "content_policy_violation"
    assert error["message"] == "Your request was rejected as a result of our safety system."


async def test_auth_fault_is_401_invalid_api_key(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat("fault-auth"))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    ("fault", "status", "kind", "message"),
    [
        ("529", 529, "overloaded_error", "Overloaded"),
        ("context-length", 400, "invalid_request_error", "prompt is too long: 9000 tokens"),
        ("429-retry-after", 429, "rate_limit_error", "rate limit"),
    ],
)
async def test_anthropic_route_refuses_in_anthropics_shape(
    client: httpx.AsyncClient, fault: str, status: int, kind: str, message: str
) -> None:
    body = {**chat(f"fault-{fault}"), "max_tokens": 1024}
    response = await client.post("/v1/messages", json=body)
    assert response.status_code == status
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == kind
    assert message in response.json()["error"]["message"]


@BY_NAME
async def test_every_family_answers_429_retry_after_with_the_header(
    client: httpx.AsyncClient, route: Route
) -> None:
    model = "fault-429-retry-after"
    response = await client.post(route.url(model), json=route.request(model))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"


async def test_down_then_up_fails_the_configured_number_of_requests_then_recovers(
    client: httpx.AsyncClient, provider: MockProvider
) -> None:
    provider.settings.down_requests = 2
    statuses = [
        (await client.post("/v1/chat/completions", json=chat("fault-down-then-up"))).status_code
        for _ in range(4)
    ]
    assert statuses == [503, 503, 200, 200]
    assert provider.answered == {"fault-down-then-up": 2}


async def test_down_then_up_stays_down_until_the_configured_moment(
    client: httpx.AsyncClient, provider: MockProvider
) -> None:
    provider.settings.down_requests = 0
    provider.settings.down_until = time.monotonic() + 60
    for _ in range(3):
        response = await client.post("/v1/chat/completions", json=chat("fault-down-then-up"))
        assert response.status_code == 503
    provider.settings.down_until = time.monotonic()
    response = await client.post("/v1/chat/completions", json=chat("fault-down-then-up"))
    assert response.status_code == 200


# Selection and records ---------------------------------------------------------------


async def test_per_model_fault_leaves_the_other_models_alone(
    client: httpx.AsyncClient, provider: MockProvider
) -> None:
    provider.settings.faults = {"mock-small": "503"}
    faulted = await client.post("/v1/chat/completions", json=chat("mock-small"))
    healthy = await client.post("/v1/chat/completions", json=chat("mock-medium"))
    assert (faulted.status_code, healthy.status_code) == (503, 200)


async def test_global_fault_applies_to_every_model_and_a_fault_model_name_wins(
    client: httpx.AsyncClient, provider: MockProvider
) -> None:
    provider.settings.fault = "500"
    for model in ("mock-small", "mock-large"):
        assert (await client.post("/v1/chat/completions", json=chat(model))).status_code == 500
    named = await client.post("/v1/chat/completions", json=chat("fault-429"))
    assert named.status_code == 429


async def test_unknown_fault_names_are_refused_with_the_list_of_faults(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/v1/chat/completions", json=chat("fault-gremlins"))
    assert response.status_code == 400
    assert "unknown mock fault 'gremlins'" in response.json()["error"]["message"]
    assert "429-retry-after" in response.json()["error"]["message"]
    with pytest.raises(ValueError, match="unknown mock fault 'gremlin'"):
        MockSettings(faults={"mock-small": "gremlin"})


async def test_a_fault_misspelt_in_settings_changed_later_is_refused_not_ignored(
    client: httpx.AsyncClient, provider: MockProvider
) -> None:
    provider.settings.fault = "timeout"
    response = await client.post("/v1/chat/completions", json=chat("mock-small"))
    assert response.status_code == 400
    assert "unknown mock fault 'timeout'" in response.json()["error"]["message"]


async def test_attempts_record_each_arrival_per_model_in_order(
    client: httpx.AsyncClient, provider: MockProvider
) -> None:
    marks = [time.monotonic()]
    for model in ("fault-503", "mock-small", "fault-503"):
        await client.post("/v1/chat/completions", json=chat(model))
        marks.append(time.monotonic())
    first, second = provider.attempts["fault-503"]
    [healthy] = provider.attempts["mock-small"]
    assert marks[0] <= first <= marks[1] <= healthy <= marks[2] <= second <= marks[3]
    assert provider.answered == {"mock-small": 1}


# Connection faults -------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_reset_drops_the_connection_before_any_header(
    client: httpx.AsyncClient, provider: MockProvider, stream: bool
) -> None:
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        await client.post("/v1/chat/completions", json=chat("fault-reset", stream=stream))
    assert len(provider.attempts["fault-reset"]) == 1


async def test_hang_never_answers(client: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.ReadTimeout):
        await client.post("/v1/chat/completions", json=chat("fault-hang"), timeout=SHORT)


async def test_a_waiting_hung_request_is_dropped_at_once_when_the_server_stops(
    provider: MockProvider,
) -> None:
    """aiohttp would wait its 0.5 s grace for a handler that ignored stop()."""

    async def wait_for_an_answer(client: httpx.AsyncClient) -> None:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/chat/completions", json=chat("fault-hang"))

    async with (
        httpx.AsyncClient(base_url=provider.base_url, timeout=30) as client,
        anyio.create_task_group() as tasks,
    ):
        tasks.start_soon(wait_for_an_answer, client)
        with anyio.fail_after(5):
            await provider.wait_attempts("fault-hang")
        started = time.monotonic()
        await provider.stop()
        assert time.monotonic() - started < 0.4


async def test_a_stalled_stream_is_dropped_at_once_when_the_server_stops(
    client: httpx.AsyncClient, provider: MockProvider
) -> None:
    body = chat("fault-stall", stream=True)
    async with client.stream("POST", "/v1/chat/completions", json=body) as stalled:
        lines = stalled.aiter_lines()
        assert (await anext(lines)).startswith("data: ")
        started = time.monotonic()
        await provider.stop()
        assert time.monotonic() - started < 0.4
        with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
            async for _ in lines:
                pass


# Stream faults -----------------------------------------------------------------------


@BY_NAME
async def test_cut_stream_ends_after_half_the_tokens_without_a_finish(
    client: httpx.AsyncClient, provider: MockProvider, route: Route
) -> None:
    raw = await read_all(client, route, "fault-cut")
    assert route.tokens(raw) == 10
    assert not route.finished(raw)
    assert route.done is None or route.done not in raw
    assert provider.answered == {}


@BY_NAME
async def test_stalled_stream_goes_silent_after_half_the_tokens(
    client: httpx.AsyncClient, route: Route
) -> None:
    raw = await read_until_silent(client, route, "fault-stall")
    assert route.tokens(raw) == 10
    assert not route.finished(raw)


@BY_NAME
async def test_slow_first_token_sends_headers_at_once_and_holds_the_tokens_back(
    client: httpx.AsyncClient, route: Route
) -> None:
    raw = await read_until_silent(client, route, "fault-slow-first-token")
    assert route.tokens(raw) == 0


async def test_slow_first_token_then_streams_the_whole_answer(
    client: httpx.AsyncClient, provider: MockProvider
) -> None:
    provider.settings.fault_delay_s = 0.01
    route = ROUTES[0]
    raw = await read_all(client, route, "fault-slow-first-token")
    assert route.tokens(raw) == 20 and route.finished(raw)
    assert raw.endswith(b"data: [DONE]\n\n")


@BY_NAME
async def test_malformed_stream_sends_three_tokens_then_a_broken_frame(
    client: httpx.AsyncClient, route: Route
) -> None:
    raw = await read_all(client, route, "fault-malformed")
    assert route.tokens(raw) == 3
    *good, (event, data) = events(raw)
    assert data == b"{not json"
    assert event == good[-1][0]  # named like the content events, so a client parses it
    assert not route.finished(raw)


@BY_NAME
async def test_no_done_stream_finishes_then_keeps_the_connection_open(
    client: httpx.AsyncClient, provider: MockProvider, route: Route
) -> None:
    raw = await read_until_silent(client, route, "fault-no-done")
    assert route.tokens(raw) == 20
    assert route.finished(raw)
    assert route.done is None or route.done not in raw
    assert provider.answered == {"fault-no-done": 1}


async def test_no_done_openai_stream_ends_with_the_usage_chunk(client: httpx.AsyncClient) -> None:
    raw = await read_until_silent(client, ROUTES[0], "fault-no-done")
    *_, finish, usage = (json.loads(data) for _, data in events(raw))
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] == 20


# Non-stream answers under stream faults ---------------------------------------------


async def test_non_stream_cut_closes_the_connection_midway_through_the_body(
    client: httpx.AsyncClient,
) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post("/v1/chat/completions", json=chat("fault-cut"))


@pytest.mark.parametrize("fault", ["stall", "slow-first-token"])
async def test_non_stream_stall_and_slow_first_token_send_headers_then_no_body(
    client: httpx.AsyncClient, fault: str
) -> None:
    body = chat(f"fault-{fault}")
    async with client.stream("POST", "/v1/chat/completions", json=body, timeout=SHORT) as r:
        assert r.status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            await r.aread()


async def test_non_stream_malformed_is_a_200_whose_body_is_not_json(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/v1/chat/completions", json=chat("fault-malformed"))
    assert response.status_code == 200
    assert response.content == b"{not json"
