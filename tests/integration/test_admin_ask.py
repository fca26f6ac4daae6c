"""``ask()``, the one client of the admin subjects, against a real nats-server: what a
caller gets for an answer, a ``Failure``, silence, nobody, and bytes it cannot read."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import msgspec
import pytest
from nats.aio.msg import Msg

from omnillm.bus import subjects
from omnillm.bus.admin import CostQuery, CostRow, Spend, SpendQuery, Switch, ask
from omnillm.bus.connection import Bus, NatsUnreachable
from omnillm.bus.messages import Failure
from omnillm.embedded import EmbeddedNats
from omnillm.errors import InvalidRequest, NoAnswer, NoRouter, OmniLLMError, RequestTooLarge

pytestmark = pytest.mark.anyio

COST = subjects.admin("cost")
Answer = Callable[[bytes], bytes | None]


@asynccontextmanager
async def answering(url: str, subject: str, answer: Answer) -> AsyncIterator[list[bytes]]:
    """A responder on ``subject`` replying ``answer(query)`` (None: silence); yields the
    queries it received."""
    responder = await Bus.connect(url, name="responder")
    seen: list[bytes] = []

    async def on_msg(msg: Msg) -> None:
        seen.append(msg.data)
        reply = answer(msg.data)
        if reply is not None and msg.reply:
            await responder.publish(msg.reply, reply)

    try:
        await responder.subscribe(subject, on_msg)
        await responder.flush()
        yield seen
    finally:
        await responder.close()


@asynccontextmanager
async def asker(url: str) -> AsyncIterator[Bus]:
    bus = await Bus.connect(url, name="asker")
    try:
        yield bus
    finally:
        await bus.close()


def row(group: str, cost: float) -> CostRow:
    return CostRow(group, 1, 1, 0, 10, 0, 0, 5, 0, cost)


async def test_the_answer_comes_back_decoded_as_the_type_asked(nats_server: EmbeddedNats) -> None:
    def cost_by(query: bytes) -> bytes:
        asked = msgspec.json.decode(query, type=CostQuery)
        return msgspec.json.encode([row(f"by {asked.by}", 0.25)])

    async with answering(nats_server.url, COST, cost_by), asker(nats_server.url) as bus:
        rows = await ask(bus, COST, CostQuery(by="model"), list[CostRow])
    assert rows == [row("by model", 0.25)]


async def test_a_failure_answer_raises_its_error_class_with_its_message(
    nats_server: EmbeddedNats,
) -> None:
    refusal = Failure(code="invalid_request", message="cannot group by 'user'")
    async with answering(nats_server.url, COST, lambda _: msgspec.json.encode(refusal)):
        async with asker(nats_server.url) as bus:
            with pytest.raises(InvalidRequest) as refused:
                await ask(bus, COST, {"by": "user"}, list[CostRow])
    assert refused.value.code == "invalid_request"
    assert refused.value.message == "cannot group by 'user'"


async def test_a_failure_with_a_code_the_error_tree_lacks_keeps_the_code_in_its_message(
    nats_server: EmbeddedNats,
) -> None:
    switch = subjects.admin("switch")
    refusal = Failure(code="from_a_newer_router", message="provider 'nowhere' is not live here")
    async with answering(nats_server.url, switch, lambda _: msgspec.json.encode(refusal)):
        async with asker(nats_server.url) as bus:
            with pytest.raises(OmniLLMError) as refused:
                await ask(bus, switch, {"provider": "nowhere"}, Switch)
    assert type(refused.value) is OmniLLMError
    assert refused.value.message == "from_a_newer_router: provider 'nowhere' is not live here"


async def test_a_failure_is_raised_even_where_any_object_would_decode_as_the_answer(
    nats_server: EmbeddedNats,
) -> None:
    switch = subjects.admin("switch")
    refusal = Failure(code="internal", message="the bucket is gone")
    async with answering(nats_server.url, switch, lambda _: msgspec.json.encode(refusal)):
        async with asker(nats_server.url) as bus:
            with pytest.raises(OmniLLMError, match="the bucket is gone"):
                await ask(bus, switch, {}, Switch)  # Switch() would decode from anything


async def test_nothing_listening_raises_no_router_at_once(nats_server: EmbeddedNats) -> None:
    async with asker(nats_server.url) as bus:
        started = time.monotonic()
        with pytest.raises(NoRouter, match=r"nothing answers on omni\.v1\.admin\.cost"):
            await ask(bus, COST, CostQuery(), list[CostRow], wait_s=5.0)
        took = time.monotonic() - started
    assert took < 2.0


async def test_a_responder_that_stays_silent_raises_no_answer_after_the_wait(
    nats_server: EmbeddedNats,
) -> None:
    async with answering(nats_server.url, COST, lambda _: None) as seen:
        async with asker(nats_server.url) as bus:
            with pytest.raises(NoAnswer, match=r"no answer on omni\.v1\.admin\.cost within 0\.2 s"):
                await ask(bus, COST, CostQuery(), list[CostRow], wait_s=0.2)
    assert len(seen) == 1


async def test_a_query_over_the_servers_limit_is_refused_before_it_is_sent(
    nats_server: EmbeddedNats,
) -> None:
    spend = subjects.admin("spend")
    total = msgspec.json.encode(Spend(cost_usd=1.5))
    async with answering(nats_server.url, spend, lambda _: total) as seen:
        async with asker(nats_server.url) as bus:
            huge = b'"' + b"x" * bus.max_payload + b'"'
            with pytest.raises(RequestTooLarge, match="over the server's max_payload"):
                await ask(bus, spend, huge, Spend)
            after = await ask(bus, spend, SpendQuery(), Spend)
    assert seen == [b'{"since":null,"key":null}']  # only the query that fitted went out
    assert after == Spend(cost_usd=1.5)


@pytest.mark.parametrize(
    "reply", [b"not json", b"\xff", b"[" * 100_000, b'{"cost_usd": "lots"}'], ids=repr
)
async def test_an_answer_that_cannot_be_read_raises_naming_the_subject(
    nats_server: EmbeddedNats, reply: bytes
) -> None:
    spend = subjects.admin("spend")
    async with answering(nats_server.url, spend, lambda _: reply), asker(nats_server.url) as bus:
        with pytest.raises(OmniLLMError, match=r"unexpected answer on omni\.v1\.admin\.spend"):
            await ask(bus, spend, SpendQuery(), Spend)


async def test_a_relay_asking_for_raw_gets_a_failure_as_it_came(nats_server: EmbeddedNats) -> None:
    refusal = b'{"code":"unknown_provider","message":"no provider named nope"}'
    switch = subjects.admin("switch")
    async with answering(nats_server.url, switch, lambda _: refusal):
        async with asker(nats_server.url) as bus:
            answer = await ask(bus, switch, b'{"provider":"nope"}', msgspec.Raw)
    assert bytes(answer) == refusal


async def test_asking_on_a_closed_connection_raises_nats_unreachable(
    nats_server: EmbeddedNats,
) -> None:
    async with asker(nats_server.url) as bus:
        await bus.nc.close()
        with pytest.raises(NatsUnreachable, match=r"cannot ask on omni\.v1\.admin\.cost"):
            await ask(bus, COST, CostQuery(), list[CostRow])
