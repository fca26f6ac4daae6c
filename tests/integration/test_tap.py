"""``omni tap`` on a real nats-server: one readable line per message, JSON lines, and the
``--request-id`` filter."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial

import anyio
import pytest

from omnillm.bus import subjects
from omnillm.bus.connection import RID_HEADER, Bus
from omnillm.bus.events import Event, emit
from omnillm.bus.messages import (
    END_OF_STREAM,
    CallEnvelope,
    Candidate,
    ChatRequest,
    Classified,
    Delta,
    Done,
    Error,
    Message,
    Start,
    TokenUsage,
    Usage,
    encode,
)
from omnillm.embedded import EmbeddedNats
from omnillm.tap import summarize, tap

pytestmark = pytest.mark.anyio

WAIT_S = 10.0
QUESTION = "Please explain, in plain words and with one example, " + "why the sky is blue " * 4


class Lines(io.StringIO):
    """What the tap printed; a test can wait for a number of lines."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = anyio.Event()

    def write(self, text: str) -> int:
        written = super().write(text)
        self._changed.set()
        self._changed = anyio.Event()
        return written

    def lines(self) -> list[str]:
        return self.getvalue().splitlines()

    async def until(self, count: int) -> list[str]:
        try:
            with anyio.fail_after(WAIT_S):
                while len(self.lines()) < count:
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"waited {WAIT_S}s for {count} lines; got {self.getvalue()!r}"
            ) from None
        return self.lines()


@asynccontextmanager
async def tapping(
    url: str, subject: str | Sequence[str], *, rid: str | None = None, as_json: bool = False
) -> AsyncIterator[tuple[Lines, Bus]]:
    """A running tap writing to ``Lines``, and a connection to publish with."""
    out, stop = Lines(), anyio.Event()
    bus = await Bus.connect(url)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(partial(tap, url, subject, rid=rid, as_json=as_json, out=out, stop=stop))
            yield out, bus
            stop.set()
    finally:
        await bus.close()


def envelope(rid: str, reply: str) -> CallEnvelope:
    request = ChatRequest(messages=[Message(role="user", content=QUESTION)])
    candidates = [Candidate("mock", "mock/mock-small"), Candidate("mock", "mock/mock-large")]
    return CallEnvelope(
        rid=rid,
        request=request,
        reply=reply,
        deadline=0.0,
        classified=Classified(tier="medium"),
        candidates=candidates,
        index=1,
        attempt=2,
    )


async def publish_request(bus: Bus, rid: str) -> None:
    """What one request puts on the bus: the request, envelopes, frames, events, usage."""
    inbox, head = f"_INBOX.me.{rid}", {RID_HEADER: rid}
    request = {"model": "auto", "messages": [{"role": "user", "content": QUESTION}]}
    await bus.publish(subjects.REQUEST, json.dumps(request).encode(), headers=head, reply=inbox)
    await bus.publish(subjects.call("mock"), encode(envelope(rid, inbox)), headers=head)
    await bus.publish(inbox, encode(Start(rid, 2, 0, "mock", "mock-large")), headers=head)
    await bus.publish(inbox, encode(Delta(rid, 2, 1, text="Rayleigh")), headers=head)
    usage = TokenUsage(input_tokens=30, output_tokens=2)
    done = Done(rid, 2, 2, "stop", "mock", "mock-large", usage=usage, cost_usd=0.0012, attempts=2)
    await bus.publish(inbox, encode(done), headers=head)
    await bus.publish(inbox, END_OF_STREAM)
    await emit(bus, Event("outcome", rid, "mock", "mock/mock-large", "ok", 2, {"ttft_ms": 12.5}))
    record = Usage(rid, 2, "mock", "mock/mock-large", "ok", tokens=usage, cost_usd=0.0012)
    await bus.publish(subjects.usage("mock"), encode(record), headers=head)


async def test_every_message_of_a_request_gets_one_readable_line(
    nats_server: EmbeddedNats,
) -> None:
    async with tapping(nats_server.url, ">") as (out, bus):
        await publish_request(bus, "req1")
        lines = await out.until(8)

    request, call, start, delta, done, end, outcome, usage = lines
    preview = QUESTION[:59] + "…"  # the last user turn, cut to 60 characters
    assert request.endswith(f" req1 omni.v1.request request model=auto messages=1 text='{preview}'")
    assert "omni.v1.call.mock envelope attempt=2 tier=medium candidate=mock/mock-large" in call
    assert "index=2/2" in call
    assert "_INBOX.me.req1 start attempt=2 seq=0 provider=mock model=mock-large" in start
    assert "delta attempt=2 seq=1 chars=8" in delta
    assert "done attempt=2 seq=2 provider=mock model=mock-large finish=stop in=30 out=2" in done
    assert "cost_usd=0.0012" in done
    assert end.endswith(" - _INBOX.me.req1 end")  # the sentinel carries no header
    assert "omni.v1.events.outcome event.outcome provider=mock model=mock/mock-large" in outcome
    assert "reason=ok attempt=2 ttft_ms=12.5" in outcome
    assert "omni.v1.usage.mock usage provider=mock model=mock/mock-large outcome=ok" in usage


async def test_json_lines_carry_the_subject_request_id_and_summary(
    nats_server: EmbeddedNats,
) -> None:
    async with tapping(nats_server.url, "_INBOX.>", as_json=True) as (out, bus):
        failure = Error("req2", 0, 0, code="no_candidates", message="nothing can see images")
        await bus.publish("_INBOX.me.req2", encode(failure), headers={RID_HEADER: "req2"})
        await bus.publish("_INBOX.me.req2", END_OF_STREAM)
        lines = await out.until(2)

    error, end = (json.loads(line) for line in lines)
    assert error["subject"] == "_INBOX.me.req2"
    assert error["rid"] == "req2"
    assert error["kind"] == "error"
    assert error["code"] == "no_candidates"
    assert error["message"] == "nothing can see images"
    assert end["kind"] == "end"
    assert end["rid"] is None


async def test_the_request_id_filter_keeps_one_request_and_its_end_of_stream(
    nats_server: EmbeddedNats,
) -> None:
    async with tapping(nats_server.url, ">", rid="req1") as (out, bus):
        await publish_request(bus, "other")
        await publish_request(bus, "req1")
        lines = await out.until(8)

    assert len(lines) == 8
    assert not any("other" in line for line in lines)
    assert sum(" req1 " in line for line in lines) == 7
    assert lines[5].endswith("_INBOX.me.req1 end")


async def test_tapping_several_subjects_and_a_message_no_schema_knows(
    nats_server: EmbeddedNats,
) -> None:
    async with tapping(nats_server.url, ["omni.v1.plan", "custom.>"]) as (out, bus):
        await bus.publish(subjects.PLAN, b"{not json")
        lines = await out.until(1)
        await bus.publish("custom.thing", b'{"type": "accepted"}')
        lines = await out.until(2)

    assert "omni.v1.plan invalid bytes=9 error=" in lines[0]
    assert lines[1].endswith(" - custom.thing accepted")


async def test_the_tap_ends_when_its_output_is_closed(nats_server: EmbeddedNats) -> None:
    out = Lines()
    out.close()  # as when `omni tap | head` has read enough
    bus = await Bus.connect(nats_server.url)
    try:
        with anyio.fail_after(WAIT_S):
            async with anyio.create_task_group() as tg:
                await tg.start(partial(tap, nats_server.url, "omni.v1.>", out=out))
                await bus.publish(subjects.PLAN, b"{}")
    finally:
        await bus.close()


def test_jetstream_traffic_is_not_mistaken_for_the_end_of_a_stream() -> None:
    assert summarize("$JS.API.STREAM.INFO.KV_omni_health", None, b"") == {
        "kind": "system",
        "bytes": 0,
    }
    assert summarize("_INBOX.me.r1", None, b"") == {"kind": "end"}
    assert summarize("_INBOX.me.r1", {"Status": "503"}, b"") == {"kind": "no_responders"}
