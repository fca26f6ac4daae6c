"""Logging: one JSON object per line, request ids attached, secrets and contents kept out.

::

    configure_logging("info")                 # from config ``log.level`` / ``OMNI_LOG_LEVEL``
    with log_context(rid=envelope.rid):
        log.info("attempt %d on %s", attempt, model)   # carries "rid"
    log.info("upstream said", extra={"rid": rid, "status": 429})

Redaction happens in the formatter, so it covers every logger, third-party ones too:
bearer tokens, ``sk-…`` style keys, the values of ``authorization``/``api-key``/
``x-api-key`` headers and ``key=``/``token=`` URL parameters become ``[redacted]``.
Message contents (``content``, ``prompt``, ``messages``, ``completion`` passed in
``extra``) are dropped unless ``reveal_content``: logs outlive the requests they
describe, and prompts are the user's data.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Final, TextIO

import orjson

__all__ = [
    "CONTENT_FIELDS",
    "REDACTED",
    "JsonFormatter",
    "TextFormatter",
    "configure_logging",
    "log_context",
    "redact",
    "request_id",
]

REDACTED: Final = "[redacted]"
CONTENT_FIELDS: Final = frozenset({"content", "prompt", "messages", "completion"})
SECRET_FIELDS: Final = frozenset(
    {"authorization", "proxy-authorization", "api-key", "api_key", "apikey", "x-api-key"}
    | {"x-goog-api-key", "token", "access_token", "secret", "password"}
)
"""Keys of ``extra`` (at any depth) whose values are never logged."""

request_id: ContextVar[str | None] = ContextVar("omnillm_request_id", default=None)
"""The request being worked on in this task; ``log_context`` sets it."""

_HEADER_VALUE: Final = re.compile(
    r"(?i)\b((?:x-)?api[-_]?key|x-goog-api-key|(?:proxy-)?authorization)"
    r"""(["']?\s*[:=]\s*["']?)(?:(bearer|basic|token)\s+)?[^\s"',;&})\]>]+"""
)
_SECRETS: Final = (
    (_HEADER_VALUE, lambda m: f"{m[1]}{m[2]}{m[3] + ' ' if m[3] else ''}{REDACTED}"),
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"), lambda m: f"Bearer {REDACTED}"),
    (
        re.compile(r"(?i)([?&](?:key|api_key|apikey|access_token|token|sig)=)[^&\s\"'#]+"),
        lambda m: f"{m[1]}{REDACTED}",
    ),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{3,}"), lambda m: REDACTED),
    (re.compile(r"\b(?:xai|gsk|pk)[-_][A-Za-z0-9_-]{16,}"), lambda m: REDACTED),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{20,}"), lambda m: REDACTED),
)

# Attributes every LogRecord has; anything else came in through ``extra``.
_STANDARD: Final = frozenset(
    [*logging.LogRecord("", 0, "", 0, "", (), None).__dict__, "message", "asctime", "rid"]
)


def redact(text: str) -> str:
    """``text`` with anything that looks like a credential replaced by ``[redacted]``."""
    for pattern, replace in _SECRETS:
        text = pattern.sub(replace, text)
    return text


@contextmanager
def log_context(*, rid: str) -> Iterator[None]:
    """Records logged inside the block (in this task and tasks it starts) carry ``rid``."""
    token = request_id.set(rid)
    try:
        yield
    finally:
        request_id.reset(token)


def _clean(value: Any, reveal: bool) -> Any:
    """A JSON-ready copy of ``value``: secrets redacted, content fields dropped."""
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return _clean_fields(value, reveal)
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v, reveal) for v in value]
    return redact(str(value))


def _clean_fields(fields: dict[Any, Any], reveal: bool) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for key, value in fields.items():
        name = str(key)
        if name.lower() in SECRET_FIELDS:
            cleaned[name] = REDACTED
        elif name in CONTENT_FIELDS and not reveal:
            continue
        else:
            cleaned[name] = _clean(value, reveal)
    return cleaned


def _rid(record: logging.LogRecord) -> str | None:
    rid = getattr(record, "rid", None)
    return str(rid) if rid else request_id.get()


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, rid, then the extras."""

    def __init__(self, *, reveal_content: bool = False) -> None:
        super().__init__()
        self.reveal_content = reveal_content

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        if rid := _rid(record):
            entry["rid"] = rid
        extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        for key, value in _clean_fields(extras, self.reveal_content).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = redact(record.stack_info)
        return orjson.dumps(entry).decode()


class TextFormatter(logging.Formatter):
    """The readable format, redacted the same way; the rid follows the logger name."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = redact(super().format(record))
        if rid := _rid(record):
            head, sep, tail = text.partition(f"{record.name}: ")
            text = f"{head}{sep}[{rid}] {tail}" if sep else f"[{rid}] {text}"
        return text


def _level(level: str) -> int:
    levels = logging.getLevelNamesMapping()
    name = level.strip().upper()
    if name not in levels:
        choices = "debug, info, warning, error, critical"
        raise ValueError(f"unknown log level {level!r}: use one of {choices}")
    return levels[name]


def configure_logging(
    level: str,
    *,
    json: bool = True,
    reveal_content: bool = False,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send every record at ``level`` or above to ``stream`` (stderr), one line each.

    Calling it again replaces the handler it installed before, not anybody else's.
    Below debug, httpx's one line per upstream request is silenced.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(reveal_content=reveal_content) if json else TextFormatter())
    handler.set_name("omnillm")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "omnillm"]:
        root.removeHandler(old)
    root.addHandler(handler)
    numeric = _level(level)
    root.setLevel(numeric)
    logging.getLogger("httpx").setLevel(logging.WARNING if numeric > logging.DEBUG else numeric)
    return handler
