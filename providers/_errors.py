"""Error mapping every wire family shares: status and message in, one error class out.

Families differ in where they put the code and the message; what a status or a
message *means* is the same everywhere, so it is decided here, once.
"""

from __future__ import annotations

import http
import math
import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Final, TypeVar

import msgspec

from omnillm.errors import (
    AuthenticationFailed,
    BadUpstreamRequest,
    ContentPolicy,
    ContextLengthExceeded,
    FreeTierRefused,
    MalformedResponse,
    ModelNotFound,
    Overloaded,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)

__all__ = [
    "DECODE_ERRORS",
    "SNIPPET_BYTES",
    "body_text",
    "decode",
    "error_class",
    "make_error",
    "retry_after",
    "snippet",
]

T = TypeVar("T")

SNIPPET_BYTES: Final = 200
DECODE_ERRORS: Final = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
"""What msgspec raises on bad JSON: its own error, and for invalid UTF-8 or nesting past its
recursion limit, Python's. A decoder that falls back on bad input catches all three."""

CONTEXT_LENGTH: Final = re.compile(
    r"maximum context length is \d+"  # OpenAI, Azure, DeepSeek, OpenRouter
    r"|maximum prompt length is \d+"  # xAI
    r"|exceeded model token limit|input token length too long"  # Moonshot
    r"|prompt contains \d+ tokens.*too large for model"  # Mistral
    r"|too many tokens"  # Cohere
    r"|prompt is too long|exceed context limit"  # Anthropic
    r"|input token count.*exceeds the maximum"  # Gemini
    r"|context[_ ]length[_ ]exceeded|context window",
    re.IGNORECASE | re.DOTALL,
)
CONTENT_POLICY: Final = re.compile(
    r"safety system|content management policy|content_filter|content policy", re.IGNORECASE
)
CONTENT_POLICY_CODES: Final = frozenset({"content_policy_violation", "content_filter"})
OVERLOADED_CODES: Final = frozenset({"overloaded_error", "overloaded"})
MODEL_CODES: Final = frozenset({"ModelError", "model_not_found", "not_found_error"})
"""Codes that name an unknown model whatever the status (OpenCode Zen sends 401)."""
NO_QUOTA_CODES: Final = frozenset(
    {
        "insufficient_quota",
        "CreditsError",
        "MonthlyLimitError",
        "enforced_spend_limit_reached",
        "billing_error",
    }
)
FREE_TIER_CODES: Final = frozenset({"FreeTierError"})


def error_class(status: int, code: str | None, message: str) -> type[ProviderError]:
    """The class for an upstream error: by code where one is known, else status, else text."""
    if code in FREE_TIER_CODES:
        return FreeTierRefused
    if code in NO_QUOTA_CODES:
        return AuthenticationFailed
    if code in MODEL_CODES:
        return ModelNotFound
    if status == 529 or code in OVERLOADED_CODES:
        return Overloaded
    if status == 429:
        return RateLimited
    if status == 402:  # payment required: no credit left (OpenRouter, DeepSeek, Cohere)
        return AuthenticationFailed
    if status in (401, 403):
        return AuthenticationFailed
    if status == 404:
        return ModelNotFound
    if status in (408, 409, 499) or status >= 500:
        return ProviderUnavailable
    if code == "context_length_exceeded" or CONTEXT_LENGTH.search(message):
        return ContextLengthExceeded
    if code in CONTENT_POLICY_CODES or CONTENT_POLICY.search(message):
        return ContentPolicy
    return BadUpstreamRequest if status >= 400 else ProviderUnavailable


def describe(status: int, code: str | None, message: str) -> str:
    if code in NO_QUOTA_CODES or status == 402:
        return f"{status} the account has no quota or credit left: {message}"
    return f"{status} {message}"


def make_error(
    status: int,
    code: str | None,
    message: str,
    *,
    provider: str | None = None,
    headers: Mapping[str, str] | None = None,
    in_band: bool = False,
) -> ProviderError:
    """The mapped error, its message starting with the provider when one is known."""
    cls = error_class(status, code, message)
    text = describe(status, code, message)
    if in_band:
        text += " (inside a 200 response)"
    return cls(
        f"{provider}: {text}" if provider else text,
        provider=provider,
        status_code=status,
        retry_after=retry_after(headers) if headers else None,
    )


def snippet(data: bytes) -> str:
    """At most ``SNIPPET_BYTES`` of bad data, for an error message."""
    return repr(data[:SNIPPET_BYTES]) + ("..." if len(data) > SNIPPET_BYTES else "")


def decode(decoder: msgspec.json.Decoder[T], data: bytes, what: str) -> T:
    """``data`` decoded, or ``MalformedResponse`` saying whether the JSON or its shape was bad."""
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise MalformedResponse(f"{what} has an unexpected shape ({exc})") from exc
    except msgspec.DecodeError as exc:
        raise MalformedResponse(f"{what} is not valid JSON: {snippet(data)}") from exc
    except UnicodeDecodeError as exc:
        raise MalformedResponse(f"{what} is not valid UTF-8: {snippet(data)}") from exc
    except RecursionError as exc:
        raise MalformedResponse(f"{what} nests too deeply: {snippet(data)}") from exc


def body_text(status: int, body: bytes) -> str:
    """At most ``SNIPPET_BYTES`` of a non-JSON body, or the status phrase when it is empty."""
    text = body[:SNIPPET_BYTES].decode("utf-8", "replace").strip()
    if text:
        return text + ("..." if len(body) > SNIPPET_BYTES else "")
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "error"


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` first, then ``retry-after`` (seconds or date)."""
    lower = {name.lower(): value for name, value in headers.items()}
    try:
        if "retry-after-ms" in lower:
            seconds = max(float(lower["retry-after-ms"]) / 1000, 0.0)
        elif "retry-after" in lower:
            seconds = _seconds_or_date(lower["retry-after"])
        else:
            return None
    except (ValueError, TypeError, OverflowError, IndexError):
        return None
    return None if math.isnan(seconds) else seconds  # "nan" parses, and waits forever


def _seconds_or_date(value: str) -> float:
    try:
        return max(float(value), 0.0)
    except ValueError:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
