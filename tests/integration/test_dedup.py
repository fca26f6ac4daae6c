"""Request deduplication on a real nats-server: claims, live attach, replay, timeouts, release."""

from __future__ import annotations

import logging
import re
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import NamedTuple

import anyio
import msgspec
import pytest
from nats.aio.msg import Msg

from omnillm.bus.connection import RID_HEADER, Bus
from omnillm.bus.dedup import (
    BUCKET,
    DEDUP_TIMEOUT,
    STREAM,
    DedupBoard,
    Recorder,
    key_from_token,
    key_token,
)
from omnillm.bus.messages import (
    END_OF_STREAM,
    Delta,
    Done,
    Error,
    Frame,
    Heartbeat,
    Start,
    decode_frame,
    encode,
)
from omnillm.embedded import EmbeddedNats, find_nats_server

pytestmark = pytest.mark.anyio

WAIT_S = 10.0
ODD_KEYS = ["order/42", "a.b", "a_b", "a b", "_2E", "=2E", "ünïcode*>", "tab\there", "x" * 255]


def new_rid() -> str:
    return uuid.uuid4().hex


def answer(rid: str) -> list[Frame]:
    """A first request's frames: a superseded attempt's heartbeat, then a whole answer."""
    return [
        Heartbeat(rid, 0, 0),
        Start(rid, 1, 0, provider="mock", model="mock-1"),
        Delta(rid, 1, 1, text="Hel"),
        Delta(rid, 1, 2, text="lo"),
        Done(rid, 1, 3, finish_reason="stop", provider="mock", model="mock-1"),
    ]


def as_rid(frames: list[Frame], rid: str) -> list[Frame]:
    return [msgspec.structs.replace(frame, rid=rid) for frame in frames]


class Inbox:
    """A client's reply inbox, holding every raw message it receives."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.subject = bus.new_inbox()
        self._send, self._receive = anyio.create_memory_object_stream[Msg](1000)

    async def open(self) -> Inbox:
        await self.bus.subscribe(self.subject, self._on_message)
        await self.bus.flush()
        return self

    async def _on_message(self, msg: Msg) -> None:
        self._send.send_nowait(msg)

    async def take(self, n: int) -> list[Msg]:
        with anyio.fail_after(WAIT_S):
            return [await self._receive.receive() for _ in range(n)]

    async def until_end(self) -> list[Msg]:
        """Every message up to the end-of-stream, which must be an empty message without headers."""
        received: list[Msg] = []
        with anyio.fail_after(WAIT_S):
            while True:
                msg = await self._receive.receive()
                if msg.data == END_OF_STREAM:
                    assert not msg.headers
                    return received
                received.append(msg)


def frames_of(messages: list[Msg]) -> list[Frame]:
    return [decode_frame(msg.data) for msg in messages]


class FirstRequest:
    """The process serving a keyed request: each frame to its client first, then recorded."""

    def __init__(self, bus: Bus, recorder: Recorder, rid: str, reply: str) -> None:
        self.bus, self.recorder, self.rid, self.reply = bus, recorder, rid, reply

    async def send(self, frames: list[Frame]) -> None:
        for frame in frames:
            payload = encode(frame)
            await self.bus.publish(self.reply, payload, headers={RID_HEADER: self.rid})
            await self.recorder.record(self.rid, payload)

    async def end(self) -> None:
        await self.bus.publish(self.reply, END_OF_STREAM)
        await self.recorder.end(self.rid)
        await self.bus.flush()


@asynccontextmanager
async def connected(url: str) -> AsyncIterator[Bus]:
    bus = await Bus.connect(url)
    try:
        yield bus
    finally:
        await bus.close()


class Process(NamedTuple):
    bus: Bus
    board: DedupBoard


@asynccontextmanager
async def two_processes(url: str) -> AsyncIterator[tuple[Process, Process]]:
    """Two connections with a board each: the first request's process and the duplicate's."""
    async with connected(url) as first, connected(url) as second:
        yield (
            Process(first, DedupBoard(first, ttl_s=60)),
            Process(second, DedupBoard(second, ttl_s=60)),
        )


def deadline_in(seconds: float) -> float:
    return time.time() + seconds


# --- claims --------------------------------------------------------------------------


async def test_second_claim_of_a_key_is_a_duplicate_naming_the_first_request(
    nats_server: EmbeddedNats,
) -> None:
    async with two_processes(nats_server.url) as (one, two):
        first, second = new_rid(), new_rid()
        won = await one.board.claim("order-42", first)
        dup = await two.board.claim("order-42", second)
        again = await one.board.claim("order-42", first)
    assert (won.rid, won.duplicate) == (first, False)
    assert (dup.rid, dup.duplicate) == (first, True)
    assert (again.rid, again.duplicate) == (first, False)  # a redelivery is not a duplicate


async def test_keys_with_odd_characters_are_claimed_separately_and_exactly(
    nats_server: EmbeddedNats,
) -> None:
    rids = {key: new_rid() for key in ODD_KEYS}
    async with two_processes(nats_server.url) as (one, two):
        fresh = [await one.board.claim(key, rid) for key, rid in rids.items()]
        repeats = [await two.board.claim(key, new_rid()) for key in ODD_KEYS]
    assert [c.duplicate for c in fresh] == [False] * len(ODD_KEYS)
    assert [(c.key, c.rid, c.duplicate) for c in repeats] == [(k, r, True) for k, r in rids.items()]


def test_key_token_is_kv_safe_and_reversible() -> None:
    for key in ODD_KEYS:
        token = key_token(key)
        assert re.fullmatch(r"[-/_=a-zA-Z0-9]+", token), token
        assert key_from_token(token) == key
    assert len({key_token(key) for key in ["a.b", "a_b", "_2E", "a_2Eb"]}) == 4
    with pytest.raises(ValueError):
        key_token("")
    with pytest.raises(ValueError):
        key_token("x" * 256)


async def test_release_lets_a_retry_with_the_key_run_and_only_the_holder_can_release(
    nats_server: EmbeddedNats,
) -> None:
    async with two_processes(nats_server.url) as (one, two):
        first, stranger, retry = new_rid(), new_rid(), new_rid()
        await one.board.claim("k", first)
        by_stranger = await two.board.release("k", stranger)
        still_held = await two.board.claim("k", retry)
        by_holder = await one.board.release("k", first)
        after = await two.board.claim("k", retry)
        after_again = await one.board.claim("k", new_rid())
    assert (by_stranger, still_held.rid, still_held.duplicate) == (False, first, True)
    assert by_holder is True
    assert (after.rid, after.duplicate) == (retry, False)
    assert (after_again.rid, after_again.duplicate) == (retry, True)


# --- replay --------------------------------------------------------------------------


async def test_duplicate_attaching_mid_stream_gets_every_frame_from_the_start_then_the_end(
    nats_server: EmbeddedNats,
) -> None:
    async with two_processes(nats_server.url) as (one, two):
        rid, dup_rid = new_rid(), new_rid()
        client, dup_client = await Inbox(one.bus).open(), await Inbox(two.bus).open()
        first = FirstRequest(one.bus, one.board.recorder, rid, client.subject)
        frames = answer(rid)
        await one.board.claim("mid", rid)
        await first.send(frames[:3])
        claim = await two.board.claim("mid", dup_rid)
        async with anyio.create_task_group() as tg:
            await tg.start(
                lambda task_status: two.board.replay(
                    claim.rid,
                    dup_client.subject,
                    new_rid=dup_rid,
                    deadline=deadline_in(WAIT_S),
                    task_status=task_status,
                )
            )
            early = await dup_client.take(3)  # live: these arrived before the rest existed
            await first.send(frames[3:])
            await first.end()
            rest = await dup_client.until_end()
        original = await client.until_end()
    assert frames_of(original) == frames
    assert frames_of(early + rest) == as_rid(frames, dup_rid)
    assert {msg.headers[RID_HEADER] for msg in early + rest if msg.headers} == {dup_rid}


async def test_duplicate_waiting_before_the_first_frame_gets_the_whole_stream(
    nats_server: EmbeddedNats,
) -> None:
    async with two_processes(nats_server.url) as (one, two):
        rid, dup_rid = new_rid(), new_rid()
        dup_client = await Inbox(two.bus).open()
        await one.board.claim("early", rid)
        claim = await two.board.claim("early", dup_rid)
        async with anyio.create_task_group() as tg:
            await tg.start(
                lambda task_status: two.board.replay(
                    claim.rid,
                    dup_client.subject,
                    new_rid=dup_rid,
                    deadline=deadline_in(WAIT_S),
                    task_status=task_status,
                )
            )
            first = FirstRequest(one.bus, one.board.recorder, rid, one.bus.new_inbox())
            await first.send(answer(rid))
            await first.end()
            received = await dup_client.until_end()
    assert frames_of(received) == as_rid(answer(rid), dup_rid)


async def test_duplicate_after_completion_gets_the_recorded_frames(
    nats_server: EmbeddedNats,
) -> None:
    async with two_processes(nats_server.url) as (one, two):
        rid, dup_rid = new_rid(), new_rid()
        dup_client = await Inbox(two.bus).open()
        await one.board.claim("done", rid)
        first = FirstRequest(one.bus, one.board.recorder, rid, one.bus.new_inbox())
        await first.send(answer(rid))
        await first.end()
        claim = await two.board.claim("done", dup_rid)
        complete = await two.board.replay(
            claim.rid, dup_client.subject, new_rid=dup_rid, deadline=deadline_in(WAIT_S)
        )
        received = await dup_client.until_end()
    assert complete is True
    assert frames_of(received) == as_rid(answer(rid), dup_rid)


async def test_failed_first_request_replays_its_error_and_its_release_lets_a_retry_run(
    nats_server: EmbeddedNats,
) -> None:
    async with two_processes(nats_server.url) as (one, two):
        rid, dup_rid, retry_rid = new_rid(), new_rid(), new_rid()
        dup_client = await Inbox(two.bus).open()
        failed: list[Frame] = [
            Start(rid, 1, 0, provider="mock", model="mock-1"),
            Delta(rid, 1, 1, text="Hel"),
            Error(rid, 1, 2, code="provider_unavailable", message="upstream reset"),
        ]
        await one.board.claim("fails", rid)
        claim = await two.board.claim("fails", dup_rid)
        first = FirstRequest(one.bus, one.board.recorder, rid, one.bus.new_inbox())
        await first.send(failed)
        await first.end()
        released = await one.board.release("fails", rid)
        await two.board.replay(
            claim.rid, dup_client.subject, new_rid=dup_rid, deadline=deadline_in(5)
        )
        received = await dup_client.until_end()
        retry = await two.board.claim("fails", retry_rid)
    assert frames_of(received) == as_rid(failed, dup_rid)
    assert released is True
    assert (retry.rid, retry.duplicate) == (retry_rid, False)


async def test_duplicate_of_a_request_that_records_nothing_gets_dedup_timeout_at_its_deadline(
    nats_server: EmbeddedNats,
) -> None:
    async with two_processes(nats_server.url) as (one, two):
        rid, dup_rid = new_rid(), new_rid()
        dup_client = await Inbox(two.bus).open()
        await one.board.claim("silent", rid)
        claim = await two.board.claim("silent", dup_rid)
        deadline = deadline_in(0.5)
        complete = await two.board.replay(
            claim.rid, dup_client.subject, new_rid=dup_rid, deadline=deadline
        )
        received = await dup_client.until_end()
        finished = time.time()
    assert complete is False
    [error] = frames_of(received)
    assert isinstance(error, Error)
    assert (error.rid, error.attempt, error.seq, error.code) == (dup_rid, 0, 0, DEDUP_TIMEOUT)
    assert error.retryable is True
    assert deadline <= finished < deadline + 1.0


async def test_timeout_mid_stream_ends_with_an_error_that_continues_the_sequence(
    nats_server: EmbeddedNats,
) -> None:
    async with two_processes(nats_server.url) as (one, two):
        rid, dup_rid = new_rid(), new_rid()
        dup_client = await Inbox(two.bus).open()
        frames = answer(rid)
        first = FirstRequest(one.bus, one.board.recorder, rid, one.bus.new_inbox())
        await first.send(frames[:3])  # then the first request hangs
        await two.board.replay(rid, dup_client.subject, new_rid=dup_rid, deadline=deadline_in(0.5))
        received = frames_of(await dup_client.until_end())
    assert received[:3] == as_rid(frames[:3], dup_rid)
    error = received[3]
    assert isinstance(error, Error)
    assert (error.attempt, error.seq, error.code) == (1, 2, DEDUP_TIMEOUT)


# --- retention and degrading -----------------------------------------------------------


async def test_claims_and_recordings_expire_after_the_configured_ttl(
    nats_server: EmbeddedNats,
) -> None:
    async with connected(nats_server.url) as bus:
        board = DedupBoard(bus, ttl_s=90)
        assert await board.open() is True
        js = bus.nc.jetstream()
        bucket = await js.stream_info(f"KV_{BUCKET}")
        replay = await js.stream_info(STREAM)
    assert bucket.config.max_age == 90
    assert replay.config.max_age == 90
    assert replay.config.subjects == ["omni.v1.replay.>"]
    assert replay.config.max_msg_size == bus.max_payload


@pytest.fixture
def nats_without_jetstream() -> Iterator[str]:
    """A bare nats-server: no JetStream, so no KV and no streams."""
    process = subprocess.Popen(
        [find_nats_server(), "-a", "127.0.0.1", "-p", "-1"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(WAIT_S, process.kill)
    watchdog.start()
    url = ""
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if match := re.search(r"Listening for client connections on (\S+):(\d+)", line):
                url = f"nats://127.0.0.1:{match.group(2)}"
            if "Server is ready" in line:
                break
        watchdog.cancel()
        assert url, "nats-server did not start"
        yield url
    finally:
        watchdog.cancel()
        process.terminate()
        process.wait(WAIT_S)


async def test_without_jetstream_every_request_runs_and_one_warning_says_why(
    nats_without_jetstream: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="omnillm.dedup")
    async with connected(nats_without_jetstream) as bus:
        board = DedupBoard(bus)
        first, second = new_rid(), new_rid()
        claims = [await board.claim("k", first), await board.claim("k", second)]
        await board.recorder.record(first, encode(answer(first)[0]))
        await board.recorder.end(first)
        released = await board.release("k", first)
    assert [(c.rid, c.duplicate) for c in claims] == [(first, False), (second, False)]
    assert released is False
    warnings = [r for r in caplog.records if r.name == "omnillm.dedup"]
    assert len(warnings) == 1
    assert "not deduplicated" in warnings[0].getMessage()


async def test_recording_without_its_end_marker_still_ends_at_its_done(
    nats_server: EmbeddedNats,
) -> None:
    async with two_processes(nats_server.url) as (one, two):
        rid, dup_rid = new_rid(), new_rid()
        dup_client = await Inbox(two.bus).open()
        first = FirstRequest(one.bus, one.board.recorder, rid, one.bus.new_inbox())
        await first.send(answer(rid))  # the process died before recording the end
        with anyio.fail_after(WAIT_S / 2):
            complete = await two.board.replay(
                rid, dup_client.subject, new_rid=dup_rid, deadline=deadline_in(WAIT_S)
            )
        received = await dup_client.until_end()
    assert complete is True
    assert frames_of(received) == as_rid(answer(rid), dup_rid)
