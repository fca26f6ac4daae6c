"""The token-stream protocol, both sides.

A stream is a sequence of frames published to the client's reply subject, then
one empty message. Every frame carries ``rid``, ``attempt`` and ``seq``; ``seq``
starts at 0 for each attempt. The receiver:

- drops frames of an attempt older than the newest it has seen (a superseded caller);
- treats a ``seq`` gap as an error, never as text (a dropped frame is a hole);
- applies a first-frame timeout, a stall timeout between frames and a total deadline;
- treats a 503 status in place of a frame as "no router is running".
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Final, Protocol

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream
from nats.aio.msg import Msg

from omnillm.bus import subjects
from omnillm.bus.connection import RID_HEADER, Bus
from omnillm.bus.events import Event, emit
from omnillm.bus.messages import (
    END_OF_STREAM,
    Delta,
    Done,
    Error,
    Failure,
    Frame,
    Heartbeat,
    Reset,
    Start,
    TokenUsage,
    ToolCallDelta,
    decode_frame,
    encode,
)
from omnillm.errors import (
    DeadlineExceeded,
    FirstFrameTimeout,
    NoRouter,
    StreamGap,
    StreamStalled,
)

__all__ = ["FrameRecorder", "FrameSequencer", "StreamSender", "read_frames", "send_failure"]

NO_RESPONDERS: Final = "503"


class FrameRecorder(Protocol):
    """Keeps a copy of a keyed request's frames, so duplicates can be served them."""

    async def record(self, rid: str, payload: bytes) -> None: ...

    async def end(self, rid: str) -> None: ...


class StreamSender:
    """Publishes one attempt's frames to a client, numbering them (and recording them,
    for a request with an idempotency key)."""

    def __init__(
        self,
        bus: Bus,
        reply: str,
        rid: str,
        attempt: int,
        *,
        recorder: FrameRecorder | None = None,
        about: Start | None = None,
    ) -> None:
        self.about = about
        """A ``Start`` carrying the routing decision (tier, reasons, cost, skipped)."""
        self._bus = bus
        self._reply = reply
        self._rid = rid
        self._attempt = attempt
        self._headers = {RID_HEADER: rid}
        self._recorder = recorder
        self._start: Start | None = None
        self.seq = 0
        self.closed = False

    async def _send(self, frame: Frame) -> None:
        self.seq += 1
        payload = encode(frame)
        await self._bus.publish(self._reply, payload, headers=self._headers)
        if self._recorder is not None:
            await self._recorder.record(self._rid, payload)

    async def start(self, provider: str, model: str) -> None:
        """The attempt's ``Start``, sent with the ``delta`` that follows it."""
        frame = Start(self._rid, self._attempt, self.seq, provider, model)
        if self.about is not None:  # why the router chose this
            frame = msgspec.structs.replace(
                self.about,
                rid=self._rid,
                attempt=self._attempt,
                seq=self.seq,
                provider=provider,
                model=model,
            )
        self._start = frame

    async def delta(self, text: str, tool_calls: list[ToolCallDelta] | None = None) -> None:
        start, self._start = self._start, None
        await self._send(
            Delta(
                self._rid,
                self._attempt,
                self.seq,
                text=text,
                tool_calls=tool_calls or [],
                start=start,
            )
        )

    async def reset(self, reason: str) -> None:
        await self._send(Reset(self._rid, self._attempt, self.seq, reason))

    async def heartbeat(self) -> None:
        await self._send(Heartbeat(self._rid, self._attempt, self.seq))

    async def done(
        self,
        *,
        finish_reason: str,
        provider: str,
        model: str,
        usage: TokenUsage,
        cost_usd: float,
        attempts: int,
        ttft_ms: float | None,
        model_id: str = "",
    ) -> None:
        """The answer is whole: ``Done``, the end of the stream, and the ``end`` event,
        which for a success is also the successful call's outcome (``model_id``, the
        catalog id, ``detail.ok`` 1 and ``detail.ttft_ms``): one event where two said
        the same."""
        frame = Done(
            self._rid,
            self._attempt,
            self.seq,
            finish_reason=finish_reason,
            provider=provider,
            model=model,
            usage=usage,
            cost_usd=cost_usd,
            attempts=attempts,
            ttft_ms=ttft_ms,
        )
        await self._send(frame)
        called: dict[str, str | float | int] = {"ok": 1.0}
        if ttft_ms is not None:
            called["ttft_ms"] = ttft_ms
        await self._end("ok", provider, model_id or model, called)

    async def error(self, failure: Failure) -> None:
        frame = Error(
            self._rid,
            self._attempt,
            self.seq,
            code=failure.code,
            message=failure.message,
            retryable=failure.retryable,
            provider=failure.provider,
        )
        await self._send(frame)
        await self._end(failure.code, failure.provider or "", "")

    async def _end(
        self,
        outcome: str,
        provider: str,
        model: str,
        detail: dict[str, str | float | int] | None = None,
    ) -> None:
        # The sentinel carries no headers: a zero-length message is what releases
        # cross-account response mappings too.
        await self._bus.publish(self._reply, END_OF_STREAM)
        if self._recorder is not None:
            await self._recorder.end(self._rid)
        self.closed = True
        tier = self.about.tier if self.about is not None else ""
        event = Event(
            kind="end",
            rid=self._rid,
            provider=provider,
            model=model,
            reason=outcome,
            attempt=self._attempt,
            detail={"tier": tier, **(detail or {})},
        )
        await emit(self._bus, event)


async def send_failure(
    bus: Bus,
    reply: str,
    rid: str,
    attempt: int,
    failure: Failure,
    *,
    recorder: FrameRecorder | None = None,
) -> None:
    """End a client's stream with one ``Error`` frame (used before any caller ran)."""
    if reply:
        await StreamSender(bus, reply, rid, attempt, recorder=recorder).error(failure)


class FrameSequencer:
    """Attempt fencing and gap detection, without I/O."""

    def __init__(self) -> None:
        self.attempt = -1
        self.next_seq = 0

    def admit(self, frame: Frame) -> bool:
        """True if ``frame`` belongs in the stream; raise ``StreamGap`` on a hole."""
        if frame.attempt < self.attempt:
            return False
        if frame.attempt > self.attempt:
            self.attempt, self.next_seq = frame.attempt, 0
        if frame.seq != self.next_seq:
            raise StreamGap(
                f"frame {self.next_seq} of attempt {frame.attempt} is missing "
                f"(got {frame.seq}); the answer would have a hole"
            )
        self.next_seq += 1
        return True


async def read_frames(
    messages: MemoryObjectReceiveStream[Msg],
    *,
    first_frame_s: float,
    stall_s: float,
    deadline: float,
) -> AsyncGenerator[Frame, None]:
    """Yield a stream's frames in order until ``Done``/``Error`` or the sentinel.

    ``deadline`` is a ``time.time()`` value. Heartbeats reset the stall timer and
    are not yielded. The caller must close this generator (``aclosing``).
    """
    sequencer = FrameSequencer()
    wait = first_frame_s
    error_cls: type[FirstFrameTimeout | StreamStalled] = FirstFrameTimeout
    while True:
        msg = await _next_message(messages, wait, error_cls, deadline)
        if msg.data == END_OF_STREAM and not msg.headers:
            return
        if msg.headers and msg.headers.get("Status") == NO_RESPONDERS:
            raise NoRouter(f"no router is running: nobody subscribes to {subjects.REQUEST}")
        frame = decode_frame(msg.data)
        if not sequencer.admit(frame):
            continue
        wait, error_cls = stall_s, StreamStalled
        if isinstance(frame, Delta) and frame.start is not None:
            yield frame.start
        if not isinstance(frame, Heartbeat):
            yield frame
        if isinstance(frame, Done | Error):
            return


async def _next_message(
    messages: MemoryObjectReceiveStream[Msg],
    wait: float,
    error_cls: type[FirstFrameTimeout | StreamStalled],
    deadline: float,
) -> Msg:
    remaining = deadline - time.time()
    if remaining <= 0:
        raise DeadlineExceeded("the request's deadline passed before the answer was complete")
    try:  # a frame already waiting needs no timer (under load, most do)
        return messages.receive_nowait()
    except anyio.WouldBlock:
        pass
    except anyio.EndOfStream:
        raise StreamGap("frames were dropped: the reader fell behind") from None
    budget = min(wait, remaining)
    with anyio.move_on_after(budget):
        try:
            return await messages.receive()
        except anyio.EndOfStream:
            raise StreamGap("frames were dropped: the reader fell behind") from None
    if budget == remaining:
        raise DeadlineExceeded("the request's deadline passed before the answer was complete")
    if error_cls is FirstFrameTimeout:
        raise FirstFrameTimeout(f"no answer within {wait:g}s")
    raise StreamStalled(f"the stream stalled: no frame for {wait:g}s")
