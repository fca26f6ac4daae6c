"""Admin answers on ``omni.v1.admin.providers``, ``models`` and ``switch``.

The rows are built by pure functions from the running router's settings and the
shared provider health, so ``omni providers`` shows what the router really serves,
not what the local config file says. Replies are small and computed at once, so
the callback answers inline. The queries and rows are in :mod:`omnillm.bus.admin`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Final

import anyio
import msgspec
from anyio.abc import TaskStatus
from nats.aio.msg import Msg

from omnillm.bus import subjects
from omnillm.bus.admin import ModelRow, ProviderRow, SwitchQuery
from omnillm.bus.breaker import BreakerPolicy, BreakerState, CircuitBreaker
from omnillm.bus.breakers import BreakerBoard, breaker_key
from omnillm.bus.connection import Bus
from omnillm.bus.health import HealthBoard
from omnillm.bus.messages import Failure, LatencyStat, ProviderHealth
from omnillm.bus.switch import SwitchBoard
from omnillm.config import Settings
from omnillm.providers.families import IMPLEMENTED
from omnillm.providers.registry import BUILTIN_PROVIDERS

__all__ = ["AdminActor", "model_rows", "provider_rows"]

log = logging.getLogger("omnillm.admin")

ADMIN_QUEUE: Final = "admin"
ANSWERS: Final = ("providers", "models", "switch")
"""The admin subjects this actor answers (the ledger answers the others)."""


_HEALTH_STATES: Final = {
    "free_tier_refused": "refused free tier",
    "auth_failed": "key rejected",
}


def _state(name: str, settings: Settings, health: Mapping[str, ProviderHealth]) -> tuple[str, str]:
    declared = settings.config.providers.get(name)
    live = settings.providers.get(name)
    builtin = BUILTIN_PROVIDERS.get(name)
    if declared is not None and not declared.enabled:
        return "disabled", f"providers.{name}.enabled is false"
    if live is None:
        if builtin is not None and builtin.requires_base_url:
            return "needs base_url", f"set providers.{name}.base_url (and {builtin.key_env})"
        return "no key", f"set {builtin.key_env if builtin else 'its api_key'}"
    if live.missing_key:
        where = live.config.api_key_env or live.spec.key_env or f"providers.{name}.api_key"
        return "no key", f"set {where}"
    if live.spec.family not in IMPLEMENTED:
        return "not served", f"the {live.spec.family} wire family is not in this build"
    seen = health.get(name)
    if seen is not None and seen.state in _HEALTH_STATES:
        return _HEALTH_STATES[seen.state], seen.reason
    if live.free_only:
        return "live", f"free models only; set {live.spec.key_env} for the others"
    return "live", ""


def provider_rows(
    settings: Settings,
    health: Mapping[str, ProviderHealth] | None = None,
    circuits: Mapping[str, BreakerState] | None = None,
    latency: Mapping[str, LatencyStat] | None = None,
) -> list[ProviderRow]:
    """Every built-in and declared provider: whether requests can go there, and why not."""
    names = sorted({*BUILTIN_PROVIDERS, *settings.config.providers})
    rows = []
    for name in names:
        breaker = (circuits or {}).get(breaker_key(name))
        fastest = min(
            (s for s in (latency or {}).values() if s.provider == name and s.ttft_ms > 0),
            key=lambda s: s.ttft_ms,
            default=None,
        )
        live = settings.providers.get(name)
        spec = live.spec if live is not None else BUILTIN_PROVIDERS.get(name)
        state, reason = _state(name, settings, health or {})
        rows.append(
            ProviderRow(
                name=name,
                family=spec.family if spec else str(settings.config.providers[name].family),
                state=state,
                reason=reason,
                base_url=spec.base_url if spec else "",
                models=len(settings.catalog.for_provider(name)),
                circuit=_phase(breaker),
                ttft_ms=round(fastest.ttft_ms, 1) if fastest else None,
                error_rate=round(fastest.error_rate, 3) if fastest else None,
            )
        )
    return rows


def _phase(state: BreakerState | None) -> str:
    if state is None:
        return "closed"
    return (
        CircuitBreaker(BreakerPolicy(), state).phase(time.time())
        if state.state == "open"
        else state.state
    )


def model_rows(settings: Settings) -> list[ModelRow]:
    """The catalog with prices (USD per million tokens), limits and capabilities."""
    return [
        ModelRow(
            id=spec.id,
            provider=spec.provider,
            tier=spec.tier,
            context_window=spec.context_window,
            max_output=spec.max_output,
            input=spec.price.input,
            cached_input=spec.price.cached_input,
            cache_write=spec.price.cache_write,
            output=spec.price.output,
            capabilities=sorted(spec.capabilities),
            live=spec.provider in settings.providers,
            as_of=spec.as_of,
            source=spec.source,
        )
        for spec in sorted(settings.catalog, key=lambda s: s.id)
    ]


class AdminActor:
    """Answers admin requests for the CLI and the gateway's HTTP admin routes."""

    name = "admin"

    def __init__(
        self, bus: Bus, settings: Settings, health: HealthBoard, breakers: BreakerBoard
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.health = health
        self.breakers = breakers
        self.switch = SwitchBoard(bus, replicas=bus.replicas(settings.config.nats.replicas))
        self._stopping = anyio.Event()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        subscriptions = [
            await self.bus.subscribe(subjects.admin(what), self._on_message, queue=ADMIN_QUEUE)
            for what in ANSWERS
        ]
        await self.bus.flush()
        task_status.started()
        await self._stopping.wait()
        for subscription in subscriptions:
            await subscription.drain()  # type: ignore[no-untyped-call]

    def stop(self) -> None:
        self._stopping.set()

    async def _on_message(self, msg: Msg) -> None:
        if not msg.reply:
            return
        try:
            payload = await self._answer(msg.subject.rsplit(".", 1)[-1], msg.data)
        except Exception as exc:
            log.exception("admin request %s failed", msg.subject)
            payload = msgspec.json.encode(Failure(code="internal", message=repr(exc)))
        await self.bus.publish(msg.reply, payload)

    async def _answer(self, what: str, data: bytes) -> bytes:
        if what == "switch":
            return await self._switch(data)
        if what == "providers":
            rows = provider_rows(
                self.settings,
                await self.health.all(),
                await self.breakers.states(),
                await self.health.latencies(),
            )
            return msgspec.json.encode(rows)
        if what == "models":
            return msgspec.json.encode(model_rows(self.settings))
        return msgspec.json.encode(
            Failure(code="unknown_admin_request", message=f"no admin request named {what!r}")
        )

    async def _switch(self, data: bytes) -> bytes:
        """``{"provider": "p"}`` prefers p from now on, ``{"clear": true}`` stops; ``{}`` reads."""
        try:
            ask = msgspec.json.decode(data or b"{}", type=SwitchQuery)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # invalid UTF-8 is the latter
            return msgspec.json.encode(Failure(code="invalid_request", message=str(exc)))
        if ask.clear:
            return msgspec.json.encode(await self.switch.set(None))
        if ask.provider is None:
            return msgspec.json.encode(await self.switch.read())
        if ask.provider not in self.settings.providers:
            live = ", ".join(sorted(self.settings.providers)) or "none"
            message = f"provider {ask.provider!r} is not live here (live: {live})"
            return msgspec.json.encode(Failure(code="unknown_provider", message=message))
        return msgspec.json.encode(await self.switch.set(ask.provider))
