"""The admin subjects: every query and answer.

Each admin subject is a plain NATS request/reply with a JSON query and a JSON answer.
A client in any language sends the query to the subject (built by
:func:`omnillm.bus.subjects.admin`) and reads one reply: the answer below, or a
:class:`~omnillm.bus.messages.Failure` (``{"code": ..., "message": ...}``). No answer is
an object with both ``code`` and ``message``, so that pair marks a ``Failure``.

::

    subject                  query                           answer             answered by
    omni.v1.admin.providers  none (the payload is ignored)   list[ProviderRow]  admin
    omni.v1.admin.models     none (the payload is ignored)   list[ModelRow]     admin
    omni.v1.admin.switch     SwitchQuery                     Switch             admin
    omni.v1.admin.cost       CostQuery                       list[CostRow]      ledger
    omni.v1.admin.stats      StatsQuery                      Stats              ledger
    omni.v1.admin.spend      SpendQuery                      Spend              ledger
    omni.v1.admin.estimates  SpendQuery (key ignored)        Estimates          ledger

The admin actor answers in queue group ``admin``, the ledger in ``ledger``. Times are
unix seconds; a ``since`` of null means all time; an empty query to the ledger means
every field's default. ``Failure`` codes: ``invalid_request`` (a query that does not
decode, an unknown grouping or reference model), ``unknown_provider`` (a switch to a
provider that is not live), ``unknown_admin_request`` and ``internal``.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, get_args

import msgspec

__all__ = [
    "GROUPINGS",
    "CostQuery",
    "CostRow",
    "Estimates",
    "Grouping",
    "InputEstimate",
    "ModelRow",
    "OutputExpectation",
    "ProviderRow",
    "Spend",
    "SpendQuery",
    "Stats",
    "StatsQuery",
    "Switch",
    "SwitchQuery",
]

# --- providers and models (admin actor) ----------------------------------------------


class ProviderRow(msgspec.Struct):
    name: str
    family: str
    state: str
    """``live``, ``no key``, ``needs base_url``, ``disabled``, ``not served``, or what
    callers saw: ``refused free tier``, ``key rejected``."""
    reason: str
    base_url: str
    models: int
    circuit: str = "closed"
    """The provider's breaker: ``closed``, ``open`` or ``half_open``."""
    ttft_ms: float | None = None
    """The best observed time to first token among its models (moving average)."""
    error_rate: float | None = None


class ModelRow(msgspec.Struct):
    """A catalog model; prices in USD per million tokens."""

    id: str
    provider: str
    tier: str
    context_window: int
    max_output: int
    input: float
    cached_input: float | None
    cache_write: float | None
    output: float
    capabilities: list[str]
    live: bool
    as_of: str
    source: str


# --- switch (admin actor) ------------------------------------------------------------


class SwitchQuery(msgspec.Struct, forbid_unknown_fields=True):
    """``{"provider": "p"}`` prefers p from now on, ``{"clear": true}`` stops; ``{}`` reads."""

    provider: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    """A provider name is one subject token: at most 64 characters."""
    clear: bool = False


class Switch(msgspec.Struct):
    """The operator's preferred provider (None: none), and the unix time it was set.
    Also the value the ``omni_config`` bucket holds under ``switch``."""

    provider: str | None = None
    at: float = 0.0


# --- cost, stats, spend, estimates (ledger) ------------------------------------------

Grouping = Literal["provider", "model", "day", "key", "tier"]
GROUPINGS: Final[tuple[str, ...]] = get_args(Grouping)


class CostQuery(msgspec.Struct, forbid_unknown_fields=True):
    by: Grouping = "provider"
    since: float | None = None


class CostRow(msgspec.Struct):
    """Spend of one group (a provider, a model, a day, a key or a tier)."""

    group: str
    requests: int
    attempts: int
    errors: int
    """Failed attempts in this group."""
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: float


class StatsQuery(msgspec.Struct, forbid_unknown_fields=True):
    since: float | None = None
    reference: str | None = None
    """A catalog model id to price the same tokens on; None: the ledger's default."""


class Stats(msgspec.Struct):
    """The router's record since a time: requests, failures, speed, tokens, money."""

    since: float | None
    requests: int
    errors: int
    """Requests none of whose attempts succeeded."""
    fallbacks: int
    """Requests with more than one attempt."""
    attempts: int
    failed_attempts: int
    retries: int
    """Upstream calls beyond the first within an attempt."""
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: float
    reference_model: str | None = None
    reference_cost_usd: float | None = None
    """What the same token counts would have cost on ``reference_model``."""
    savings_usd: float | None = None
    """``reference_cost_usd - cost_usd``; negative when routing cost more."""


class SpendQuery(msgspec.Struct, forbid_unknown_fields=True):
    """USD spent since a time, by one gateway key (``key``) or by everyone (None)."""

    since: float | None = None
    key: str | None = None


class Spend(msgspec.Struct):
    cost_usd: float


class InputEstimate(msgspec.Struct):
    factor: float
    """Provider-counted input tokens over the router's estimate (1.0: spot on)."""
    error: float
    """Mean absolute error of the estimate, as a fraction of the real count."""
    samples: int


class OutputExpectation(msgspec.Struct):
    output_tokens: int
    samples: int


class Estimates(msgspec.Struct):
    """How good the router's guesses were: per provider, per tier."""

    providers: dict[str, InputEstimate] = {}
    tiers: dict[str, OutputExpectation] = {}
