"""Checks types cannot express: ports in range, providers a built-in row or config can
complete, models and fallbacks the catalog knows, numbers above 0. Each problem is a key
path and what is wrong there.

:func:`check` runs them once per config object: a config :func:`~omnillm.config.load_config`
returned is not checked again by :func:`~omnillm.config.resolve`, one built in code is.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final
from weakref import WeakValueDictionary

from msgspec import Struct

from omnillm._nats_conf import user_problems
from omnillm.bus.subjects import check_token
from omnillm.config._explain import key_path, one_of
from omnillm.config.schema import (
    LOG_LEVELS,
    MAX_REPLICAS,
    MAX_WORKERS,
    MOVED_TO_LIMITS,
    Config,
    GatewayConfig,
    ModelConfig,
    ProviderConfig,
    ReliabilityConfig,
)
from omnillm.errors import ConfigError
from omnillm.providers.catalog import CAPABILITIES, load_builtin_catalog, split_model_id
from omnillm.providers.registry import BUILTIN_PROVIDERS

__all__ = [
    "Problem",
    "check",
    "given_twice",
    "log_level_problem",
    "passed",
    "port_problems",
    "raise_first",
]

Problem = tuple[str, str]
"""A key path and what is wrong there."""


_PASSED: Final[WeakValueDictionary[int, Config]] = WeakValueDictionary()
"""The config objects that passed, by ``id`` (a config holds lists: it cannot be hashed)."""


def check(config: Config, *, label: str | None = None) -> None:
    """Raise the first problem in ``config`` as a :class:`ConfigError`, its text prefixed
    with ``label`` (the file) when given; nothing when this very object passed before."""
    if _PASSED.get(id(config)) is not config:
        raise_first(_problems(config), label=label)
        passed(config)


def passed(config: Config) -> Config:
    """Remember ``config`` as passing without checking it: for a config made from a
    checked one by changes that were checked as they were made (the environment's)."""
    _PASSED[id(config)] = config
    return config


def raise_first(problems: Iterator[Problem], *, label: str | None) -> None:
    for path, what in problems:
        raise ConfigError(f"{label}: {path}: {what}" if label else f"{path}: {what}")


def _problems(config: Config) -> Iterator[Problem]:
    yield from port_problems("nats.embedded.port", config.nats.embedded.port)
    yield from port_problems("gateway.port", config.gateway.port)
    yield from _gateway_keys(config.gateway)
    yield from _providers(config.providers)
    known = {m.id for m in load_builtin_catalog()} | {m.id for m in config.models}
    for i, model in enumerate(config.models):
        yield from _model(f"models[{i}]", model, config.providers, known)
    for name, alias in config.routing.aliases.items():
        entries = alias if isinstance(alias, list) else alias.models
        where = key_path("routing.aliases", name)
        where += "" if isinstance(alias, list) else ".models"
        yield from _known_models(where, entries, known)
    yield from _replicas(config.nats.replicas)
    yield from _workers(config.gateway.workers)
    yield from user_problems(config.nats.users)
    yield from _positive("nats", config.nats)
    yield from _positive("reliability", config.reliability)
    yield from _positive("reliability.breaker", config.reliability.breaker)
    yield from _positive("limits", config.limits)
    yield from _moved(config)
    yield from _positive("ledger", config.ledger)
    if (level := log_level_problem(config.log.level)) is not None:
        yield "log.level", level


def port_problems(path: str, port: int) -> Iterator[Problem]:
    if not 0 <= port <= 65535:
        yield path, f"expected a port number (0-65535), got {port}"


def _replicas(replicas: int | str) -> Iterator[Problem]:
    if isinstance(replicas, int) and not 1 <= replicas <= MAX_REPLICAS:
        yield "nats.replicas", f"expected auto or 1 to {MAX_REPLICAS}, got {replicas}"


def _workers(workers: int | str) -> Iterator[Problem]:
    if isinstance(workers, int) and not 1 <= workers <= MAX_WORKERS:
        yield "gateway.workers", f"expected auto or 1 to {MAX_WORKERS}, got {workers}"


def _gateway_keys(gateway: GatewayConfig) -> Iterator[Problem]:
    for i, key in enumerate(gateway.keys):
        if key.key is None and key.key_env is None:
            yield f"gateway.keys[{i}]", "expected 'key' or 'key_env'"


def _providers(providers: Mapping[str, ProviderConfig]) -> Iterator[Problem]:
    for name, provider in providers.items():
        where = key_path("providers", name)
        try:
            check_token(name)
        except ValueError:
            yield where, "expected a name of letters, digits, '-' or '_' (it becomes a subject)"
            continue
        builtin = BUILTIN_PROVIDERS.get(name)
        if builtin is None:
            for key in ("family", "base_url"):
                if getattr(provider, key) is None:
                    yield f"{where}.{key}", "required for a provider that is not built in"
        elif builtin.requires_base_url and provider.base_url is None:
            yield f"{where}.base_url", f"required for {name} (it has no public URL)"
        if provider.rpm is not None and provider.rpm < 1:
            yield f"{where}.rpm", f"expected 1 or more, got {provider.rpm}"
        if provider.max_concurrency < 1:
            yield f"{where}.max_concurrency", f"expected 1 or more, got {provider.max_concurrency}"


def _model(
    where: str, model: ModelConfig, providers: Mapping[str, ProviderConfig], known: set[str]
) -> Iterator[Problem]:
    try:
        provider, _ = split_model_id(model.id)
    except ValueError:
        yield f"{where}.id", f"expected 'provider/model', got {model.id!r}"
        return
    if provider not in BUILTIN_PROVIDERS and provider not in providers:
        yield f"{where}.id", f"unknown provider '{provider}' (declare it under providers:)"
    for section in ("price", "price_above"):
        rates = getattr(model, section)
        for key in ("input", "output", "cached_input", "cache_write"):
            price = getattr(rates, key) if rates is not None else None
            if price is not None and price < 0:
                yield f"{where}.{section}.{key}", f"expected a price of 0 or more, got {price:g}"
    for key in ("context_window", "max_output"):
        value = getattr(model, key)
        if value is not None and value < 1:
            yield f"{where}.{key}", f"expected 1 or more, got {value}"
    for i, capability in enumerate(model.capabilities or ()):
        if capability not in CAPABILITIES:
            yield f"{where}.capabilities[{i}]", one_of(CAPABILITIES, capability)
    yield from _known_models(f"{where}.fallbacks", model.fallbacks or [], known)


def _known_models(where: str, ids: list[str], known: set[str]) -> Iterator[Problem]:
    for i, model_id in enumerate(ids):
        if model_id not in known:
            yield f"{where}[{i}]", f"unknown model '{model_id}' (not in the catalog or models:)"


def _moved(config: Config) -> Iterator[Problem]:
    """A moved key given under its old name (other than the default) while ``limits``
    gives it another value (see :class:`Config`)."""
    default = ReliabilityConfig()
    for old, new in MOVED_TO_LIMITS.items():
        was, now = getattr(config.reliability, old), getattr(config.limits, new)
        if was != getattr(default, old) and was != now:
            yield _conflict(old, was, new, now)


def given_twice(raw: Any) -> Iterator[Problem]:
    """A moved key written under both names with two values, in a file's data (which
    :class:`Config` read): even when the ``limits`` one is the default."""
    reliability, limits = raw.get("reliability") or {}, raw.get("limits") or {}
    for old, new in MOVED_TO_LIMITS.items():
        if old in reliability and new in limits and reliability[old] != limits[new]:
            yield _conflict(old, reliability[old], new, limits[new])


def _conflict(old: str, was: object, new: str, now: object) -> Problem:
    return f"limits.{new}", f"{now} conflicts with reliability.{old}: {was}, its old name; keep one"


_ZERO_MEANS_OFF: Final = frozenset({"probe_interval_s", "backlog", "linger_s"})


def _positive(where: str, section: Struct) -> Iterator[Problem]:
    for key in section.__struct_fields__:
        value = getattr(section, key)
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        if key in _ZERO_MEANS_OFF and value < 0:
            yield f"{where}.{key}", f"expected 0 (off) or more, got {value:g}"
        elif key not in _ZERO_MEANS_OFF and value <= 0:
            yield f"{where}.{key}", f"expected a value above 0, got {value:g}"


def log_level_problem(level: str) -> str | None:
    """What is wrong with ``level``, or ``None``."""
    return None if level.lower() in LOG_LEVELS else one_of(LOG_LEVELS, level)
