"""The user-facing config (DESIGN.md §11) and the resolved view the actors use.

:func:`load_config` reads one YAML or JSON file (or none: every field has a default),
applies the ``OMNI_*`` environment overrides and checks what types cannot say. Every
problem is one :class:`~omnillm.errors.ConfigError` in the form a person can act on::

    omnillm.yaml: models[0].price.input: expected a number, got a string

:func:`resolve` turns a :class:`Config` into :class:`Settings`: the model catalog
(built-in rows plus config rows) and the live providers, with their API keys taken
from config or the environment. Keys never appear in a ``repr``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Final, Literal, Union, get_args, get_origin, get_type_hints

import msgspec
from msgspec import Struct

from omnillm._nats_conf import user_problems
from omnillm.bus.messages import Tier
from omnillm.bus.subjects import check_token
from omnillm.errors import ConfigError
from omnillm.providers.base import AuthStyle, WireOptions
from omnillm.providers.catalog import (
    CAPABILITIES,
    Catalog,
    ModelSpec,
    Price,
    PriceTier,
    load_builtin_catalog,
    split_model_id,
)
from omnillm.providers.registry import BUILTIN_PROVIDERS, Family, ProviderSpec, auth_headers

__all__ = [
    "CONFIG_FILES",
    "LOG_LEVELS",
    "AliasConfig",
    "BreakerConfig",
    "ClassifierConfig",
    "Config",
    "EmbeddedNats",
    "GatewayConfig",
    "GatewayKey",
    "LedgerConfig",
    "LiveProvider",
    "LogConfig",
    "ModelConfig",
    "NatsConfig",
    "NatsUser",
    "PriceConfig",
    "ProviderConfig",
    "ReliabilityConfig",
    "RoutingConfig",
    "Settings",
    "load_config",
    "resolve",
]

CONFIG_FILES: Final = ("omnillm.yaml", "omnillm.yml", "omnillm.json")
"""Looked up in this order in the working directory when no path is given."""
LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
NO_KEY: Final = "none"
"""``api_key: none``: the provider takes no auth at all (a local server)."""
PUBLIC_KEY: Final = "public"
"""The key OpenCode Zen's free models take; with it only free models are served."""

Strategy = Literal["cost", "latency", "priority"]

_MiB: Final = 1024 * 1024
MAX_REPLICAS: Final = 5
"""JetStream's limit on copies of a stream."""


class _Section(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Shared options: a typo in a key is an error, not a silently ignored setting.

    Subclasses repeat ``frozen=True``: msgspec inherits it, but type checkers do not.
    """


# --- the file's shape ------------------------------------------------------------------


class EmbeddedNats(_Section, frozen=True):
    port: int = 4222
    """0 picks a free port."""
    host: str = "127.0.0.1"
    data_dir: str = ".omnillm/nats"


class NatsUser(_Section, frozen=True):
    """A user of the embedded server (``nats.conf`` has the same roles)."""

    name: str
    password_env: str
    """The variable holding the password; the password itself is never in the file."""
    inbox_prefix: str | None = None
    """Where a client may subscribe, its inbox prefix (default ``_INBOX.<name>``)."""
    role: Literal["client", "audit"] = "client"


class NatsConfig(_Section, frozen=True):
    url: str | None = None
    """Omitted: ``omni up`` starts the embedded server."""
    embedded: EmbeddedNats = EmbeddedNats()
    max_payload: int = 8 * _MiB
    replicas: int | Literal["auto"] = "auto"
    """Copies JetStream keeps of each stream and KV bucket (1 to 5). ``auto``: one per
    node of the cluster the process connects to, at most 3 (1 on a lone server)."""
    users: list[NatsUser] = []
    """Client and audit users of the embedded server; none: only OmniLLM's own."""


class GatewayKey(_Section, frozen=True):
    name: str
    key_env: str | None = None
    key: str | None = None
    models: list[str] = []
    daily_budget_usd: float | None = None
    monthly_budget_usd: float | None = None

    def __repr__(self) -> str:
        key = "<set>" if self.key else None
        return f"GatewayKey(name={self.name!r}, key_env={self.key_env!r}, key={key})"


class GatewayConfig(_Section, frozen=True):
    host: str = "127.0.0.1"
    port: int = 4000
    keys: list[GatewayKey] = []
    """None: loopback only, no auth."""
    workers: int | Literal["auto"] = 1
    """``omni up``: processes. 1: the gateway runs in the one process with every other
    actor; N: the main process runs the other actors and N-1 serve the gateway on this host
    and port; ``auto``: one per CPU this process may use, at most 4. ``omni actor gateway``
    is always one process."""


MAX_WORKERS: Final = 64
"""``gateway.workers`` above this is surely a typo."""


class ProviderConfig(_Section, frozen=True):
    family: Family | None = None
    base_url: str | None = None
    api_key: str | None = None
    api_key_env: str | None = None
    headers: dict[str, str] = {}
    rpm: int | None = None
    """Requests a minute, per caller process."""
    tpm: int | None = None
    """Tokens a minute (estimated input + expected output), per caller process."""
    max_concurrency: int = 64
    backlog: int = 256
    """Requests a caller process holds beyond ``max_concurrency`` before it answers busy."""
    max_tokens_field: str | None = None
    stream_usage: bool | None = None
    api_version: str | None = None
    """Azure's ``api-version`` query parameter (default 2024-10-21)."""
    enabled: bool = True

    def __repr__(self) -> str:
        plain = self.api_key is None or self.api_key.lower() == NO_KEY
        key = repr(self.api_key) if plain else "<set>"
        return (
            f"ProviderConfig(family={self.family!r}, base_url={self.base_url!r}, "
            f"api_key={key}, api_key_env={self.api_key_env!r}, "
            f"headers={sorted(self.headers)}, enabled={self.enabled})"
        )


class PriceConfig(_Section, frozen=True):
    """USD per million tokens; a field left out keeps the catalog's value (else 0)."""

    input: float | None = None
    output: float | None = None
    cached_input: float | None = None
    cache_write: float | None = None


class PriceTierConfig(PriceConfig, frozen=True):
    """Rates for a prompt over ``threshold_tokens`` (long-context pricing)."""

    threshold_tokens: int = 0


class ModelConfig(_Section, frozen=True):
    """A model added to the catalog, or fields overriding a shipped row with the same id.

    Every field but ``id`` may be left out: an override keeps the shipped value, a new
    model gets the defaults (128,000 context, 4,096 output, price 0, tier medium).
    """

    id: str
    """``provider/model``."""
    model: str | None = None
    """The upstream name, when it differs from the id's tail."""
    context_window: int | None = None
    max_output: int | None = None
    price: PriceConfig | None = None
    price_above: PriceTierConfig | None = None
    capabilities: list[str] | None = None
    tier: Tier | None = None
    fallbacks: list[str] | None = None
    as_of: str | None = None
    source: str | None = None


class AliasConfig(_Section, frozen=True):
    """A name for a routing intent: a model list, a tier, a strategy, or a filter."""

    tier: Tier | None = None
    models: list[str] = []
    strategy: Strategy | None = None
    free: bool = False
    """Only models that cost nothing."""
    needs: list[Literal["vision", "tools", "long_context"]] = []
    """Capabilities every candidate must have, whatever the request carries."""
    prefer: list[str] = []
    """Providers to put first, in this order."""


class BudgetConfig(_Section, frozen=True):
    """Spending limits for everyone together (per gateway key: ``gateway.keys``)."""

    daily_usd: float | None = None
    monthly_usd: float | None = None
    over: Literal["downgrade", "refuse"] = "downgrade"
    """Over a limit: send requests to the cheapest capable models, or refuse them."""
    refresh_s: float = 5.0
    """How old the ledger's spend figure may be when a planner checks it."""


class RoutingConfig(_Section, frozen=True):
    strategy: Strategy = "cost"
    priority: list[str] = []
    allow: list[str] = []
    deny: list[str] = []
    aliases: dict[str, AliasConfig | list[str]] = {}
    budget: BudgetConfig = BudgetConfig()
    output_tokens: dict[Tier, int] = {}
    """Expected output tokens per tier for cost estimates, until the ledger has seen
    enough answers (defaults: simple 150, medium 500, complex 1200, reasoning 3000)."""


class BreakerConfig(_Section, frozen=True):
    """Open after ``failures`` in a row, or a ``failure_rate`` over ``min_requests`` outcomes,
    within ``window_s``; one probe request after ``cooldown_s``."""

    failures: int = 5
    window_s: float = 30.0
    failure_rate: float = 0.5
    min_requests: int = 10
    cooldown_s: float = 15.0
    probe_timeout_s: float = 30.0


class ReliabilityConfig(_Section, frozen=True):
    max_attempts: int = 3
    """Calls to one candidate (the first included) before falling back."""
    retry_base_delay_s: float = 0.5
    retry_max_delay_s: float = 8.0
    finish_grace_s: float = 0.5
    probe_interval_s: float = 60.0
    """A one-token request to each provider this often (0: never); an open circuit is
    probed as soon as its cooldown ends."""
    mark_ttl_s: float = 300.0
    """How long a rejected key or an unknown model keeps its provider or model out of plans."""
    """After a finish reason, how long to wait for the usage before finalising."""
    connect_timeout_s: float = 5.0
    ttft_timeout_s: float = 10.0
    stall_timeout_s: float = 10.0
    request_timeout_s: float = 120.0
    retry_after_cap_s: float = 10.0
    handoff_timeout_s: float = 0.5
    heartbeat_s: float = 5.0
    max_request_bytes: int = 4 * _MiB
    workers: int = 64
    breaker: BreakerConfig = BreakerConfig()


class DedupConfig(_Section, frozen=True):
    ttl_s: float = 600.0
    """How long an idempotency key and its recorded answer are kept (past the longest request)."""


class AuditConfig(_Section, frozen=True):
    stream: bool = False
    """Keep requests and audit events in the JetStream stream ``OMNI_AUDIT`` for replay
    (``omni tap --replay``). Clients then get no immediate "no router" answer."""
    max_age_s: float = 7 * 86400.0


class LedgerConfig(_Section, frozen=True):
    path: str = ".omnillm/ledger.sqlite"
    reference_model: str | None = None
    """``omni stats`` shows savings against always using this model (a catalog id)."""
    linger_s: float = 0.05
    """After a batch smaller than a full one, wait this long so that the next holds more
    events: one pull, one transaction and one round of acks for all of them. The longest
    an event waits for the ledger, besides the write itself; 0 records each at once."""


class LogConfig(_Section, frozen=True):
    level: str = "info"


class ClassifierConfig(_Section, frozen=True):
    """How the classifier scores a request (DESIGN.md §6).

    ``weights`` overrides the built-in feature weights by name (``length``, ``code``,
    ``math``, ``proof``, ``steps``, ``task``, ``explain``, ``reasoning``, ``questions``,
    ``constraints``, ``domain``, ``lookup``, ``small_talk``, ``previous_turn``); a
    contribution is the feature's amount times its weight and the score is their sum.
    ``thresholds`` are the score boundaries simple | medium | complex | reasoning. A score
    closer than ``low_confidence`` to the simple|medium or medium|complex boundary is
    sent to medium, never to simple.
    """

    weights: dict[str, float] = {}
    thresholds: tuple[float, float, float] = (0.0, 2.4, 4.0)
    low_confidence: float = 0.2
    """Confidence (0..1: the distance to the nearest boundary, one score unit being sure)
    below which the tier is medium."""
    long_context_tokens: int = 100_000
    """Estimated input tokens above which a request needs a long-context model."""

    def __post_init__(self) -> None:
        low, mid, high = self.thresholds
        if not low < mid < high:
            raise ValueError(
                f"thresholds: expected three ascending numbers, got {list(self.thresholds)}"
            )
        if not 0.0 <= self.low_confidence <= 1.0:
            raise ValueError(f"low_confidence: expected 0 to 1, got {self.low_confidence:g}")
        if self.long_context_tokens < 1:
            raise ValueError(
                f"long_context_tokens: expected 1 or more, got {self.long_context_tokens}"
            )


class Config(_Section, frozen=True):
    nats: NatsConfig = NatsConfig()
    gateway: GatewayConfig = GatewayConfig()
    providers: dict[str, ProviderConfig] = {}
    models: list[ModelConfig] = []
    routing: RoutingConfig = RoutingConfig()
    reliability: ReliabilityConfig = ReliabilityConfig()
    dedup: DedupConfig = DedupConfig()
    audit: AuditConfig = AuditConfig()
    ledger: LedgerConfig = LedgerConfig()
    log: LogConfig = LogConfig()
    data_dir: str = ".omnillm"
    classifier: ClassifierConfig = ClassifierConfig()


# --- loading -------------------------------------------------------------------------


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Config:
    """Read ``path``, else the first of :data:`CONFIG_FILES` in ``cwd``, else defaults.

    ``env`` (default ``os.environ``) supplies the ``OMNI_*`` overrides.
    """
    env = os.environ if env is None else env
    file = Path(path) if path is not None else _find_config(cwd)
    config = Config()
    if file is not None:
        config = _read(file)
        _raise_first(_problems(config), label=str(file))
    return _apply_env(config, env)


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
        return msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{label}: {_explain(exc, raw)}") from exc


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


# --- msgspec errors, in words --------------------------------------------------------

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


def _explain(exc: msgspec.ValidationError, raw: Any) -> str:
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
        return _one_of(allowed, m.group(1).strip("'")) if allowed else what
    if m := re.fullmatch(r"Expected `(.*)`, got `(.*)`", what):
        return f"expected {_words(m.group(1))}, got {_words(m.group(2))}"
    return what[:1].lower() + what[1:]


def _one_of(allowed: Iterable[object], got: str) -> str:
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
        path = _key_path(head, str(key)) + tail
    return path


def _key_path(path: str, key: str) -> str:
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


# --- checks types cannot express -----------------------------------------------------

Problem = tuple[str, str]
"""A key path and what is wrong there."""


def _raise_first(problems: Iterator[Problem], *, label: str | None) -> None:
    for path, what in problems:
        raise ConfigError(f"{label}: {path}: {what}" if label else f"{path}: {what}")


def _problems(config: Config) -> Iterator[Problem]:
    yield from _port("nats.embedded.port", config.nats.embedded.port)
    yield from _port("gateway.port", config.gateway.port)
    yield from _gateway_keys(config.gateway)
    yield from _providers(config.providers)
    known = {m.id for m in load_builtin_catalog()} | {m.id for m in config.models}
    for i, model in enumerate(config.models):
        yield from _model(f"models[{i}]", model, config.providers, known)
    for name, alias in config.routing.aliases.items():
        entries = alias if isinstance(alias, list) else alias.models
        where = _key_path("routing.aliases", name)
        where += "" if isinstance(alias, list) else ".models"
        yield from _known_models(where, entries, known)
    yield from _replicas(config.nats.replicas)
    yield from _workers(config.gateway.workers)
    yield from user_problems(config.nats.users)
    yield from _positive("nats", config.nats)
    yield from _positive("reliability", config.reliability)
    yield from _positive("reliability.breaker", config.reliability.breaker)
    yield from _positive("ledger", config.ledger)
    if (level := _log_level(config.log.level)) is not None:
        yield "log.level", level


def _port(path: str, port: int) -> Iterator[Problem]:
    if not 0 <= port <= 65535:
        yield path, f"expected a port number (0-65535), got {port}"


def _replicas(replicas: int | str) -> Iterator[Problem]:
    if isinstance(replicas, int) and not 1 <= replicas <= MAX_REPLICAS:
        yield "nats.replicas", f"expected auto or 1 to {MAX_REPLICAS}, got {replicas}"


def _workers(workers: int | str) -> Iterator[Problem]:
    if isinstance(workers, int) and not 1 <= workers <= MAX_WORKERS:
        yield "gateway.workers", f"expected auto or 1 to {MAX_WORKERS}, got {workers}"


def _gateway_keys(gateway: GatewayConfig) -> Iterator[Problem]:
    for i, key in enumerate(gateway.keys):
        if key.key is None and key.key_env is None:
            yield f"gateway.keys[{i}]", "expected 'key' or 'key_env'"


def _providers(providers: Mapping[str, ProviderConfig]) -> Iterator[Problem]:
    for name, provider in providers.items():
        where = _key_path("providers", name)
        try:
            check_token(name)
        except ValueError:
            yield where, "expected a name of letters, digits, '-' or '_' (it becomes a subject)"
            continue
        builtin = BUILTIN_PROVIDERS.get(name)
        if builtin is None:
            for key in ("family", "base_url"):
                if getattr(provider, key) is None:
                    yield f"{where}.{key}", "required for a provider that is not built in"
        elif builtin.requires_base_url and provider.base_url is None:
            yield f"{where}.base_url", f"required for {name} (it has no public URL)"
        if provider.rpm is not None and provider.rpm < 1:
            yield f"{where}.rpm", f"expected 1 or more, got {provider.rpm}"
        if provider.max_concurrency < 1:
            yield f"{where}.max_concurrency", f"expected 1 or more, got {provider.max_concurrency}"


def _model(
    where: str, model: ModelConfig, providers: Mapping[str, ProviderConfig], known: set[str]
) -> Iterator[Problem]:
    try:
        provider, _ = split_model_id(model.id)
    except ValueError:
        yield f"{where}.id", f"expected 'provider/model', got {model.id!r}"
        return
    if provider not in BUILTIN_PROVIDERS and provider not in providers:
        yield f"{where}.id", f"unknown provider '{provider}' (declare it under providers:)"
    for section in ("price", "price_above"):
        rates = getattr(model, section)
        for key in ("input", "output", "cached_input", "cache_write"):
            price = getattr(rates, key) if rates is not None else None
            if price is not None and price < 0:
                yield f"{where}.{section}.{key}", f"expected a price of 0 or more, got {price:g}"
    for key in ("context_window", "max_output"):
        value = getattr(model, key)
        if value is not None and value < 1:
            yield f"{where}.{key}", f"expected 1 or more, got {value}"
    for i, capability in enumerate(model.capabilities or ()):
        if capability not in CAPABILITIES:
            yield f"{where}.capabilities[{i}]", _one_of(CAPABILITIES, capability)
    yield from _known_models(f"{where}.fallbacks", model.fallbacks or [], known)


def _known_models(where: str, ids: list[str], known: set[str]) -> Iterator[Problem]:
    for i, model_id in enumerate(ids):
        if model_id not in known:
            yield f"{where}[{i}]", f"unknown model '{model_id}' (not in the catalog or models:)"


_ZERO_MEANS_OFF: Final = frozenset({"probe_interval_s", "backlog", "linger_s"})


def _positive(where: str, section: Struct) -> Iterator[Problem]:
    for key in section.__struct_fields__:
        value = getattr(section, key)
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        if key in _ZERO_MEANS_OFF and value < 0:
            yield f"{where}.{key}", f"expected 0 (off) or more, got {value:g}"
        elif key not in _ZERO_MEANS_OFF and value <= 0:
            yield f"{where}.{key}", f"expected a value above 0, got {value:g}"


def _log_level(level: str) -> str | None:
    """What is wrong with ``level``, or ``None``."""
    return None if level.lower() in LOG_LEVELS else _one_of(LOG_LEVELS, level)


# --- environment overrides -----------------------------------------------------------


def _apply_env(config: Config, env: Mapping[str, str]) -> Config:
    replace = msgspec.structs.replace
    if url := env.get("OMNI_NATS_URL"):
        config = replace(config, nats=replace(config.nats, url=url))
    if port := env.get("OMNI_GATEWAY_PORT"):
        config = replace(config, gateway=replace(config.gateway, port=_env_port(port)))
    if level := env.get("OMNI_LOG_LEVEL"):
        if (problem := _log_level(level)) is not None:
            raise ConfigError(f"OMNI_LOG_LEVEL: {problem}")
        config = replace(config, log=LogConfig(level=level))
    if data_dir := env.get("OMNI_DATA_DIR"):
        config = replace(config, data_dir=data_dir)
    return config


def _env_port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ConfigError(f"OMNI_GATEWAY_PORT: expected an integer, got {text!r}") from None
    for _, problem in _port("", port):
        raise ConfigError(f"OMNI_GATEWAY_PORT: {problem}")
    return port


# --- the resolved view ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class LiveProvider:
    """A provider requests can go to: its merged row, its key, its config."""

    spec: ProviderSpec
    api_key: str | None
    config: ProviderConfig

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def free_only(self) -> bool:
        """Only free models can be used: OpenCode Zen with the public key."""
        return self.spec.family == "opencode" and self.api_key == PUBLIC_KEY

    @property
    def missing_key(self) -> bool:
        """It needs a key and has none: the caller reports this instead of calling."""
        return self.api_key is None and self.spec.auth != "none"

    def headers(self, *, auth: AuthStyle | None = None) -> dict[str, str]:
        """Fixed headers plus auth (in the provider's style, or ``auth`` when a route needs
        another), for every request to this provider."""
        spec = self.spec if auth is None else msgspec.structs.replace(self.spec, auth=auth)
        return auth_headers(spec, self.api_key)

    def __repr__(self) -> str:
        key = "<missing>" if self.missing_key else "<none>" if self.api_key is None else "<set>"
        if self.free_only:
            key = "public"
        return (
            f"LiveProvider(name={self.spec.name!r}, family={self.spec.family!r}, "
            f"base_url={self.spec.base_url!r}, api_key={key})"
        )


class Settings:
    """Everything the actors need from config, resolved once."""

    __slots__ = ("catalog", "config", "providers")

    def __init__(
        self, config: Config, catalog: Catalog, providers: Mapping[str, LiveProvider]
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.providers = dict(providers)

    def live_models(self) -> list[ModelSpec]:
        """Catalog models whose provider is live."""
        return [m for m in self.catalog if m.provider in self.providers]

    def __repr__(self) -> str:
        return f"Settings(providers={sorted(self.providers)}, catalog={self.catalog!r})"


def resolve(config: Config, *, env: Mapping[str, str] | None = None) -> Settings:
    """Merge config with the built-in rows; ``env`` (default ``os.environ``) supplies keys.

    Live providers: every enabled provider under ``providers:``, plus every built-in
    whose key variable is set (unless it needs a ``base_url`` only config can give).
    """
    env = os.environ if env is None else env
    _raise_first(_problems(config), label=None)
    builtin = load_builtin_catalog()
    catalog = Catalog([*builtin, *(_model_spec(m, builtin.get(m.id)) for m in config.models)])
    live = {
        name: _live(name, provider, env)
        for name, provider in config.providers.items()
        if provider.enabled
    }
    for name, spec in BUILTIN_PROVIDERS.items():
        undeclared = name not in config.providers and not spec.requires_base_url
        if undeclared and spec.key_env and env.get(spec.key_env):
            live[name] = _live(name, ProviderConfig(), env)
    return Settings(config, catalog, live)


def _model_spec(model: ModelConfig, base: ModelSpec | None) -> ModelSpec:
    """The config row over the shipped one (when there is one), field by field."""
    if base is None:
        base = ModelSpec(
            id=model.id, context_window=128_000, max_output=4096, price=Price(input=0, output=0)
        )
    changes: dict[str, object] = {
        key: value
        for key, value in (
            ("model", model.model),
            ("context_window", model.context_window),
            ("max_output", model.max_output),
            ("tier", model.tier),
            ("as_of", model.as_of),
            ("source", model.source),
        )
        if value is not None
    }
    if model.price is not None:
        changes["price"] = _price(model.price, base.price)
    if model.price_above is not None:
        above = _price(model.price_above, base.price)
        changes["price_above"] = PriceTier(
            threshold_tokens=model.price_above.threshold_tokens,
            input=above.input,
            output=above.output,
            cached_input=above.cached_input,
            cache_write=above.cache_write,
        )
    if model.capabilities is not None:
        changes["capabilities"] = frozenset(model.capabilities)
    if model.fallbacks is not None:
        changes["fallbacks"] = tuple(model.fallbacks)
    return msgspec.structs.replace(base, **changes)


def _rates(price: PriceConfig, base: Price) -> dict[str, float | None]:
    return {
        key: getattr(price, key) if getattr(price, key) is not None else getattr(base, key)
        for key in ("input", "output", "cached_input", "cache_write")
    }


def _price(price: PriceConfig, base: Price) -> Price:
    rates = _rates(price, base)
    return Price(
        input=rates["input"] or 0.0,
        output=rates["output"] or 0.0,
        cached_input=rates["cached_input"],
        cache_write=rates["cache_write"],
    )


def _live(name: str, provider: ProviderConfig, env: Mapping[str, str]) -> LiveProvider:
    spec = _merge(name, provider)
    key = _api_key(spec, provider, env)
    if key is None and spec.family == "opencode":
        key = PUBLIC_KEY  # declared with no key: Zen's free models
    if key is not None and key.lower() == NO_KEY:
        spec, key = msgspec.structs.replace(spec, auth="none"), None
    return LiveProvider(spec=spec, api_key=key, config=provider)


def _merge(name: str, provider: ProviderConfig) -> ProviderSpec:
    """The built-in row (if any) with the config's URL, family, headers and options."""
    base = BUILTIN_PROVIDERS.get(name)
    family = provider.family or (base.family if base else None)
    base_url = provider.base_url or (base.base_url if base else None)
    assert family is not None and base_url is not None  # _problems checked both
    options = base.options if base else WireOptions()
    options = msgspec.structs.replace(
        options,
        max_tokens_field=provider.max_tokens_field or options.max_tokens_field,
        stream_usage=_or(provider.stream_usage, options.stream_usage),
    )
    if provider.api_version is not None:
        options = msgspec.structs.replace(
            options, query={**options.query, "api-version": provider.api_version}
        )
    if name == "azure" and base_url.rstrip("/").endswith("/openai/v1"):
        # Azure's v1 API takes the deployment as the model, with no api-version.
        options = msgspec.structs.replace(options, chat_path=None, query={})
    return ProviderSpec(
        name=name,
        family=family,
        base_url=base_url.rstrip("/"),
        auth=base.auth if base else "bearer",
        key_env=base.key_env if base else None,
        headers={**(base.headers if base else {}), **provider.headers},
        options=options,
        requires_base_url=base.requires_base_url if base else False,
    )


def _api_key(spec: ProviderSpec, provider: ProviderConfig, env: Mapping[str, str]) -> str | None:
    """``api_key``, else ``$api_key_env``, else the row's usual variable; empty is unset."""
    candidates = (
        provider.api_key,
        env.get(provider.api_key_env) if provider.api_key_env else None,
        env.get(spec.key_env) if spec.key_env else None,
    )
    return next((key for key in candidates if key), None)


def _or(value: bool | None, default: bool) -> bool:
    return default if value is None else value
