"""The health prober: latency from every call, and a probe for every provider.

Passive: callers publish an ``outcome`` event after every call; the prober keeps an
exponentially weighted average of each model's time to first token and error rate,
and writes the ones that changed to the ``omni_health`` bucket every second, where
the planner's latency strategy and ``omni providers`` read them. Every prober in the
cluster computes the same averages from the same events, so running several only
repeats the writes.

Active: a one-token request to each served provider's cheapest model, every
``probe_interval_s`` (0: never). The probe goes through the breaker like any call:
for an open breaker past its cooldown it is the single half-open probe, so a
provider that recovered gets traffic back within a cooldown, without waiting for a
user's request to find out. A probe that succeeds also clears a rejected-key mark.
"""

from __future__ import annotations

import logging
import time
from typing import Final

import anyio
import httpx
import msgspec
from anyio.abc import TaskStatus
from nats.aio.msg import Msg

from omnillm.actors.boards import Boards
from omnillm.actors.caller.policy import health_state, rule_for
from omnillm.actors.caller.upstream import Call, Discard, new_transport, upstream_for
from omnillm.bus import subjects
from omnillm.bus.connection import Bus
from omnillm.bus.events import Event
from omnillm.bus.messages import ChatRequest, LatencyStat, Message, ProviderHealth
from omnillm.config import Settings
from omnillm.errors import OmniLLMError, ProviderError, RequestError
from omnillm.providers.catalog import ModelSpec

__all__ = ["LatencyAverages", "ProberActor"]

log = logging.getLogger("omnillm.prober")

ALPHA: Final = 0.3
"""Weight of the newest sample in the moving averages."""
PUBLISH_EVERY_S: Final = 1.0
PROBE: Final = ChatRequest(messages=[Message(role="user", content="ping")], max_tokens=1)
_event_decoder: Final = msgspec.json.Decoder(Event)


class LatencyAverages:
    """Moving averages per model, without I/O."""

    def __init__(self, alpha: float = ALPHA) -> None:
        self.alpha = alpha
        self.stats: dict[str, LatencyStat] = {}
        self.dirty: set[str] = set()

    def add(self, provider: str, model: str, ok: bool, ttft_ms: float | None, at: float) -> None:
        old = self.stats.get(model)
        failed = 0.0 if ok else 1.0
        if old is None:
            ttft = ttft_ms if ok and ttft_ms is not None else 0.0
            self.stats[model] = LatencyStat(provider, model, ttft, failed, 1, at)
        else:
            ttft = old.ttft_ms
            if ok and ttft_ms is not None:
                ttft = ttft_ms if ttft == 0.0 else ttft + self.alpha * (ttft_ms - ttft)
            rate = old.error_rate + self.alpha * (failed - old.error_rate)
            self.stats[model] = LatencyStat(provider, model, ttft, rate, old.samples + 1, at)
        self.dirty.add(model)

    def take_dirty(self) -> list[LatencyStat]:
        changed = [self.stats[model] for model in sorted(self.dirty)]
        self.dirty.clear()
        return changed


class ProberActor:
    name = "prober"

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        providers: list[str],
        *,
        boards: Boards | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.providers = providers
        self.boards = boards or Boards.for_bus(bus, settings)
        self.averages = LatencyAverages()
        self._transport = transport
        self._stopping = anyio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        transport = self._transport or new_transport(max_connections=4)
        subscriptions = [
            await self.bus.subscribe(subjects.events(kind), self._on_outcome)
            for kind in ("outcome", "end")  # a failed call; a request answered (its call's)
        ]
        await self.bus.flush()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._publish_loop)
                if self.settings.config.reliability.probe_interval_s > 0:
                    tg.start_soon(self._probe_loop, transport)
                task_status.started()
                await self._stopping.wait()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                for subscription in subscriptions:
                    await subscription.unsubscribe()
                await self._publish()
                if self._transport is None:
                    await transport.aclose()

    async def _on_outcome(self, msg: Msg) -> None:
        try:
            event = _event_decoder.decode(msg.data)
        except msgspec.DecodeError:
            return
        if event.kind == "end" and event.reason != "ok":
            return  # a request that failed: its calls' outcomes came as their own events
        ttft = event.detail.get("ttft_ms")
        ok = event.detail.get("ok") == 1.0
        at = event.at or time.time()
        ttft_ms = float(ttft) if isinstance(ttft, int | float) else None
        self.averages.add(event.provider, event.model, ok, ttft_ms, at)

    async def _publish_loop(self) -> None:
        while True:
            await anyio.sleep(PUBLISH_EVERY_S)
            await self._publish()

    async def _publish(self) -> None:
        for stat in self.averages.take_dirty():
            try:
                await self.boards.health.put_latency(stat)
            except Exception as exc:  # latency is advice: never let it stop the prober
                log.warning("latency for %s not shared: %r", stat.model, exc)

    # --- active probes -----------------------------------------------------------------

    async def _probe_loop(self, transport: httpx.AsyncBaseTransport) -> None:
        reliability = self.settings.config.reliability
        tick = min(reliability.probe_interval_s, reliability.breaker.cooldown_s)
        last: dict[str, float] = {}
        while True:
            now = time.monotonic()
            for provider in self.providers:
                due = now - last.get(provider, -1e9) >= reliability.probe_interval_s
                if due or self._circuit_waiting(provider):
                    last[provider] = now
                    await self.probe(provider, transport)
            await anyio.sleep(tick)

    def _circuit_waiting(self, provider: str) -> bool:
        known = self.boards.breakers.known()
        return any(
            key.split(".")[1:2] == [subjects.key_token(provider)] and state.state != "closed"
            for key, state in known.items()
        )

    async def probe(self, provider: str, transport: httpx.AsyncBaseTransport) -> bool:
        """One probe call; True if the provider answered."""
        spec = self._cheapest(provider)
        if spec is None or not await self.boards.breakers.allows(provider, spec.id):
            return False
        upstream = upstream_for(self.settings, provider, transport)
        call = Call(Discard(), provider, spec)
        error: ProviderError | RequestError | None = None
        with anyio.move_on_after(self.settings.config.reliability.request_timeout_s):
            try:
                await upstream.call(PROBE, call)
            except (ProviderError, RequestError) as exc:
                error = exc
        ok = error is None and call.finish_reason is not None
        if ok or (error is not None and rule_for(error.code).breaker):
            await self.boards.breakers.record(provider, spec.id, ok)
        self.averages.add(provider, spec.id, ok, call.ttft_ms, time.time())
        await self._share(provider, error, ok)
        return ok

    async def _share(self, provider: str, error: OmniLLMError | None, ok: bool) -> None:
        """What the probe showed, where it changes what the board says."""
        state = "ok" if ok else health_state(error)
        if state is None:
            return
        seen = await self.boards.health.get(provider)
        if (seen.state if seen is not None else "ok") == state:
            return
        reason = "a probe succeeded" if error is None else error.message
        await self.boards.health.put(ProviderHealth(provider, state, reason, time.time()))

    def _cheapest(self, provider: str) -> ModelSpec | None:
        models = self.settings.catalog.for_provider(provider)
        live = self.settings.providers.get(provider)
        if live is not None and live.free_only:
            models = [m for m in models if m.price.input == m.price.output == 0]
        return min(models, key=lambda m: (m.price.input + m.price.output, m.id), default=None)
