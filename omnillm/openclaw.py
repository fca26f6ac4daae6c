"""``omni openclaw install|uninstall``: put OmniLLM in OpenClaw's model picker.

OpenClaw reads ``openclaw.json`` (JSON5; ``OPENCLAW_CONFIG_PATH``, else
``$OPENCLAW_STATE_DIR/openclaw.json``, else ``~/.openclaw/openclaw.json``). Install adds:

- ``models.providers.omnillm``: ``baseUrl`` (the gateway), ``api: "openai-completions"``,
  ``apiKey`` and ``models[]``: ``auto``, the built-in aliases and the config's aliases,
  each with limits and prices summarised from the models it can route to;
- ``agents.defaults.models["omnillm/<model>"]`` entries, so they show in ``/model``;
- with ``set_default``, ``agents.defaults.model.primary = "omnillm/auto"``. A replaced
  default is kept beside it as ``/* omnillm-was: <old value> */`` for uninstall.

The user's text is edited in place (:mod:`omnillm._json5_edit`): comments, order and
formatting outside these entries stay byte for byte, and uninstall after install gives
the original text back. The ``apiKey`` is never a secret: ``${VAR}`` (OpenClaw
substitutes it from its environment or ``~/.openclaw/.env``) when the gateway has keys,
else the placeholder :data:`OPEN_GATEWAY_KEY`, which an open gateway ignores.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import json5

from omnillm._json5_edit import Value, insert_members, lookup, parse, remove_member, set_member
from omnillm._json5_edit import replace_value as _replace
from omnillm.actors.planner.actor import BUILTIN_ALIASES
from omnillm.bus.messages import TIERS
from omnillm.config import AliasConfig, Config, Settings
from omnillm.errors import ConfigError
from omnillm.providers.catalog import ModelSpec

__all__ = [
    "DEFAULT_API_KEY_ENV",
    "OPEN_GATEWAY_KEY",
    "PROVIDER_ID",
    "Change",
    "config_path",
    "gateway_url",
    "install",
    "provider_entry",
    "uninstall",
]

PROVIDER_ID: Final = "omnillm"
DEFAULT_REF: Final = f"{PROVIDER_ID}/auto"
DEFAULT_API_KEY_ENV: Final = "OMNILLM_API_KEY"
OPEN_GATEWAY_KEY: Final = "omnillm-open-gateway"
"""Written when the gateway has no keys: OpenClaw wants a non-empty ``apiKey``."""
MIN_CONTEXT: Final = 40_000
"""OpenClaw 2026.9 sends about 19K tokens of system prompt and tools on every turn."""

_PROVIDER_PATH: Final = ("models", "providers", PROVIDER_ID)
_ENTRIES_PATH: Final = ("agents", "defaults", "models")
_MODEL_PATH: Final = ("agents", "defaults", "model")
_WAS: Final = re.compile(r"[ \t]*/\* omnillm-was: (.*?) \*/")
_EMPTY_DOCUMENT: Final = "{\n}\n"


@dataclass(frozen=True, slots=True)
class Change:
    """What install or uninstall did (or, with ``dry_run``, would do) to one file."""

    path: Path
    before: str | None
    """The text before; None when the file did not exist."""
    after: str
    notes: tuple[str, ...]
    dry_run: bool = False
    backup: Path | None = None

    @property
    def changed(self) -> bool:
        return self.before != self.after

    @property
    def diff(self) -> str:
        old = (self.before or "").splitlines(keepends=True)
        new = self.after.splitlines(keepends=True)
        return "".join(difflib.unified_diff(old, new, str(self.path), str(self.path)))

    def __str__(self) -> str:
        if not self.changed:
            return "\n".join((f"{self.path}: nothing to change.", *self.notes))
        verb = "Would change" if self.dry_run else "Changed"
        lines = [f"{verb} {self.path}:", *(f"  - {note}" for note in self.notes)]
        if self.backup is not None:
            lines.append(f"Backup: {self.backup}")
        if self.dry_run:
            lines.append(self.diff.rstrip("\n"))
        return "\n".join(lines)


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """Where OpenClaw reads its config, in OpenClaw's order of precedence."""
    env = os.environ if env is None else env
    if explicit := env.get("OPENCLAW_CONFIG_PATH"):
        return Path(explicit).expanduser()
    if state := env.get("OPENCLAW_STATE_DIR"):
        return Path(state).expanduser() / "openclaw.json"
    return Path.home() / ".openclaw" / "openclaw.json"


def gateway_url(config: Config) -> str:
    """The gateway's ``/v1`` as a client reaches it (a wildcard bind means loopback)."""
    if config.gateway.port == 0:
        raise ConfigError(
            "gateway.port is 0 (a free port picked when the gateway starts), so OpenClaw "
            "cannot be told where it is: pass --gateway-url or set gateway.port"
        )
    host = config.gateway.host
    host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{config.gateway.port}/v1"


# --- what install writes ---------------------------------------------------------------


def provider_entry(
    settings: Settings, *, gateway_url: str, api_key_env: str | None
) -> dict[str, Any]:
    """The ``models.providers.omnillm`` object."""
    return {
        "baseUrl": gateway_url,
        "apiKey": _api_key(settings, api_key_env),
        "api": "openai-completions",
        "timeoutSeconds": 300,
        "models": [_model_row(name, _pool(alias, settings)) for name, alias in _aliases(settings)],
    }


def _api_key(settings: Settings, api_key_env: str | None) -> str:
    keys = settings.config.gateway.keys
    if api_key_env is None and not keys:
        return OPEN_GATEWAY_KEY
    env = api_key_env or next((k.key_env for k in keys if k.key_env), DEFAULT_API_KEY_ENV)
    return "${" + env + "}"


def _aliases(settings: Settings) -> list[tuple[str, AliasConfig | list[str] | None]]:
    merged = {**BUILTIN_ALIASES, **settings.config.routing.aliases}
    return [("auto", None), *merged.items()]


def _pool(alias: AliasConfig | list[str] | None, settings: Settings) -> list[ModelSpec]:
    """The models ``alias`` can route to (roughly: health and budgets are not known here)."""
    live = [m for m in settings.live_models() if _usable(m, settings)]
    if alias is None:
        return live
    named = alias if isinstance(alias, list) else alias.models
    if named:
        return [m for m in settings.catalog if m.id in named and m.provider in settings.providers]
    assert isinstance(alias, AliasConfig)
    pool = [m for m in live if not alias.free or m.price.input == m.price.output == 0]
    pool = [m for m in pool if all(need in m.capabilities for need in alias.needs)]
    if alias.tier is not None:
        rank = TIERS.index(alias.tier)
        pool = [m for m in pool if TIERS.index(m.tier) >= rank] or pool
    return pool


def _usable(spec: ModelSpec, settings: Settings) -> bool:
    provider = settings.providers[spec.provider]
    return not provider.free_only or spec.price.input == spec.price.output == 0


def _model_row(name: str, pool: Sequence[ModelSpec]) -> dict[str, Any]:
    """One ``models[]`` row. Prices are the pool's median (USD per million tokens): an
    estimate, since the route decides; ``omni cost`` has the real figures. ``maxTokens``
    is the smallest output limit, as OpenClaw sends it as ``max_completion_tokens``."""
    vision = name == "vision" or any("vision" in m.capabilities for m in pool)
    context = max((m.context_window for m in pool), default=128_000)
    return {
        "id": name,
        "name": f"OmniLLM {name}",
        "reasoning": bool(pool) and all("reasoning" in m.capabilities for m in pool),
        "input": ["text", "image"] if vision else ["text"],
        "cost": _cost(pool),
        "contextWindow": context,
        "maxTokens": min(min((m.max_output for m in pool), default=8192), context),
    }


def _cost(pool: Sequence[ModelSpec]) -> dict[str, float]:
    def median(values: list[float]) -> float:
        value = round(statistics.median(values), 4) if values else 0
        return int(value) if value == int(value) else value

    prices = [m.price for m in pool]
    return {
        "input": median([p.input for p in prices]),
        "output": median([p.output for p in prices]),
        "cacheRead": median(
            [p.input if p.cached_input is None else p.cached_input for p in prices]
        ),
        "cacheWrite": median([p.input if p.cache_write is None else p.cache_write for p in prices]),
    }


def _entries(models: list[dict[str, Any]], data: Any) -> dict[str, dict[str, str]]:
    """``agents.defaults.models`` entries; an alias another model already uses is left off."""
    current = _get(data, _ENTRIES_PATH) or {}
    taken = {
        v.get("alias")
        for k, v in current.items()
        if isinstance(v, dict) and not k.startswith(f"{PROVIDER_ID}/")
    }
    refs = {f"{PROVIDER_ID}/{m['id']}": m["id"] for m in models}
    return {ref: {} if alias in taken else {"alias": alias} for ref, alias in refs.items()}


def _get(data: Any, path: Sequence[str]) -> Any:
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return data


# --- install -----------------------------------------------------------------------------


def install(
    settings: Settings,
    *,
    path: Path | None = None,
    dry_run: bool = False,
    set_default: bool = False,
    gateway_url: str,
    api_key_env: str | None = None,
) -> Change:
    """Add OmniLLM to OpenClaw's config; a second run changes nothing."""
    path = config_path() if path is None else path
    label, before = str(path), _read(path)
    text, notes = before if before is not None else _EMPTY_DOCUMENT, []
    provider = provider_entry(settings, gateway_url=gateway_url, api_key_env=api_key_env)
    edited = set_member(text, label, _PROVIDER_PATH, provider)
    if edited != text:
        ids = ", ".join(m["id"] for m in provider["models"])
        notes.append(f"provider {PROVIDER_ID!r} at {provider['baseUrl']} with models: {ids}")
    text = _ensure_entries(edited, label, provider["models"], notes)
    if set_default:
        text = _set_default(text, label, notes)
    notes.extend(_warnings(text, label, provider))
    return _finish(path, before, text, notes, dry_run=dry_run)


def _ensure_entries(text: str, label: str, models: list[dict[str, Any]], notes: list[str]) -> str:
    data, _ = parse(text, label)
    wanted = _entries(models, data)
    current = _get(data, _ENTRIES_PATH) or {}
    for ref in [k for k in current if k.startswith(f"{PROVIDER_ID}/") and k not in wanted]:
        text = remove_member(text, label, (*_ENTRIES_PATH, ref))
        notes.append(f"removed {ref} from agents.defaults.models (no longer served)")
    missing = [(ref, entry) for ref, entry in wanted.items() if ref not in current]
    if not missing:
        return text
    _, root = parse(text, label)
    member = lookup(root, _ENTRIES_PATH)
    if member is not None and member.value.kind == "object":
        text = insert_members(text, root, member.value, missing)
    else:
        text = set_member(text, label, _ENTRIES_PATH, dict(missing))
    notes.append(f"agents.defaults.models: added {', '.join(ref for ref, _ in missing)}")
    return text


def _default_value(text: str, label: str) -> tuple[Value | None, tuple[str, ...]]:
    """The default model's value span (a string ``model`` or ``model.primary``) and its path."""
    _, root = parse(text, label)
    model = lookup(root, _MODEL_PATH)
    if model is None or model.value.kind == "scalar":
        return (model.value if model else None), _MODEL_PATH
    primary = model.value.get("primary")
    return (primary.value if primary else None), (*_MODEL_PATH, "primary")


def _set_default(text: str, label: str, notes: list[str]) -> str:
    value, where = _default_value(text, label)
    if value is None:
        notes.append(f"default model: {DEFAULT_REF} (there was none)")
        if where == _MODEL_PATH:
            return set_member(text, label, _MODEL_PATH, {"primary": DEFAULT_REF})
        _, root = parse(text, label)
        model = lookup(root, _MODEL_PATH)
        assert model is not None
        return insert_members(text, root, model.value, [("primary", DEFAULT_REF)])
    raw = text[value.start : value.end]
    current = json5.loads(raw)
    if current == DEFAULT_REF:
        return text
    keep = isinstance(current, str) and not current.startswith(f"{PROVIDER_ID}/")
    marker = f" /* omnillm-was: {raw} */" if keep and "*/" not in raw else ""
    notes.append(f"default model: {DEFAULT_REF} (was {current}; uninstall restores it)")
    return _replace(text, value, json.dumps(DEFAULT_REF) + marker)


def _warnings(text: str, label: str, provider: dict[str, Any]) -> list[str]:
    data, _ = parse(text, label)
    notes = []
    allow = _get(data, ("agents", "defaults", "modelPolicy", "allow"))
    if isinstance(allow, list) and not any(str(a).startswith(f"{PROVIDER_ID}/") for a in allow):
        notes.append(
            f'note: agents.defaults.modelPolicy.allow is set; add "{PROVIDER_ID}/*" to it '
            "or OpenClaw will refuse these models"
        )
    if (key := provider["apiKey"]).startswith("${"):
        notes.append(f"note: OpenClaw needs {key[2:-1]} set (its environment or ~/.openclaw/.env)")
    small = [m["id"] for m in provider["models"] if m["contextWindow"] < MIN_CONTEXT]
    if small:
        notes.append(
            f"note: under {MIN_CONTEXT} tokens of context, too small for OpenClaw: "
            + ", ".join(small)
        )
    return notes


# --- uninstall ---------------------------------------------------------------------------


def uninstall(path: Path | None = None, *, dry_run: bool = False) -> Change:
    """Remove what :func:`install` added; a default model is touched only if it is ours."""
    path = config_path() if path is None else path
    label, before = str(path), _read(path)
    if before is None:
        return Change(path, None, "", (f"{path} does not exist.",), dry_run=True)
    notes: list[str] = []
    text = _unset_default(before, label, notes)
    data, _ = parse(text, label)
    for ref in [k for k in _get(data, _ENTRIES_PATH) or {} if k.startswith(f"{PROVIDER_ID}/")]:
        text = remove_member(text, label, (*_ENTRIES_PATH, ref), prune=3)
        notes.append(f"removed {ref} from agents.defaults.models")
    if _get(data, _PROVIDER_PATH) is not None:
        text = remove_member(text, label, _PROVIDER_PATH, prune=2)
        notes.append(f"removed provider {PROVIDER_ID!r}")
    return _finish(path, before, text, notes, dry_run=dry_run)


def _unset_default(text: str, label: str, notes: list[str]) -> str:
    value, where = _default_value(text, label)
    if value is None:
        return text
    current = json5.loads(text[value.start : value.end])
    if not (isinstance(current, str) and current.startswith(f"{PROVIDER_ID}/")):
        return text
    if was := _WAS.match(text, value.end):
        notes.append(f"default model restored to {json5.loads(was.group(1))}")
        return text[: value.start] + was.group(1) + text[was.end() :]
    notes.append(f"removed default model {current} (nothing to restore)")
    return remove_member(text, label, where, prune=3)


# --- files -------------------------------------------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc


def _finish(
    path: Path, before: str | None, after: str, notes: list[str], *, dry_run: bool
) -> Change:
    """Check the result parses, then back up and write it (unless ``dry_run`` or unchanged)."""
    parse(after, f"{path} (as edited)")
    change = Change(path, before, after, tuple(notes), dry_run=dry_run)
    if dry_run or not change.changed:
        return change
    backup = _backup(path) if before is not None else None
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.omnillm-tmp")
    temporary.write_text(after, encoding="utf-8")
    if backup is not None:
        shutil.copymode(backup, temporary)
    os.replace(temporary, path)
    return Change(path, before, after, change.notes, backup=backup)


def _backup(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup = path.with_name(f"{path.name}.bak-{stamp}")
    n = 1
    while backup.exists():
        backup, n = path.with_name(f"{path.name}.bak-{stamp}-{n}"), n + 1
    shutil.copy2(path, backup)
    return backup
