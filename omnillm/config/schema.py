"""The file's shape: :class:`Config`, its root, and every section as a
msgspec Struct. A key the schema does not know is an error, not a silently ignored setting.

This module holds the sections that say where requests may go (``providers:``,
``models:``, ``routing:``) and re-exports the others from ``_sections``. What types cannot
say is checked in ``_checks``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Literal

import msgspec

from omnillm.bus.messages import Tier
from omnillm.config._sections import (
    LOG_LEVELS,
    MAX_REPLICAS,
    MAX_WORKERS,
    AuditConfig,
    BreakerConfig,
    ClassifierConfig,
    DedupConfig,
    EmbeddedNats,
    GatewayConfig,
    GatewayKey,
    LedgerConfig,
    LimitsConfig,
    LogConfig,
    NatsConfig,
    NatsUser,
    ReliabilityConfig,
    _Section,
)
from omnillm.providers.registry import Family

__all__ = [
    "LOG_LEVELS",
    "MAX_REPLICAS",
    "MAX_WORKERS",
    "MOVED_TO_LIMITS",
    "NO_KEY",
    "AliasConfig",
    "AuditConfig",
    "BreakerConfig",
    "BudgetConfig",
    "ClassifierConfig",
    "Config",
    "DedupConfig",
    "EmbeddedNats",
    "GatewayConfig",
    "GatewayKey",
    "LedgerConfig",
    "LimitsConfig",
    "LogConfig",
    "ModelConfig",
    "NatsConfig",
    "NatsUser",
    "PriceConfig",
    "PriceTierConfig",
    "ProviderConfig",
    "ReliabilityConfig",
    "RoutingConfig",
    "Strategy",
]

NO_KEY: Final = "none"
"""``api_key: none``: the provider takes no auth at all (a local server)."""

Strategy = Literal["cost", "latency", "priority"]

MOVED_TO_LIMITS: Final[Mapping[str, str]] = MappingProxyType(
    {"workers": "concurrency", "max_request_bytes": "max_request_bytes"}
)
"""Keys that moved from ``reliability:`` to ``limits:``, old name: new name."""


class ProviderConfig(_Section, frozen=True):
    family: Family | None = None
    base_url: str | None = None
    api_key: str | None = None
    api_key_env: str | None = None
    headers: dict[str, str] = {}
    rpm: int | None = None
    """Requests a minute, per caller process."""
    tpm: int | None = None
    """Tokens a minute (estimated input + expected output), per caller process."""
    max_concurrency: int = 64
    backlog: int = 256
    """Requests a caller process holds beyond ``max_concurrency`` before it answers busy."""
    max_tokens_field: str | None = None
    stream_usage: bool | None = None
    api_version: str | None = None
    """Azure's ``api-version`` query parameter (default 2024-10-21)."""
    enabled: bool = True

    def __repr__(self) -> str:
        plain = self.api_key is None or self.api_key.lower() == NO_KEY
        key = repr(self.api_key) if plain else "<set>"
        return (
            f"ProviderConfig(family={self.family!r}, base_url={self.base_url!r}, "
            f"api_key={key}, api_key_env={self.api_key_env!r}, "
            f"headers={sorted(self.headers)}, enabled={self.enabled})"
        )


class PriceConfig(_Section, frozen=True):
    """USD per million tokens; a field left out keeps the catalog's value (else 0)."""

    input: float | None = None
    output: float | None = None
    cached_input: float | None = None
    cache_write: float | None = None


class PriceTierConfig(PriceConfig, frozen=True):
    """Rates for a prompt over ``threshold_tokens`` (long-context pricing)."""

    threshold_tokens: int = 0


class ModelConfig(_Section, frozen=True):
    """A model added to the catalog, or fields overriding a shipped row with the same id.

    Every field but ``id`` may be left out: an override keeps the shipped value, a new
    model gets the defaults (128,000 context, 4,096 output, price 0, tier medium).
    """

    id: str
    """``provider/model``."""
    model: str | None = None
    """The upstream name, when it differs from the id's tail."""
    context_window: int | None = None
    max_output: int | None = None
    price: PriceConfig | None = None
    price_above: PriceTierConfig | None = None
    capabilities: list[str] | None = None
    tier: Tier | None = None
    fallbacks: list[str] | None = None
    as_of: str | None = None
    source: str | None = None


class AliasConfig(_Section, frozen=True):
    """A name for a routing intent: a model list, a tier, a strategy, or a filter."""

    tier: Tier | None = None
    models: list[str] = []
    strategy: Strategy | None = None
    free: bool = False
    """Only models that cost nothing."""
    needs: list[Literal["vision", "tools", "long_context"]] = []
    """Capabilities every candidate must have, whatever the request carries."""
    prefer: list[str] = []
    """Providers to put first, in this order."""


class BudgetConfig(_Section, frozen=True):
    """Spending limits for everyone together (per gateway key: ``gateway.keys``)."""

    daily_usd: float | None = None
    monthly_usd: float | None = None
    over: Literal["downgrade", "refuse"] = "downgrade"
    """Over a limit: send requests to the cheapest capable models, or refuse them."""
    refresh_s: float = 5.0
    """How old the ledger's spend figure may be when a planner checks it."""


class RoutingConfig(_Section, frozen=True):
    strategy: Strategy = "cost"
    priority: list[str] = []
    allow: list[str] = []
    deny: list[str] = []
    aliases: dict[str, AliasConfig | list[str]] = {}
    budget: BudgetConfig = BudgetConfig()
    output_tokens: dict[Tier, int] = {}
    """Expected output tokens per tier for cost estimates, until the ledger has seen
    enough answers (defaults: simple 150, medium 500, complex 1200, reasoning 3000)."""


class Config(_Section, frozen=True, weakref=True):
    """The whole file. ``weakref``: the checks remember which configs passed.

    The keys of :data:`MOVED_TO_LIMITS` still work under their old names: a value given
    there (other than the default) becomes the ``limits`` value when ``limits`` leaves
    that key at its default. Given under both names with two values, it is an error.
    """

    nats: NatsConfig = NatsConfig()
    gateway: GatewayConfig = GatewayConfig()
    providers: dict[str, ProviderConfig] = {}
    models: list[ModelConfig] = []
    routing: RoutingConfig = RoutingConfig()
    reliability: ReliabilityConfig = ReliabilityConfig()
    limits: LimitsConfig = LimitsConfig()
    dedup: DedupConfig = DedupConfig()
    audit: AuditConfig = AuditConfig()
    ledger: LedgerConfig = LedgerConfig()
    log: LogConfig = LogConfig()
    data_dir: str = ".omnillm"
    classifier: ClassifierConfig = ClassifierConfig()

    def __post_init__(self) -> None:
        limits, default = self.limits, LimitsConfig()
        for old, new in MOVED_TO_LIMITS.items():
            if getattr(limits, new) == getattr(default, new):
                limits = msgspec.structs.replace(limits, **{new: getattr(self.reliability, old)})
        if limits != self.limits:
            msgspec.structs.force_setattr(self, "limits", limits)
