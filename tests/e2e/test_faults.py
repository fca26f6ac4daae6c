"""Every upstream fault, end to end: real NATS, real HTTP to the mock provider.

Each test plans two candidates: ``primary/<fault model>`` and ``backup/mock-small``
(both providers are the same mock, which counts the calls each model gets and when).
The user gets the whole answer from someone, or one clean error naming the cause;
never a short answer presented as whole, never a wait past the deadline.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import anyio
import msgspec
import nats
import pytest

from omnillm.bus.messages import Delta, Done, Error, Reset
from omnillm.client import Client
from omnillm.config import Config, Settings, resolve
from omnillm.embedded import EmbeddedNats
from omnillm.testing.mock_provider import MockProvider, answer_tokens
from tests.conftest import client_for, mock_settings, running

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

PROMPT = "Tell me about rivers"
ANSWER = "".join(answer_tokens(PROMPT, 20))
FAST = {
    "ttft_timeout_s": 0.5,
    "stall_timeout_s": 0.5,
    "finish_grace_s": 0.3,
    "retry_base_delay_s": 0.05,
    "max_attempts": 3,
    "request_timeout_s": 20,
}


def two_candidates(
    mock: MockProvider,
    fault: str,
    *,
    backup: dict[str, Any] | None = None,
    backup_model: str = "mock-small",
    **reliability: Any,
) -> Settings:
    base = {"family": "openai", "base_url": mock.base_url, "api_key": "none"}
    models = [
        {
            "id": f"primary/fault-{fault}",
            "tier": "simple",
            "price": {"input": 1, "output": 1},
            "context_window": 8192,
            "fallbacks": [f"backup/{backup_model}"],
        },
        {"id": "primary/mock-small", "tier": "simple", "price": {"input": 1, "output": 1}},
        {
            "id": f"backup/{backup_model}",
            "tier": "simple",
            "price": {"input": 2, "output": 2},
            **(backup or {}),
        },
    ]
    return mock_settings(
        mock,
        providers={"primary": base, "backup": base},
        models=models,
        reliability={**FAST, **reliability},
    )


async def ask(client: Client, model: str) -> list[Any]:
    request = {"model": model, "messages": [{"role": "user", "content": PROMPT}]}
    return [frame async for frame in client.stream(request)]


def text(frames: list[Any]) -> str:
    return "".join(f.text for f in frames if isinstance(f, Delta))


async def through(
    server: EmbeddedNats, settings: Settings, fault: str
) -> tuple[list[Any], float, list[Any]]:
    """The frames for the fault model, the seconds they took, and a normal request after."""
    async with running(settings, server.url):
        async with client_for(server.url) as client:
            started = time.monotonic()
            frames = await ask(client, f"primary/fault-{fault}")
            took = time.monotonic() - started
            after = await ask(client, "primary/mock-small")
    assert isinstance(after[-1], Done) and text(after) == ANSWER  # the router still serves
    return frames, took, frames


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


@pytest.mark.parametrize(
    ("fault", "calls", "min_gap"),
    [
        ("429-retry-after", 3, 0.95),  # Retry-After: 1 is honoured
        ("429-retry-after-ms", 3, 0.19),  # retry-after-ms: 200
        ("429", 3, 0.0),
        ("500", 3, 0.0),
        ("503", 3, 0.0),
        ("529", 3, 0.0),
        ("reset", 3, 0.0),
    ],
)
async def test_retryable_faults_retry_within_bounds_then_fall_back(
    nats_server: EmbeddedNats, mock_provider: MockProvider, fault: str, calls: int, min_gap: float
) -> None:
    frames, _, _ = await through(nats_server, two_candidates(mock_provider, fault), fault)
    done = frames[-1]
    assert isinstance(done, Done) and text(frames) == ANSWER
    assert (done.provider, done.model) == ("backup", "mock-small")
    primary = mock_provider.attempts[f"fault-{fault}"]
    assert len(primary) == calls
    assert all(gap >= min_gap for gap in gaps(primary))
    assert primary[2] - primary[0] >= 0.99  # never more than two calls in the first second


async def test_a_provider_that_fails_once_is_retried_and_answers(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    frames, _, _ = await through(nats_server, two_candidates(mock_provider, "500-once"), "500-once")
    assert isinstance(frames[-1], Done) and frames[-1].provider == "primary"
    assert text(frames) == ANSWER
    assert len(mock_provider.attempts["fault-500-once"]) == 2
    assert "mock-small" not in mock_provider.attempts or all(
        t > mock_provider.attempts["fault-500-once"][-1]
        for t in mock_provider.attempts["mock-small"]
    )


@pytest.mark.parametrize("fault", ["hang", "slow-first-token"])
async def test_a_silent_provider_is_left_at_the_first_token_limit(
    nats_server: EmbeddedNats, mock_provider: MockProvider, fault: str
) -> None:
    mock_provider.settings.fault_delay_s = 30
    frames, took, _ = await through(nats_server, two_candidates(mock_provider, fault), fault)
    assert isinstance(frames[-1], Done) and frames[-1].provider == "backup"
    assert text(frames) == ANSWER
    assert len(mock_provider.attempts[f"fault-{fault}"]) == 1  # a silent provider stays silent
    assert took < 5


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ("cut", "truncated"),
        ("stall", "stalled"),
        ("malformed", "malformed_response"),
    ],
)
async def test_a_stream_broken_after_tokens_ends_in_an_error_not_a_short_answer(
    nats_server: EmbeddedNats, mock_provider: MockProvider, fault: str, says: str
) -> None:
    frames, took, _ = await through(nats_server, two_candidates(mock_provider, fault), fault)
    assert not any(isinstance(f, Done) for f in frames)
    error = frames[-1]
    assert isinstance(error, Error)
    assert error.message.startswith(f"primary/fault-{fault}")
    assert says in f"{error.code} {error.message}"
    assert 0 < len(text(frames)) < len(ANSWER)
    assert took < 5


async def test_a_stream_broken_after_tokens_continues_on_a_model_that_takes_a_prefill(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    settings = two_candidates(mock_provider, "cut", backup={"capabilities": ["prefill"]})
    frames, _, _ = await through(nats_server, settings, "cut")
    partial = "".join(answer_tokens(PROMPT, 20)[:10])
    assert isinstance(frames[-1], Done) and frames[-1].provider == "backup"
    assert not any(isinstance(f, Reset) for f in frames)  # the client keeps what it has
    assert text(frames) == partial + ANSWER  # the mock answers afresh after the prefill


async def test_a_finished_stream_without_done_is_finalised_at_once(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    settings = two_candidates(mock_provider, "no-done", stall_timeout_s=10, finish_grace_s=5)
    frames, took, _ = await through(nats_server, settings, "no-done")
    assert isinstance(frames[-1], Done) and frames[-1].provider == "primary"
    assert frames[-1].usage.output_tokens == 20
    assert text(frames) == ANSWER
    assert took < 2  # finish reason and usage seen: no wait for [DONE] or a stall


async def test_context_length_goes_to_a_candidate_with_a_larger_window(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    settings = two_candidates(mock_provider, "context-length", backup={"context_window": 200000})
    frames, _, _ = await through(nats_server, settings, "context-length")
    assert isinstance(frames[-1], Done) and frames[-1].provider == "backup"
    assert len(mock_provider.attempts["fault-context-length"]) == 1  # no retry


async def test_context_length_skips_candidates_that_are_no_larger(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    settings = two_candidates(mock_provider, "context-length", backup={"context_window": 4096})
    frames, _, _ = await through(nats_server, settings, "context-length")
    assert isinstance(frames[-1], Error)
    assert frames[-1].code == "context_length_exceeded"
    assert (
        "mock-small" not in mock_provider.attempts or len(mock_provider.attempts["mock-small"]) == 1
    )


async def test_content_policy_goes_back_to_the_client_with_the_providers_reason(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    frames, _, _ = await through(
        nats_server, two_candidates(mock_provider, "content-policy"), "content-policy"
    )
    assert len(frames) == 1 and isinstance(frames[0], Error)
    assert frames[0].code == "content_policy"
    assert "rejected as a result of our safety system" in frames[0].message
    assert len(mock_provider.attempts["fault-content-policy"]) == 1
    assert len(mock_provider.attempts.get("mock-small", [])) == 1  # only the follow-up request


async def test_a_rejected_key_falls_back_and_keeps_the_provider_out_of_later_plans(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    async with running(two_candidates(mock_provider, "auth"), nats_server.url):
        async with client_for(nats_server.url) as client:
            first = await ask(client, "primary/fault-auth")
            second = await ask(client, "primary/fault-auth")
    assert first[-1].provider == second[-1].provider == "backup"
    assert len(mock_provider.attempts["fault-auth"]) == 1
    assert second[-1].attempts == 1


async def test_the_deadline_bounds_a_request_whatever_the_upstream_does(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    mock_provider.settings.fault_delay_s = 30
    settings = two_candidates(
        mock_provider,
        "hang",
        ttft_timeout_s=30,
        request_timeout_s=1.0,
        backup_model="fault-hang",
    )
    async with running(settings, nats_server.url):
        async with client_for(nats_server.url) as client:
            started = time.monotonic()
            frames = await ask(client, "primary/fault-hang")
            took = time.monotonic() - started
    assert isinstance(frames[-1], Error)
    assert "deadline" in frames[-1].message
    assert took < 3


async def test_an_open_circuit_keeps_traffic_off_then_one_probe_brings_it_back(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    mock_provider.settings.down_requests = 2
    cooldown = 0.3
    settings = two_candidates(
        mock_provider,
        "down-then-up",
        max_attempts=1,
        breaker={"failures": 2, "cooldown_s": cooldown, "min_requests": 2},
    )
    model = "primary/fault-down-then-up"
    async with running(settings, nats_server.url):
        async with client_for(nats_server.url) as client:
            failing = [await ask(client, model) for _ in range(2)]  # two failures open it
            skipped = await ask(client, model)  # open: not even tried
            await anyio.sleep(cooldown + 0.05)  # the configured cooldown passes
            probe = await ask(client, model)  # half-open: this request is the probe
            back = await ask(client, model)
    assert [f[-1].provider for f in failing] == ["backup", "backup"]
    assert (skipped[-1].provider, skipped[-1].attempts) == ("backup", 1)
    assert (probe[-1].provider, probe[-1].attempts) == ("primary", 1)
    assert (back[-1].provider, text(back)) == ("primary", ANSWER)
    assert len(mock_provider.attempts["fault-down-then-up"]) == 4  # 2 failed, probe, back


async def test_a_provider_over_its_rate_limit_is_not_called_and_the_request_moves_on(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    settings = two_candidates(mock_provider, "none")
    config = msgspec.to_builtins(settings.config)
    config["providers"]["primary"]["rpm"] = 1  # one request a minute in this process
    plain = next(m for m in config["models"] if m["id"] == "primary/mock-small")
    plain["fallbacks"] = ["backup/mock-small"]
    settings = resolve(msgspec.convert(config, Config), env={})
    async with running(settings, nats_server.url):
        async with client_for(nats_server.url) as client:
            first = await ask(client, "primary/mock-small")
            second = await ask(client, "primary/mock-small")
    assert first[-1].provider == "primary"
    assert isinstance(second[-1], Done), second[-1]
    assert (second[-1].provider, second[-1].attempts) == ("backup", 2)
    assert len(mock_provider.attempts["mock-small"]) == 2  # primary once, backup once


async def test_every_retry_and_fallback_is_an_audit_event(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    seen: list[dict[str, Any]] = []
    tap = await nats.connect(nats_server.url)

    async def record(msg: Any) -> None:
        seen.append(msgspec.json.decode(msg.data))

    await tap.subscribe("omni.v1.events.>", cb=record)
    await tap.flush()
    try:
        frames, _, _ = await through(nats_server, two_candidates(mock_provider, "503"), "503")
        await tap.flush()
    finally:
        await tap.close()
    rid = frames[-1].rid
    mine = [(e["kind"], e.get("model", "")) for e in seen if e.get("rid") == rid]
    assert mine.count(("retry", "primary/fault-503")) == 2
    assert ("fallback", "primary/fault-503") in mine
    outcomes = [e for e in seen if e["kind"] == "outcome" and e.get("rid") == rid]
    assert [(e["model"], e["detail"]["ok"]) for e in outcomes] == [("primary/fault-503", 0.0)] * 3
    [end] = [e for e in seen if e["kind"] == "end" and e.get("rid") == rid]
    assert (end["reason"], end["model"], end["detail"]["ok"]) == ("ok", "backup/mock-small", 1.0)
    assert end["detail"]["ttft_ms"] > 0  # the successful call's outcome rides on the end
