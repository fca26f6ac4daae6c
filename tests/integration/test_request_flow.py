"""A chat request through every actor on a real nats-server, to the mock provider over HTTP."""

from __future__ import annotations

import time
import uuid
from typing import Any

import anyio
import msgspec
import nats
import pytest

from omnillm.bus import subjects
from omnillm.bus.connection import RID_HEADER
from omnillm.bus.messages import Delta, Done, Error, Start, decode_frame
from omnillm.client import Client
from omnillm.embedded import EmbeddedNats
from omnillm.errors import FirstFrameTimeout, ModelNotFound, NoCandidates, NoRouter, UnknownModel
from omnillm.testing.mock_provider import MockProvider, answer_tokens, count_prompt_tokens
from tests.conftest import client_for, mock_settings, running

pytestmark = pytest.mark.anyio


def ask(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": prompt}], **extra}


def expected_text(prompt: str, n: int = 20) -> str:
    return "".join(answer_tokens(prompt, n))


async def raw_exchange(url: str, payload: bytes, rid: str | None = None) -> list[Any]:
    """Publish like any NATS client would; collect the raw replies through the empty message."""
    nc = await nats.connect(url)
    try:
        inbox = nc.new_inbox()
        replies: list[Any] = []
        finished = anyio.Event()

        async def on_reply(msg: Any) -> None:
            replies.append(msg)
            if msg.data == b"":
                finished.set()

        await nc.subscribe(inbox, cb=on_reply)
        headers = {RID_HEADER: rid} if rid else None
        await nc.publish(subjects.REQUEST, payload, reply=inbox, headers=headers)
        with anyio.fail_after(10):
            await finished.wait()
        return replies
    finally:
        await nc.close()


async def test_request_streams_deltas_the_first_carrying_start_then_done_then_empty_message(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    prompt = "Name three rivers in Europe."
    async with running(mock_settings(mock_provider), nats_server.url):
        replies = await raw_exchange(nats_server.url, msgspec.json.encode(ask(prompt)), "rid-123")

    assert replies[-1].data == b""
    frames = [decode_frame(m.data) for m in replies[:-1]]
    first = frames[0]
    assert isinstance(first, Delta) and isinstance(first.start, Start)
    assert (first.start.provider, first.start.model) == ("mock", "mock-small")
    assert all(isinstance(f, Delta) and f.start is None for f in frames[1:-1])
    assert len(frames) >= 2
    done = frames[-1]
    assert isinstance(done, Done)
    assert "".join(f.text for f in frames if isinstance(f, Delta)) == expected_text(prompt)
    assert [f.seq for f in frames] == list(range(len(frames)))
    assert {f.rid for f in frames} == {"rid-123"}
    assert all(m.headers[RID_HEADER] == "rid-123" for m in replies[:-1])
    prompt_tokens = count_prompt_tokens([{"role": "user", "content": prompt}])
    assert (done.usage.input_tokens, done.usage.output_tokens) == (prompt_tokens, 20)
    assert done.finish_reason == "stop"
    assert done.cost_usd == pytest.approx((prompt_tokens * 0.05 + 20 * 0.20) / 1e6)


async def test_fifty_concurrent_streams_each_get_exactly_their_own_tokens(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    prompts = [f"Question number {i}: what is {i} squared?" for i in range(50)]
    results: dict[str, str] = {}

    async with running(mock_settings(mock_provider), nats_server.url):
        async with client_for(nats_server.url) as client:

            async def one(prompt: str) -> None:
                results[prompt] = (await client.complete(ask(prompt))).text

            async with anyio.create_task_group() as tg:
                for prompt in prompts:
                    tg.start_soon(one, prompt)

    assert len(results) == 50
    for prompt in prompts:
        assert results[prompt] == expected_text(prompt)
    assert len(set(results.values())) == 50
    assert mock_provider.requests_served == 50


async def test_no_router_running_fails_at_once_not_after_a_timeout(
    nats_server: EmbeddedNats,
) -> None:
    async with client_for(nats_server.url, first_frame_s=30) as client:
        started = time.monotonic()
        with pytest.raises(NoRouter, match="no router is running"):
            await client.complete(ask("hello?"))
    assert time.monotonic() - started < 5


async def test_a_provider_with_no_caller_falls_through_to_the_next_candidate(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    settings = mock_settings(
        mock_provider,
        providers={
            "mock": {"family": "openai", "base_url": mock_provider.base_url, "api_key": "none"},
            "spare": {"family": "openai", "base_url": mock_provider.base_url, "api_key": "none"},
        },
        models=[
            {
                "id": "spare/mock-small",
                "price": {"input": 0, "output": 0},
                "fallbacks": ["mock/mock-small"],
            },
            {"id": "mock/mock-small", "price": {"input": 0.05, "output": 0.2}},
        ],
    )
    prompt = "Which caller answers this?"
    async with running(settings, nats_server.url, providers=["mock"]):
        async with client_for(nats_server.url) as client:
            completion = await client.complete(ask(prompt, model="spare/mock-small"))
    assert completion.provider == "mock"
    assert completion.attempts == 2
    assert completion.text == expected_text(prompt)


async def test_no_caller_for_the_only_candidate_ends_with_an_error_naming_it(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    async with running(
        mock_settings(mock_provider), nats_server.url, kinds=("classifier", "planner")
    ):
        async with client_for(nats_server.url) as client:
            frames = [f async for f in client.stream(ask("hi", model="mock/mock-large"))]
    assert len(frames) == 1 and isinstance(frames[0], Error)
    assert frames[0].code == "no_caller"
    assert "no caller for provider mock (no responders)" in frames[0].message


async def test_an_upstream_error_before_any_token_falls_back(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    settings = mock_settings(
        mock_provider,
        models=[
            {
                "id": "mock/retired-model",
                "price": {"input": 0, "output": 0},
                "fallbacks": ["mock/mock-medium"],
            },
            {"id": "mock/mock-medium", "price": {"input": 0.4, "output": 1.6}},
        ],
    )
    prompt = "Falls back from a model the provider does not know"
    async with running(settings, nats_server.url), client_for(nats_server.url) as client:
        completion = await client.complete(ask(prompt, model="mock/retired-model"))
    assert (completion.model, completion.attempts) == ("mock-medium", 2)
    assert completion.text == expected_text(prompt)


@pytest.mark.parametrize(
    ("payload", "code", "says"),
    [
        (b'{"messages": [', "invalid_request", "not valid JSON"),
        (b'{"messages": []}', "invalid_request", "$.messages"),
        (b'{"messages": [{"role": "robot", "content": "x"}]}', "invalid_request", "role"),
        (
            b'{"model": "nope/nothing", "messages": [{"role": "user", "content": "x"}]}',
            "unknown_model",
            "unknown model 'nope/nothing'",
        ),
        (
            b'{"messages": [{"role": "user", "content": "' + b"x" * 5000 + b'"}]}',
            "request_too_large",
            "over the limit of 4096 bytes",
        ),
    ],
)
async def test_bad_requests_get_an_error_frame_and_the_router_keeps_serving(
    nats_server: EmbeddedNats, mock_provider: MockProvider, payload: bytes, code: str, says: str
) -> None:
    settings = mock_settings(mock_provider, reliability={"max_request_bytes": 4096})
    async with running(settings, nats_server.url):
        replies = await raw_exchange(nats_server.url, payload)
        async with client_for(nats_server.url) as client:
            after = await client.complete(ask("still there?"))

    assert [m.data for m in replies[1:]] == [b""]
    error = decode_frame(replies[0].data)
    assert isinstance(error, Error)
    assert error.code == code
    assert says in error.message
    assert after.text == expected_text("still there?")


HOSTILE: list[tuple[bytes, str, str]] = [
    (b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', "invalid_request", "UTF-8"),
    (
        b'{"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", '
        b'"function": {"name": "f", "parameters": {"a": '
        + b"[" * 10_000
        + b"]" * 10_000
        + b"}}}]}",
        "invalid_request",
        "nests too deeply",
    ),
    (b'{"model": "a\\u0000b", "messages": [{"role": "user", "content": "x"}]}', "", "control"),
    (
        b'{"model": "' + b"m" * 5000 + b'", "messages": [{"role": "user", "content": "x"}]}',
        "",
        "256",
    ),
    (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": -3}', "", "max_tokens"),
    (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 1e999}', "", "range"),
    (
        b'{"messages": [{"role": "user", "content": "x"}], "idempotency_key": "'
        + "\u00e9".encode() * 200
        + b'"}',
        "invalid_request",
        "over 255 bytes",
    ),
    (
        b'{"model": "mock.*.>/x", "messages": [{"role": "user", "content": "x"}]}',
        "unknown_model",
        "mock.*.>/x",
    ),
]


async def test_hostile_requests_get_an_error_frame_and_the_router_keeps_serving(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    async with running(mock_settings(mock_provider), nats_server.url):
        answers = [await raw_exchange(nats_server.url, payload) for payload, _, _ in HOSTILE]
        async with client_for(nats_server.url) as client:
            after = await client.complete(ask("still there?"))

    for (_, code, says), replies in zip(HOSTILE, answers, strict=True):
        assert [m.data for m in replies[1:]] == [b""]
        error = decode_frame(replies[0].data)
        assert isinstance(error, Error)
        assert error.code == (code or "invalid_request")
        assert says in error.message
    assert after.text == expected_text("still there?")


async def test_hostile_switch_requests_are_refused_and_the_admin_keeps_answering(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    asks = [
        b"\xff",
        b"[" * 100_000,
        b'{"provider": "' + b"p" * 10_000 + b'"}',
        b'{"provider": "m.>"}',
    ]
    async with running(mock_settings(mock_provider), nats_server.url):
        nc = await nats.connect(nats_server.url)
        try:
            codes = [
                msgspec.json.decode((await nc.request(subjects.admin("switch"), data)).data)["code"]
                for data in asks
            ]
            providers = await nc.request(subjects.admin("providers"), b"")
        finally:
            await nc.close()

    assert codes == ["invalid_request", "invalid_request", "invalid_request", "unknown_provider"]
    assert "mock" in {row["name"] for row in msgspec.json.decode(providers.data)}


async def test_client_raises_the_routers_error_with_its_class(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    async with running(mock_settings(mock_provider), nats_server.url):
        async with client_for(nats_server.url) as client:
            with pytest.raises(UnknownModel, match="unknown model 'gpt-99'"):
                await client.complete(ask("x", model="gpt-99"))
            with pytest.raises(NoCandidates, match="does not support vision"):
                image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
                text = {"type": "text", "text": "what is this?"}
                await client.complete(
                    {
                        "model": "mock/mock-small",
                        "messages": [{"role": "user", "content": [text, image]}],
                    }
                )


async def test_request_ids_are_kept_per_request(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    async with running(mock_settings(mock_provider), nats_server.url):
        async with client_for(nats_server.url) as client:
            first = await client.complete(ask("one"))
            second = await client.complete(ask("two"))
    assert first.rid != second.rid
    assert uuid.UUID(hex=first.rid)


async def test_heartbeats_keep_a_slow_first_token_from_timing_out_the_client(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    mock_provider.settings.first_token_delay_s = 2.0
    settings = mock_settings(mock_provider, reliability={"heartbeat_s": 0.1, "ttft_timeout_s": 30})
    async with running(settings, nats_server.url):
        async with client_for(nats_server.url, first_frame_s=1.0, stall_s=1.0) as client:
            completion = await client.complete(ask("think first"))
    assert completion.text == expected_text("think first")


async def test_without_heartbeats_the_client_gives_up_after_its_first_frame_limit(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    mock_provider.settings.first_token_delay_s = 2.0
    settings = mock_settings(mock_provider, reliability={"heartbeat_s": 60, "ttft_timeout_s": 30})
    async with running(settings, nats_server.url):
        async with client_for(nats_server.url, first_frame_s=0.5) as client:
            with pytest.raises(FirstFrameTimeout, match=r"no answer within 0\.5s"):
                await client.complete(ask("think first"))


async def test_a_provider_without_its_key_is_reported_not_called(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    provider = {
        "family": "openai",
        "base_url": mock_provider.base_url,
        "api_key_env": "OMNI_TEST_KEY_NOBODY_SET",
    }
    settings = mock_settings(mock_provider, providers={"mock": provider})
    async with running(settings, nats_server.url):
        async with client_for(nats_server.url) as client:
            frames = [f async for f in client.stream(ask("hello", model="mock/mock-small"))]
    assert len(frames) == 1 and isinstance(frames[0], Error)
    assert frames[0].code == "authentication_failed"
    assert frames[0].message == "mock/mock-small: no API key (set OMNI_TEST_KEY_NOBODY_SET)"
    assert mock_provider.requests_served == 0


async def test_tool_calls_stream_through_and_assemble_in_complete(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    async with running(mock_settings(mock_provider), nats_server.url):
        async with client_for(nats_server.url) as client:
            completion = await client.complete(ask("find the docs", tools=[tool]))
    assert completion.finish_reason == "tool_calls"
    assert completion.text == ""
    [call] = completion.tool_calls
    assert call.function.name == "lookup"
    assert msgspec.json.decode(call.function.arguments) == {"input": "find the docs"}
    assert call.id.startswith("call_")


async def test_a_busy_caller_sends_the_request_to_the_next_candidate(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    mock_provider.settings.token_delay_s = 0.05
    base = {"family": "openai", "base_url": mock_provider.base_url, "api_key": "none"}
    settings = mock_settings(
        mock_provider,
        providers={"mock": {**base, "max_concurrency": 1, "backlog": 0}, "spare": base},
        models=[
            {
                "id": "mock/mock-small",
                "price": {"input": 0, "output": 0},
                "fallbacks": ["spare/mock-small"],
            },
            {"id": "spare/mock-small", "price": {"input": 0, "output": 0}},
        ],
    )
    async with running(settings, nats_server.url):
        async with client_for(nats_server.url) as client:
            first = client.stream(ask("slow one", model="mock/mock-small"))
            assert isinstance(await anext(first), Start)
            assert isinstance(await anext(first), Delta)  # the only mock worker is busy now
            second = await client.complete(ask("second", model="mock/mock-small"))
            rest = [frame async for frame in first]
    assert (second.provider, second.attempts) == ("spare", 2)
    assert isinstance(rest[-1], Done) and rest[-1].provider == "mock"


async def test_an_idempotency_key_calls_the_provider_once_for_every_duplicate(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    mock_provider.settings.token_delay_s = 0.01
    request = ask("charge my card once", idempotency_key="order-42/charge")
    async with running(mock_settings(mock_provider), nats_server.url):
        async with client_for(nats_server.url) as client:
            first = client.stream(request)
            assert isinstance(await anext(first), Start)
            while_running = await client.complete(request)  # attaches to the live stream
            rest = [frame async for frame in first]
            afterwards = await client.complete(request)  # gets the recorded result
            other = await client.complete(ask("charge my card once", idempotency_key="order-43"))
    text = expected_text("charge my card once")
    assert "".join(f.text for f in rest if isinstance(f, Delta)).endswith(text[-10:])
    assert while_running.text == afterwards.text == other.text == text
    assert while_running.rid != afterwards.rid
    assert while_running.usage == afterwards.usage
    assert mock_provider.requests_served == 2  # order-42 once, order-43 once


async def test_a_failed_keyed_request_can_be_retried_with_the_same_key(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    bad = ask("retry me", model="mock/missing-model", idempotency_key="k-1")
    settings = mock_settings(
        mock_provider,
        models=[{"id": "mock/missing-model", "price": {"input": 0, "output": 0}}],
    )
    async with running(settings, nats_server.url):
        async with client_for(nats_server.url) as client:
            with pytest.raises(ModelNotFound):
                await client.complete(bad)
            # The failure freed the key: the retry is planned afresh (not replayed), and the
            # model the provider just disowned is out of the plan without another call.
            with pytest.raises(NoCandidates, match="model not found recently"):
                await client.complete(bad)
    assert mock_provider.requests_served == 1


async def test_the_start_frame_says_why_the_router_chose_this_model(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    request = ask("thanks!", route={"deny": ["mock/mock-medium"]})
    async with running(mock_settings(mock_provider), nats_server.url):
        async with client_for(nats_server.url) as client:
            frames = [f async for f in client.stream(request)]
    start = frames[0]
    assert isinstance(start, Start)
    assert (start.provider, start.model, start.tier) == ("mock", "mock-small", "simple")
    assert 0 < start.confidence <= 1
    assert any("small talk" in reason for reason in start.reasons)
    prompt_tokens = count_prompt_tokens([{"role": "user", "content": "thanks!"}])
    assert start.est_cost_usd > 0
    assert "mock/mock-medium: denied by the routing deny list" in start.skipped
    assert prompt_tokens > 0


async def test_a_gateway_key_tag_is_believed_only_on_the_gateway_subject(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    """A NATS client cannot bill a gateway key (or spend its budget) by tagging itself."""
    tagged = ask("whose bill is this", metadata={"tags": ["key:team-a"]})
    planned: dict[str, str] = {}

    async def on_call(msg: Any) -> None:
        envelope = msgspec.json.decode(msg.data)
        planned[envelope["rid"]] = envelope.get("key", "")  # left out when empty

    async with running(mock_settings(mock_provider), nats_server.url):
        nc = await nats.connect(nats_server.url)
        try:
            await nc.subscribe(subjects.call("mock"), cb=on_call)
            await nc.flush()
            async with client_for(nats_server.url) as client:
                from_client = await client.complete(tagged)
            async with Client(nats_server.url, subject=subjects.GATEWAY_REQUEST) as gateway:
                from_gateway = await gateway.complete(tagged)
            await nc.flush()  # the calls were published long before the answers ended
        finally:
            await nc.close()
    assert planned == {from_client.rid: "", from_gateway.rid: "team-a"}
