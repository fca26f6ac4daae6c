"""Anthropic Messages, as the mock speaks it (``POST /v1/messages``).

The key is accepted in ``x-api-key`` (documented) or ``Authorization: Bearer`` (what
the current SDK sends); Zen's route reads ``x-api-key`` only. ``max_tokens`` is
required, as upstream. Usage: ``message_start`` carries ``input_tokens`` (and
``output_tokens: 1``), ``message_delta`` the cumulative totals. On Zen's route a
``ping`` frame carrying ``cost`` follows ``message_stop``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

from aiohttp import web

from omnillm.testing._mock_common import (
    CONTEXT_LIMIT,
    CONTEXT_REQUESTED,
    COST,
    Ask,
    AuthStyle,
    Frame,
    MockError,
    Plan,
    Script,
    Turn,
    invalid,
    model_field,
    objects,
    positive_int,
    sse,
    text_of,
)

__all__ = ["FAMILY"]

_STOP_REASONS: Final = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_ERRORS: Final[dict[str, tuple[str, str]]] = {
    "invalid": ("invalid_request_error", ""),
    "auth": ("authentication_error", "invalid x-api-key"),
    "model": ("not_found_error", ""),
    "rate_limit": (
        "rate_limit_error",
        "Number of requests has exceeded your rate limit. Please try again later.",
    ),
    "server": ("api_error", "Internal server error"),
    "unavailable": ("api_error", "Service unavailable"),
    "overloaded": ("overloaded_error", "Overloaded"),
    "context_length": (
        "invalid_request_error",
        f"prompt is too long: {CONTEXT_REQUESTED} tokens > {CONTEXT_LIMIT} maximum",
    ),
    "content_policy": ("invalid_request_error", "Output blocked by content filtering policy"),
}
"""``(error type, message)`` by error kind; ``invalid`` and ``model`` take the detail."""


def _turn(message: dict[str, Any]) -> Turn:
    """A user message holding only ``tool_result`` blocks is the tool speaking."""
    role, content = str(message.get("role")), message.get("content")
    text = text_of(content)
    if role == "user" and not text and isinstance(content, list):
        results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
        if results:
            return Turn("tool", "\n".join(text_of(b.get("content")) for b in results))
    return Turn(role, text)


def _turns(body: dict[str, Any]) -> list[Turn]:
    system = body.get("system")
    head = [Turn("system", text_of(system))] if system else []
    return head + [_turn(m) for m in objects(body.get("messages"), "messages")]


def _tools(body: dict[str, Any]) -> tuple[list[str], str | None, bool]:
    """Offered names, the name ``tool_choice`` forces, and whether it is ``none``."""
    choice = body.get("tool_choice") or {}
    try:
        names = [str(tool["name"]) for tool in body.get("tools") or []]
        named = str(choice["name"]) if choice.get("type") == "tool" else None
        return names, named, choice.get("type") == "none"
    except (KeyError, TypeError, AttributeError) as exc:
        raise invalid("tools: malformed tool definition", "tools") from exc


def _usage(plan: Plan, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": plan.prompt_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
    }


def _block(plan: Plan) -> dict[str, Any]:
    """The one content block, as ``content_block_start`` opens it (empty)."""
    call = plan.tool_call
    if call is None:
        return {"type": "text", "text": ""}
    return {"type": "tool_use", "id": f"toolu_{call.digest}", "name": call.name, "input": {}}


def _deltas(plan: Plan) -> Iterator[dict[str, Any]]:
    """One ``text_delta`` per token, or the tool input in two ``input_json_delta`` halves."""
    if plan.tool_call is None:
        yield from ({"type": "text_delta", "text": token} for token in plan.tokens)
        return
    for part in plan.tool_call.halves:
        yield {"type": "input_json_delta", "partial_json": part}


def _event(kind: str, **fields: Any) -> bytes:
    return sse({"type": kind, **fields}, kind)


class _Messages:
    auth: tuple[AuthStyle, ...] = ("x-api-key", "bearer")

    def parse(self, body: dict[str, Any], request: web.Request) -> Ask:
        cap = positive_int(body.get("max_tokens"), "max_tokens")
        if cap is None:
            raise invalid("max_tokens: Field required", "max_tokens")
        names, named, refused = _tools(body)
        return Ask(
            model=model_field(body),
            turns=_turns(body),
            cap=cap,
            stream=bool(body.get("stream")),
            tools=names,
            named_tool=named,
            tools_refused=refused,
        )

    def error(self, error: MockError) -> web.Response:
        kind, message = _ERRORS[error.kind]
        if error.kind == "model":
            message = f"model: {error.detail}"
        elif error.kind == "invalid":
            message = error.detail
        detail = {"type": kind, "message": message}
        body = {"type": "error", "error": detail, "request_id": "req_mock"}
        return web.json_response(body, status=error.status)

    def response(self, plan: Plan) -> dict[str, Any]:
        call = plan.tool_call
        block: dict[str, Any] = {"type": "text", "text": plan.text}
        if call is not None:
            block = {**_block(plan), "input": call.input}
        body = {
            "id": f"msg_mock_{plan.serial}",
            "type": "message",
            "role": "assistant",
            "model": plan.model,
            "content": [block],
            "stop_reason": _STOP_REASONS[plan.finish],
            "stop_sequence": None,
            "usage": _usage(plan, plan.completion_tokens),
        }
        return {**body, "cost": COST} if plan.zen else body

    def script(self, plan: Plan) -> Script:
        """message_start, one content block (with a ping after its start), message_delta,
        then message_stop (and Zen's cost ping)."""
        message: dict[str, Any] = {
            "id": f"msg_mock_{plan.serial}",
            "type": "message",
            "role": "assistant",
            "model": plan.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage(plan, 1),
        }
        body = [
            Frame(_event("message_start", message=message)),
            Frame(_event("content_block_start", index=0, content_block=_block(plan))),
            Frame(_event("ping")),
        ]
        deltas = [_event("content_block_delta", index=0, delta=d) for d in _deltas(plan)]
        body += [Frame(delta, paced=True) for delta in deltas]
        stop = {"stop_reason": _STOP_REASONS[plan.finish], "stop_sequence": None}
        body += [
            Frame(_event("content_block_stop", index=0)),
            Frame(_event("message_delta", delta=stop, usage=_usage(plan, plan.completion_tokens))),
        ]
        cost = [_event("ping", cost=COST)] if plan.zen else []
        return Script(body, [_event("message_stop"), *cost])


FAMILY: Final = _Messages()
