"""Gemini ``generateContent``, as the mock speaks it.

``POST {base}/models/{model}:generateContent`` and ``…:streamGenerateContent?alt=sse``
under ``/v1beta`` (documented) or ``/v1`` (google-genai 3.x), key in ``x-goog-api-key``.
Camel-case and snake-case request fields are both read. A stream frame ends with
``\\r\\n\\r\\n``; every chunk carries the cumulative ``usageMetadata``; a function call
comes whole in one chunk; a last chunk with an empty text part carries
``finishReason``; there is no ``[DONE]``, the connection just closes. Without
``alt=sse`` the stream is one JSON array, as upstream. ``finishReason`` is ``STOP``
for a function call too.

Errors are google.rpc ``Status`` bodies. As upstream, a wrong key is **400**
``INVALID_ARGUMENT`` with an ``ErrorInfo`` reason ``API_KEY_INVALID``, and a missing
key is 403 ``PERMISSION_DENIED``; an unknown model is 404 ``NOT_FOUND``.
"""

from __future__ import annotations

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
    compact,
    invalid,
    objects,
    positive_int,
    sse,
)

__all__ = ["FAMILY"]

_ACTIONS: Final = {"generateContent": False, "streamGenerateContent": True}
_KEY_INVALID: Final = {
    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
    "reason": "API_KEY_INVALID",
    "domain": "googleapis.com",
    "metadata": {"service": "generativelanguage.googleapis.com"},
}
_STATUSES: Final[dict[str, tuple[str, str]]] = {
    "rate_limit": ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    "server": (
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    ),
    "unavailable": ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    "overloaded": ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    "context_length": (
        "INVALID_ARGUMENT",
        f"The input token count ({CONTEXT_REQUESTED}) exceeds the maximum number of tokens "
        f"allowed ({CONTEXT_LIMIT}).",
    ),
    "content_policy": ("INVALID_ARGUMENT", CONTENT_POLICY_MESSAGE),
}
"""``(status, message)`` of the errors the fault modes raise."""
_NO_KEY: Final = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)


def _field(body: dict[str, Any], camel: str, snake: str) -> Any:
    return body.get(camel, body.get(snake))


def _text(parts: object) -> str:
    """The text parts joined with newlines; thought parts are not the answer's input."""
    if not isinstance(parts, list):
        return ""
    texts = [p.get("text") for p in parts if isinstance(p, dict) and not p.get("thought")]
    return "\n".join(t for t in texts if isinstance(t, str))


def _turn(content: dict[str, Any]) -> Turn:
    """A ``user`` turn holding only ``functionResponse`` parts is the tool speaking."""
    parts, role = content.get("parts"), content.get("role", "user")
    text = _text(parts)
    answered = isinstance(parts, list) and any(
        isinstance(p, dict) and _field(p, "functionResponse", "function_response") for p in parts
    )
    if role == "user" and answered and not text:
        return Turn("tool", "")
    return Turn("assistant" if role == "model" else str(role), text)


def _turns(body: dict[str, Any]) -> list[Turn]:
    system = _field(body, "systemInstruction", "system_instruction")
    head = [Turn("system", _text(system.get("parts")))] if isinstance(system, dict) else []
    return head + [_turn(c) for c in objects(body.get("contents"), "contents")]


def _calling_config(body: dict[str, Any]) -> dict[str, Any]:
    config = _field(body, "toolConfig", "tool_config") or {}
    calling: dict[str, Any] = _field(config, "functionCallingConfig", "function_calling_config")
    return calling or {}


def _tools(body: dict[str, Any]) -> tuple[list[str], str | None, bool]:
    """Declared names, the one ``allowedFunctionNames`` forces first, and mode ``NONE``."""
    try:
        names = [
            str(declaration["name"])
            for tool in body.get("tools") or []
            for declaration in _field(tool, "functionDeclarations", "function_declarations") or []
        ]
        config = _calling_config(body)
        allowed = _field(config, "allowedFunctionNames", "allowed_function_names") or []
        named = str(allowed[0]) if allowed and config.get("mode") == "ANY" else None
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        raise invalid("Invalid function declarations in 'tools'", "tools") from exc
    return names, named, config.get("mode") == "NONE"


def _cap(body: dict[str, Any]) -> int | None:
    config = _field(body, "generationConfig", "generation_config") or {}
    if not isinstance(config, dict):
        raise invalid("'generationConfig' must be an object", "generationConfig")
    return positive_int(_field(config, "maxOutputTokens", "max_output_tokens"), "maxOutputTokens")


def _target(request: web.Request) -> tuple[str, bool]:
    """The model and whether to stream, from ``models/{model}:{action}``."""
    model, _, action = request.match_info["target"].rpartition(":")
    if action not in _ACTIONS or not model:
        raise invalid(f"Unknown method '{action}': use generateContent or streamGenerateContent")
    return model, _ACTIONS[action]


def _usage(plan: Plan, candidates: int) -> dict[str, Any]:
    prompt = plan.prompt_tokens
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates,
    }


def _chunk(plan: Plan, parts: list[dict[str, Any]], used: int, *, last: bool) -> dict[str, Any]:
    """One ``GenerateContentResponse``; only the last carries ``finishReason``."""
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if last:
        candidate["finishReason"] = "MAX_TOKENS" if plan.finish == "length" else "STOP"
    return {
        "candidates": [candidate],
        "usageMetadata": _usage(plan, used),
        "modelVersion": plan.model,
        "responseId": f"mock-{plan.serial}",
    }


def _not_found(model: str) -> str:
    return (
        f"models/{model} is not found for API version v1beta, or is not supported for "
        "generateContent. Call ListModels to see the list of available models and their "
        "supported methods."
    )


def _call_part(plan: Plan) -> dict[str, Any]:
    assert plan.tool_call is not None
    return {"functionCall": {"name": plan.tool_call.name, "args": plan.tool_call.input}}


class _GenerateContent:
    auth: tuple[AuthStyle, ...] = ("x-goog-api-key",)

    def parse(self, body: dict[str, Any], request: web.Request) -> Ask:
        model, stream = _target(request)
        names, named, refused = _tools(body)
        return Ask(
            model=model,
            turns=_turns(body),
            cap=_cap(body),
            stream=stream,
            tools=names,
            named_tool=named,
            tools_refused=refused,
            sse=request.query.get("alt") == "sse",
        )

    def error(self, error: MockError) -> web.Response:
        status, code, message = error.status, "INVALID_ARGUMENT", error.detail
        details: list[dict[str, Any]] = []
        if error.kind == "auth" and error.detail == "missing":
            status, code, message = 403, "PERMISSION_DENIED", _NO_KEY
        elif error.kind == "auth":
            status, message = 400, "API key not valid. Please pass a valid API key."
            details = [_KEY_INVALID]
        elif error.kind == "model":
            code, message = "NOT_FOUND", _not_found(error.detail)
        elif error.kind in _STATUSES:
            code, message = _STATUSES[error.kind]
        body: dict[str, Any] = {"code": status, "message": message, "status": code}
        if details:
            body["details"] = details
        return web.json_response({"error": body}, status=status)

    def response(self, plan: Plan) -> dict[str, Any]:
        parts = [_call_part(plan)] if plan.tool_call else [{"text": plan.text}]
        body = _chunk(plan, parts, plan.completion_tokens, last=True)
        return {**body, "cost": COST} if plan.zen else body

    def script(self, plan: Plan) -> Script:
        """A chunk per token (or one with the whole call), then the finishing chunk."""
        if plan.tool_call is not None:
            chunks = [_chunk(plan, [_call_part(plan)], plan.completion_tokens, last=False)]
        else:
            chunks = [
                _chunk(plan, [{"text": token}], i + 1, last=False)
                for i, token in enumerate(plan.tokens)
            ]
        final = _chunk(plan, [{"text": ""}], plan.completion_tokens, last=True)
        if not plan.ask.sse:
            return _json_array(chunks, final)
        body = [Frame(sse(chunk, end="\r\n\r\n"), paced=True) for chunk in chunks]
        return Script(body, [sse(final, end="\r\n\r\n")], finishes_in_tail=True)


def _json_array(chunks: list[dict[str, Any]], final: dict[str, Any]) -> Script:
    """The stream without ``alt=sse``: one JSON array, written element by element."""
    texts = [("[" if i == 0 else ",\r\n") + compact(chunk) for i, chunk in enumerate(chunks)]
    body = [Frame(text.encode(), paced=True) for text in texts]
    close = (",\r\n" if texts else "[") + compact(final) + "]"
    return Script(body, [close.encode()], content_type="application/json", finishes_in_tail=True)


FAMILY: Final = _GenerateContent()
