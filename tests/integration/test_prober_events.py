"""What the prober learns from the bus: a failed call's ``outcome``, and a successful
call's outcome carried by its request's ``end`` event."""

from __future__ import annotations

import anyio
import pytest
from nats.aio.msg import Msg

from omnillm.actors.prober import ProberActor
from omnillm.bus.connection import Bus
from omnillm.bus.events import Event, emit
from omnillm.embedded import EmbeddedNats
from omnillm.testing.mock_provider import MockProvider
from tests.conftest import mock_settings

pytestmark = pytest.mark.anyio

SENTINEL = "mock/sentinel"


class WatchedProber(ProberActor):
    """Says when it has read the sentinel model's two events, published last: one per
    subscription, each read in order (the two subscriptions are read independently)."""

    sentinels = 0
    seen_sentinels = anyio.Event()

    async def _on_outcome(self, msg: Msg) -> None:
        await super()._on_outcome(msg)
        if SENTINEL.encode() in msg.data:
            self.sentinels += 1
            if self.sentinels == 2:
                self.seen_sentinels.set()


async def test_the_prober_learns_from_failed_outcomes_and_successful_ends(
    nats_server: EmbeddedNats, mock_provider: MockProvider
) -> None:
    bus = await Bus.connect(nats_server.url)
    prober = WatchedProber(bus, mock_settings(mock_provider), [])
    prober.seen_sentinels = anyio.Event()
    small = "mock/mock-small"
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(prober.run)
            detail: dict[str, str | float | int] = {"tier": "simple", "ok": 1.0, "ttft_ms": 40}
            for event in (
                Event("end", "r1", "mock", small, "ok", 1, detail),
                Event("outcome", "r2", "mock", small, "rate_limited", 1, {"ok": 0.0}),
                Event("end", "r2", "mock", "", "rate_limited", 1, {"tier": "simple"}),
                Event("end", "r3", reason="no_candidates", detail={"tier": ""}),
                Event("outcome", "r4", "mock", SENTINEL, "timeout", 1, {"ok": 0.0}),
                Event("end", "r5", "mock", SENTINEL, "ok", 1, {"tier": "simple", "ok": 1.0}),
            ):
                await emit(bus, event)
            with anyio.fail_after(10):
                await prober.seen_sentinels.wait()
            prober.stop()
    finally:
        await bus.close()

    stat = prober.averages.stats[small]
    assert stat.samples == 2  # the success and the failed call; the failed requests' ends not
    assert stat.ttft_ms == 40
    assert stat.error_rate == pytest.approx(0.3)  # one failure after one success, alpha 0.3
    assert set(prober.averages.stats) == {small, SENTINEL}
