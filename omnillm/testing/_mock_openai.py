"""OpenAI chat completions, as the mock speaks it (``POST /v1/chat/completions``).

On OpenCode Zen's route the non-stream body carries ``cost`` and the stream ends
``data: [DONE]`` then ``data: {"choices":[],"cost":"…"}``, as Zen's proxy appends it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Final

from aiohttp import web

from omnillm.testing._mock_common import (
    CONTENT_POLICY_MESSAGE,
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

_DONE: Final[bytes] = b"data: [DONE]\n\n"
_ERRORS: Final[dict[str, tuple[str, str | None, str | None, str]]] = {
    "auth": (
        "invalid_request_error",
        None,
        "invalid_api_key",
        "Incorrect API key provided. You can find your API key in the mock.",
    ),
    "rate_limit": (
        "requests",
        None,
        "rate_limit_exceeded",
        "Rate limit reached for requests. Please try again later.",
    ),
    "server": (
        "server_error",
        None,
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    "unavailable": ("server_error", None, None, "The server is overloaded or not ready yet."),
    "overloaded": (
        "server_error",
        None,
        None,
        "The engine is currently overloaded, please try again later.",
    ),
    "context_length": (
        "invalid_request_error",
        "messages",
        "context_length_exceeded",
        f"This model's maximum context length is {CONTEXT_LIMIT} tokens. However, your "
        f"messages resulted in {CONTEXT_REQUESTED} tokens.",
    ),
    "content_policy": (
        "invalid_request_error",
        None,
        "content_policy_violation",
        CONTENT_POLICY_MESSAGE,
    ),
}
"""``(type, param, code, message)`` of the errors whose wording is fixed."""


def _cap(body: dict[str, Any]) -> int | None:
    """``max_completion_tokens`` (preferred) or ``max_tokens``; ``None`` when neither."""
    cap = positive_int(body.get("max_completion_tokens"), "max_completion_tokens")
    return cap if cap is not None else positive_int(body.get("max_tokens"), "max_tokens")


def _tool_names(body: dict[str, Any]) -> tuple[list[str], str | None]:
    """The offered function names and the one ``tool_choice`` names, if any."""
    tools, choice = body.get("tools") or [], body.get("tool_choice")
    try:
        names = [str(tool["function"]["name"]) for tool in tools]
        if isinstance(choice, dict) and choice.get("type") == "function":
            return names, str(choice["function"]["name"])
    except (KeyError, TypeError) as exc:
        raise invalid("malformed tool definition", "tools") from exc
    return names, None


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _usage(plan: Plan) -> dict[str, Any]:
    prompt, completion = plan.prompt_tokens, plan.completion_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _head(plan: Plan, kind: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-mock-{plan.serial}",
        "object": kind,
        "created": int(time.time()),
        "model": plan.model,
    }


def _message(plan: Plan) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": plan.text or None}
    if plan.tool_call is not None:
        call = plan.tool_call
        function = {"name": call.name, "arguments": call.arguments}
        message["tool_calls"] = [
            {"id": f"call_{call.digest}", "type": "function", "function": function}
        ]
    message["refusal"] = None
    return message


def _deltas(plan: Plan) -> Iterator[dict[str, Any]]:
    """Content deltas after the role delta: one per token, or a tool call in three parts
    (header with empty arguments, then each half of the arguments), as OpenAI sends it."""
    if plan.tool_call is None:
        yield from ({"content": token} for token in plan.tokens)
        return
    call = plan.tool_call
    header = {"index": 0, "id": f"call_{call.digest}", "type": "function"}
    yield {"tool_calls": [{**header, "function": {"name": call.name, "arguments": ""}}]}
    for part in call.halves:
        yield {"tool_calls": [{"index": 0, "function": {"arguments": part}}]}


class _ChatCompletions:
    auth: tuple[AuthStyle, ...] = ("bearer",)

    def parse(self, body: dict[str, Any], request: web.Request) -> Ask:
        messages = objects(body.get("messages"), "messages")
        names, named = _tool_names(body)
        return Ask(
            model=model_field(body),
            turns=[Turn(str(m.get("role")), text_of(m.get("content"))) for m in messages],
            cap=_cap(body),
            stream=bool(body.get("stream")),
            tools=names,
            named_tool=named,
            tools_refused=body.get("tool_choice") == "none",
            include_usage=_include_usage(body),
        )

    def error(self, error: MockError) -> web.Response:
        kind, param, code, message = _ERRORS.get(error.kind, ("", None, None, ""))
        if error.kind == "model":
            kind, param, code = "invalid_request_error", "model", "model_not_found"
            message = f"The model `{error.detail}` does not exist"
        elif error.kind == "invalid":
            kind, message, param = "invalid_request_error", error.detail, error.param
            code = "invalid_value" if param is not None else None
        body = {"message": message, "type": kind, "param": param, "code": code}
        return web.json_response({"error": body}, status=error.status)

    def response(self, plan: Plan) -> dict[str, Any]:
        choice = {
            "index": 0,
            "message": _message(plan),
            "logprobs": None,
            "finish_reason": plan.finish,
        }
        body = {**_head(plan, "chat.completion"), "choices": [choice], "usage": _usage(plan)}
        return {**body, "cost": COST} if plan.zen else body

    def script(self, plan: Plan) -> Script:
        """Role delta, paced content deltas, finish chunk, usage when asked for, then
        ``[DONE]`` (and Zen's cost frame)."""
        head = _head(plan, "chat.completion.chunk")
        usage = {"usage": None} if plan.ask.include_usage else {}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return sse({**head, "choices": [choice], **usage})

        body = [Frame(chunk({"role": "assistant", "content": ""}))]
        body += [Frame(chunk(delta), paced=True) for delta in _deltas(plan)]
        body.append(Frame(chunk({}, plan.finish)))
        if plan.ask.include_usage:
            body.append(Frame(sse({**head, "choices": [], "usage": _usage(plan)})))
        tail = [_DONE, sse({"choices": [], "cost": COST})] if plan.zen else [_DONE]
        return Script(body, tail)


FAMILY: Final = _ChatCompletions()
