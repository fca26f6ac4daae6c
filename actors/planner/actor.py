"""The planner (cost estimator): turns a classified request into an ordered fallback chain.

``plan`` is pure: request, classification and settings in, candidates out (or a
``RequestError`` saying why nothing can serve the request). The actor hands the
envelope to the first candidate's caller; see ``actors._dispatch``.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Final

import msgspec
from nats.aio.msg import Msg

from omnillm.actors._dispatch import dispatch, fail_request
from omnillm.actors.base import HandoffActor
from omnillm.actors.boards import Boards
from omnillm.actors.planner._budget import BudgetGuard
from omnillm.actors.planner._estimates import MIN_SAMPLES, EstimateSource
from omnillm.bus import subjects
from omnillm.bus.admin import Estimates
from omnillm.bus.breakers import breaker_key
from omnillm.bus.connection import Bus
from omnillm.bus.dedup import DedupBoard
from omnillm.bus.events import Event, emit
from omnillm.bus.messages import (
    TIERS,
    CallEnvelope,
    Candidate,
    ChatRequest,
    Classified,
    Failure,
    LatencyStat,
    ProviderHealth,
    Tier,
    decode_envelope,
)
from omnillm.bus.switch import SwitchBoard
from omnillm.config import AliasConfig, Settings
from omnillm.errors import BudgetExceeded, NoCandidates, RequestError, UnknownModel
from omnillm.providers.catalog import ModelSpec, rates_for

__all__ = [
    "ALIAS_NAMES",
    "BUILTIN_ALIASES",
    "Plan",
    "PlannerActor",
    "estimate_cost",
    "make_plan",
    "plan",
]

log = logging.getLogger("omnillm.planner")

MAX_CHAIN: Final = 5
_NEED_CAPABILITY: Final = {"vision": "vision", "tools": "tools"}


def estimate_cost(spec: ModelSpec, classified: Classified) -> float:
    """Estimated input tokens x input price + expected output tokens x output price, at the
    rates a prompt that size is billed at (long-context tiers included)."""
    price = rates_for(spec, classified.input_tokens)
    return (classified.input_tokens * price.input + classified.output_tokens * price.output) / 1e6


def _matches(spec: ModelSpec, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(spec.id, p) or spec.provider == p for p in patterns)


def _unfit(spec: ModelSpec, classified: Classified) -> str | None:
    """Why ``spec`` cannot serve the request, or None when it can."""
    for need in classified.needs:
        capability = _NEED_CAPABILITY.get(need)
        if capability and capability not in spec.capabilities:
            return f"{spec.id} does not support {need}"
    if classified.input_tokens > spec.context_window:
        return (
            f"{spec.id} has a context window of {spec.context_window} tokens; "
            f"the request needs about {classified.input_tokens}"
        )
    return None


class _Planner:
    def __init__(
        self,
        request: ChatRequest,
        classified: Classified,
        settings: Settings,
        health: Mapping[str, ProviderHealth],
        open_circuits: set[str] | frozenset[str] = frozenset(),
    ):
        self.open_circuits = open_circuits
        self.latency: Mapping[str, LatencyStat] = {}
        self.estimates = Estimates()
        self.request = request
        self.classified = classified
        self.settings = settings
        self.health = health
        routing = settings.config.routing
        route = request.route if not isinstance(request.route, msgspec.UnsetType) else None
        self.allow = [*routing.allow, *(route.allow if route else [])]
        self.deny = [*routing.deny, *(route.deny if route else [])]
        self.max_cost = (
            route.max_cost_usd if route and isinstance(route.max_cost_usd, float) else None
        )
        self.strategy = (
            route.strategy if route and isinstance(route.strategy, str) else routing.strategy
        )
        self.rejected: list[str] = []

    def rejection(self, spec: ModelSpec) -> str | None:
        """Why ``spec`` cannot serve this request, or None when it can."""
        live = self.settings.providers.get(spec.provider)
        seen = self.health.get(spec.provider)
        free = spec.price.input == 0 and spec.price.output == 0
        if live is None:
            return f"{spec.id}: provider {spec.provider} is not configured"
        if live.free_only and not free:
            return f"{spec.id}: needs a paid key (set {live.spec.key_env})"
        if seen is not None and seen.state == "free_tier_refused" and free:
            return f"{spec.id}: the provider refuses its free tier to us"
        if (why := self._marked(spec) or self._circuit(spec)) is not None:
            return f"{spec.id}: {why}"
        if self.allow and not _matches(spec, self.allow):
            return f"{spec.id}: not in the allow list"
        if _matches(spec, self.deny):
            return f"{spec.id}: denied by the routing deny list"
        if reason := _unfit(spec, self.classified):
            return reason
        if self.max_cost is not None and self.cost(spec) > self.max_cost:
            return f"{spec.id}: estimated cost over max_cost_usd {self.max_cost}"
        return None

    def _admitted(self, spec: ModelSpec) -> bool:
        """Whether ``spec`` may serve; the reason it may not is kept in ``rejected``."""
        reason = self.rejection(spec)
        if reason is not None:
            self.rejected.append(reason)
        return reason is None

    def _marked(self, spec: ModelSpec) -> str | None:
        """A recent sign that this provider's key or this model is refused upstream.

        Marks age out after ``reliability.mark_ttl_s``, so a fixed key or a model that
        came back gets traffic again without anyone clearing the mark."""
        ttl = self.settings.config.reliability.mark_ttl_s
        for subject, state in ((spec.provider, "auth_failed"), (spec.id, "model_not_found")):
            seen = self.health.get(subject)
            if seen is not None and seen.state == state and time.time() - seen.at < ttl:
                return f"{state.replace('_', ' ')} recently: {seen.reason}"
        return None

    def _ttft(self, spec: ModelSpec) -> float:
        """Observed time to first token; a model never seen sorts after every measured one."""
        stat = self.latency.get(spec.id)
        return stat.ttft_ms if stat is not None and stat.ttft_ms > 0 else float("inf")

    def _circuit(self, spec: ModelSpec) -> str | None:
        """An open breaker (a half-open one with its probe free is not open: it may serve)."""
        if breaker_key(spec.provider) in self.open_circuits:
            return f"the circuit for provider {spec.provider} is open"
        if breaker_key(spec.provider, spec.id) in self.open_circuits:
            return "its circuit is open"
        return None

    def cost(self, spec: ModelSpec) -> float:
        """Estimated cost, with the ledger's calibration once enough answers back it."""
        learned = self.estimates.providers.get(spec.provider)
        factor = learned.factor if learned and learned.samples >= MIN_SAMPLES else 1.0
        tokens = msgspec.structs.replace(
            self.classified,
            input_tokens=round(self.classified.input_tokens * factor),
            output_tokens=self._output_tokens(),
        )
        return estimate_cost(spec, tokens)

    def _output_tokens(self) -> int:
        tier = self.classified.tier
        seen = self.estimates.tiers.get(tier)
        configured = self.settings.config.routing.output_tokens.get(tier)
        if seen is not None and seen.samples >= MIN_SAMPLES:
            expected = seen.output_tokens
        else:
            expected = configured or self.classified.output_tokens
        limit = self.request.max_tokens
        return min(expected, limit) if isinstance(limit, int) else expected

    def order(self, specs: Iterable[ModelSpec], tier: Tier) -> list[ModelSpec]:
        """Admissible models, cheapest capable of ``tier`` first; the strongest if none is."""
        specs = [s for s in specs if self._admitted(s)]
        rank = TIERS.index(tier)
        capable = [s for s in specs if TIERS.index(s.tier) >= rank]
        if not capable:  # nothing strong enough is configured: the strongest there is
            return sorted(specs, key=lambda s: (-TIERS.index(s.tier), self.cost(s)))
        if self.strategy == "latency":
            return sorted(capable, key=lambda s: (self._ttft(s), self.cost(s)))
        if self.strategy == "priority":
            priority = self.settings.config.routing.priority
            return sorted(capable, key=lambda s: (self._priority(s, priority), self.cost(s)))
        return sorted(capable, key=lambda s: (TIERS.index(s.tier), self.cost(s)))

    @staticmethod
    def _priority(spec: ModelSpec, priority: list[str]) -> int:
        return priority.index(spec.provider) if spec.provider in priority else len(priority)

    def candidates(self, specs: Iterable[ModelSpec], *, checked: bool = False) -> list[Candidate]:
        """The chain, deduplicated and capped; ``checked`` when ``order`` already filtered."""
        seen: set[str] = set()
        chain: list[Candidate] = []
        for spec in specs:
            if spec.id not in seen and (checked or self._admitted(spec)):
                seen.add(spec.id)
                chain.append(Candidate(spec.provider, spec.id, round(self.cost(spec), 8)))
        if not chain:
            why = "; ".join(self.rejected[:5]) or "no model is configured"
            raise NoCandidates(f"no configured model can serve this request: {why}")
        return chain[:MAX_CHAIN]


def _resolve(model: str, settings: Settings) -> ModelSpec:
    spec = settings.catalog.get(model)
    if spec is None and "/" not in model:
        matches = [s for s in settings.live_models() if s.model == model]
        spec = matches[0] if matches else None
    if spec is None:
        known = ", ".join(sorted(s.id for s in settings.live_models())[:10]) or "none"
        raise UnknownModel(
            f"unknown model {model!r}: use 'auto', an alias, or one of the configured "
            f"models ({known}); declare others under 'models:' in the config"
        )
    return spec


BUILTIN_ALIASES: Final[dict[str, AliasConfig]] = {
    "fast": AliasConfig(strategy="latency"),
    "cheap": AliasConfig(tier="simple", strategy="cost"),
    "smart": AliasConfig(tier="complex"),
    "free": AliasConfig(tier="simple", free=True, prefer=["opencode"]),
    "vision": AliasConfig(needs=["vision"]),
}
"""Aliases every router knows; a user alias of the same name replaces one."""
ALIAS_NAMES: Final = ("auto", *BUILTIN_ALIASES)
"""Every name the router resolves by itself: ``auto`` (route by tier) and the aliases."""


class Plan(msgspec.Struct):
    """A planning decision: the chain, and why the other models were passed over."""

    candidates: list[Candidate]
    skipped: list[str] = []


def plan(
    request: ChatRequest,
    classified: Classified,
    settings: Settings,
    health: Mapping[str, ProviderHealth] | None = None,
    *,
    open_circuits: set[str] | frozenset[str] = frozenset(),
    latency: Mapping[str, LatencyStat] | None = None,
    switch: str | None = None,
) -> list[Candidate]:
    """The ordered fallback chain for ``request``; raises ``RequestError`` when there is none."""
    return make_plan(
        request,
        classified,
        settings,
        health,
        open_circuits=open_circuits,
        latency=latency,
        switch=switch,
    ).candidates


def make_plan(
    request: ChatRequest,
    classified: Classified,
    settings: Settings,
    health: Mapping[str, ProviderHealth] | None = None,
    *,
    open_circuits: set[str] | frozenset[str] = frozenset(),
    latency: Mapping[str, LatencyStat] | None = None,
    switch: str | None = None,
    estimates: Estimates | None = None,
) -> Plan:
    """The chain and the reasons models were skipped.

    ``health`` is what callers shared (a provider that refuses its free tier to us
    gets no more free-model requests); ``switch`` is a provider the operator prefers
    (``omni switch``): its models go first wherever the request does not pin a model.
    """
    planner = _Planner(request, classified, settings, health or {}, open_circuits)
    planner.latency = latency or {}
    planner.estimates = estimates or Estimates()
    chain = _chain(planner, request, classified, settings)
    if switch and "/" not in request.model:
        chain = [c for c in chain if c.provider == switch] + [
            c for c in chain if c.provider != switch
        ]
    return Plan(candidates=chain, skipped=planner.rejected[:20])


def _chain(
    planner: _Planner, request: ChatRequest, classified: Classified, settings: Settings
) -> list[Candidate]:
    aliases = {**BUILTIN_ALIASES, **settings.config.routing.aliases}
    model = request.model
    if model in aliases:
        alias = aliases[model]
        if isinstance(alias, list):
            return planner.candidates(_resolve(m, settings) for m in alias)
        return _plan_alias(planner, alias, settings)
    if model == "auto":
        ordered = planner.order(settings.live_models(), classified.tier)
        return planner.candidates(ordered, checked=True)
    spec = _resolve(model, settings)
    fallbacks = [settings.catalog.get(f) for f in spec.fallbacks]
    if spec.provider not in settings.providers:
        raise NoCandidates(
            f"{spec.id}: provider {spec.provider!r} is not configured; set its API key "
            f"or declare it under 'providers:'"
        )
    if reason := _unfit(spec, classified):
        raise NoCandidates(f"{reason}; choose another model or 'auto'")
    return planner.candidates([spec, *(f for f in fallbacks if f is not None)])


def _plan_alias(planner: _Planner, alias: AliasConfig, settings: Settings) -> list[Candidate]:
    if alias.strategy is not None:
        planner.strategy = alias.strategy
    if alias.needs:
        needs = sorted({*planner.classified.needs, *alias.needs})
        planner.classified = msgspec.structs.replace(planner.classified, needs=needs)
    if alias.models:
        return planner.candidates(_resolve(m, settings) for m in alias.models)
    models = settings.live_models()
    if alias.free:
        models = [m for m in models if m.price.input == m.price.output == 0]
    tier = alias.tier or planner.classified.tier
    ordered = planner.order(models, tier)
    if alias.prefer:
        rank = {provider: i for i, provider in enumerate(alias.prefer)}
        ordered.sort(key=lambda s: rank.get(s.provider, len(rank)))  # stable: keeps the order
    return planner.candidates(ordered, checked=True)


class PlannerActor(HandoffActor):
    """Subscribes to ``omni.v1.plan``; hands envelopes to ``omni.v1.call.<provider>``."""

    name = "planner"

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        *,
        concurrency: int = 64,
        backlog: int = 1024,
        boards: Boards | None = None,
    ) -> None:
        super().__init__(
            bus,
            subject=subjects.PLAN,
            queue=subjects.PLANNER_QUEUE,
            concurrency=concurrency,
            backlog=backlog,
        )
        self.settings = settings
        boards = boards or Boards.for_bus(bus, settings)
        self.health = boards.health
        self.breakers = boards.breakers
        self.dedup: DedupBoard | None = boards.dedup
        self.switch = SwitchBoard(bus, replicas=bus.replicas(settings.config.nats.replicas))
        self.budget = BudgetGuard(bus, settings)
        self.expected = EstimateSource(bus)

    async def _within_budget(self, envelope: CallEnvelope) -> CallEnvelope:
        """The envelope as its key's spending limit lets it go: as it is, downgraded to the
        cheapest capable models, or refused, as configured."""
        verdict = await self.budget.check(envelope.key)
        if verdict.action == "refuse":
            raise BudgetExceeded(f"{verdict.reason}; requests are refused until it resets")
        if verdict.action != "downgrade" or envelope.classified is None:
            return envelope
        classified = _downgraded(envelope.classified, verdict.reason)
        request = envelope.request
        if request.model in ALIAS_NAMES:  # a pinned model stays pinned
            request = msgspec.structs.replace(request, model="cheap")
        return msgspec.structs.replace(envelope, classified=classified, request=request)

    async def handle(self, msg: Msg) -> None:
        await self.take(decode_envelope(msg.data))

    async def take(self, envelope: CallEnvelope) -> None:
        """Plan a classified envelope and hand it to its first candidate's caller (or end
        the client's stream with the reason nothing can serve it).

        The classifier of the same process calls this directly (see ``ClassifierActor``):
        a hop through ``omni.v1.plan`` would cost a NATS round trip and a JSON
        encode/decode of the whole prompt for nothing."""
        if envelope.classified is None:
            raise ValueError(f"envelope {envelope.rid} reached the planner unclassified")
        try:
            envelope = await self._within_budget(envelope)
            assert envelope.classified is not None
            decision = make_plan(
                envelope.request,
                envelope.classified,
                self.settings,
                await self.health.snapshot(),
                open_circuits=self.breakers.open_circuits(),
                latency=self.health.latency_snapshot(),
                switch=await self.switch.current(),
                estimates=await self.expected.current(),
            )
        except RequestError as exc:
            failure = Failure(code=exc.code, message=exc.message)
            event = Event(kind="reject", rid=envelope.rid, reason=f"{exc.code}: {exc.message}")
            await emit(self.bus, event)
            await fail_request(self.bus, envelope, failure, dedup=self.dedup)
            return
        planned = msgspec.structs.replace(
            envelope, candidates=decision.candidates, skipped=decision.skipped
        )
        await emit(self.bus, _route_event(planned))
        timeout = self.settings.config.reliability.handoff_timeout_s
        await dispatch(self.bus, planned, start=0, handoff_timeout_s=timeout, dedup=self.dedup)


def _downgraded(classified: Classified, reason: str) -> Classified:
    """The cheapest capable models for an over-budget request: tier simple, by cost."""
    return msgspec.structs.replace(
        classified, tier="simple", reasons=[*classified.reasons, f"{reason}: downgraded"]
    )


def _route_event(envelope: CallEnvelope) -> Event:
    classified, first = envelope.classified, envelope.candidates[0]
    assert classified is not None
    detail: dict[str, str | float | int] = {
        "tier": classified.tier,
        "confidence": classified.confidence,
        "reasons": "; ".join(classified.reasons),
        "est_cost_usd": first.est_cost_usd,
        "chain": ", ".join(c.model for c in envelope.candidates),
        "skipped": "; ".join(envelope.skipped),
    }
    return Event(
        kind="route",
        rid=envelope.rid,
        provider=first.provider,
        model=first.model,
        reason=f"{classified.tier} ({classified.confidence:.2f})",
        detail=detail,
    )
