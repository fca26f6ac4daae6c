"""``omni up``: the embedded NATS server (unless a URL is given) and every actor, in one process.

Start order: server, connection, actors (each reports started once its
subscription is live). Stop order is the reverse, and graceful: actors stop taking
work and finish what they hold (bounded by ``drain_timeout_s``), the connection
drains, then the server stops. The server is stopped on every exit path, so nothing
is left running.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Any, Final, Protocol

import anyio
from anyio.abc import TaskGroup, TaskStatus
from prometheus_client import CollectorRegistry

from omnillm.actors._boards import Boards
from omnillm.actors.admin import AdminActor
from omnillm.actors.caller import CallerActor
from omnillm.actors.classifier import ClassifierActor
from omnillm.actors.gateway import GatewayActor
from omnillm.actors.ledger import LedgerActor
from omnillm.actors.planner import PlannerActor
from omnillm.actors.prober import ProberActor
from omnillm.bus.audit import ensure_audit_stream
from omnillm.bus.connection import Bus
from omnillm.config import Settings
from omnillm.embedded import EmbeddedNats
from omnillm.errors import ConfigError
from omnillm.metrics import Metrics, MetricsTap, serve_metrics
from omnillm.providers.families import IMPLEMENTED

__all__ = ["ACTOR_KINDS", "Stack", "build_actors"]

log = logging.getLogger("omnillm.supervisor")

ACTOR_KINDS: Final = ("classifier", "planner", "caller", "admin", "prober", "ledger", "gateway")


class Service(Protocol):
    """What the supervisor runs: started once live, stopped gracefully."""

    name: str

    async def run(self, *, task_status: TaskStatus[Any] = ...) -> None: ...

    def stop(self) -> None: ...


DRAIN_TIMEOUT_S: Final = 15.0


def servable_providers(settings: Settings) -> list[str]:
    """Live providers whose wire family this build speaks."""
    return sorted(
        name for name, live in settings.providers.items() if live.spec.family in IMPLEMENTED
    )


def _classifier(bus: Bus, **options: Any) -> ClassifierActor:
    try:
        return ClassifierActor(bus, **options)
    except ValueError as exc:  # an unknown feature name in classifier.weights
        raise ConfigError(str(exc)) from exc


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def build_actors(
    bus: Bus,
    settings: Settings,
    kinds: tuple[str, ...],
    providers: list[str],
    boards: Boards,
    metrics: CollectorRegistry | None = None,
) -> list[Service]:
    reliability = settings.config.reliability
    actors: list[Service] = []
    if "classifier" in kinds:
        actors.append(
            _classifier(
                bus,
                request_timeout_s=reliability.request_timeout_s,
                max_request_bytes=reliability.max_request_bytes,
                handoff_timeout_s=reliability.handoff_timeout_s,
                workers=reliability.workers,
                dedup=boards.dedup,
                config=settings.config.classifier,
            )
        )
    if "planner" in kinds:
        actors.append(PlannerActor(bus, settings, workers=reliability.workers, boards=boards))
    if "caller" in kinds:
        actors.extend(CallerActor(bus, settings, p, boards=boards) for p in providers)
    if "admin" in kinds:
        actors.append(AdminActor(bus, settings, boards.health, boards.breakers))
    if "prober" in kinds:
        actors.append(ProberActor(bus, settings, providers, boards=boards))
    if "gateway" in kinds:
        gateway = settings.config.gateway
        if not gateway.keys and not _loopback(gateway.host):
            raise ConfigError(
                f"gateway.host {gateway.host!r} is reachable from other machines but no "
                "gateway.keys are configured: add keys, or keep the default 127.0.0.1"
            )
        actors.append(
            GatewayActor(bus, settings, host=gateway.host, port=gateway.port, metrics=metrics)
        )
    if "ledger" in kinds:
        reference = settings.config.ledger.reference_model
        replicas = bus.replicas(settings.config.nats.replicas)
        actors.append(LedgerActor(bus, settings, reference_model=reference, replicas=replicas))
    return actors


class Stack:
    """The server (optional) and a set of actors, with one graceful stop."""

    def __init__(
        self,
        settings: Settings,
        *,
        nats_url: str | None = None,
        kinds: tuple[str, ...] = ACTOR_KINDS,
        providers: list[str] | None = None,
        embedded_port: int | None = None,
        data_dir: Path | None = None,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
    ) -> None:
        self.metrics_port = metrics_port
        """Serve Prometheus ``/metrics`` here (0: a free port, known once started)."""
        self.metrics_host = metrics_host
        self.metrics = Metrics.for_settings(settings)
        config = settings.config
        self.settings = settings
        self.url = nats_url or config.nats.url
        self.kinds = kinds
        self.providers = servable_providers(settings) if providers is None else providers
        self.server: EmbeddedNats | None = None
        if self.url is None:
            self.server = EmbeddedNats(
                data_dir or Path(config.nats.embedded.data_dir),
                host=config.nats.embedded.host,
                port=config.nats.embedded.port if embedded_port is None else embedded_port,
                max_payload=config.nats.max_payload,
                users=config.nats.users,
            )
        self.actors: list[Service] = []
        self._stop = anyio.Event()

    @property
    def gateway_url(self) -> str | None:
        """Where the OpenAI-compatible API listens, once started."""
        for actor in self.actors:
            if isinstance(actor, GatewayActor) and actor.port:
                return f"http://{actor.host}:{actor.port}/v1"
        return None

    @property
    def embedded(self) -> bool:
        return self.server is not None

    def stop(self) -> None:
        self._stop.set()

    async def _serve_metrics(self, bus: Bus, tg: TaskGroup, metrics: Metrics) -> None:
        """Count the whole cluster from the audit and usage events; serve ``/metrics`` on
        ``metrics_port`` if given (the gateway serves the same registry)."""
        await tg.start(MetricsTap(bus, metrics).run)
        if self.metrics_port is not None:
            self.metrics_port = await tg.start(
                serve_metrics, metrics.registry, self.metrics_host, self.metrics_port
            )

    async def run(self, *, task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until ``stop()``; reports the NATS URL once every actor is live."""
        try:
            url = self.server.start() if self.server else self.url
            assert url is not None
            bus = await Bus.connect(url, name="omnillm-up")
            try:
                await self._serve(bus, task_status)
            finally:
                with anyio.CancelScope(shield=True):
                    await bus.close()
        finally:
            if self.server is not None:
                self.server.stop()

    async def _serve(self, bus: Bus, task_status: TaskStatus[str]) -> None:
        audit = self.settings.config.audit
        if audit.stream:
            replicas = bus.replicas(self.settings.config.nats.replicas)
            await ensure_audit_stream(bus, audit.max_age_s, replicas)
        boards = Boards.for_bus(bus, self.settings)
        self.actors = build_actors(
            bus, self.settings, self.kinds, self.providers, boards, self.metrics.registry
        )
        async with anyio.create_task_group() as shared:
            await shared.start(boards.breakers.run)
            if self.metrics_port is not None or "gateway" in self.kinds:
                await self._serve_metrics(bus, shared, self.metrics)
            async with anyio.create_task_group() as tg:
                for actor in self.actors:
                    await tg.start(actor.run)
                task_status.started(bus.url)
                await self._stop.wait()
                for actor in self.actors:
                    actor.stop()
                # Actors finish in-flight work on their own; past the deadline they are cut.
                tg.cancel_scope.deadline = anyio.current_time() + DRAIN_TIMEOUT_S
            boards.breakers.stop()
            shared.cancel_scope.cancel()  # the metrics endpoint and tap, if any
