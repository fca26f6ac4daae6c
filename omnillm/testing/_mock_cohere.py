"""Cohere v2 chat, as the mock speaks it (``POST /v2/chat``, key as Bearer).

A tool call carries a ``tool_plan`` (streamed as ``tool-plan-delta``) as Cohere's
models send one; it is the model's commentary, not the answer. ``usage.tokens`` and
``usage.billed_units`` hold the same counts. The stream ends with ``message-end`` and
then ``data: [DONE]``. Errors are ``{"message": …}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

from aiohttp import web

from omnillm.testing._mock_common import (
    CONTENT_POLICY_MESSAGE,
    CONTEXT_LIMIT,
    CONTEXT_REQUESTED,
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
_FINISH: Final = {"stop": "COMPLETE", "length": "MAX_TOKENS", "tool_calls": "TOOL_CALL"}
_MESSAGES: Final[dict[str, str]] = {
    "auth": "invalid api token",
    "rate_limit": "too many requests, please wait and try again later",
    "server": "internal server error, this has been reported to our developers",
    "unavailable": "service unavailable, please try again later",
    "overloaded": "model overloaded, please try again later",
    "context_length": (
        f"too many tokens: total number of tokens in the prompt cannot exceed {CONTEXT_LIMIT}"
        f" - received {CONTEXT_REQUESTED}. Try using a shorter preamble or fewer chat turns."
    ),
    "content_policy": CONTENT_POLICY_MESSAGE,
}
"""The message of each error kind whose wording does not depend on the request."""


def _tool_names(body: dict[str, Any]) -> list[str]:
    try:
        return [str(tool["function"]["name"]) for tool in body.get("tools") or []]
    except (KeyError, TypeError) as exc:
        raise invalid("invalid request: malformed tool definition", "tools") from exc


def _usage(plan: Plan) -> dict[str, Any]:
    counts = {"input_tokens": plan.prompt_tokens, "output_tokens": plan.completion_tokens}
    return {"billed_units": counts, "tokens": dict(counts)}


def _id(plan: Plan) -> str:
    return f"00000000-0000-4000-8000-{plan.serial:012d}"


def _tool_plan(plan: Plan) -> str:
    assert plan.tool_call is not None
    return f"I will use the {plan.tool_call.name} tool."


def _call(plan: Plan, arguments: str) -> dict[str, Any]:
    assert plan.tool_call is not None
    call = plan.tool_call
    function = {"name": call.name, "arguments": arguments}
    return {"id": f"{call.name}_{call.digest}", "type": "function", "function": function}


def _event(kind: str, **fields: Any) -> bytes:
    return sse({"type": kind, **fields}, kind)


def _message(**fields: Any) -> dict[str, Any]:
    return {"message": fields}


def _content_events(plan: Plan) -> Iterator[Frame]:
    """content-start, a paced content-delta per token, content-end."""
    start = _message(content={"type": "text", "text": ""})
    yield Frame(_event("content-start", index=0, delta=start))
    for token in plan.tokens:
        delta = _message(content={"text": token})
        yield Frame(_event("content-delta", index=0, delta=delta), paced=True)
    yield Frame(_event("content-end", index=0))


def _tool_events(plan: Plan) -> Iterator[Frame]:
    """tool-plan-delta, tool-call-start, the arguments in two paced halves, tool-call-end."""
    assert plan.tool_call is not None
    yield Frame(_event("tool-plan-delta", delta=_message(tool_plan=_tool_plan(plan))))
    yield Frame(_event("tool-call-start", index=0, delta=_message(tool_calls=_call(plan, ""))))
    for part in plan.tool_call.halves:
        delta = _message(tool_calls={"function": {"arguments": part}})
        yield Frame(_event("tool-call-delta", index=0, delta=delta), paced=True)
    yield Frame(_event("tool-call-end", index=0))


class _Chat:
    auth: tuple[AuthStyle, ...] = ("bearer",)

    def parse(self, body: dict[str, Any], request: web.Request) -> Ask:
        messages = objects(body.get("messages"), "messages")
        choice = body.get("tool_choice")
        return Ask(
            model=model_field(body),
            turns=[Turn(str(m.get("role")), text_of(m.get("content"))) for m in messages],
            cap=positive_int(body.get("max_tokens"), "max_tokens"),
            stream=bool(body.get("stream")),
            tools=_tool_names(body),
            tools_refused=choice == "NONE",
        )

    def error(self, error: MockError) -> web.Response:
        if error.kind == "model":
            message = (
                f"model '{error.detail}' not found, make sure the correct model ID was used "
                "and that you have access to the model."
            )
        elif error.kind == "invalid":
            message = f"invalid request: {error.detail}"
        else:
            message = _MESSAGES[error.kind]
        return web.json_response({"id": "mock-error", "message": message}, status=error.status)

    def response(self, plan: Plan) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant"}
        if plan.tool_call is None:
            message["content"] = [{"type": "text", "text": plan.text}]
        else:
            message["tool_plan"] = _tool_plan(plan)
            message["tool_calls"] = [_call(plan, plan.tool_call.arguments)]
        return {
            "id": _id(plan),
            "message": message,
            "finish_reason": _FINISH[plan.finish],
            "usage": _usage(plan),
        }

    def script(self, plan: Plan) -> Script:
        empty = _message(role="assistant", content=[], tool_plan="", tool_calls=[], citations=[])
        body = [Frame(_event("message-start", id=_id(plan), delta=empty))]
        body += _tool_events(plan) if plan.tool_call else _content_events(plan)
        end = {"finish_reason": _FINISH[plan.finish], "usage": _usage(plan)}
        body.append(Frame(_event("message-end", delta=end)))
        return Script(body, [_DONE])


FAMILY: Final = _Chat()
