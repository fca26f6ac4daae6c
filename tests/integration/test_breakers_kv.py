"""Circuit breakers shared through the ``omni_health`` KV bucket, between separate connections.

Each board has its own ``Bus`` connection, as two router processes would. Time is a
clock the test moves; waiting is on the board's change signal, never a sleep.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import pytest

from omnillm import embedded
from omnillm.bus.breaker import BreakerPolicy, Phase
from omnillm.bus.breakers import BreakerBoard, OnTransition, breaker_key, parse_breaker_key
from omnillm.bus.connection import Bus
from omnillm.bus.health import BUCKET
from omnillm.embedded import EmbeddedNats

pytestmark = pytest.mark.anyio

PROVIDER = "openrouter"
MODEL = "openrouter/openai/gpt-5.2:free"
PROVIDER_KEY = breaker_key(PROVIDER)
MODEL_KEY = breaker_key(PROVIDER, MODEL)


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


Transitions = list[tuple[str, Phase, Phase]]


def recorder(into: Transitions) -> OnTransition:
    async def on_transition(key: str, old: Phase, new: Phase) -> None:
        into.append((key, old, new))

    return on_transition


@asynccontextmanager
async def board_on(
    url: str, clock: Clock, transitions: Transitions | None = None
) -> AsyncIterator[BreakerBoard]:
    """A running board on its own connection, with the default policy (cooldown 15 s)."""
    bus = await Bus.connect(url)
    try:
        hook = recorder(transitions) if transitions is not None else None
        async with BreakerBoard(bus, BreakerPolicy(), clock=clock, on_transition=hook) as board:
            yield board
    finally:
        await bus.close()


async def until(board: BreakerBoard, seen: Callable[[], bool]) -> None:
    with anyio.fail_after(1):
        while not seen():
            await board.changed()


async def test_a_breaker_opened_in_one_process_is_open_in_another_within_a_second(
    nats_server: EmbeddedNats,
) -> None:
    clock = Clock()
    async with (
        board_on(nats_server.url, clock) as first,
        board_on(nats_server.url, clock) as second,
    ):
        assert await second.allows(PROVIDER, MODEL)
        for _ in range(5):
            await first.record(PROVIDER, MODEL, success=False)
        assert first.open_circuits() == {PROVIDER_KEY, MODEL_KEY}

        await until(second, lambda: second.open_circuits() == {PROVIDER_KEY, MODEL_KEY})
        assert not await second.allows(PROVIDER, MODEL)
        assert not await second.allows(PROVIDER, "openrouter/other-model")  # provider-wide


async def test_concurrent_records_from_two_processes_lose_no_outcome(
    nats_server: EmbeddedNats, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    caplog.set_level(logging.WARNING, logger="omnillm.breakers")
    async with (
        board_on(nats_server.url, clock) as first,
        board_on(nats_server.url, clock) as second,
    ):
        async with anyio.create_task_group() as tg:
            for board in (first, second):
                for _ in range(20):
                    tg.start_soon(board.record, PROVIDER, MODEL, False)

        states = await first.states()
        assert states[PROVIDER_KEY].failures == 40
        assert states[MODEL_KEY].failures == 40
        assert states[PROVIDER_KEY].state == "open"
    assert not [r for r in caplog.records if r.name == "omnillm.breakers"]


async def test_only_one_process_gets_the_half_open_probe(nats_server: EmbeddedNats) -> None:
    clock = Clock()
    transitions: Transitions = []
    async with (
        board_on(nats_server.url, clock, transitions) as first,
        board_on(nats_server.url, clock, transitions) as second,
    ):
        for _ in range(5):
            await first.record(PROVIDER, MODEL, success=False)
        await until(second, lambda: MODEL_KEY in second.open_circuits())
        clock.now += 15
        assert first.open_circuits() == set()  # half-open with a free probe: plannable

        answers: list[bool] = []

        async def ask(board: BreakerBoard) -> None:
            answers.append(await board.allows(PROVIDER, MODEL))

        async with anyio.create_task_group() as tg:
            for board in (first, second, first, second):
                tg.start_soon(ask, board)

        assert sorted(answers) == [False, False, False, True]
        assert [t for t in transitions if t[2] == "half_open"] == [
            (MODEL_KEY, "open", "half_open"),
            (PROVIDER_KEY, "open", "half_open"),
        ]
        await until(second, lambda: second.open_circuits() == {PROVIDER_KEY, MODEL_KEY})


async def test_a_successful_probe_closes_the_breaker_everywhere(nats_server: EmbeddedNats) -> None:
    clock = Clock()
    transitions: Transitions = []
    async with (
        board_on(nats_server.url, clock, transitions) as first,
        board_on(nats_server.url, clock, transitions) as second,
    ):
        for _ in range(5):
            await first.record(PROVIDER, MODEL, success=False)
        await until(second, lambda: second.open_circuits() == {PROVIDER_KEY, MODEL_KEY})
        clock.now += 15
        assert await second.allows(PROVIDER, MODEL)
        await second.record(PROVIDER, MODEL, success=True)

        await until(first, lambda: {s.state for s in first.known().values()} == {"closed"})
        assert await first.allows(PROVIDER, MODEL)
        assert transitions == [
            (PROVIDER_KEY, "closed", "open"),
            (MODEL_KEY, "closed", "open"),
            (MODEL_KEY, "open", "half_open"),
            (PROVIDER_KEY, "open", "half_open"),
            (PROVIDER_KEY, "half_open", "closed"),
            (MODEL_KEY, "half_open", "closed"),
        ]


async def test_odd_model_ids_are_stored_under_keys_that_parse_back(
    nats_server: EmbeddedNats,
) -> None:
    clock = Clock()
    async with board_on(nats_server.url, clock) as board:
        await board.record(PROVIDER, MODEL, success=False)
        await board.record(PROVIDER, MODEL, success=True)
        await board.record("anthropic", "anthropic/claude_sonnet-4.5", success=False)

    async with board_on(nats_server.url, clock) as fresh:
        states = await fresh.states()
    assert {parse_breaker_key(key) for key in states} == {
        (PROVIDER, None),
        (PROVIDER, MODEL),
        ("anthropic", None),
        ("anthropic", "anthropic/claude_sonnet-4.5"),
    }
    assert states[MODEL_KEY].successes == 1


async def test_successes_on_a_clean_closed_breaker_write_nothing(
    nats_server: EmbeddedNats,
) -> None:
    clock = Clock()
    async with board_on(nats_server.url, clock) as board:
        for _ in range(20):
            await board.record(PROVIDER, MODEL, success=True)
        assert board.known() == {}  # the common case costs no KV write
        await board.record(PROVIDER, MODEL, success=False)
        await board.record(PROVIDER, MODEL, success=True)
        assert board.known()[MODEL_KEY].successes == 1


async def test_states_without_a_watcher_read_the_bucket(nats_server: EmbeddedNats) -> None:
    clock = Clock()
    async with board_on(nats_server.url, clock) as board:
        await board.record(PROVIDER, MODEL, success=False)
    bus = await Bus.connect(nats_server.url)
    try:
        states = await BreakerBoard(bus, clock=clock).states()
        kv = await bus.nc.jetstream().key_value(BUCKET)  # the same bucket as provider health
        assert sorted(await kv.keys()) == sorted([PROVIDER_KEY, MODEL_KEY])
    finally:
        await bus.close()
    assert states[PROVIDER_KEY].failures == 1


@pytest.fixture
def plain_nats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedNats]:
    """A nats-server without JetStream."""
    render = embedded.render_config
    monkeypatch.setattr(embedded, "render_config", lambda **kw: render(**kw).split("jetstream")[0])
    with EmbeddedNats(tmp_path / "plain", port=0) as server:
        yield server


async def test_without_jetstream_breakers_work_in_this_process_with_one_warning(
    plain_nats: EmbeddedNats, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    caplog.set_level(logging.WARNING, logger="omnillm.breakers")
    async with AsyncExitStack() as stack:
        board = await stack.enter_async_context(board_on(plain_nats.url, clock))
        for _ in range(5):
            await board.record(PROVIDER, MODEL, success=False)
        assert board.open_circuits() == {PROVIDER_KEY, MODEL_KEY}
        assert not await board.allows(PROVIDER, MODEL)
        clock.now += 15
        assert await board.allows(PROVIDER, MODEL)
        assert not await board.allows(PROVIDER, MODEL)
    warnings = [r for r in caplog.records if r.name == "omnillm.breakers"]
    assert len(warnings) == 1
    assert "not shared" in warnings[0].getMessage()
