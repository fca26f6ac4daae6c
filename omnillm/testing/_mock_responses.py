"""OpenAI Responses, as the mock speaks it (``POST /v1/responses``, key as Bearer).

``input`` is a string (one user message) or a list of items; ``instructions`` counts
as a system message and every input item as one message. The answer is one output
item: a ``message`` with one ``output_text`` part, or a ``function_call``.

The stream has ``event:`` lines and a ``sequence_number`` on every event, and no
``[DONE]``. It ends with ``response.completed``, or, as upstream, with
``response.incomplete`` (status ``incomplete``, ``incomplete_details.reason:
"max_output_tokens"``) when the cap truncated the answer. Errors are OpenAI's.
"""

from __future__ import annotations

import time
from typing import Any, Final

from aiohttp import web

from omnillm.testing import _mock_openai
from omnillm.testing._mock_common import (
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

_TEXT_PARTS: Final = ("input_text", "output_text", "text")

_Event = tuple[str, dict[str, Any], bool]
"""An event's ``type``, its other fields, and whether it is a paced content event."""


def _turn(item: dict[str, Any]) -> Turn:
    """A message item keeps its role; a call is the assistant's, its output the tool's."""
    kind = item.get("type", "message")
    if kind == "function_call_output":
        output = item.get("output")
        return Turn("tool", output if isinstance(output, str) else "")
    if kind != "message":
        return Turn("assistant", "")
    return Turn(str(item.get("role")), text_of(item.get("content"), _TEXT_PARTS))


def _turns(body: dict[str, Any]) -> list[Turn]:
    instructions, given = body.get("instructions"), body.get("input")
    head = [Turn("system", instructions)] if isinstance(instructions, str) else []
    if isinstance(given, str) and given:
        return [*head, Turn("user", given)]
    return head + [_turn(item) for item in objects(given, "input")]


def _tools(body: dict[str, Any]) -> tuple[list[str], str | None]:
    """Names of the function tools on offer, and the one ``tool_choice`` names."""
    choice = body.get("tool_choice")
    try:
        tools = [t for t in body.get("tools") or [] if t.get("type") == "function"]
        names = [str(tool["name"]) for tool in tools]
        if isinstance(choice, dict) and choice.get("type") == "function":
            return names, str(choice["name"])
    except (KeyError, TypeError, AttributeError) as exc:
        raise invalid("malformed tool definition", "tools") from exc
    return names, None


def _usage(plan: Plan) -> dict[str, Any]:
    return {
        "input_tokens": plan.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": plan.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": plan.prompt_tokens + plan.completion_tokens,
    }


def _item(plan: Plan, *, done: bool) -> dict[str, Any]:
    """The output item, empty and in progress (``done=False``) or finished."""
    call, status = plan.tool_call, "in_progress"
    if done:
        status = "incomplete" if plan.finish == "length" else "completed"
    if call is not None:
        return {
            "type": "function_call",
            "id": f"fc_mock_{plan.serial}",
            "call_id": f"call_{call.digest}",
            "name": call.name,
            "arguments": call.arguments if done else "",
            "status": status,
        }
    content = [_part(plan.text)] if done else []
    message = {"type": "message", "id": f"msg_mock_{plan.serial}", "status": status}
    return {**message, "role": "assistant", "content": content}


def _part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": []}


def _response(plan: Plan, *, done: bool) -> dict[str, Any]:
    status, incomplete = "in_progress", None
    if done and plan.finish == "length":
        status, incomplete = "incomplete", {"reason": "max_output_tokens"}
    elif done:
        status = "completed"
    return {
        "id": f"resp_mock_{plan.serial}",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": incomplete,
        "model": plan.model,
        "output": [_item(plan, done=True)] if done else [],
        "usage": _usage(plan) if done else None,
    }


def _item_event(plan: Plan, *, done: bool) -> dict[str, Any]:
    return {"output_index": 0, "item": _item(plan, done=done)}


def _call_events(plan: Plan, where: dict[str, Any]) -> list[_Event]:
    assert plan.tool_call is not None
    delta = "response.function_call_arguments.delta"
    deltas: list[_Event] = [(delta, {**where, "delta": h}, True) for h in plan.tool_call.halves]
    done = {**where, "arguments": plan.tool_call.arguments}
    return [*deltas, ("response.function_call_arguments.done", done, False)]


def _text_events(plan: Plan, where: dict[str, Any]) -> list[_Event]:
    part = {**where, "content_index": 0}
    delta = "response.output_text.delta"
    deltas: list[_Event] = [
        (delta, {**part, "delta": t, "logprobs": []}, True) for t in plan.tokens
    ]
    return [
        ("response.content_part.added", {**part, "part": _part("")}, False),
        *deltas,
        ("response.output_text.done", {**part, "text": plan.text, "logprobs": []}, False),
        ("response.content_part.done", {**part, "part": _part(plan.text)}, False),
    ]


def _events(plan: Plan) -> list[_Event]:
    """``(type, fields, paced)`` for every event between the item's added and done."""
    where = {"item_id": _item(plan, done=False)["id"], "output_index": 0}
    return _call_events(plan, where) if plan.tool_call else _text_events(plan, where)


class _Responses:
    auth: tuple[AuthStyle, ...] = ("bearer",)

    def parse(self, body: dict[str, Any], request: web.Request) -> Ask:
        names, named = _tools(body)
        return Ask(
            model=model_field(body),
            turns=_turns(body),
            cap=positive_int(body.get("max_output_tokens"), "max_output_tokens"),
            stream=bool(body.get("stream")),
            tools=names,
            named_tool=named,
            tools_refused=body.get("tool_choice") == "none",
        )

    def error(self, error: MockError) -> web.Response:
        return _mock_openai.FAMILY.error(error)

    def response(self, plan: Plan) -> dict[str, Any]:
        body = _response(plan, done=True)
        return {**body, "cost": COST} if plan.zen else body

    def script(self, plan: Plan) -> Script:
        """created, in_progress, output_item.added, the item's events, output_item.done,
        then completed (or incomplete)."""
        started = {"response": _response(plan, done=False)}
        events: list[_Event] = [
            ("response.created", started, False),
            ("response.in_progress", started, False),
            ("response.output_item.added", _item_event(plan, done=False), False),
            *_events(plan),
            ("response.output_item.done", _item_event(plan, done=True), False),
        ]
        body = [
            Frame(sse({"type": kind, "sequence_number": i, **fields}, kind), paced=paced)
            for i, (kind, fields, paced) in enumerate(events)
        ]
        end = "response.incomplete" if plan.finish == "length" else "response.completed"
        last = {"type": end, "sequence_number": len(events), "response": _response(plan, done=True)}
        return Script(body, [sse(last, end)], finishes_in_tail=True)


FAMILY: Final = _Responses()
