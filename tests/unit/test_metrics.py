"""Prometheus metrics: what moves for attempts and requests, bounded labels, /metrics over
HTTP, and the tap that counts from the audit and usage events on a real nats-server."""

from __future__ import annotations

import anyio
import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from omnillm.bus import subjects
from omnillm.bus.connection import Bus
from omnillm.bus.events import Event, emit
from omnillm.bus.messages import TokenUsage, Usage, encode
from omnillm.config import resolve
from omnillm.embedded import EmbeddedNats
from omnillm.metrics import Metrics, MetricsTap, serve_metrics
from omnillm.testing.demo import mock_config

WAIT_S = 10.0
MODELS = ("mock/mock-small", "mock/mock-large", "openai/gpt-4.1-mini")

Labels = frozenset[tuple[str, str]]


def samples(registry: CollectorRegistry) -> dict[tuple[str, Labels], float]:
    """Every sample of the registry, as ``/metrics`` shows it, keyed by name and labels."""
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return samples(registry).get((name, frozenset(labels.items())), 0.0)


def series(registry: CollectorRegistry, name: str) -> int:
    return sum(1 for sample_name, _ in samples(registry) if sample_name == name)


def attempts(registry: CollectorRegistry, provider: str, model: str, outcome: str) -> float:
    labels = {"provider": provider, "model": model, "outcome": outcome}
    return value(registry, "omnillm_attempts_total", **labels)


def new_metrics() -> Metrics:
    return Metrics(CollectorRegistry(), models=MODELS)


# --- direct calls ----------------------------------------------------------------------


def test_an_ok_attempt_counts_the_call_its_first_token_tokens_and_cost() -> None:
    m = new_metrics()
    usage = TokenUsage(input_tokens=120, cached_input_tokens=100, output_tokens=7)

    m.attempt(
        "mock", "mock/mock-small", "ok", ttft_s=0.3, duration_s=1.2, usage=usage, cost_usd=0.5
    )

    r = m.registry
    labels = {"provider": "mock", "model": "mock/mock-small"}
    assert value(r, "omnillm_attempts_total", **labels, outcome="ok") == 1
    assert value(r, "omnillm_time_to_first_token_seconds_count", **labels) == 1
    assert value(r, "omnillm_time_to_first_token_seconds_bucket", **labels, le="0.25") == 0
    assert value(r, "omnillm_time_to_first_token_seconds_bucket", **labels, le="0.5") == 1
    assert value(r, "omnillm_request_duration_seconds_sum", provider="mock", outcome="ok") == 1.2
    assert value(r, "omnillm_tokens_total", **labels, kind="input") == 120
    assert value(r, "omnillm_tokens_total", **labels, kind="cached_input") == 100
    assert value(r, "omnillm_tokens_total", **labels, kind="output") == 7
    assert value(r, "omnillm_cost_usd_total", **labels) == 0.5


def test_a_failed_attempt_counts_under_its_error_code_and_rate_limits_are_counted() -> None:
    m = new_metrics()

    m.attempt("mock", "mock/mock-small", "rate_limited")
    m.attempt("mock", "mock/mock-small", "provider_unavailable")
    m.attempt("mock", "mock/mock-small", "made-up code")

    r = m.registry
    labels = {"provider": "mock", "model": "mock/mock-small"}
    assert value(r, "omnillm_attempts_total", **labels, outcome="rate_limited") == 1
    assert value(r, "omnillm_attempts_total", **labels, outcome="provider_unavailable") == 1
    assert value(r, "omnillm_attempts_total", **labels, outcome="error") == 1
    assert value(r, "omnillm_rate_limited_total", provider="mock") == 1


def test_a_bare_upstream_model_name_is_labelled_with_its_catalog_id() -> None:
    m = new_metrics()

    m.attempt("mock", "mock-large", "ok")

    assert attempts(m.registry, "mock", "mock/mock-large", "ok") == 1


def test_a_thousand_unknown_models_add_no_series() -> None:
    m = new_metrics()
    m.attempt("mock", "unknown-0", "ok", ttft_s=0.1, usage=TokenUsage(output_tokens=1))
    names = (
        "omnillm_attempts_total",
        "omnillm_time_to_first_token_seconds_count",
        "omnillm_tokens_total",
    )
    before = {name: series(m.registry, name) for name in names}

    for i in range(1, 1000):
        m.attempt("mock", f"unknown-{i}", "ok", ttft_s=0.1, usage=TokenUsage(output_tokens=1))
        m.attempt(f"nobody-{i}", f"nobody-{i}/x", "ok")

    after = {name: series(m.registry, name) for name in before}
    assert after == {**before, "omnillm_attempts_total": before["omnillm_attempts_total"] + 1}
    r = m.registry
    assert value(r, "omnillm_attempts_total", provider="mock", model="other", outcome="ok") == 1000
    assert value(r, "omnillm_attempts_total", provider="other", model="other", outcome="ok") == 999
    assert value(r, "omnillm_tokens_total", provider="mock", model="other", kind="output") == 1000


def test_requests_count_by_tier_and_an_unclassified_request_has_tier_none() -> None:
    m = new_metrics()

    m.request_done("complex", "ok")
    m.request_done("complex", "ok")
    m.request_done(None, "invalid_request")
    m.request_done("user-42", "ok")

    r = m.registry
    assert value(r, "omnillm_requests_total", tier="complex", outcome="ok") == 2
    assert value(r, "omnillm_requests_total", tier="none", outcome="invalid_request") == 1
    assert value(r, "omnillm_requests_total", tier="none", outcome="ok") == 1


def test_breaker_and_stream_gauges_follow_what_is_reported() -> None:
    m = new_metrics()
    r = m.registry
    assert value(r, "omnillm_breaker_state", provider="openai") == 0  # closed until told

    m.breaker("openai", "open")
    assert value(r, "omnillm_breaker_state", provider="openai") == 2
    m.breaker("openai", "half_open")
    assert value(r, "omnillm_breaker_state", provider="openai") == 1

    m.stream_started("mock")
    m.stream_started("mock")
    m.stream_ended("mock")
    assert value(r, "omnillm_in_flight_streams", provider="mock") == 1


def test_retries_fallbacks_and_router_overhead_are_counted() -> None:
    m = new_metrics()

    m.retry("mock")
    m.fallback("mock")
    m.fallback("mock")
    m.overhead(0.0015)

    r = m.registry
    assert value(r, "omnillm_retries_total", provider="mock") == 1
    assert value(r, "omnillm_fallbacks_total", provider="mock") == 2
    assert value(r, "omnillm_router_overhead_seconds_bucket", le="0.001") == 0
    assert value(r, "omnillm_router_overhead_seconds_bucket", le="0.002") == 1


def test_metrics_for_settings_know_the_configured_models() -> None:
    settings = resolve(mock_config("http://127.0.0.1:9/v1"), env={})
    m = Metrics.for_settings(settings, CollectorRegistry())

    m.attempt("mock", "mock/mock-medium", "ok")

    assert attempts(m.registry, "mock", "mock/mock-medium", "ok") == 1


# --- /metrics over HTTP ------------------------------------------------------------------


@pytest.mark.anyio
async def test_serve_metrics_answers_on_a_free_port_and_stops_when_cancelled() -> None:
    m = new_metrics()
    m.attempt("mock", "mock/mock-small", "ok")
    async with httpx.AsyncClient() as http:
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve_metrics, m.registry, "127.0.0.1", 0)
            response = await http.get(f"http://127.0.0.1:{port}/metrics")
            tg.cancel_scope.cancel()

        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert (
            'omnillm_attempts_total{model="mock/mock-small",outcome="ok",provider="mock"} 1.0'
            in (response.text)
        )
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/metrics")


# --- from the bus --------------------------------------------------------------------------


class WatchedTap(MetricsTap):
    """A tap that says when it has counted a message, so a test can wait for it."""

    def __init__(self, bus: Bus, metrics: Metrics) -> None:
        super().__init__(bus, metrics)
        self.counted = 0
        self._changed = anyio.Event()

    def count_event(self, event: Event) -> None:
        super().count_event(event)
        self._bump()

    def count_usage(self, usage: Usage) -> None:
        super().count_usage(usage)
        self._bump()

    def _bump(self) -> None:
        self.counted += 1
        self._changed.set()
        self._changed = anyio.Event()

    async def until(self, count: int) -> None:
        with anyio.fail_after(WAIT_S):
            while self.counted < count:
                await self._changed.wait()


@pytest.mark.anyio
async def test_the_metrics_tap_counts_from_real_audit_and_usage_events(
    nats_server: EmbeddedNats,
) -> None:
    m = new_metrics()
    tap_bus = await Bus.connect(nats_server.url)
    bus = await Bus.connect(nats_server.url)
    tap = WatchedTap(tap_bus, m)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(tap.run)
            for event in (
                Event(
                    "outcome", "r1", "mock", "mock/mock-small", "ok", 1, {"ok": 1.0, "ttft_ms": 40}
                ),
                Event("outcome", "r1", "mock", "mock/mock-small", "rate_limited", 1, {"ok": 0.0}),
                Event("retry", "r1", "mock", "mock/mock-small", "rate_limited", 1),
                Event("fallback", "r1", "mock", "mock/mock-small", "mock/mock-small: 503"),
                Event("circuit", "", "openai", "", "circuit closed -> open"),
                Event("circuit", "", "openai", "openai/gpt-4.1-mini", "circuit open -> closed"),
                Event("reject", "r2", reason="invalid_request: invalid chat request"),
                Event("end", "r2", reason="invalid_request", detail={"tier": ""}),
                Event("end", "r1", "mock", "mock-small", "ok", 1, {"tier": "medium"}),
                Event("end", "r3", "mock", "mock-small", "ok", 1, {"tier": "medium"}),
            ):
                await emit(bus, event)
            tokens = TokenUsage(input_tokens=50, output_tokens=9)
            usage = Usage("r1", 1, "mock", "mock/mock-small", "ok", tier="medium", tokens=tokens)
            usage.cost_usd, usage.latency_ms = 0.25, 800
            once = {"Nats-Msg-Id": "r1.1"}
            await bus.publish(subjects.usage("mock"), encode(usage), headers=once)
            await bus.publish(subjects.usage("mock"), encode(usage), headers=once)  # a JS retry
            await bus.publish(
                subjects.usage("mock"), encode(usage), headers={"Nats-Msg-Id": "r1.2"}
            )

            await tap.until(9 + 2)  # the reject is not a kind the tap subscribes to
            tap.stop()
    finally:
        await bus.close()
        await tap_bus.close()

    r = m.registry
    small = {"provider": "mock", "model": "mock/mock-small"}
    assert value(r, "omnillm_attempts_total", **small, outcome="ok") == 1
    assert value(r, "omnillm_attempts_total", **small, outcome="rate_limited") == 1
    assert value(r, "omnillm_time_to_first_token_seconds_sum", **small) == 0.04
    assert value(r, "omnillm_rate_limited_total", provider="mock") == 1
    assert value(r, "omnillm_retries_total", provider="mock") == 1
    assert value(r, "omnillm_fallbacks_total", provider="mock") == 1
    assert value(r, "omnillm_breaker_state", provider="openai") == 2  # the model breaker is not it
    assert value(r, "omnillm_requests_total", tier="none", outcome="invalid_request") == 1
    assert value(r, "omnillm_requests_total", tier="medium", outcome="ok") == 2
    assert value(r, "omnillm_tokens_total", **small, kind="output") == 18
    assert value(r, "omnillm_cost_usd_total", **small) == 0.5
    assert value(r, "omnillm_request_duration_seconds_count", provider="mock", outcome="ok") == 2
