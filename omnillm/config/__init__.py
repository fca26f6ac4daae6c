"""The user-facing config and the resolved view the actors use.

:func:`load_config` reads one YAML or JSON file (or none: every field has a default),
applies the ``OMNI_*`` environment overrides and checks what types cannot say. Every
problem is one :class:`~omnillm.errors.ConfigError` in the form a person can act on::

    omnillm.yaml: models[0].price.input: expected a number, got a string

:func:`resolve` turns a :class:`Config` into :class:`Settings`: the model catalog
(built-in rows plus config rows) and the live providers, with their API keys taken
from config or the environment. Keys never appear in a ``repr``.

The package, one concern a module: :mod:`~omnillm.config.schema` the file's shape (with
``_sections``), ``_load`` reading it, ``_explain`` msgspec's errors in words, ``_checks``
what types cannot express, ``_env`` the environment overrides, and
:mod:`~omnillm.config.settings` the resolved view.
"""

from __future__ import annotations

from omnillm.config._checks import Problem
from omnillm.config._load import CONFIG_FILES, load_config
from omnillm.config.schema import (
    LOG_LEVELS,
    MAX_REPLICAS,
    MAX_WORKERS,
    NO_KEY,
    AliasConfig,
    AuditConfig,
    BreakerConfig,
    BudgetConfig,
    ClassifierConfig,
    Config,
    DedupConfig,
    EmbeddedNats,
    GatewayConfig,
    GatewayKey,
    LedgerConfig,
    LimitsConfig,
    LogConfig,
    ModelConfig,
    NatsConfig,
    NatsUser,
    PriceConfig,
    PriceTierConfig,
    ProviderConfig,
    ReliabilityConfig,
    RoutingConfig,
    Strategy,
)
from omnillm.config.settings import PUBLIC_KEY, LiveProvider, Settings, resolve

__all__ = [
    "CONFIG_FILES",
    "LOG_LEVELS",
    "MAX_REPLICAS",
    "MAX_WORKERS",
    "NO_KEY",
    "PUBLIC_KEY",
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
    "LiveProvider",
    "LogConfig",
    "ModelConfig",
    "NatsConfig",
    "NatsUser",
    "PriceConfig",
    "PriceTierConfig",
    "Problem",
    "ProviderConfig",
    "ReliabilityConfig",
    "RoutingConfig",
    "Settings",
    "Strategy",
    "load_config",
    "resolve",
]
