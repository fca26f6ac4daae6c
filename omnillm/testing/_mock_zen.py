"""OpenCode Zen's own answers, in its Anthropic-style envelope.

Zen checks the key and the model itself before any upstream sees the request, so
those errors are Zen's (401 ``AuthError``, 401 ``ModelError``), whatever the route's
format; a malformed body is the upstream's, in the route's own shape. The free-tier
refusal (403 ``FreeTierError``) comes before everything else.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from omnillm.testing._mock_common import MockError

__all__ = ["FREE_TIER_MESSAGE", "error", "free_tier_refused"]

FREE_TIER_MESSAGE: Final = (
    "Error from provider (Console): OpenCode's free tier can only be used from within OpenCode"
)


def _envelope(status: int, kind: str, message: str) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return web.json_response(body, status=status)


def free_tier_refused() -> web.Response:
    return _envelope(403, "FreeTierError", FREE_TIER_MESSAGE)


def error(error: MockError) -> web.Response | None:
    """Zen's own answer to ``error``, or ``None`` when the route's format answers it."""
    if error.kind == "auth":
        return _envelope(401, "AuthError", "Invalid API key.")
    if error.kind == "model":
        return _envelope(401, "ModelError", f"Model {error.detail} not supported")
    return None
