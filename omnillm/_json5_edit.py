"""Edit a JSON5 document as text, so every byte outside the edit stays as it was.

``json5`` parses the document (and reports a malformed one with line and column);
:class:`_Scanner` then finds where each object member's key, value and trailing comma
sit. An edit replaces one value's span, inserts members right after an object's
``{`` (each as ``\\n<indent>key: value,``), or removes a member: exactly the bytes an
insert added, so an insert followed by a remove gives the original text back.
Fragments are pretty-printed JSON, indented like their new neighbours.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import json5

from omnillm.errors import ConfigError

__all__ = [
    "Member",
    "Value",
    "fragment",
    "insert_members",
    "lookup",
    "parse",
    "remove_member",
    "replace_value",
    "set_member",
]

_IDENT: Final = re.compile(r"[\w$\\]+")
_JSON5_ERROR: Final = re.compile(r"^<string>:(\d+) (.*) at column (\d+)$", re.DOTALL)
_LINE_COMMENT: Final = re.compile(r"[ \t]*//[^\n]*")
_PLAIN_KEY: Final = re.compile(r"[A-Za-z_$][\w$]*")
WIDTH: Final = 96
"""Fragments longer than this (with their indent) are written one member per line."""


@dataclass(frozen=True, slots=True)
class Value:
    start: int
    end: int
    kind: Literal["object", "array", "scalar"]
    members: tuple[Member, ...] = ()

    def get(self, key: str) -> Member | None:
        return next((m for m in self.members if m.key == key), None)


@dataclass(frozen=True, slots=True)
class Member:
    key: str
    start: int
    value: Value
    end: int
    """After the trailing comma, or the value's end when there is none."""
    quoted: bool = field(default=False)


def parse(text: str, label: str) -> tuple[Any, Value]:
    """The data and the spans of ``text``; a :class:`ConfigError` naming the position."""
    try:
        data = json5.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{label}: {_where(str(exc))}") from exc
    root = _Scanner(text).document()
    if root.kind != "object":
        raise ConfigError(f"{label}: expected an object at the top, got {type(data).__name__}")
    return data, root


def _where(message: str) -> str:
    """``<string>:3 Unexpected "x" at column 7`` -> ``line 3, column 7: invalid JSON5: ...``."""
    match = _JSON5_ERROR.match(message)
    if match is None:
        return f"invalid JSON5: {message}"
    line, problem, column = match.groups()
    return f"line {line}, column {column}: invalid JSON5: {problem[:1].lower()}{problem[1:]}"


class _Scanner:
    """Spans of an already validated JSON5 text (``json5`` rejected anything malformed)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def document(self) -> Value:
        return self.value()

    def skip(self) -> None:
        text = self.text
        while self.pos < len(text):
            if text[self.pos].isspace() or text[self.pos] == "\ufeff":
                self.pos += 1
            elif text.startswith("//", self.pos):
                newline = text.find("\n", self.pos)
                self.pos = len(text) if newline < 0 else newline + 1
            elif text.startswith("/*", self.pos):
                self.pos = text.index("*/", self.pos + 2) + 2
            else:
                return

    def value(self) -> Value:
        self.skip()
        start, char = self.pos, self.text[self.pos]
        if char == "{":
            return self._object()
        if char == "[":
            return self._array()
        if char in "\"'":
            self._string()
        else:
            while self.pos < len(self.text) and not self._scalar_end(self.text[self.pos]):
                self.pos += 1
        return Value(start, self.pos, "scalar")

    def _scalar_end(self, char: str) -> bool:
        return char in ",]}" or char.isspace() or self.text.startswith("/", self.pos)

    def _string(self) -> None:
        quote = self.text[self.pos]
        self.pos += 1
        while self.text[self.pos] != quote:
            self.pos += 2 if self.text[self.pos] == "\\" else 1
        self.pos += 1

    def _object(self) -> Value:
        start, members = self.pos, list[Member]()
        self.pos += 1
        while True:
            self.skip()
            if self.text[self.pos] == "}":
                self.pos += 1
                return Value(start, self.pos, "object", tuple(members))
            members.append(self._member())

    def _member(self) -> Member:
        key_start = self.pos
        quoted = self.text[self.pos] in "\"'"
        if quoted:
            self._string()
            key = str(json5.loads(self.text[key_start : self.pos]))
        else:
            match = _IDENT.match(self.text, self.pos)
            assert match is not None  # json5 accepted the text
            self.pos, key = match.end(), match.group()
        self.skip()
        self.pos += 1  # the colon
        value = self.value()
        self.skip()
        end = value.end
        if self.pos < len(self.text) and self.text[self.pos] == ",":
            self.pos += 1
            end = self.pos
        return Member(key, key_start, value, end, quoted)

    def _array(self) -> Value:
        start = self.pos
        self.pos += 1
        while True:
            self.skip()
            if self.text[self.pos] == "]":
                self.pos += 1
                return Value(start, self.pos, "array")
            self.value()
            self.skip()
            if self.text[self.pos] == ",":
                self.pos += 1


# --- lookups -------------------------------------------------------------------------


def lookup(root: Value, path: Sequence[str]) -> Member | None:
    """The member at ``path`` (keys from the top), or None when any step is missing."""
    node, member = root, None
    for key in path:
        member = node.get(key) if node.kind == "object" else None
        if member is None:
            return None
        node = member.value
    return member


def _line_indent(text: str, pos: int) -> str:
    line_start = text.rfind("\n", 0, pos) + 1
    return re.match(r"[ \t]*", text[line_start:pos]).group()  # type: ignore[union-attr]


def _unit(text: str, root: Value) -> str:
    """The file's indent step: the top level's first member's indentation, else two spaces."""
    if root.members:
        indent = _line_indent(text, root.members[0].start)
        if indent and text[text.rfind("\n", 0, root.members[0].start) + 1 :].startswith(indent):
            return indent
    return "  "


def _member_indent(text: str, obj: Value, unit: str) -> str:
    if obj.members:
        first = obj.members[0].start
        before = text[text.rfind("\n", 0, first) + 1 : first]
        if before.strip() == "":
            return before
    return _line_indent(text, obj.start) + unit


def _quotes(obj: Value) -> bool:
    """Whether keys written into ``obj`` are quoted: as its members are (JSON style)."""
    return any(m.quoted for m in obj.members)


def _key(key: str, quote: bool) -> str:
    return key if not quote and _PLAIN_KEY.fullmatch(key) else json.dumps(key)


def fragment(value: Any, indent: str, unit: str, *, quote: bool = True) -> str:
    """``value`` as JSON5 whose continuation lines start with ``indent``: one line when it
    fits in :data:`WIDTH`, else one member per line with trailing commas."""
    line = _inline(value, quote)
    if len(indent) + len(line) <= WIDTH or not isinstance(value, dict | list) or not value:
        return line
    inner = indent + unit
    if isinstance(value, dict):
        items = [
            f"{_key(k, quote)}: {fragment(v, inner, unit, quote=quote)}" for k, v in value.items()
        ]
        brackets = "{}"
    else:
        items = [fragment(v, inner, unit, quote=quote) for v in value]
        brackets = "[]"
    body = ",".join(f"\n{inner}{item}" for item in items) + ("" if quote else ",")
    return f"{brackets[0]}{body}\n{indent}{brackets[1]}"


def _inline(value: Any, quote: bool) -> str:
    if isinstance(value, dict):
        items = ", ".join(f"{_key(k, quote)}: {_inline(v, quote)}" for k, v in value.items())
        return ("{%s}" if quote else "{ %s }") % items if items else "{}"
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v, quote) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


# --- edits ---------------------------------------------------------------------------


def insert_members(text: str, root: Value, obj: Value, items: Sequence[tuple[str, Any]]) -> str:
    """``items`` inserted first in ``obj``, one line each, after any comment on ``{``'s line."""
    unit = _unit(text, root)
    indent = _member_indent(text, obj, unit)
    quote = _quotes(obj)
    block = "".join(
        f"\n{indent}{_key(key, quote)}: {fragment(value, indent, unit, quote=quote)},"
        for key, value in items
    )
    at = obj.start + 1
    if comment := _LINE_COMMENT.match(text, at):
        at = comment.end()
    inner = text[obj.start + 1 : obj.end - 1]
    if not obj.members and inner.strip() == "":
        closing = _line_indent(text, obj.start)
        return text[: obj.start + 1] + block + "\n" + closing + text[obj.end - 1 :]
    return text[:at] + block + text[at:]


def replace_value(text: str, value: Value, new: str) -> str:
    return text[: value.start] + new + text[value.end :]


def set_member(text: str, label: str, path: Sequence[str], value: Any) -> str:
    """Text with ``path`` set to ``value``: missing objects created, the rest untouched."""
    _, root = parse(text, label)
    node = root
    for i, key in enumerate(path):
        member = node.get(key)
        if member is None:
            nested = value
            for outer in reversed(path[i + 1 :]):
                nested = {outer: nested}
            return insert_members(text, root, node, [(key, nested)])
        if i == len(path) - 1:
            current = json5.loads(text[member.value.start : member.value.end])
            if current == value:
                return text
            unit = _unit(text, root)
            new = fragment(value, _member_indent(text, node, unit), unit, quote=_quotes(node))
            return replace_value(text, member.value, new)
        if member.value.kind != "object":
            where = ".".join(path[: i + 1])
            raise ConfigError(f"{label}: {where}: expected an object, cannot add to it")
        node = member.value
    return text


def remove_member(text: str, label: str, path: Sequence[str], *, prune: int = 0) -> str:
    """Text without the member at ``path``; then up to ``prune`` ancestors left empty."""
    _, root = parse(text, label)
    member = lookup(root, path)
    if member is None:
        return text
    start = member.start
    start -= len(text[:start]) - len(text[:start].rstrip(" \t"))
    if text[:start].endswith("\n"):
        start -= 1
    end = member.end if member.end > member.value.end else member.value.end
    text = text[:start] + text[end:]
    if prune and len(path) > 1:
        _, root = parse(text, label)
        parent = lookup(root, path[:-1])
        if parent is not None and not parent.value.members:
            inner = text[parent.value.start + 1 : parent.value.end - 1]
            if inner.strip() == "":
                return remove_member(text, label, path[:-1], prune=prune - 1)
    return text
