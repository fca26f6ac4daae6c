"""``omni up``: the embedded NATS server (unless a URL is given) and every actor, in one
process; with ``workers`` above 1, the gateway also in ``workers - 1`` other processes on
one port, which take its connections (:mod:`omnillm.workers`).

Start order: server, connection, actors (each reports started once its
subscription is live), then the worker processes. Stop order is the reverse, and
graceful: actors and workers stop taking work and finish what they hold (bounded by
``DRAIN_TIMEOUT_S``), the connection drains, then the server stops: it outlives the
workers, whose answers in flight go through it. The server is stopped and the workers
are reaped on every exit path, so nothing is left running.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Final

import anyio
from anyio.abc import TaskGroup, TaskStatus
from prometheus_client import CollectorRegistry

from omnillm.actors.admin import AdminActor
from omnillm.actors.base import Actor
from omnillm.actors.boards import Boards
from omnillm.actors.caller.actor import CallerActor
from omnillm.actors.classifier.actor import ClassifierActor
from omnillm.actors.gateway.actor import GatewayActor
from omnillm.actors.ledger.actor import LedgerActor
from omnillm.actors.planner.actor import PlannerActor
from omnillm.actors.prober import ProberActor
from omnillm.bus.audit import ensure_audit_stream
from omnillm.bus.connection import Bus
from omnillm.config import Settings
from omnillm.embedded import EmbeddedNats, is_loopback
from omnillm.errors import ConfigError
from omnillm.metrics import Metrics, MetricsTap, serve_metrics
from omnillm.providers.families import IMPLEMENTED
from omnillm.workers import WorkerFailed, WorkerPool

__all__ = ["ACTOR_KINDS", "WORKER_KINDS", "Stack", "build_actors"]

log = logging.getLogger("omnillm.supervisor")

ACTOR_KINDS: Final = ("classifier", "planner", "caller", "admin", "prober", "ledger", "gateway")
WORKER_KINDS: Final = ("gateway",)
"""What the other processes of ``omni up --workers`` run. Only the gateway: its HTTP
parsing and SSE rendering are the CPU the one process runs out of. The classifier,
planner and callers could join their queue groups from every process too, but on two
cores that cost 20-25% more CPU per request (each hop's messages are spread over more
event loops, batched less) for no more throughput, and it would multiply each
provider's ``rpm``/``max_concurrency``, which a caller enforces in its own process. The
ledger and prober are singletons anyway, and one admin responder answers every listing."""


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


def build_actors(
    bus: Bus,
    settings: Settings,
    kinds: tuple[str, ...],
    providers: list[str],
    boards: Boards,
    metrics: CollectorRegistry | None = None,
    worker: int | None = None,
    metrics_subject: str | None = None,
    steer: int = 0,
) -> list[Actor]:
    """The actors of ``kinds``. ``worker``: this process's number in ``omni up --workers``;
    ``metrics_subject``: where its gateway answers or relays scrapes; ``steer``: the
    workers its gateway sends new connections to (see the gateway)."""
    reliability, limits = settings.config.reliability, settings.config.limits
    actors: list[Actor] = []
    planner = None
    if "planner" in kinds:
        planner = PlannerActor(bus, settings, concurrency=limits.concurrency, boards=boards)
    if "classifier" in kinds:
        actors.append(
            _classifier(
                bus,
                request_timeout_s=reliability.request_timeout_s,
                max_request_bytes=limits.max_request_bytes,
                handoff_timeout_s=reliability.handoff_timeout_s,
                concurrency=limits.concurrency,
                dedup=boards.dedup,
                config=settings.config.classifier,
                planner=planner,
            )
        )
    if planner is not None:  # its subscription serves classifiers of other processes
        actors.append(planner)
    if "caller" in kinds:
        actors.extend(CallerActor(bus, settings, p, boards=boards) for p in providers)
    if "admin" in kinds:
        actors.append(AdminActor(bus, settings, boards.health, boards.breakers))
    if "prober" in kinds:
        actors.append(ProberActor(bus, settings, providers, boards=boards))
    if "gateway" in kinds:
        gateway = settings.config.gateway
        if not gateway.keys and not is_loopback(gateway.host):
            raise ConfigError(
                f"gateway.host {gateway.host!r} is reachable from other machines but no "
                "gateway.keys are configured: add keys, or keep the default 127.0.0.1"
            )
        actors.append(
            GatewayActor(
                bus,
                settings,
                host=gateway.host,
                port=gateway.port,
                metrics=metrics,
                worker=worker,
                metrics_subject=metrics_subject,
                steer=steer,
            )
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
        workers: int = 1,
        worker: int | None = None,
        metrics_subject: str | None = None,
    ) -> None:
        """``workers``: processes, this one included; above 1, the others (started here)
        serve the gateway, and this one's gateway takes connections only while none of
        them listens. ``worker``: this process is that worker of another's ``Stack``,
        whose gateway counts metrics and answers scrapes on ``metrics_subject``."""
        if workers > 1 and not sys.platform.startswith("linux"):
            raise ConfigError(
                f"gateway.workers: {workers} processes need Linux (SO_REUSEPORT spreading "
                "connections, workers dying with omni up); use 1 here"
            )
        self.workers = workers
        self.worker = 0 if workers > 1 and worker is None else worker
        self.metrics_subject = metrics_subject
        self.pool: WorkerPool | None = None
        self.failure: WorkerFailed | None = None
        """Why the stack stopped on its own (a worker kept dying), if it did."""
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
        self.actors: list[Actor] = []
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

    def _fail(self, failure: WorkerFailed) -> None:
        self.failure = self.failure or failure
        self.stop()

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
                await self._serve(bus, url, task_status)
            finally:
                with anyio.CancelScope(shield=True):
                    await bus.close()
        finally:
            if self.server is not None:
                self.server.stop()

    async def _serve(self, bus: Bus, url: str, task_status: TaskStatus[str]) -> None:
        audit = self.settings.config.audit
        if audit.stream:
            replicas = bus.replicas(self.settings.config.nats.replicas)
            await ensure_audit_stream(bus, audit.max_age_s, replicas)
        boards = Boards.for_bus(bus, self.settings)
        relayed = self.metrics_subject is not None  # a worker: the main process counts
        scrapes = bus.new_inbox() if self.workers > 1 else self.metrics_subject
        self.actors = build_actors(
            bus,
            self.settings,
            self.kinds,
            self.providers,
            boards,
            None if relayed else self.metrics.registry,
            worker=self.worker,
            metrics_subject=scrapes,
            steer=self.workers - 1 if self.worker == 0 else 0,
        )
        async with anyio.create_task_group() as shared:
            await shared.start(boards.breakers.run)
            if self.metrics_port is not None or ("gateway" in self.kinds and not relayed):
                await self._serve_metrics(bus, shared, self.metrics)
            async with anyio.create_task_group() as tg:
                for actor in self.actors:
                    await tg.start(actor.run)
                if self.workers > 1:
                    assert scrapes is not None
                    self.pool = self._pool(url, scrapes)
                    await tg.start(self.pool.run)
                task_status.started(bus.url)
                await self._stop.wait()
                for service in [*self.actors, *([self.pool] if self.pool else [])]:
                    service.stop()
                # Actors finish in-flight work on their own; past the deadline they are cut.
                tg.cancel_scope.deadline = anyio.current_time() + DRAIN_TIMEOUT_S
            boards.breakers.stop()
            shared.cancel_scope.cancel()  # the metrics endpoint and tap, if any

    def _pool(self, url: str, scrapes: str) -> WorkerPool:
        """The other workers, on ``url`` (with its credentials, if it has any) and on the
        gateway's port, now that it is bound; they relay scrapes to ``scrapes``."""
        port = next((a.port for a in self.actors if isinstance(a, GatewayActor)), 0)
        return WorkerPool(
            self.settings,
            count=self.workers - 1,
            nats_url=url,
            gateway_port=port,
            metrics_subject=scrapes,
            kinds=tuple(kind for kind in WORKER_KINDS if kind in self.kinds),
            providers=self.providers,
            on_failure=self._fail,
        )
