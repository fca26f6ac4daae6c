"""The one error tree of OmniLLM, and the one table of its error codes.

::

    OmniLLMError                      root, ``internal``: a bug, or a code this version lacks
    ├── ConfigError                   a broken config file or variable (file, key, expectation)
    ├── NatsUnreachable ¹             no NATS server answers at the URL
    ├── NatsAuthFailed ¹              the server refused the login, or a user has no password
    ├── NatsPermissionDenied ¹        a subscription or publish this user may not make
    ├── NatsServerError ¹             the embedded nats-server would not start or run
    ├── WorkerFailed ¹                a gateway worker process would not start, or kept dying
    ├── UsageReadFailed ¹             the usage consumer refused a pull (open it again)
    ├── RequestError                  the client's request cannot be served as sent (no retry)
    │   ├── InvalidRequest            malformed JSON, wrong types, empty messages
    │   │   └── InvalidSince ¹        a ``--since`` that is no time (no code of its own)
    │   ├── RequestTooLarge           over the configured request size
    │   ├── UnsupportedMediaType      an HTTP body that is not JSON
    │   ├── NotFound                  no such HTTP route
    │   ├── UnknownModel              a model or alias nobody serves
    │   ├── UnknownProvider           an admin request names no configured provider
    │   ├── UnknownAdminRequest       no admin request of that name
    │   ├── NoCandidates              nothing configured can do what the request needs
    │   ├── BudgetExceeded            a spending limit is reached (when over-budget is refused)
    │   └── KeyRefused                the gateway's key check (no code of its own)
    │       ├── InvalidApiKey         no valid ``Authorization: Bearer`` key
    │       └── ModelNotAllowed       a model this key may not use
    ├── RoutingError                  the bus could not carry the request
    │   ├── NoRouter                  nobody listens on ``omni.v1.request``
    │   ├── NoCaller                  no caller process for a provider (no responders, busy)
    │   ├── RouterBusy                every classifier worker busy and its backlog full (``busy``)
    │   ├── NoAnswer                  an admin subject's responder did not answer in time
    │   └── NoLedger ¹                nothing answers the cost and stats admin requests
    ├── StreamError                   the token stream broke (never presented as a full answer)
    │   ├── FirstFrameTimeout         nothing arrived within the first-frame limit
    │   ├── StreamStalled             no frame within the stall limit
    │   ├── DeadlineExceeded          the request's total deadline passed
    │   ├── StreamGap                 a frame went missing (slow consumer, reconnect)
    │   ├── DedupTimeout              a duplicate waited its deadline for the first request
    │   └── DedupUnavailable          the first request's recording cannot be read
    └── ProviderError                 an upstream provider failed; fields say what the caller can do
        ├── ProviderTimeout           connect, first token, stall
        ├── RateLimited               429; ``retry_after`` when the provider said
        ├── ProviderUnavailable       5xx, connection reset
        │   ├── Overloaded            capacity, not quota (Anthropic's 529)
        │   └── CircuitOpen           the candidate failed recently: its breaker is open
        ├── AuthenticationFailed      401/403: the key is bad, lacks access or credit
        │   └── FreeTierRefused       a free tier that refuses this client (permanent)
        ├── ModelNotFound             404 / unknown model upstream
        ├── ContextLengthExceeded     the prompt does not fit this model
        ├── ContentPolicy             the provider refused on policy grounds
        ├── BadUpstreamRequest        other 4xx: the upstream rejected what we sent
        └── MalformedResponse         a body or stream that is not what the wire format promises

¹ defined beside the code that raises it (``bus.connection``, ``bus._login``,
``omnillm.embedded``, ``omnillm.workers``, ``bus.usage``, ``omnillm.costs``): these are
raised and handled in one process and never cross the bus. Every class whose code can
cross the bus lives here, so :func:`from_code` rebuilds it in any process, whatever that
process imported.

**Codes.** Errors cross the bus as ``Error``/``Failure`` data with a ``code``;
:func:`from_code` rebuilds the exception on the receiving side. Every code is one row of
:data:`CODES`, an :class:`ErrorCode` with the HTTP status and error ``type`` each inbound
API answers it with: OpenAI's (chat completions, and Responses, which shares its error
shape) and Anthropic's Messages. Everything that maps a code reads that table: the
gateway's status and error JSON, the metrics' outcome labels, :func:`from_code`.

**Classes register themselves.** A class that names its own ``code`` is entered in the
registry when it is defined (``OmniLLMError.__init_subclass__``), wherever it is defined;
a code with no row, or one another class already names, is a ``TypeError`` at import.
A class without a ``code`` of its own (``KeyRefused``, ``InvalidSince``) is a grouping to
catch, and answers with its parent's code.

**To add a code:** add its row to :data:`CODES` (its OpenAI status and type, its
Anthropic status and type, and the request field it is about, if any); define the class
naming it as ``code`` here, under the parent a caller would catch it as (beside its
raiser only if it never crosses the bus); add it to the tree above and, if clients can
see it, to the README's error table. A code with no class reaches clients as
``internal``.

Foreign exceptions (httpx, nats, msgspec) are mapped at exactly one boundary each,
with ``raise ... from exc``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Final, Literal

__all__ = [
    "CODES",
    "AuthenticationFailed",
    "BadUpstreamRequest",
    "BudgetExceeded",
    "CircuitOpen",
    "ConfigError",
    "ContentPolicy",
    "ContextLengthExceeded",
    "DeadlineExceeded",
    "DedupTimeout",
    "DedupUnavailable",
    "ErrorCode",
    "FirstFrameTimeout",
    "FreeTierRefused",
    "InvalidApiKey",
    "InvalidRequest",
    "KeyRefused",
    "MalformedResponse",
    "ModelNotAllowed",
    "ModelNotFound",
    "NoAnswer",
    "NoCaller",
    "NoCandidates",
    "NoRouter",
    "NotFound",
    "OmniLLMError",
    "Overloaded",
    "ProviderError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RateLimited",
    "RequestError",
    "RequestTooLarge",
    "RouterBusy",
    "RoutingError",
    "StreamError",
    "StreamGap",
    "StreamStalled",
    "UnknownAdminRequest",
    "UnknownModel",
    "UnknownProvider",
    "UnsupportedMediaType",
    "error_code",
    "from_code",
]

OpenAIStatus = Literal[400, 401, 403, 404, 413, 415, 429, 500, 502, 503, 504]
OpenAIType = Literal[
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "rate_limit_error",
    "insufficient_quota",
    "api_error",
]
AnthropicStatus = Literal[400, 401, 403, 404, 413, 429, 500, 529]
AnthropicType = Literal[
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "overloaded_error",
]


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """One error code and how each inbound HTTP API answers it."""

    code: str
    openai_status: OpenAIStatus
    """Chat completions and Responses."""
    openai_type: OpenAIType
    anthropic_status: AnthropicStatus
    """Messages: OpenAI's status where Anthropic has it; 415 is 400, 502 and 504 are
    500 ``api_error``, 503 and an upstream's overload are 529 ``overloaded_error``."""
    anthropic_type: AnthropicType
    param: str | None = None
    """The request field the error is about (OpenAI's ``param``)."""


def _table(*rows: ErrorCode) -> Mapping[str, ErrorCode]:
    table: dict[str, ErrorCode] = {}
    for row in rows:
        if row.code in table:
            raise ValueError(f"error code {row.code!r} has two rows")
        table[row.code] = row
    return MappingProxyType(table)


_INVALID: Final = "invalid_request_error"
_API: Final = "api_error"
_OVERLOADED: Final = "overloaded_error"

CODES: Final[Mapping[str, ErrorCode]] = _table(
    # code, OpenAI status and type, Anthropic status and type[, the request field]
    ErrorCode("internal", 500, _API, 500, _API),
    ErrorCode("bad_request", 400, _INVALID, 400, _INVALID),
    ErrorCode("invalid_request", 400, _INVALID, 400, _INVALID),
    ErrorCode("request_too_large", 413, _INVALID, 413, "request_too_large"),
    ErrorCode("unsupported_media_type", 415, _INVALID, 400, _INVALID),
    ErrorCode("not_found", 404, "not_found_error", 404, "not_found_error"),
    ErrorCode("unknown_model", 404, "not_found_error", 404, "not_found_error", "model"),
    ErrorCode("no_candidates", 400, _INVALID, 400, _INVALID),
    ErrorCode("budget_exceeded", 429, "insufficient_quota", 429, "rate_limit_error"),
    ErrorCode("invalid_api_key", 401, "authentication_error", 401, "authentication_error"),
    ErrorCode("model_not_allowed", 403, "permission_error", 403, "permission_error", "model"),
    ErrorCode("routing_error", 503, _API, 529, _OVERLOADED),
    ErrorCode("no_router", 503, _API, 529, _OVERLOADED),
    ErrorCode("no_caller", 503, _API, 529, _OVERLOADED),
    ErrorCode("busy", 503, _API, 529, _OVERLOADED),
    ErrorCode("no_answer", 504, _API, 500, _API),
    ErrorCode("stream_error", 502, _API, 500, _API),
    ErrorCode("first_frame_timeout", 504, _API, 500, _API),
    ErrorCode("stream_stalled", 504, _API, 500, _API),
    ErrorCode("deadline_exceeded", 504, _API, 500, _API),
    ErrorCode("stream_gap", 502, _API, 500, _API),
    ErrorCode("dedup_timeout", 504, _API, 500, _API),
    ErrorCode("dedup_unavailable", 502, _API, 500, _API),
    ErrorCode("provider_error", 502, _API, 500, _API),
    ErrorCode("provider_timeout", 504, _API, 500, _API),
    ErrorCode("rate_limited", 429, "rate_limit_error", 429, "rate_limit_error"),
    ErrorCode("provider_unavailable", 502, _API, 500, _API),
    ErrorCode("overloaded", 502, _API, 529, _OVERLOADED),
    ErrorCode("circuit_open", 503, _API, 529, _OVERLOADED),
    ErrorCode("authentication_failed", 502, _API, 500, _API),
    ErrorCode("free_tier_refused", 502, _API, 500, _API),
    ErrorCode("model_not_found", 502, _API, 500, _API),
    ErrorCode("context_length_exceeded", 400, _INVALID, 400, _INVALID),
    ErrorCode("content_policy", 400, _INVALID, 400, _INVALID),
    ErrorCode("bad_upstream_request", 502, _API, 500, _API),
    ErrorCode("malformed_response", 502, _API, 500, _API),
    # Admin replies carry these in their own JSON (the HTTP admin route answers 200 with
    # it); 502 is what the gateway has always given a code it had no status for.
    ErrorCode("unknown_provider", 502, _API, 500, _API),
    ErrorCode("unknown_admin_request", 502, _API, 500, _API),
    # Raised and handled in one process (the CLI, ``omni up``, the ledger): never an HTTP
    # answer, so the same 502.
    ErrorCode("config_error", 502, _API, 500, _API),
    ErrorCode("nats_unreachable", 502, _API, 500, _API),
    ErrorCode("nats_unauthorized", 502, _API, 500, _API),
    ErrorCode("nats_permission_denied", 502, _API, 500, _API),
    ErrorCode("nats_server_error", 502, _API, 500, _API),
    ErrorCode("worker_failed", 502, _API, 500, _API),
    ErrorCode("usage_read_failed", 502, _API, 500, _API),
    ErrorCode("no_ledger", 502, _API, 500, _API),
)
"""Every error code, once; see the module docstring for how to add one."""


def error_code(code: str) -> ErrorCode:
    """The row of ``code``; a code this version does not know (a newer peer's) answers as
    an upstream failure."""
    return CODES.get(code) or ErrorCode(code, 502, _API, 500, _API)


_CLASSES: dict[str, type[OmniLLMError]] = {}
"""Each code's class, entered as the class is defined (see ``OmniLLMError``)."""
_WRITTEN: dict[str, tuple[str, str]] = {}
"""Where each code's class is written (see ``_source``)."""


def _register(cls: type[OmniLLMError]) -> None:
    if cls.code not in CODES:
        raise TypeError(f"{cls.__qualname__}: error code {cls.code!r} has no row in CODES")
    named, source = _CLASSES.get(cls.code), _source(cls)
    if named is not None and _WRITTEN[cls.code] != source:
        raise TypeError(f"{cls.__qualname__}: error code {cls.code!r} is {_path(named)}'s")
    _CLASSES[cls.code], _WRITTEN[cls.code] = cls, source


def _path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _source(cls: type) -> tuple[str, str]:
    """Where a class is written, taken as it is defined: the same class run twice (a
    module reloaded, or run with ``python -m`` as ``__main__`` and imported by its name
    too) is one declaration."""
    module = sys.modules.get(cls.__module__)
    return getattr(module, "__file__", None) or cls.__module__, cls.__qualname__


class OmniLLMError(Exception):
    code: ClassVar[str] = "internal"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass that names its own ``code`` is that code's class (see the module)."""
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            _register(cls)


_register(OmniLLMError)


class ConfigError(OmniLLMError):
    code = "config_error"


class RequestError(OmniLLMError):
    code = "bad_request"


class InvalidRequest(RequestError):
    code = "invalid_request"


class RequestTooLarge(RequestError):
    code = "request_too_large"


class UnsupportedMediaType(RequestError):
    code = "unsupported_media_type"


class NotFound(RequestError):
    code = "not_found"


class UnknownModel(RequestError):
    code = "unknown_model"


class UnknownProvider(RequestError):
    code = "unknown_provider"


class UnknownAdminRequest(RequestError):
    code = "unknown_admin_request"


class NoCandidates(RequestError):
    code = "no_candidates"


class BudgetExceeded(RequestError):
    code = "budget_exceeded"


class KeyRefused(RequestError):
    """The gateway refused the request's key, or the model for that key."""


class InvalidApiKey(KeyRefused):
    code = "invalid_api_key"


class ModelNotAllowed(KeyRefused):
    code = "model_not_allowed"


class RoutingError(OmniLLMError):
    code = "routing_error"
    retryable = True


class NoRouter(RoutingError):
    code = "no_router"


class NoCaller(RoutingError):
    code = "no_caller"


class RouterBusy(RoutingError):
    code = "busy"


class NoAnswer(RoutingError):
    """Something listens on an admin subject but did not answer within the wait."""

    code = "no_answer"


class StreamError(OmniLLMError):
    code = "stream_error"
    retryable = True


class FirstFrameTimeout(StreamError):
    code = "first_frame_timeout"


class StreamStalled(StreamError):
    code = "stream_stalled"


class DeadlineExceeded(StreamError):
    code = "deadline_exceeded"


class StreamGap(StreamError):
    code = "stream_gap"


class DedupTimeout(StreamError):
    code = "dedup_timeout"


class DedupUnavailable(StreamError):
    code = "dedup_unavailable"


class ProviderError(OmniLLMError):
    code = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider)
        self.status_code = status_code
        self.retry_after = retry_after


class ProviderTimeout(ProviderError):
    code = "provider_timeout"
    retryable = True


class RateLimited(ProviderError):
    code = "rate_limited"
    retryable = True


class ProviderUnavailable(ProviderError):
    code = "provider_unavailable"
    retryable = True


class Overloaded(ProviderUnavailable):
    code = "overloaded"


class CircuitOpen(ProviderUnavailable):
    """The caller did not call: the candidate's breaker is open after recent failures."""

    code = "circuit_open"


class AuthenticationFailed(ProviderError):
    code = "authentication_failed"


class FreeTierRefused(AuthenticationFailed):
    code = "free_tier_refused"


class ModelNotFound(ProviderError):
    code = "model_not_found"


class ContextLengthExceeded(ProviderError):
    code = "context_length_exceeded"


class ContentPolicy(ProviderError):
    code = "content_policy"


class BadUpstreamRequest(ProviderError):
    code = "bad_upstream_request"


class MalformedResponse(ProviderError):
    code = "malformed_response"
    retryable = True


def from_code(code: str, message: str, *, provider: str | None = None) -> OmniLLMError:
    """Rebuild the exception an ``Error`` frame or ``Failure`` stands for.

    A code with no class (unknown to this version, or ``internal``) comes back as the
    root, with the code it came with at the front of ``message``."""
    cls = _CLASSES.get(code, OmniLLMError)
    error = cls(message, provider=provider)
    if cls is OmniLLMError:
        error.message = f"{code}: {message}"
    return error
