"""Loading: find the file, read it as YAML or JSON, and name a syntax error's line.

:func:`load_config` also checks what types cannot say (``_checks``) and applies the
``OMNI_*`` environment overrides (``_env``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import msgspec

from omnillm.config._checks import check, given_twice, passed, raise_first
from omnillm.config._env import apply_env
from omnillm.config._explain import explain
from omnillm.config.schema import Config
from omnillm.errors import ConfigError

__all__ = ["CONFIG_FILES", "load_config"]

CONFIG_FILES: Final = ("omnillm.yaml", "omnillm.yml", "omnillm.json")
"""Looked up in this order in the working directory when no path is given."""


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Config:
    """Read ``path``, else the first of :data:`CONFIG_FILES` in ``cwd``, else defaults.

    ``env`` (default ``os.environ``) supplies the ``OMNI_*`` overrides. The checks run
    here, once: :func:`~omnillm.config.resolve` does not repeat them on the result.
    """
    env = os.environ if env is None else env
    file = Path(path) if path is not None else _find_config(cwd)
    config = _read(file) if file is not None else Config()
    check(config, label=None if file is None else str(file))
    return passed(apply_env(config, env))


def _find_config(cwd: Path | None) -> Path | None:
    base = Path() if cwd is None else cwd
    for name in CONFIG_FILES:
        if (base / name).is_file():
            return base / name
    return None


def _read(file: Path) -> Config:
    label = str(file)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{label}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read: {exc.strerror}") from exc
    raw = _parse(data, label, json=file.suffix.lower() == ".json")
    if raw is None:  # an empty file
        return Config()
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{label}: {explain(exc, raw)}") from exc
    raise_first(given_twice(raw), label=label)
    return config


def _parse(data: bytes, label: str, *, json: bool) -> Any:
    try:
        return msgspec.json.decode(data) if json else msgspec.yaml.decode(data)
    except msgspec.DecodeError as exc:
        where = _json_where(data, str(exc)) if json else _yaml_where(str(exc))
        raise ConfigError(f"{label}: {where}") from exc


def _yaml_where(text: str) -> str:
    """PyYAML's multi-line report -> ``line 3, column 2: invalid YAML: what (while ...)``."""
    marks = re.findall(r"line (\d+), column (\d+)", text)
    lines = [s.strip() for s in text.splitlines() if s.strip() and not s.startswith("  in ")]
    problem = lines[-1] if lines else "invalid YAML"
    context = f" ({lines[0]})" if len(lines) > 1 else ""
    where = f"line {marks[-1][0]}, column {marks[-1][1]}: " if marks else ""
    return f"{where}invalid YAML: {problem}{context}"


def _json_where(data: bytes, text: str) -> str:
    """msgspec's ``... (byte 42)`` -> ``line 3, column 7: invalid JSON: ...``."""
    match = re.search(r"\s*\(byte (\d+)\)$", text)
    problem = (text[: match.start()] if match else text).removeprefix("JSON is malformed: ")
    if match is None:
        return f"invalid JSON: {problem[:1].lower()}{problem[1:]}"
    offset = int(match.group(1))
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return f"line {line}, column {column}: invalid JSON: {problem}"
