"""The one error tree of OmniLLM.

::

    OmniLLMError                      root; ``code`` is what crosses the bus
    ├── ConfigError                   a broken config file or variable (file, key, expectation)
    ├── RequestError                  the client's request cannot be served as sent (no retry)
    │   ├── InvalidRequest            malformed JSON, wrong types, empty messages
    │   ├── RequestTooLarge           over the configured request size
    │   ├── UnknownModel              a model or alias nobody serves
    │   ├── NoCandidates              nothing configured can do what the request needs
    │   └── BudgetExceeded            a spending limit is reached (when over-budget is refused)
    ├── RoutingError                  the bus could not carry the request
    │   ├── NoRouter                  nobody listens on ``omni.v1.request``
    │   └── NoCaller                  no caller process for a provider (no responders, busy)
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
        │   └── Overloaded            capacity, not quota (Anthropic's 529)
        ├── AuthenticationFailed      401/403: the key is bad, lacks access or credit
        │   └── FreeTierRefused       a free tier that refuses this client (permanent)
        ├── ModelNotFound             404 / unknown model upstream
        ├── ContextLengthExceeded     the prompt does not fit this model
        ├── ContentPolicy             the provider refused on policy grounds
        ├── BadUpstreamRequest        other 4xx: the upstream rejected what we sent
        └── MalformedResponse         a body or stream that is not what the wire format promises

Foreign exceptions (httpx, nats, msgspec) are mapped at exactly one boundary each,
with ``raise ... from exc``. Errors cross the bus as ``Error``/``Failure`` data with
the ``code`` below; :func:`from_code` rebuilds the exception on the receiving side.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AuthenticationFailed",
    "BadUpstreamRequest",
    "BudgetExceeded",
    "ConfigError",
    "ContentPolicy",
    "ContextLengthExceeded",
    "DeadlineExceeded",
    "DedupTimeout",
    "DedupUnavailable",
    "FirstFrameTimeout",
    "FreeTierRefused",
    "InvalidRequest",
    "MalformedResponse",
    "ModelNotFound",
    "NoCaller",
    "NoCandidates",
    "NoRouter",
    "OmniLLMError",
    "Overloaded",
    "ProviderError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RateLimited",
    "RequestError",
    "RequestTooLarge",
    "RoutingError",
    "StreamError",
    "StreamGap",
    "StreamStalled",
    "UnknownModel",
    "from_code",
]


class OmniLLMError(Exception):
    code: ClassVar[str] = "internal"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider


class ConfigError(OmniLLMError):
    code = "config_error"


class RequestError(OmniLLMError):
    code = "bad_request"


class InvalidRequest(RequestError):
    code = "invalid_request"


class RequestTooLarge(RequestError):
    code = "request_too_large"


class UnknownModel(RequestError):
    code = "unknown_model"


class NoCandidates(RequestError):
    code = "no_candidates"


class BudgetExceeded(RequestError):
    code = "budget_exceeded"


class RoutingError(OmniLLMError):
    code = "routing_error"
    retryable = True


class NoRouter(RoutingError):
    code = "no_router"


class NoCaller(RoutingError):
    code = "no_caller"


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


def _subclasses(cls: type[OmniLLMError]) -> list[type[OmniLLMError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_subclasses(sub))
    return found


_BY_CODE: dict[str, type[OmniLLMError]] = {cls.code: cls for cls in _subclasses(OmniLLMError)}


def from_code(code: str, message: str, *, provider: str | None = None) -> OmniLLMError:
    """Rebuild the exception an ``Error`` frame or ``Failure`` stands for."""
    cls = _BY_CODE.get(code, OmniLLMError)
    error = cls(message, provider=provider)
    if cls is OmniLLMError:
        error.message = f"{code}: {message}"
    return error
