"""OpenCode Zen: one base URL, four wire formats, chosen by model (providers.md §5.1).

Zen serves each model on one endpoint: GPT, Grok and Muse Spark on ``/responses``,
Claude and Qwen on ``/messages``, Gemini on ``/models/{model}``, everything else
(DeepSeek, GLM, Kimi, MiniMax, the free models) on ``/chat/completions``. This family
owns no wire format: it picks the route with :func:`route_for` and delegates to that
route's family, overriding only the auth header, which differs per route.

Errors come in two kinds. Zen's own use an Anthropic-style envelope whose
``error.type`` is Zen's error class (``FreeTierError``, ``CreditsError``, ...), which is
passed on as the code. Upstream errors keep the upstream's own shape (OpenAI, Anthropic
or Gemini), their message already prefixed ``Error from provider (<name>): `` by Zen;
an upstream 404 arrives as 400 (Zen's web framework would swallow a 404).
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec
from msgspec import Struct

from omnillm.bus.messages import ChatRequest
from omnillm.errors import ProviderError
from omnillm.providers import anthropic_messages, gemini, openai_chat, openai_responses
from omnillm.providers._errors import DECODE_ERRORS, body_text, make_error
from omnillm.providers.base import (
    AuthStyle,
    ParsedResponse,
    StreamParser,
    WireFamily,
    WireOptions,
    WireRequest,
)

__all__ = ["FAMILY", "ROUTE_AUTH", "OpenCodeFamily", "ZenRoute", "family_for_route", "route_for"]

ZenRoute = Literal["chat", "responses", "messages", "gemini"]

_ROUTE_PREFIXES: Final[tuple[tuple[tuple[str, ...], ZenRoute], ...]] = (
    (("gpt-", "grok-", "muse-spark"), "responses"),
    (("claude-", "qwen"), "messages"),
    (("gemini-",), "gemini"),
)
ROUTE_AUTH: Final[dict[ZenRoute, AuthStyle]] = {
    "chat": "bearer",
    "responses": "bearer",
    "messages": "x-api-key",
    "gemini": "x-goog-api-key",
}
"""The header each Zen route reads the key from."""


def route_for(model: str) -> ZenRoute:
    """The Zen endpoint that serves ``model``, by its id's prefix (case-insensitive).

    A catalog id such as ``opencode/gpt-5.4-mini`` is accepted too. Anything that no
    prefix claims goes to chat completions, Zen's route for most open-weight and free
    models.
    """
    name = model.rsplit("/", 1)[-1].lower()
    for prefixes, route in _ROUTE_PREFIXES:
        if name.startswith(prefixes):
            return route
    return "chat"


def family_for_route(route: ZenRoute) -> WireFamily:
    match route:
        case "chat":
            return openai_chat.FAMILY
        case "responses":
            return openai_responses.FAMILY
        case "messages":
            return anthropic_messages.FAMILY
        case "gemini":
            return gemini.FAMILY


# --- errors ---------------------------------------------------------------------------


class _ErrorDetail(Struct):
    message: str | None = None
    type: str | None = None
    code: str | int | None = None
    status: str | None = None


class _ErrorBody(Struct):
    """Zen's and Anthropic's ``{"type": "error", "error": {...}}``, OpenAI's and Gemini's
    ``{"error": {...}}``, and the bare ``message`` some servers send instead."""

    error: _ErrorDetail | str | None = None
    message: str | None = None


_error_decoder: Final = msgspec.json.Decoder(_ErrorBody)
_NOT_FOUND_CODES: Final = frozenset({"model_not_found", "not_found_error", "NOT_FOUND"})
"""OpenAI's, Anthropic's and Gemini's "not found" codes."""


def _code(error: _ErrorDetail) -> str | None:
    """OpenAI's string ``code``, else Gemini's ``status``, else the ``type``: Zen's error
    class or Anthropic's error type. Gemini's numeric ``code`` only repeats the status."""
    if isinstance(error.code, str):
        return error.code
    return error.status or error.type


def _status(status: int, error: _ErrorDetail) -> int:
    """Zen rewrites an upstream 404 as 400; a body that still says "not found" gets it back."""
    if status == 400 and (error.code == 404 or _code(error) in _NOT_FOUND_CODES):
        return 404
    return status


def _error_fields(status: int, body: bytes) -> tuple[int, str | None, str]:
    """The status, error code and a readable message from any error body, JSON or not."""
    try:
        parsed = _error_decoder.decode(body)
    except DECODE_ERRORS:
        return status, None, body_text(status, body)
    error = parsed.error
    if isinstance(error, _ErrorDetail):
        message = error.message or parsed.message or body_text(status, body)
        return _status(status, error), _code(error), message
    return status, None, error or parsed.message or body_text(status, body)


# --- the family -----------------------------------------------------------------------


class OpenCodeFamily:
    name: str = "opencode"

    def build_request(
        self, request: ChatRequest, *, model: str, stream: bool, options: WireOptions
    ) -> WireRequest:
        """The route family's request, with the auth style that route reads."""
        route = route_for(model)
        wire = family_for_route(route).build_request(
            request, model=model, stream=stream, options=options
        )
        return msgspec.structs.replace(wire, auth=ROUTE_AUTH[route])

    def stream_parser(self, model: str) -> StreamParser:
        return family_for_route(route_for(model)).stream_parser(model)

    def parse_response(self, body: bytes, model: str) -> ParsedResponse:
        return family_for_route(route_for(model)).parse_response(body, model)

    def parse_error(
        self, status: int, body: bytes, headers: dict[str, str], *, provider: str
    ) -> ProviderError:
        """Zen's error class, or the upstream's code, decides the class; Zen's
        ``retry-after`` on its own 429s is read from ``headers``. An upstream 404 that
        Zen sent as 400 is reported as the 404 it was."""
        status, code, message = _error_fields(status, body)
        return make_error(status, code, message, provider=provider, headers=headers)


FAMILY: Final[WireFamily] = OpenCodeFamily()
