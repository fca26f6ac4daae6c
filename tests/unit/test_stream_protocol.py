"""The token-stream protocol as a client reads it: fencing, gaps, timeouts, the end."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from anyio.abc import ObjectSendStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from omnillm.bus.messages import (
    END_OF_STREAM,
    Delta,
    Done,
    Error,
    Frame,
    Heartbeat,
    Start,
    encode,
)
from omnillm.bus.stream import FrameSequencer, read_frames
from omnillm.errors import (
    DeadlineExceeded,
    FirstFrameTimeout,
    NoRouter,
    StreamGap,
    StreamStalled,
)

RID = "r1"
NEVER = 60.0
"""A timeout that a passing test never reaches."""
SHORT = 0.05
"""A timeout that expires because nothing will ever arrive."""


@dataclass
class FakeMsg:
    """What ``read_frames`` reads from a message: its bytes and its headers."""

    data: bytes
    headers: dict[str, str] | None = None


def msg(frame: Frame) -> FakeMsg:
    return FakeMsg(encode(frame))


def start(seq: int = 0, attempt: int = 0) -> Start:
    return Start(RID, attempt, seq, "local", "small")


def delta(seq: int, text: str, attempt: int = 0) -> Delta:
    return Delta(RID, attempt, seq, text=text)


def done(seq: int, attempt: int = 0) -> Done:
    return Done(RID, attempt, seq, finish_reason="stop", provider="local", model="small")


def heartbeat(seq: int, attempt: int = 0) -> Heartbeat:
    return Heartbeat(RID, attempt, seq)


@asynccontextmanager
async def inbox(
    *messages: FakeMsg, buffer: int = 64
) -> AsyncIterator[tuple[MemoryObjectSendStream[Any], MemoryObjectReceiveStream[Any]]]:
    send, receive = anyio.create_memory_object_stream[Any](buffer)
    for message in messages:
        send.send_nowait(message)
    async with send, receive:
        yield send, receive


async def collect(
    receive: MemoryObjectReceiveStream[Any],
    *,
    first_frame_s: float = NEVER,
    stall_s: float = NEVER,
    deadline_in: float = NEVER,
) -> list[Frame]:
    frames = read_frames(
        receive, first_frame_s=first_frame_s, stall_s=stall_s, deadline=time.time() + deadline_in
    )
    async with aclosing(frames):
        return [frame async for frame in frames]


# --- FrameSequencer ------------------------------------------------------------------


def test_sequencer_admits_frames_numbered_from_zero() -> None:
    sequencer = FrameSequencer()

    admitted = [sequencer.admit(f) for f in (start(0), delta(1, "a"), delta(2, "b"), done(3))]

    assert admitted == [True, True, True, True]


def test_sequencer_drops_frames_of_an_older_attempt() -> None:
    sequencer = FrameSequencer()
    sequencer.admit(start(0, attempt=2))

    assert sequencer.admit(delta(1, "late text from a superseded caller", attempt=1)) is False
    assert sequencer.admit(delta(1, "current", attempt=2)) is True


def test_sequencer_restarts_numbering_for_a_newer_attempt() -> None:
    sequencer = FrameSequencer()
    for frame in (start(0, attempt=1), delta(1, "a", attempt=1), delta(2, "b", attempt=1)):
        sequencer.admit(frame)

    assert sequencer.admit(start(0, attempt=2)) is True
    assert sequencer.admit(delta(1, "fresh", attempt=2)) is True


def test_sequencer_raises_on_a_missing_frame_and_names_it() -> None:
    sequencer = FrameSequencer()
    sequencer.admit(start(0, attempt=3))
    sequencer.admit(delta(1, "a", attempt=3))

    with pytest.raises(StreamGap, match=r"frame 2 of attempt 3 is missing \(got 4\)"):
        sequencer.admit(delta(4, "d", attempt=3))


def test_sequencer_raises_when_a_new_attempt_does_not_start_at_zero() -> None:
    sequencer = FrameSequencer()
    sequencer.admit(start(0, attempt=0))

    with pytest.raises(StreamGap, match=r"frame 0 of attempt 1 is missing \(got 2\)"):
        sequencer.admit(delta(2, "x", attempt=1))


def test_sequencer_raises_on_a_repeated_frame() -> None:
    sequencer = FrameSequencer()
    sequencer.admit(start(0))
    sequencer.admit(delta(1, "a"))

    with pytest.raises(StreamGap, match="frame 2 of attempt 0 is missing"):
        sequencer.admit(delta(1, "a"))


# --- read_frames ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_read_frames_yields_start_deltas_done_in_order() -> None:
    sent: list[Frame] = [start(0), delta(1, "Hel"), delta(2, "lo"), done(3)]
    async with inbox(*map(msg, sent)) as (_, receive):
        frames = await collect(receive)

    assert frames == sent
    assert "".join(f.text for f in frames if isinstance(f, Delta)) == "Hello"


@pytest.mark.anyio
async def test_read_frames_stops_at_done_and_leaves_later_messages_unread() -> None:
    after = FakeMsg(b"not a frame at all")
    async with inbox(msg(start(0)), msg(done(1)), after) as (_, receive):
        frames = await collect(receive)
        leftover = receive.receive_nowait()

    assert [type(f) for f in frames] == [Start, Done]
    assert leftover is after


@pytest.mark.anyio
async def test_read_frames_stops_at_an_error_frame() -> None:
    error = Error(RID, 0, 1, code="rate_limited", message="slow down", retryable=True)
    async with inbox(msg(start(0)), msg(error)) as (_, receive):
        frames = await collect(receive)

    assert frames == [start(0), error]


@pytest.mark.anyio
async def test_read_frames_stops_at_the_empty_end_of_stream_message() -> None:
    async with inbox(msg(start(0)), msg(delta(1, "partial")), FakeMsg(END_OF_STREAM)) as (
        _,
        receive,
    ):
        frames = await collect(receive)

    assert frames == [start(0), delta(1, "partial")]


@pytest.mark.anyio
async def test_read_frames_drops_frames_of_a_superseded_attempt() -> None:
    sent: list[Frame] = [
        start(0, attempt=1),
        delta(1, "old", attempt=1),
        start(0, attempt=2),
        delta(2, "stale", attempt=1),
        delta(1, "new", attempt=2),
        done(2, attempt=2),
    ]
    async with inbox(*map(msg, sent)) as (_, receive):
        frames = await collect(receive)

    texts = [f.text for f in frames if isinstance(f, Delta)]
    assert texts == ["old", "new"]
    assert isinstance(frames[-1], Done) and frames[-1].attempt == 2


@pytest.mark.anyio
async def test_read_frames_raises_on_a_gap_instead_of_yielding_a_holed_answer() -> None:
    async with inbox(msg(start(0)), msg(delta(1, "a")), msg(delta(3, "c"))) as (_, receive):
        frames = read_frames(receive, first_frame_s=NEVER, stall_s=NEVER, deadline=time.time() + 60)
        seen: list[Frame] = []
        with pytest.raises(StreamGap, match="frame 2 of attempt 0 is missing"):
            async with aclosing(frames):
                async for frame in frames:
                    seen.append(frame)

    assert seen == [start(0), delta(1, "a")]


@pytest.mark.anyio
async def test_read_frames_does_not_yield_heartbeats() -> None:
    sent: list[Frame] = [start(0), heartbeat(1), delta(2, "hi"), heartbeat(3), done(4)]
    async with inbox(*map(msg, sent)) as (_, receive):
        frames = await collect(receive)

    assert [type(f) for f in frames] == [Start, Delta, Done]


@pytest.mark.anyio
async def test_a_start_carried_by_the_first_delta_is_read_as_its_own_frame() -> None:
    opening = Delta(RID, 0, 1, text="hi", start=start(1))
    sent: list[Frame] = [heartbeat(0), opening, delta(2, " there"), done(3)]
    async with inbox(*map(msg, sent)) as (_, receive):
        frames = await collect(receive)

    assert [type(f) for f in frames] == [Start, Delta, Delta, Done]
    assert frames[0] == start(1)
    assert "".join(f.text for f in frames if isinstance(f, Delta)) == "hi there"


@pytest.mark.anyio
async def test_a_heartbeat_counts_as_the_first_frame() -> None:
    # After a heartbeat the first-frame limit (60 s) no longer applies: the stall limit does.
    async with inbox(msg(heartbeat(0))) as (_, receive):
        with pytest.raises(StreamStalled, match=r"no frame for 0\.05s"):
            await collect(receive, first_frame_s=NEVER, stall_s=SHORT)


@pytest.mark.anyio
async def test_heartbeats_keep_a_slow_stream_alive_past_the_stall_limit() -> None:
    stall_s, beats, interval = 0.5, 12, 0.05  # 0.6 s of heartbeats, each well inside 0.5 s

    async def caller(send: ObjectSendStream[Any]) -> None:
        await send.send(msg(start(0)))
        for seq in range(1, beats + 1):
            await anyio.sleep(interval)
            await send.send(msg(heartbeat(seq)))
        await send.send(msg(done(beats + 1)))

    began = time.monotonic()
    async with inbox() as (send, receive), anyio.create_task_group() as tg:
        tg.start_soon(caller, send)
        frames = await collect(receive, stall_s=stall_s)

    assert time.monotonic() - began > stall_s
    assert [type(f) for f in frames] == [Start, Done]


@pytest.mark.anyio
async def test_a_503_status_means_no_router_is_running() -> None:
    async with inbox(FakeMsg(b"", {"Status": "503"})) as (_, receive):
        with pytest.raises(NoRouter, match=r"no router is running.*omni\.v1\.request"):
            await collect(receive)


@pytest.mark.anyio
async def test_nothing_arriving_raises_first_frame_timeout() -> None:
    async with inbox() as (_, receive):
        with pytest.raises(FirstFrameTimeout, match=r"no answer within 0\.05s"):
            await collect(receive, first_frame_s=SHORT)


@pytest.mark.anyio
async def test_silence_after_the_first_frame_raises_stream_stalled() -> None:
    async with inbox(msg(start(0)), msg(delta(1, "half an"))) as (_, receive):
        with pytest.raises(StreamStalled, match=r"the stream stalled: no frame for 0\.05s"):
            await collect(receive, first_frame_s=NEVER, stall_s=SHORT)


@pytest.mark.anyio
async def test_the_total_deadline_wins_over_a_longer_stall_limit() -> None:
    async with inbox(msg(start(0))) as (_, receive):
        with pytest.raises(DeadlineExceeded, match="deadline passed"):
            await collect(receive, stall_s=NEVER, deadline_in=SHORT)


@pytest.mark.anyio
async def test_a_deadline_already_past_raises_before_reading() -> None:
    async with inbox(msg(start(0)), msg(done(1))) as (_, receive):
        with pytest.raises(DeadlineExceeded):
            await collect(receive, deadline_in=-1.0)


@pytest.mark.anyio
async def test_a_closed_inbox_before_the_end_raises_stream_gap() -> None:
    async with inbox(msg(start(0)), msg(delta(1, "cut"))) as (send, receive):
        await send.aclose()
        with pytest.raises(StreamGap, match="frames were dropped"):
            await collect(receive)
