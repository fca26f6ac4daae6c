"""The admin subjects: every query and answer, and the one way to ask.

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

:func:`ask` is the one Python client of these subjects: it maps NATS's own exceptions,
a ``Failure`` and an unreadable answer to the error tree, so callers never see
``nats.errors``.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal, TypeAlias, TypeVar, get_args

import msgspec
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from omnillm.bus.connection import Bus, NatsUnreachable
from omnillm.bus.messages import Failure
from omnillm.errors import NoAnswer, NoRouter, OmniLLMError, from_code

__all__ = [
    "ASK_WAIT_S",
    "GROUPINGS",
    "CostQuery",
    "CostRow",
    "Estimates",
    "Grouping",
    "InputEstimate",
    "ModelRow",
    "OutputExpectation",
    "ProviderRow",
    "Query",
    "Spend",
    "SpendQuery",
    "Stats",
    "StatsQuery",
    "Switch",
    "SwitchQuery",
    "ask",
]

T = TypeVar("T")
Query: TypeAlias = msgspec.Struct | dict[str, Any] | bytes
"""What :func:`ask` sends: a Struct or dict, encoded as JSON, or bytes that already are."""

ASK_WAIT_S: Final = 2.0
"""How long :func:`ask` waits for an answer unless told otherwise. A person or an HTTP
tool waits on an admin answer; the OpenClaw plugin gives up after 5 s, so the gateway's
own 503 must come before that. No responders is reported at once, whatever the wait."""


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


# --- asking --------------------------------------------------------------------------


_encoder: Final = msgspec.json.Encoder()
_failure_decoder: Final = msgspec.json.Decoder(Failure)
_UNREADABLE: Final = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
"""What msgspec raises for bytes it cannot read as the type asked: invalid UTF-8 and
nesting past its recursion limit come as foreign exceptions."""


async def ask(
    bus: Bus,
    subject: str,
    query: Query,
    answer_type: type[T],
    *,
    wait_s: float = ASK_WAIT_S,
) -> T:
    """Send ``query`` (a Struct or dict, encoded as JSON; bytes go as they are) to
    ``subject`` and return the answer as ``answer_type``.

    Raises ``RequestTooLarge`` before sending a query over the server's limit,
    ``NoRouter`` when nothing listens, ``NoAnswer`` after ``wait_s`` seconds,
    ``NatsUnreachable`` when the connection cannot carry the request, the error a
    ``Failure`` answer stands for (rebuilt by ``from_code``), and ``OmniLLMError`` for
    an answer that is neither. ``msgspec.Raw`` takes any JSON answer as it came, a
    ``Failure`` too: for a relay whose own client reads the ``Failure``.
    """
    payload = query if isinstance(query, bytes) else _encoder.encode(query)
    bus.check_size(payload, None)
    try:
        reply = await bus.nc.request(subject, payload, timeout=wait_s)
    except NoRespondersError as exc:
        raise NoRouter(f"nothing answers on {subject}") from exc
    except NatsTimeoutError as exc:
        raise NoAnswer(f"no answer on {subject} within {wait_s:g} s") from exc
    except NatsError as exc:  # closed, draining: this connection carries no more requests
        raise NatsUnreachable(f"cannot ask on {subject}: {exc!r}") from exc
    return _read(subject, reply.data, answer_type)


def _read(subject: str, data: bytes, answer_type: type[T]) -> T:
    if answer_type is not msgspec.Raw and (failure := _failure(data)) is not None:
        raise from_code(failure.code, failure.message, provider=failure.provider)
    try:
        return msgspec.json.decode(data, type=answer_type)
    except _UNREADABLE as exc:
        raise OmniLLMError(f"unexpected answer on {subject}: {data[:200]!r}") from exc


def _failure(data: bytes) -> Failure | None:
    try:
        return _failure_decoder.decode(data)
    except _UNREADABLE:
        return None
