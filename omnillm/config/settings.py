"""The resolved view the actors use: :func:`resolve` turns a :class:`Config` into
:class:`Settings`, the model catalog (built-in rows plus config rows) and the
:class:`LiveProvider` rows requests can go to, each with its API key from config or the
environment. Keys never appear in a ``repr``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import msgspec

from omnillm.config._checks import check
from omnillm.config.schema import NO_KEY, Config, ModelConfig, PriceConfig, ProviderConfig
from omnillm.providers.base import AuthStyle, WireOptions
from omnillm.providers.catalog import Catalog, ModelSpec, Price, PriceTier, load_builtin_catalog
from omnillm.providers.registry import BUILTIN_PROVIDERS, ProviderSpec, auth_headers

__all__ = ["PUBLIC_KEY", "LiveProvider", "Settings", "resolve"]

PUBLIC_KEY: Final = "public"
"""The key OpenCode Zen's free models take; with it only free models are served."""


@dataclass(frozen=True, slots=True, repr=False)
class LiveProvider:
    """A provider requests can go to: its merged row, its key, its config."""

    spec: ProviderSpec
    api_key: str | None
    config: ProviderConfig

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def free_only(self) -> bool:
        """Only free models can be used: OpenCode Zen with the public key."""
        return self.spec.family == "opencode" and self.api_key == PUBLIC_KEY

    @property
    def missing_key(self) -> bool:
        """It needs a key and has none: the caller reports this instead of calling."""
        return self.api_key is None and self.spec.auth != "none"

    def headers(self, *, auth: AuthStyle | None = None) -> dict[str, str]:
        """Fixed headers plus auth (in the provider's style, or ``auth`` when a route needs
        another), for every request to this provider."""
        spec = self.spec if auth is None else msgspec.structs.replace(self.spec, auth=auth)
        return auth_headers(spec, self.api_key)

    def __repr__(self) -> str:
        key = "<missing>" if self.missing_key else "<none>" if self.api_key is None else "<set>"
        if self.free_only:
            key = "public"
        return (
            f"LiveProvider(name={self.spec.name!r}, family={self.spec.family!r}, "
            f"base_url={self.spec.base_url!r}, api_key={key})"
        )


class Settings:
    """Everything the actors need from config, resolved once."""

    __slots__ = ("catalog", "config", "providers")

    def __init__(
        self, config: Config, catalog: Catalog, providers: Mapping[str, LiveProvider]
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.providers = dict(providers)

    def live_models(self) -> list[ModelSpec]:
        """Catalog models whose provider is live."""
        return [m for m in self.catalog if m.provider in self.providers]

    def __repr__(self) -> str:
        return f"Settings(providers={sorted(self.providers)}, catalog={self.catalog!r})"


def resolve(config: Config, *, env: Mapping[str, str] | None = None) -> Settings:
    """Merge config with the built-in rows; ``env`` (default ``os.environ``) supplies keys.

    Live providers: every enabled provider under ``providers:``, plus every built-in
    whose key variable is set (unless it needs a ``base_url`` only config can give).
    """
    env = os.environ if env is None else env
    check(config)  # a config load_config returned passed already
    builtin = load_builtin_catalog()
    catalog = Catalog([*builtin, *(_model_spec(m, builtin.get(m.id)) for m in config.models)])
    live = {
        name: _live(name, provider, env)
        for name, provider in config.providers.items()
        if provider.enabled
    }
    for name, spec in BUILTIN_PROVIDERS.items():
        undeclared = name not in config.providers and not spec.requires_base_url
        if undeclared and spec.key_env and env.get(spec.key_env):
            live[name] = _live(name, ProviderConfig(), env)
    return Settings(config, catalog, live)


def _model_spec(model: ModelConfig, base: ModelSpec | None) -> ModelSpec:
    """The config row over the shipped one (when there is one), field by field."""
    if base is None:
        base = ModelSpec(
            id=model.id, context_window=128_000, max_output=4096, price=Price(input=0, output=0)
        )
    changes: dict[str, object] = {
        key: value
        for key, value in (
            ("model", model.model),
            ("context_window", model.context_window),
            ("max_output", model.max_output),
            ("tier", model.tier),
            ("as_of", model.as_of),
            ("source", model.source),
        )
        if value is not None
    }
    if model.price is not None:
        changes["price"] = _price(model.price, base.price)
    if model.price_above is not None:
        above = _price(model.price_above, base.price)
        changes["price_above"] = PriceTier(
            threshold_tokens=model.price_above.threshold_tokens,
            input=above.input,
            output=above.output,
            cached_input=above.cached_input,
            cache_write=above.cache_write,
        )
    if model.capabilities is not None:
        changes["capabilities"] = frozenset(model.capabilities)
    if model.fallbacks is not None:
        changes["fallbacks"] = tuple(model.fallbacks)
    return msgspec.structs.replace(base, **changes)


def _rates(price: PriceConfig, base: Price) -> dict[str, float | None]:
    return {
        key: getattr(price, key) if getattr(price, key) is not None else getattr(base, key)
        for key in ("input", "output", "cached_input", "cache_write")
    }


def _price(price: PriceConfig, base: Price) -> Price:
    rates = _rates(price, base)
    return Price(
        input=rates["input"] or 0.0,
        output=rates["output"] or 0.0,
        cached_input=rates["cached_input"],
        cache_write=rates["cache_write"],
    )


def _live(name: str, provider: ProviderConfig, env: Mapping[str, str]) -> LiveProvider:
    spec = _merge(name, provider)
    key = _api_key(spec, provider, env)
    if key is None and spec.family == "opencode":
        key = PUBLIC_KEY  # declared with no key: Zen's free models
    if key is not None and key.lower() == NO_KEY:
        spec, key = msgspec.structs.replace(spec, auth="none"), None
    return LiveProvider(spec=spec, api_key=key, config=provider)


def _merge(name: str, provider: ProviderConfig) -> ProviderSpec:
    """The built-in row (if any) with the config's URL, family, headers and options."""
    base = BUILTIN_PROVIDERS.get(name)
    family = provider.family or (base.family if base else None)
    base_url = provider.base_url or (base.base_url if base else None)
    assert family is not None and base_url is not None  # the checks made sure of both
    options = base.options if base else WireOptions()
    options = msgspec.structs.replace(
        options,
        max_tokens_field=provider.max_tokens_field or options.max_tokens_field,
        stream_usage=_or(provider.stream_usage, options.stream_usage),
    )
    if provider.api_version is not None:
        options = msgspec.structs.replace(
            options, query={**options.query, "api-version": provider.api_version}
        )
    plain = base.plain_api_suffix if base else None
    if plain is not None and base_url.rstrip("/").endswith(plain):
        options = msgspec.structs.replace(options, chat_path=None, query={})
    return ProviderSpec(
        name=name,
        family=family,
        base_url=base_url.rstrip("/"),
        auth=base.auth if base else "bearer",
        key_env=base.key_env if base else None,
        headers={**(base.headers if base else {}), **provider.headers},
        options=options,
        requires_base_url=base.requires_base_url if base else False,
        plain_api_suffix=plain,
    )


def _api_key(spec: ProviderSpec, provider: ProviderConfig, env: Mapping[str, str]) -> str | None:
    """``api_key``, else ``$api_key_env``, else the row's usual variable; empty is unset."""
    candidates = (
        provider.api_key,
        env.get(provider.api_key_env) if provider.api_key_env else None,
        env.get(spec.key_env) if spec.key_env else None,
    )
    return next((key for key in candidates if key), None)


def _or(value: bool | None, default: bool) -> bool:
    return default if value is None else value
