"""Prometheus metrics: what the router did, counted with bounded labels.

``Metrics`` owns its collectors, registered on an injected ``CollectorRegistry``, so
tests and embedders each get their own and nothing touches the global registry.
Labels are bounded by construction: a provider or model outside the sets given at
construction is counted as ``other``, an outcome that is neither ``ok`` nor a code of
``omnillm.errors.CODES`` as ``error``, a tier outside the four as ``none``. A thousand
made-up model names make no new series, and no label ever carries a request or user id.

Two ways to feed it:

- the actors call its methods directly (every method is O(1) and does no I/O);
- ``MetricsTap`` reads the audit events (``omni.v1.events.>``) and the usage ledger
  events (``omni.v1.usage.>``) from the bus, so any process, e.g. ``omni up``, can
  expose cluster-wide counters without the actors importing this module.

``serve_metrics`` serves ``GET /metrics`` with aiohttp on the running event loop.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

import anyio
import msgspec
from aiohttp import web
from anyio.abc import TaskStatus
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from omnillm.bus import subjects
from omnillm.bus.connection import Bus
from omnillm.bus.events import Event, EventKind
from omnillm.bus.messages import TIERS, TokenUsage, Usage
from omnillm.config import Settings
from omnillm.errors import CODES

__all__ = [
    "BREAKER_PHASES",
    "OTHER",
    "OUTCOMES",
    "TOKEN_KINDS",
    "Metrics",
    "MetricsTap",
    "metrics_handler",
    "serve_metrics",
]

log = logging.getLogger("omnillm.metrics")

OTHER: Final = "other"
"""The label of every provider or model not known at construction."""
NO_TIER: Final = "none"
"""The tier label of a request that was never classified (rejected at the door)."""
BREAKER_PHASES: Final[dict[str, int]] = {"closed": 0, "half_open": 1, "open": 2}
TOKEN_KINDS: Final = ("input", "cached_input", "cache_write", "output", "reasoning")

TTFT_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
DURATION_BUCKETS: Final = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
OVERHEAD_BUCKETS: Final = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
"""Fine below 2 ms: the design budget for sequential overhead is a p50 under 2 ms."""
OUTCOMES: Final = frozenset(CODES) | {"ok"}
"""Outcome labels: ``ok`` or an error code; anything else is counted as ``error``."""


class Metrics:
    """Every OmniLLM metric, on one registry; label values are bounded (see the module)."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        models: Iterable[str] = (),
        providers: Iterable[str] = (),
    ) -> None:
        """``models`` are catalog ids (``provider/model``); their providers are known too."""
        self.registry = registry if registry is not None else CollectorRegistry()
        self.models = frozenset(models)
        self.providers = frozenset(providers) | {m.split("/", 1)[0] for m in self.models}
        self.outcomes = OUTCOMES
        self._build(self.registry)
        for provider in self.providers:  # a breaker nobody has reported on yet is closed
            self.breaker_state.labels(provider).set(0)
            self.in_flight_streams.labels(provider).set(0)

    @classmethod
    def for_settings(cls, settings: Settings, registry: CollectorRegistry | None = None) -> Metrics:
        """Labels from the resolved catalog and every configured provider."""
        return cls(
            registry,
            models=(m.id for m in settings.catalog),
            providers=settings.providers,
        )

    def _build(self, r: CollectorRegistry) -> None:
        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(f"omnillm_{name}", doc, labels, registry=r)

        def histogram(name: str, doc: str, buckets: tuple[float, ...], *labels: str) -> Histogram:
            return Histogram(f"omnillm_{name}", doc, labels, buckets=buckets, registry=r)

        def gauge(name: str, doc: str, *labels: str) -> Gauge:
            return Gauge(f"omnillm_{name}", doc, labels, registry=r)

        self.requests = counter("requests", "Requests finished.", "tier", "outcome")
        self.attempts = counter("attempts", "Upstream calls.", "provider", "model", "outcome")
        self.fallbacks = counter("fallbacks", "Candidates given up on, by provider.", "provider")
        self.retries = counter("retries", "Retries of the same candidate.", "provider")
        self.rate_limited = counter("rate_limited", "Calls refused as rate limited.", "provider")
        self.ttft = histogram(
            "time_to_first_token_seconds",
            "First token of a call.",
            TTFT_BUCKETS,
            "provider",
            "model",
        )
        self.duration = histogram(
            "request_duration_seconds", "A whole call.", DURATION_BUCKETS, "provider", "outcome"
        )
        self.router_overhead = histogram(
            "router_overhead_seconds",
            "From the classifier receiving a request to the caller sending it upstream.",
            OVERHEAD_BUCKETS,
        )
        self.tokens = counter("tokens", "Tokens as reported.", "provider", "model", "kind")
        self.cost = counter("cost_usd", "US dollars at catalog prices.", "provider", "model")
        self.breaker_state = gauge("breaker_state", "0 closed, 1 half open, 2 open.", "provider")
        self.in_flight_streams = gauge("in_flight_streams", "Upstream streams open.", "provider")

    # --- bounded labels ------------------------------------------------------------------

    def provider_label(self, provider: str) -> str:
        return provider if provider in self.providers else OTHER

    def model_label(self, provider: str, model: str) -> str:
        """The catalog id; a bare upstream name is looked up under its provider."""
        if model in self.models:
            return model
        qualified = f"{provider}/{model}"
        return qualified if qualified in self.models else OTHER

    def outcome_label(self, outcome: str) -> str:
        return outcome if outcome in self.outcomes else "error"

    # --- what the actors report ---------------------------------------------------------

    def attempt(
        self,
        provider: str,
        model: str,
        outcome: str,
        *,
        ttft_s: float | None = None,
        duration_s: float | None = None,
        usage: TokenUsage | None = None,
        cost_usd: float = 0.0,
    ) -> None:
        """One upstream call ended: ``outcome`` is ``ok`` or the error code."""
        p, m = self.provider_label(provider), self.model_label(provider, model)
        self.attempts.labels(p, m, self.outcome_label(outcome)).inc()
        if outcome == "rate_limited":
            self.rate_limited.labels(p).inc()
        if ttft_s is not None:
            self.ttft.labels(p, m).observe(ttft_s)
        if duration_s is not None:
            self.call_duration(provider, outcome, duration_s)
        if usage is not None or cost_usd:
            self.billed(provider, model, usage or TokenUsage(), cost_usd)

    def call_duration(self, provider: str, outcome: str, seconds: float) -> None:
        labels = (self.provider_label(provider), self.outcome_label(outcome))
        self.duration.labels(*labels).observe(seconds)

    def billed(self, provider: str, model: str, usage: TokenUsage, cost_usd: float) -> None:
        p, m = self.provider_label(provider), self.model_label(provider, model)
        counts = (
            usage.input_tokens,
            usage.cached_input_tokens,
            usage.cache_write_tokens,
            usage.output_tokens,
            usage.reasoning_tokens,
        )
        for kind, count in zip(TOKEN_KINDS, counts, strict=True):
            if count > 0:
                self.tokens.labels(p, m, kind).inc(count)
        if cost_usd > 0:
            self.cost.labels(p, m).inc(cost_usd)

    def request_done(self, tier: str | None, outcome: str) -> None:
        """A client's stream ended: ``ok``, or the code of the ``Error`` it got."""
        label = tier if tier in TIERS else NO_TIER
        self.requests.labels(label, self.outcome_label(outcome)).inc()

    def fallback(self, provider: str) -> None:
        self.fallbacks.labels(self.provider_label(provider)).inc()

    def retry(self, provider: str) -> None:
        self.retries.labels(self.provider_label(provider)).inc()

    def overhead(self, seconds: float) -> None:
        self.router_overhead.observe(max(0.0, seconds))

    def breaker(self, provider: str, phase: str) -> None:
        """The provider-level circuit is now ``phase``; an unknown phase is ignored."""
        if phase in BREAKER_PHASES:
            self.breaker_state.labels(self.provider_label(provider)).set(BREAKER_PHASES[phase])

    def stream_started(self, provider: str) -> None:
        self.in_flight_streams.labels(self.provider_label(provider)).inc()

    def stream_ended(self, provider: str) -> None:
        self.in_flight_streams.labels(self.provider_label(provider)).dec()


# --- from the bus ---------------------------------------------------------------------

_event_decoder: Final = msgspec.json.Decoder(Event)
_usage_decoder: Final = msgspec.json.Decoder(Usage)
COUNTED: Final[tuple[EventKind, ...]] = (
    "outcome",
    "retry",
    "fallback",
    "continue",
    "circuit",
    "end",
)
"""The event kinds ``count_event`` counts: the tap subscribes to these alone (``route``,
one per request, would be a message decoded for nothing)."""
_SEEN_USAGE: Final = 4096
"""Ledger message ids remembered, to count a JetStream publish retry once."""


class MetricsTap:
    """Keeps a ``Metrics`` up to date from the bus alone.

    From audit events: failed attempts and rate limits (``outcome``), retries
    (``retry``), fallbacks (``fallback`` and ``continue``), provider circuits (``circuit``
    of a provider-level breaker), requests by tier and outcome, rejected ones included,
    and the successful attempt with its time to first token (``end``). From
    usage ledger events: tokens, cost, call duration and successful requests by tier.

    What the bus does not say, so a tap cannot count: requests that end in an error
    after a caller ran (no event marks a request's end), router overhead, and streams
    in flight. Those need the actors to call ``Metrics`` directly.
    """

    name = "metrics-tap"

    def __init__(self, bus: Bus, metrics: Metrics) -> None:
        self.bus = bus
        self.metrics = metrics
        self._stopped = anyio.Event()
        self._seen: set[str] = set()
        self._seen_order: deque[str] = deque()

    def stop(self) -> None:
        self._stopped.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Count until ``stop()``; reports started once both subscriptions are live."""
        subs: list[Subscription] = [
            *[await self.bus.subscribe(subjects.events(k), self._on_event) for k in COUNTED],
            await self.bus.subscribe(f"{subjects.ROOT}.usage.>", self._on_usage),
        ]
        try:
            await self.bus.flush()
            task_status.started()
            await self._stopped.wait()
        finally:
            with anyio.CancelScope(shield=True):
                for sub in subs:
                    await _unsubscribe(sub)

    async def _on_event(self, msg: Msg) -> None:
        try:
            event = _event_decoder.decode(msg.data)
        except msgspec.DecodeError:
            log.debug("not an audit event on %s: %r", msg.subject, msg.data[:200])
            return
        self.count_event(event)

    async def _on_usage(self, msg: Msg) -> None:
        msg_id = (msg.headers or {}).get("Nats-Msg-Id")
        if msg_id is not None and self._already_seen(msg_id):
            return
        try:
            usage = _usage_decoder.decode(msg.data)
        except msgspec.DecodeError:
            log.debug("not a usage event on %s: %r", msg.subject, msg.data[:200])
            return
        self.count_usage(usage)

    def count_event(self, event: Event) -> None:
        m, provider = self.metrics, event.provider
        match event.kind:
            case "outcome":
                ttft_ms = event.detail.get("ttft_ms")
                ttft_s = float(ttft_ms) / 1000 if isinstance(ttft_ms, int | float) else None
                m.attempt(provider, event.model, event.reason or "error", ttft_s=ttft_s)
            case "retry":
                m.retry(provider)
            case "fallback" | "continue":
                m.fallback(provider)
            case "circuit" if not event.model:
                m.breaker(provider, _new_phase(event))
            case "end":
                tier = event.detail.get("tier")
                m.request_done(tier if isinstance(tier, str) else None, event.reason)
                if event.reason == "ok" and event.detail.get("ok") == 1.0:  # its call's outcome
                    ttft_ms = event.detail.get("ttft_ms")
                    ttft_s = float(ttft_ms) / 1000 if isinstance(ttft_ms, int | float) else None
                    m.attempt(provider, event.model, "ok", ttft_s=ttft_s)
            case _:
                pass

    def count_usage(self, usage: Usage) -> None:
        m = self.metrics
        m.billed(usage.provider, usage.model, usage.tokens, usage.cost_usd)
        if usage.latency_ms > 0:
            m.call_duration(usage.provider, usage.outcome, usage.latency_ms / 1000)

    def _already_seen(self, msg_id: str) -> bool:
        if msg_id in self._seen:
            return True
        self._seen.add(msg_id)
        self._seen_order.append(msg_id)
        if len(self._seen_order) > _SEEN_USAGE:
            self._seen.discard(self._seen_order.popleft())
        return False


def _new_phase(event: Event) -> str:
    """The phase a circuit moved to: ``detail["to"]``, else ``reason`` ``circuit a -> b``."""
    to = event.detail.get("to")
    if isinstance(to, str):
        return to
    return event.reason.rpartition("->")[2].strip()


async def _unsubscribe(sub: Subscription) -> None:
    try:
        await sub.unsubscribe()
    except Exception as exc:  # a closed connection has no subscriptions left to end
        log.debug("unsubscribe failed: %r", exc)


# --- HTTP ----------------------------------------------------------------------------


def metrics_handler(
    registry: CollectorRegistry,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler for ``GET /metrics``: text format, or OpenMetrics if asked."""

    async def handle(request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(registry), headers={"Content-Type": content_type})

    return handle


async def serve_metrics(
    registry: CollectorRegistry,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``/metrics`` until cancelled; reports the bound port (``port=0``: a free one).

    aiohttp on the running loop rather than ``prometheus_client.start_http_server``:
    its server thread cannot be cancelled, only shut down from outside, while here
    cancellation closes the listening socket and open connections before returning.
    """
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(registry))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound: int = runner.addresses[0][1]
        log.info("metrics on http://%s:%d/metrics", host, bound)
        task_status.started(bound)
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
