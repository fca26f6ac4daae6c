"""The model catalog: what each model costs, how much it holds, what it can do.

The built-in rows ship as ``data/catalog.json`` (a list of model objects, prices in
USD per million tokens, a dated snapshot: every row says when its price was read,
``as_of``, and where, ``source``); config adds rows or replaces them by id.
A model's id is its routing name, ``provider/model``; ``model`` is the name sent
upstream and defaults to the id's tail (``openrouter/openai/gpt-5.2`` sends
``openai/gpt-5.2``).
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Iterable, Iterator, Mapping
from importlib import resources
from types import MappingProxyType
from typing import Final

import msgspec
from msgspec import Struct

from omnillm.bus.messages import Tier, TokenUsage

__all__ = [
    "CAPABILITIES",
    "Catalog",
    "ModelSpec",
    "Price",
    "PriceTier",
    "cost_usd",
    "load_builtin_catalog",
    "rates_for",
    "split_model_id",
]

CAPABILITIES: Final = ("tools", "vision", "reasoning", "prefill")
"""``prefill``: the model continues a trailing assistant message (mid-stream fallback)."""

_PER_TOKEN: Final = 1e-6


class Price(Struct, frozen=True, kw_only=True):
    """USD per million tokens; a missing cache price bills those tokens as input."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None


class PriceTier(Struct, frozen=True, kw_only=True):
    """Long-context rates (USD per million tokens) for a prompt over ``threshold_tokens``.

    They replace the whole request's rates, as the providers bill it. A missing
    cache price keeps the base row's cache price.
    """

    threshold_tokens: int
    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None


class ModelSpec(Struct, frozen=True, kw_only=True):
    id: str
    """``provider/model``, the routing name."""
    provider: str = ""
    """Defaults to the id's head; if given it must equal it."""
    model: str = ""
    """The upstream model name sent on the wire; defaults to the id's tail."""
    context_window: int
    max_output: int
    price: Price
    capabilities: frozenset[str] = frozenset()
    tier: Tier = "medium"
    """The highest tier this model is good for: simple < medium < complex < reasoning."""
    fallbacks: tuple[str, ...] = ()
    """Explicit per-model fallback ids, tried before the planner's own order."""
    price_above: PriceTier | None = None
    """Rates for prompts longer than its threshold; None when the price is flat."""
    as_of: str = ""
    """The date the price was read, ``YYYY-MM-DD``; empty for a config row without one."""
    source: str = ""
    """Where the price comes from: a URL or a short citation."""

    def __post_init__(self) -> None:
        provider, model = split_model_id(self.id)
        if self.provider and self.provider != provider:
            raise ValueError(f"provider {self.provider!r} does not match the id {self.id!r}")
        if self.as_of and not _is_date(self.as_of):
            raise ValueError(f"{self.id}: as_of {self.as_of!r} is not a YYYY-MM-DD date")
        msgspec.structs.force_setattr(self, "provider", provider)
        msgspec.structs.force_setattr(self, "model", self.model or model)


def _is_date(text: str) -> bool:
    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == len("YYYY-MM-DD")


def split_model_id(model_id: str) -> tuple[str, str]:
    """``"openrouter/openai/gpt-5.2"`` -> ``("openrouter", "openai/gpt-5.2")``.

    Raises ``ValueError`` when the id is not ``provider/model``.
    """
    provider, _, model = model_id.partition("/")
    if not provider or not model:
        raise ValueError(f"expected 'provider/model', got {model_id!r}")
    return provider, model


class Catalog:
    """An immutable set of models by id; a later model with an existing id replaces it."""

    __slots__ = ("_by_id",)

    def __init__(self, models: Iterable[ModelSpec]) -> None:
        self._by_id: Mapping[str, ModelSpec] = MappingProxyType({m.id: m for m in models})

    def get(self, model_id: str) -> ModelSpec | None:
        return self._by_id.get(model_id)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._by_id

    def for_provider(self, provider: str) -> list[ModelSpec]:
        return [m for m in self._by_id.values() if m.provider == provider]

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def __repr__(self) -> str:
        return f"Catalog({len(self)} models)"


_decoder: Final = msgspec.json.Decoder(list[ModelSpec])


@functools.cache
def load_builtin_catalog() -> Catalog:
    """The shipped catalog, read once (the result is immutable)."""
    data = resources.files("omnillm.providers").joinpath("data/catalog.json").read_bytes()
    return Catalog(_decoder.decode(data))


def cost_usd(spec: ModelSpec, usage: TokenUsage) -> float:
    """What ``usage`` cost on ``spec``, in USD.

    ``usage.input_tokens`` includes cached reads and cache writes (the normalised
    OpenAI convention); reasoning tokens are already inside ``output_tokens``. A
    prompt over ``spec.price_above.threshold_tokens`` bills every token at those rates.
    """
    price = rates_for(spec, usage.input_tokens)
    cached = usage.cached_input_tokens
    written = usage.cache_write_tokens
    uncached = max(usage.input_tokens - cached - written, 0)
    total = (
        uncached * price.input
        + cached * _or(price.cached_input, price.input)
        + written * _or(price.cache_write, price.input)
        + usage.output_tokens * price.output
    )
    return total * _PER_TOKEN


def rates_for(spec: ModelSpec, input_tokens: int) -> Price:
    """The rates a prompt of ``input_tokens`` (cached included) is billed at on ``spec``."""
    tier = spec.price_above
    if tier is None or input_tokens <= tier.threshold_tokens:
        return spec.price
    base = spec.price
    return Price(
        input=tier.input,
        output=tier.output,
        cached_input=base.cached_input if tier.cached_input is None else tier.cached_input,
        cache_write=base.cache_write if tier.cache_write is None else tier.cache_write,
    )


def _or(value: float | None, default: float) -> float:
    return default if value is None else value
