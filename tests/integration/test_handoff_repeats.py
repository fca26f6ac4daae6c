"""A handoff actor runs an offer once, even when the sender, hearing nothing in time,
offers the same bytes again and the queue group picks the same instance."""

from __future__ import annotations

import anyio
import pytest
from nats.aio.msg import Msg

from omnillm.actors.base import HandoffActor
from omnillm.bus.connection import Bus
from omnillm.bus.handoff import Outcome, hand_off
from omnillm.embedded import EmbeddedNats

pytestmark = pytest.mark.anyio

SUBJECT = "omni.v1.test.offers"


class Recording(HandoffActor):
    name = "recording"

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus, subject=SUBJECT, queue="recording", concurrency=4)
        self.handled: list[bytes] = []

    async def handle(self, msg: Msg) -> None:
        self.handled.append(msg.data)


async def test_a_repeated_offer_is_accepted_again_and_run_once(nats_server: EmbeddedNats) -> None:
    bus = await Bus.connect(nats_server.url, name="offers-test")
    actor = Recording(bus)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(actor.run)
            first = await hand_off(bus, SUBJECT, b'{"rid":"r1","attempt":1}', rid="r1", wait_s=5)
            again = await hand_off(bus, SUBJECT, b'{"rid":"r1","attempt":1}', rid="r1", wait_s=5)
            other = await hand_off(bus, SUBJECT, b'{"rid":"r1","attempt":2}', rid="r1", wait_s=5)
            actor.stop()
    finally:
        await bus.close()
    assert first == again == other == Outcome.ACCEPTED
    assert actor.handled == [b'{"rid":"r1","attempt":1}', b'{"rid":"r1","attempt":2}']
