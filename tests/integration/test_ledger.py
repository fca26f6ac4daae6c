"""The usage ledger on a real nats-server: every event counted once, after downtime too."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from omnillm import embedded
from omnillm.actors.ledger.actor import CONSUMER, LedgerActor, LedgerStore
from omnillm.bus.admin import CostRow, Stats
from omnillm.bus.connection import Bus
from omnillm.bus.messages import Failure, TokenUsage, Usage
from omnillm.bus.usage import (
    DUPLICATE_WINDOW_S,
    STREAM,
    UsagePublisher,
    UsageReader,
    UsageReadFailed,
    stream_config,
)
from omnillm.config import Config, Settings, resolve
from omnillm.costs import NoLedger, fetch_cost, fetch_stats, render_cost, render_stats
from omnillm.embedded import EmbeddedNats
from omnillm.errors import InvalidRequest
from omnillm.providers.catalog import cost_usd, load_builtin_catalog

pytestmark = pytest.mark.anyio

WAIT_S = 15.0
MODELS = ("openai/gpt-5.4-mini", "anthropic/claude-sonnet-4-6", "google/gemini-2.5-flash")


def settings_for(tmp_path: Path) -> Settings:
    config = msgspec.convert({"ledger": {"path": str(tmp_path / "ledger.sqlite")}}, Config)
    return resolve(config, env={})


def usage_events(count: int, *, prefix: str = "r") -> list[Usage]:
    """``count`` attempts priced from the catalog: every fifth request fell back once."""
    catalog = load_builtin_catalog()
    events = []
    for i in range(count):
        spec = catalog.get(MODELS[i % len(MODELS)])
        assert spec is not None
        tokens = TokenUsage(
            input_tokens=1000 + i, cached_input_tokens=i % 7 * 100, output_tokens=200 + i
        )
        failed = i % 5 == 4
        events.append(
            Usage(
                rid=f"{prefix}{i - 1 if failed else i}",
                attempt=2 if failed else 1,
                provider=spec.provider,
                model=spec.id,
                outcome="ok",
                tokens=tokens,
                cost_usd=round(cost_usd(spec, tokens), 10),
                ttft_ms=float(i),
                key=f"team-{i % 2}",
            )
        )
    return events


def total(events: list[Usage]) -> float:
    return sum(event.cost_usd for event in events)


@asynccontextmanager
async def connected(url: str) -> AsyncIterator[Bus]:
    bus = await Bus.connect(url, name="test-ledger")
    try:
        yield bus
    finally:
        await bus.close()


@asynccontextmanager
async def running(bus: Bus, settings: Settings, **options: Any) -> AsyncIterator[LedgerActor]:
    ledger = LedgerActor(bus, settings, **options)
    async with anyio.create_task_group() as tg:
        await tg.start(ledger.run)
        try:
            yield ledger
        finally:
            ledger.stop()


async def publish_all(publisher: UsagePublisher, events: list[Usage]) -> None:
    for event in events:
        await publisher.publish(event)


async def ask(bus: Bus, what: str, query: dict[str, Any]) -> bytes:
    reply = await bus.nc.request(f"omni.v1.admin.{what}", msgspec.json.encode(query), timeout=5)
    return bytes(reply.data)


async def test_events_published_while_the_ledger_was_down_are_counted_once_on_start(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    events = usage_events(200)
    async with connected(nats_server.url) as bus:
        await publish_all(UsagePublisher(bus), events)
        async with running(bus, settings_for(tmp_path)) as ledger:
            with anyio.fail_after(WAIT_S):
                await ledger.caught_up()
            stats = await anyio.to_thread.run_sync(ledger.store.stats)
            spent = ledger.store.totals_since(None)
    assert (stats.attempts, stats.requests, stats.fallbacks) == (200, 160, 40)
    assert stats.output_tokens == sum(event.tokens.output_tokens for event in events)
    assert spent == pytest.approx(total(events), abs=1e-9)


async def test_the_same_events_again_change_nothing(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    events = usage_events(200)
    async with connected(nats_server.url) as bus:
        publisher = UsagePublisher(bus)
        await publish_all(publisher, events)
        async with running(bus, settings_for(tmp_path)) as ledger:
            with anyio.fail_after(WAIT_S):
                await ledger.caught_up()
            await publish_all(publisher, events)  # same Nats-Msg-Id: JetStream drops them
            info = await bus.nc.jetstream().stream_info(STREAM)
            with anyio.fail_after(WAIT_S):
                await ledger.caught_up()
            stamped = [(event, time.time()) for event in events]
            rewritten = ledger.store.record(stamped)  # a redelivered batch
            spent = ledger.store.totals_since(None)
            attempts = ledger.store.stats().attempts
    assert info.state.messages == 200
    assert rewritten == 0
    assert attempts == 200
    assert spent == pytest.approx(total(events), abs=1e-9)


async def test_a_restarted_ledger_resumes_where_it_stopped(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    first, second = usage_events(30, prefix="a"), usage_events(20, prefix="b")
    settings = settings_for(tmp_path)
    async with connected(nats_server.url) as bus:
        publisher = UsagePublisher(bus)
        async with running(bus, settings) as ledger:
            await publish_all(publisher, first)
            with anyio.fail_after(WAIT_S):
                await ledger.caught_up()
        await publish_all(publisher, second)
        async with running(bus, settings) as ledger:
            with anyio.fail_after(WAIT_S):
                await ledger.caught_up()
            spent = ledger.store.totals_since(None)
            consumer = await bus.nc.jetstream().consumer_info(STREAM, CONSUMER)
    assert spent == pytest.approx(total(first) + total(second), abs=1e-9)
    assert consumer.delivered.stream_seq == 50  # nothing was read twice
    assert consumer.num_ack_pending == 0


async def test_a_malformed_event_is_dropped_and_does_not_hold_up_the_rest(
    nats_server: EmbeddedNats, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="omnillm.ledger")
    good = usage_events(3)
    async with connected(nats_server.url) as bus:
        publisher = UsagePublisher(bus)
        await publish_all(publisher, good[:1])
        js = bus.nc.jetstream()
        await js.publish("omni.v1.usage.openai", b'{"rid": "x"}')
        await js.publish("omni.v1.usage.openai", b"not json")
        await publish_all(publisher, good[1:])
        async with running(bus, settings_for(tmp_path)) as ledger:
            with anyio.fail_after(WAIT_S):
                await ledger.caught_up()
            attempts = ledger.store.stats().attempts
            consumer = await js.consumer_info(STREAM, CONSUMER)
    assert attempts == 3
    assert consumer.num_ack_pending == 0 and consumer.num_pending == 0
    dropped = [r for r in caplog.records if "malformed usage event" in r.getMessage()]
    assert len(dropped) == 2


async def test_admin_requests_answer_cost_and_stats_as_json(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    events = usage_events(30)
    async with connected(nats_server.url) as bus:
        await publish_all(UsagePublisher(bus), events)
        settings = settings_for(tmp_path)
        async with running(bus, settings, reference_model="openai/gpt-5.5") as ledger:
            with anyio.fail_after(WAIT_S):
                await ledger.caught_up()
            by_model = msgspec.json.decode(
                await ask(bus, "cost", {"by": "model", "since": None}), type=list[CostRow]
            )
            later = msgspec.json.decode(
                await ask(bus, "cost", {"by": "key", "since": time.time() + 60}),
                type=list[CostRow],
            )
            stats = msgspec.json.decode(await ask(bus, "stats", {"since": None}), type=Stats)
            bad = msgspec.json.decode(await ask(bus, "cost", {"by": "user"}), type=Failure)
            unknown = msgspec.json.decode(
                await ask(bus, "stats", {"reference": "nope/x"}), type=Failure
            )
            rows = await fetch_cost(nats_server.url, "provider", None)
            cli_stats = await fetch_stats(nats_server.url, None, "openai/gpt-4o-mini")
            with pytest.raises(InvalidRequest, match="not in the catalog"):
                await fetch_stats(nats_server.url, None, "nope/x")
    assert {row.group for row in by_model} == set(MODELS)
    assert sum(row.attempts for row in by_model) == 30
    assert sum(row.cost_usd for row in by_model) == pytest.approx(total(events), abs=1e-9)
    assert later == []
    assert (stats.attempts, stats.requests, stats.reference_model) == (30, 24, "openai/gpt-5.5")
    assert stats.savings_usd == pytest.approx((stats.reference_cost_usd or 0) - stats.cost_usd)
    assert bad.code == "invalid_request" and "user" in bad.message
    assert unknown.code == "invalid_request"
    costs = [row.cost_usd for row in rows]
    assert costs == sorted(costs, reverse=True) and len(costs) == 3
    assert "openai" in render_cost(rows, "provider")
    assert cli_stats.reference_model == "openai/gpt-4o-mini"
    assert "cost on openai/gpt-4o-mini" in render_stats(cli_stats)


async def test_with_no_ledger_the_cli_says_so(nats_server: EmbeddedNats) -> None:
    with pytest.raises(NoLedger, match=r"no ledger answered on omni.v1.admin.cost at nats://"):
        await fetch_cost(nats_server.url, "provider", None)


async def test_a_usage_stream_made_by_an_older_version_gets_the_short_duplicate_window(
    nats_server: EmbeddedNats,
) -> None:
    async with connected(nats_server.url) as bus:
        js = bus.nc.jetstream()
        older = dataclasses.replace(stream_config(), duplicate_window=120.0)
        await js.add_stream(older)
        assert await UsagePublisher(bus).open()
        info = await js.stream_info(STREAM)
    assert info.config.duplicate_window == DUPLICATE_WINDOW_S == 30.0


async def test_a_deleted_stream_is_created_again_by_the_next_publish(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    events = usage_events(2)
    async with connected(nats_server.url) as bus:
        publisher = UsagePublisher(bus)
        await publisher.publish(events[0])
        js = bus.nc.jetstream()
        await js.delete_stream(STREAM)
        await publisher.publish(events[1])
        info = await js.stream_info(STREAM)
    assert info.state.messages == 1


@pytest.fixture
def plain_nats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedNats]:
    """A nats-server without JetStream."""
    render = embedded.render_config
    monkeypatch.setattr(embedded, "render_config", lambda **kw: render(**kw).split("jetstream")[0])
    with EmbeddedNats(tmp_path / "plain", port=0) as server:
        yield server


async def test_without_jetstream_usage_is_skipped_with_one_warning_each(
    plain_nats: EmbeddedNats, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    events = usage_events(3)
    async with connected(plain_nats.url) as bus:
        publisher = UsagePublisher(bus)
        with anyio.fail_after(WAIT_S):
            await publish_all(publisher, events)
        async with running(bus, settings_for(tmp_path)) as ledger:
            ledger.store.record([(event, time.time()) for event in events])
            await ledger.caught_up()
            stats = msgspec.json.decode(await ask(bus, "stats", {}), type=Stats)
    assert publisher.available is False
    assert stats.attempts == 3  # the admin answers still come from the store
    warned = [r.getMessage() for r in caplog.records if r.name.startswith("omnillm.")]
    assert len([w for w in warned if w.startswith("usage is not recorded")]) == 1
    assert len([w for w in warned if w.startswith("usage is not consumed")]) == 1


async def test_a_consumer_lost_while_running_is_reopened_and_rereading_counts_nothing_twice(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    first, second = usage_events(20, prefix="a"), usage_events(5, prefix="b")
    async with connected(nats_server.url) as bus:
        publisher = UsagePublisher(bus)
        js = bus.nc.jetstream()
        async with running(bus, settings_for(tmp_path)) as ledger:
            await publish_all(publisher, first)
            with anyio.fail_after(WAIT_S):
                await ledger.caught_up()
            await js.delete_consumer(STREAM, CONSUMER)  # the new one reads from the start
            await publish_all(publisher, second)
            with anyio.fail_after(WAIT_S):
                await ledger.caught_up()
            attempts = ledger.store.stats().attempts
            spent = ledger.store.totals_since(None)
    assert attempts == 25
    assert spent == pytest.approx(total(first) + total(second), abs=1e-9)


class CountingStore(LedgerStore):
    """The real store, counting its transactions (one per batch the ledger writes)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.batches: list[int] = []

    def record(self, events: Iterable[tuple[Usage, float]]) -> int:
        events = list(events)
        self.batches.append(len(events))
        return super().record(events)


async def test_a_steady_trickle_of_events_is_written_in_a_few_batches(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    events = usage_events(100)
    store = CountingStore(tmp_path / "ledger.sqlite")
    async with connected(nats_server.url) as bus:
        async with running(bus, settings_for(tmp_path), store=store, linger_s=0.2) as ledger:
            await publish_all(UsagePublisher(bus), events)  # one at a time, as requests end
            with anyio.fail_after(WAIT_S):
                await ledger.caught_up()
            attempts = store.stats().attempts
    store.close()
    assert attempts == 100
    assert sum(store.batches) == 100
    assert len(store.batches) <= 25  # one transaction per event before lingering


async def test_an_idle_ledger_records_the_next_event_at_once_and_stops_while_lingering(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    event = usage_events(1)
    async with connected(nats_server.url) as bus:
        with anyio.fail_after(WAIT_S):  # far below the linger: neither waits for it
            async with running(bus, settings_for(tmp_path), linger_s=3600) as ledger:
                await publish_all(UsagePublisher(bus), event)
                await ledger.caught_up()
                attempts = ledger.store.stats().attempts
    assert attempts == 1


@asynccontextmanager
async def reader_on(bus: Bus, tmp_path: Path) -> AsyncIterator[UsageReader]:
    """A reader on the ledger's durable consumer (a ledger that ran created it)."""
    async with running(bus, settings_for(tmp_path)):
        pass
    reader = UsageReader(bus, CONSUMER)
    await reader.open()
    try:
        yield reader
    finally:
        await reader.close()


async def test_a_pull_takes_what_is_there_up_to_a_batch_without_waiting(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with connected(nats_server.url) as bus, reader_on(bus, tmp_path) as reader:
        await publish_all(UsagePublisher(bus), usage_events(5))
        with anyio.fail_after(WAIT_S / 3):  # far below the grace for an unanswered pull
            first, rest, none = (
                await reader.pending(3),
                await reader.pending(100),
                await reader.pending(100),
            )
    assert [m.metadata.sequence.stream for m in first + rest] == [1, 2, 3, 4, 5]
    assert none == []


async def test_waiting_for_the_next_event_returns_it_or_nothing_when_the_wait_ends(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with connected(nats_server.url) as bus, reader_on(bus, tmp_path) as reader:
        with anyio.fail_after(WAIT_S / 3):
            nothing = await reader.next(0.1)
            await publish_all(UsagePublisher(bus), usage_events(2))
            one, other = await reader.next(10), await reader.next(10)
    assert nothing == []
    assert [msg.metadata.sequence.stream for msg in one + other] == [1, 2]


async def test_a_pull_on_a_deleted_consumer_fails_so_that_the_ledger_opens_it_again(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    async with connected(nats_server.url) as bus, reader_on(bus, tmp_path) as reader:
        js = bus.nc.jetstream()
        with anyio.fail_after(WAIT_S / 3):
            async with anyio.create_task_group() as tg:

                async def wait_then_fail() -> None:
                    with pytest.raises(UsageReadFailed, match="409"):
                        await reader.next(10)

                tg.start_soon(wait_then_fail)
                await anyio.wait_all_tasks_blocked()
                await js.delete_consumer(STREAM, CONSUMER)
            with pytest.raises(UsageReadFailed, match="503"):
                await reader.pending(10)  # nobody serves pulls for it any more
