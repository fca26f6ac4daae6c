"""The shared state each process keeps, built once and handed to its actors."""

from __future__ import annotations

from dataclasses import dataclass

from omnillm.bus.breaker import BreakerPolicy, Phase
from omnillm.bus.breakers import BreakerBoard, parse_breaker_key
from omnillm.bus.connection import Bus
from omnillm.bus.dedup import DedupBoard
from omnillm.bus.events import Event, emit
from omnillm.bus.health import HealthBoard
from omnillm.bus.usage import UsagePublisher
from omnillm.config import Settings

__all__ = ["Boards"]


@dataclass(frozen=True, slots=True)
class Boards:
    """The shared state one process keeps: provider health, breakers, dedup claims, and
    the usage stream the ledger reads; each with ``nats.replicas`` JetStream replicas."""

    health: HealthBoard
    breakers: BreakerBoard
    dedup: DedupBoard
    usage: UsagePublisher

    @classmethod
    def for_bus(cls, bus: Bus, settings: Settings) -> Boards:
        breaker = settings.config.reliability.breaker
        policy = BreakerPolicy(
            failures=breaker.failures,
            window_s=breaker.window_s,
            failure_rate=breaker.failure_rate,
            min_requests=breaker.min_requests,
            cooldown_s=breaker.cooldown_s,
            probe_timeout_s=breaker.probe_timeout_s,
        )

        async def announce(key: str, old: Phase, new: Phase) -> None:
            provider, model = parse_breaker_key(key)
            reason = f"circuit {old} -> {new}"
            event = Event(kind="circuit", provider=provider, model=model or "", reason=reason)
            await emit(bus, event)

        replicas = bus.replicas(settings.config.nats.replicas)
        return cls(
            health=HealthBoard(bus, replicas=replicas),
            breakers=BreakerBoard(bus, policy, on_transition=announce, replicas=replicas),
            dedup=DedupBoard(bus, ttl_s=settings.config.dedup.ttl_s, replicas=replicas),
            usage=UsagePublisher(bus, replicas=replicas),
        )
