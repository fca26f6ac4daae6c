"""msgspec errors, in words: ``Expected `float`, got `str` - at `$.models[0].price.input` ``
becomes ``models[0].price.input: expected a number, got a string``, with a mapping's real
key where msgspec writes ``[...]``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from types import UnionType
from typing import Any, Final, Literal, Union, get_args, get_origin, get_type_hints

import msgspec
from msgspec import Struct

from omnillm.config.schema import Config

__all__ = ["explain", "key_path", "one_of"]

_TYPE_WORDS: Final = {
    "float": "a number",
    "int": "an integer",
    "str": "a string",
    "bool": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}
_AT: Final = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>.*)`)?$", re.DOTALL)
_SEGMENT: Final = re.compile(r'\.([^.\[]+)|\[(\d+)\]|\["([^"]*)"\]')
_PLAIN_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")


def explain(exc: msgspec.ValidationError, raw: Any) -> str:
    """``Expected `float`, got `str` - at `$.a[0].b` `` -> ``a[0].b: expected a number, ...``."""
    match = _AT.match(str(exc))
    assert match is not None  # the pattern matches any text
    what, path = match.group("what"), match.group("path") or ""
    path = _name_keys(raw, path, str(exc))
    what = _describe(what, path)
    return f"{path.removeprefix('.')}: {what}" if path else what


def _describe(what: str, path: str) -> str:
    if m := re.fullmatch(r"Object contains unknown field `(.*)`", what):
        return f"unknown key '{m.group(1)}'"
    if m := re.fullmatch(r"Object missing required field `(.*)`", what):
        return f"missing required key '{m.group(1)}'"
    if m := re.fullmatch(r"Invalid enum value (.*)", what):
        allowed = _literal_values(path)
        return one_of(allowed, m.group(1).strip("'")) if allowed else what
    if m := re.fullmatch(r"Expected `(.*)`, got `(.*)`", what):
        return f"expected {_words(m.group(1))}, got {_words(m.group(2))}"
    return what[:1].lower() + what[1:]


def one_of(allowed: Iterable[object], got: str) -> str:
    return f"expected one of {', '.join(repr(v) for v in allowed)}, got {got!r}"


def _words(types: str) -> str:
    # "null" only means "not given" for an optional key: not what a user should write.
    kinds = [t for t in types.split(" | ") if t != "null"] or ["null"]
    return " or ".join(_TYPE_WORDS.get(t, t) for t in kinds)


def _segments(path: str) -> list[str | int]:
    """``.a[0]["b.c"]`` -> ``["a", 0, "b.c"]``: field or key names, and list indexes."""
    return [int(i) if i else name or key for name, i, key in _SEGMENT.findall(path)]


def _name_keys(raw: Any, path: str, message: str) -> str:
    """msgspec writes a mapping's key as ``[...]``; find the real key and put it in.

    The key is the first one whose entry alone reproduces the same error.
    """
    while "[...]" in path:
        head, tail = path.split("[...]", 1)
        try:
            node = _walk(raw, _segments(head))
        except (KeyError, IndexError, TypeError):
            return path
        keys = node if isinstance(node, dict) else ()
        key = next((k for k in keys if _fails(_isolate(raw, _segments(head), k), message)), None)
        if key is None:
            return path
        raw = _isolate(raw, _segments(head), key)
        path = key_path(head, str(key)) + tail
    return path


def key_path(path: str, key: str) -> str:
    """``providers`` + ``local`` -> ``providers.local``; a key with a dot gets quotes."""
    return f"{path}.{key}" if _PLAIN_KEY.fullmatch(key) else f'{path}["{key}"]'


def _walk(node: Any, segments: list[str | int]) -> Any:
    for segment in segments:
        node = node[segment]
    return node


def _isolate(node: Any, segments: list[str | int], key: Any) -> Any:
    """A copy of ``node`` where the mapping at ``segments`` holds only ``key``."""
    if not segments:
        return {key: node[key]}
    head, *rest = segments
    inner = _isolate(node[head], rest, key)
    if isinstance(node, list):
        return [inner if i == head else item for i, item in enumerate(node)]
    return {**node, head: inner}


def _fails(raw: Any, message: str) -> bool:
    try:
        msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        return str(exc) == message
    return False


def _literal_values(path: str) -> tuple[Any, ...]:
    """The allowed values of the ``Literal`` field at ``path`` in :class:`Config`, in order."""
    hint: Any = Config
    for segment in _segments(path):
        hint = _step(hint, segment)
    members = get_args(hint) if _is_union(hint) else (hint,)
    return next((get_args(m) for m in members if get_origin(m) is Literal), ())


def _step(hint: Any, segment: str | int) -> Any:
    """The type one path segment down: a struct field, a list item, a mapping value."""
    for member in get_args(hint) if _is_union(hint) else (hint,):
        if isinstance(segment, str) and isinstance(member, type) and issubclass(member, Struct):
            fields = get_type_hints(member)
            if segment in fields:
                return fields[segment]
        if isinstance(segment, int) and get_origin(member) is list:
            return get_args(member)[0]
        if isinstance(segment, str) and get_origin(member) is dict:
            return get_args(member)[1]
    return Any


def _is_union(hint: Any) -> bool:
    return get_origin(hint) in (Union, UnionType)
