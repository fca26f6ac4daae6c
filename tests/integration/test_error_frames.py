"""An ``Error`` frame from the router reaches a Python client as its own class, on a real
nats-server: codes raised beside the actors (the caller's open circuit, the classifier's
full backlog) included."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from nats.aio.msg import Msg

from omnillm.bus import subjects
from omnillm.bus.connection import RID_HEADER, Bus
from omnillm.bus.messages import Failure
from omnillm.bus.stream import send_failure
from omnillm.embedded import EmbeddedNats
from omnillm.errors import CircuitOpen, OmniLLMError, ProviderUnavailable, RouterBusy, RoutingError
from tests.conftest import client_for

pytestmark = pytest.mark.anyio

ASK = {"messages": [{"role": "user", "content": "hi"}]}


@asynccontextmanager
async def router_failing_with(url: str, failure: Failure) -> AsyncIterator[None]:
    """A stand-in router: every request ends in ``failure``, as the actors send it."""
    bus = await Bus.connect(url, name="stand-in-router")

    async def answer(msg: Msg) -> None:
        rid = (msg.headers or {})[RID_HEADER]
        await send_failure(bus, msg.reply, rid, 1, failure)

    try:
        await bus.subscribe(subjects.REQUEST, answer)
        await bus.flush()
        yield
    finally:
        await bus.close()


@pytest.mark.parametrize(
    ("code", "raised", "caught_as"),
    [("circuit_open", CircuitOpen, ProviderUnavailable), ("busy", RouterBusy, RoutingError)],
)
async def test_an_error_frame_raises_its_own_class_keeping_its_code(
    nats_server: EmbeddedNats,
    code: str,
    raised: type[OmniLLMError],
    caught_as: type[OmniLLMError],
) -> None:
    failure = Failure(code=code, message="mock/mock-small: it failed", provider="mock")
    async with router_failing_with(nats_server.url, failure), client_for(nats_server.url) as client:
        with pytest.raises(caught_as) as caught:
            await client.complete(ASK)
    assert type(caught.value) is raised
    assert (caught.value.code, caught.value.provider) == (code, "mock")
    assert caught.value.message == "mock/mock-small: it failed"
    assert caught.value.retryable
