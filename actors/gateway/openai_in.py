"""OpenAI chat-completions requests and errors, translated without I/O.

The gateway speaks the OpenAI wire format to HTTP clients (OpenClaw, the OpenAI SDKs)
and ``ChatRequest``/frames to the bus. This module does the inbound half:

- :func:`parse_chat`: an OpenAI request body (``max_completion_tokens`` or
  ``max_tokens``, string or array content, tools, images, ``stop``, ``user``) into a
  ``ChatRequest``, with the gateway key's name as the tag ``key:<name>`` and a
  stable session id when the client sent none;
- :func:`error_status` and :func:`error_body`: an OmniLLM error code into the HTTP
  status and the ``{"error": {...}}`` JSON OpenAI clients understand, as its row of
  ``omnillm.errors.CODES`` says;
- :func:`models_body`: ``GET /v1/models`` in OpenAI's list format.

Unsupported OpenAI parameters (``top_p``, ``presence_penalty``, ``seed``…) are
ignored, as most OpenAI-compatible servers do; ``n`` above 1 is refused, because
one answer is all a route gives.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

import msgspec

from omnillm.bus.messages import ChatRequest, Metadata
from omnillm.client import to_request
from omnillm.errors import InvalidRequest, error_code

__all__ = [
    "KEY_TAG",
    "ParsedChat",
    "error_body",
    "error_status",
    "models_body",
    "parse_chat",
    "session_id",
]

KEY_TAG: Final = "key:"
"""``metadata.tags`` entry naming the gateway key: ``key:<name>``."""

_IDEMPOTENCY_KEY: Final = re.compile(r"[\x20-\x7e]{1,255}")
_PASSED: Final = ("messages", "model", "tools", "tool_choice", "temperature", "stop", "route")
"""Fields copied as they are; msgspec validates them against ``ChatRequest``."""


class ParsedChat(msgspec.Struct, frozen=True):
    request: ChatRequest
    stream: bool = False
    include_usage: bool = False


def parse_chat(
    body: bytes, *, key_name: str | None = None, idempotency_key: str | None = None
) -> ParsedChat:
    """The ``ChatRequest`` an OpenAI request body stands for; ``InvalidRequest`` names
    the field that is wrong."""
    raw = _object(body)
    if raw.get("n", 1) not in (1, None):
        raise InvalidRequest("n: only one choice per request is supported")
    fields = {name: raw[name] for name in _PASSED if raw.get(name) is not None}
    if "messages" in fields:
        fields["messages"] = _messages(fields["messages"])
    max_tokens = raw.get("max_completion_tokens", raw.get("max_tokens"))
    if max_tokens is not None:
        fields["max_tokens"] = max_tokens
    if idempotency_key:
        if not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
            raise InvalidRequest("Idempotency-Key: 1 to 255 printable ASCII characters")
        fields["idempotency_key"] = idempotency_key
    request = to_request(fields)
    request.metadata = _metadata(raw, request, key_name)
    return ParsedChat(request, _flag(raw, "stream"), _include_usage(raw))


def _object(body: bytes) -> dict[str, Any]:
    try:
        raw = msgspec.json.decode(body)
    except msgspec.ValidationError as exc:  # the only one for untyped JSON: a huge number
        raise InvalidRequest(f"the body has a number out of range: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"the body is not valid UTF-8: {exc.reason}") from exc
    except RecursionError as exc:
        raise InvalidRequest("the body nests too deeply") from exc
    if not isinstance(raw, dict):
        raise InvalidRequest("the body must be a JSON object")
    return raw


def _flag(raw: Mapping[str, Any], name: str) -> bool:
    value = raw.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRequest(f"{name}: expected true or false")
    return value


def _include_usage(raw: Mapping[str, Any]) -> bool:
    options = raw.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise InvalidRequest("stream_options: expected an object")
    return _flag(options, "include_usage")


def _messages(messages: object) -> object:
    """Image parts given as a bare URL string become ``{"url": ...}``; the rest is
    validated as it is."""
    if not isinstance(messages, list):
        return messages
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else ():
            if isinstance(part, dict) and isinstance(part.get("image_url"), str):
                part["image_url"] = {"url": part["image_url"]}
    return messages


def _metadata(raw: Mapping[str, Any], request: ChatRequest, key_name: str | None) -> Metadata:
    given = raw.get("metadata")
    given = given if isinstance(given, dict) else {}
    metadata = Metadata()
    user = raw.get("user", given.get("user"))
    if isinstance(user, str) and user:
        metadata.user = user
    session = given.get("session")
    metadata.session = session if isinstance(session, str) and session else session_id(request)
    if key_name is not None:
        metadata.tags = [f"{KEY_TAG}{key_name}"]
    return metadata


def session_id(request: ChatRequest) -> str:
    """A conversation's stable id: a hash of its first user message.

    OpenClaw sends no session id, but every turn of a conversation repeats its first
    user message, so the hash is the same for every turn and differs between
    conversations. The system prompt is left out: it is shared by every session.
    """
    first = next((m for m in request.messages if m.role == "user"), request.messages[0])
    content = msgspec.json.encode(first.content)
    return "h-" + hashlib.sha256(content).hexdigest()[:32]


# --- errors --------------------------------------------------------------------------


def error_status(code: str) -> int:
    return error_code(code).openai_status


def error_body(code: str, message: str) -> dict[str, Any]:
    """OpenAI's error JSON; ``code`` is OmniLLM's error code (see the README)."""
    row = error_code(code)
    error = {"message": message, "type": row.openai_type, "param": row.param, "code": code}
    return {"error": error}


# --- models --------------------------------------------------------------------------


def models_body(rows: Iterable[tuple[str, str]], created: int = 0) -> dict[str, Any]:
    """OpenAI's model list from ``(id, owner)`` rows, each id once, in order."""
    seen: dict[str, str] = {}
    for model_id, owner in rows:
        seen.setdefault(model_id, owner)
    data = [
        {"id": model_id, "object": "model", "created": created, "owned_by": owner}
        for model_id, owner in seen.items()
    ]
    return {"object": "list", "data": data}
