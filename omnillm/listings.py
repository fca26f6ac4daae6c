"""``omni providers`` and ``omni models``: what the router serves, as tables or JSON.

The running router answers on ``omni.v1.admin.<what>`` (:mod:`omnillm.bus.admin`), so
the listing reflects its config and what its callers saw. With no router reachable, the
listing is built from the local config instead, and says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from omnillm.actors.admin import model_rows, provider_rows
from omnillm.bus import subjects
from omnillm.bus._login import redact
from omnillm.bus.admin import ModelRow, ProviderRow, ask
from omnillm.bus.connection import Bus, NatsUnreachable
from omnillm.bus.health import HealthBoard
from omnillm.bus.messages import ProviderHealth
from omnillm.config import Settings
from omnillm.errors import NoAnswer, NoRouter

__all__ = ["fetch", "render_models", "render_providers", "table"]

Row = TypeVar("Row", ProviderRow, ModelRow)


async def fetch(
    what: str,
    url: str,
    rows_type: type[list[Row]],
    local: Callable[[dict[str, ProviderHealth]], list[Row]],
) -> tuple[list[Row], str | None]:
    """Rows from the router at ``url``; else from ``local``, with a note saying so."""
    try:
        bus = await Bus.connect(url, name="omnillm-cli", connect_wait_s=1.0)
    except NatsUnreachable:
        return local({}), f"no NATS at {redact(url)}: showing the local config"
    try:
        return await ask(bus, subjects.admin(what), b"", rows_type), None
    except (NoRouter, NoAnswer):
        health = await HealthBoard(bus).all()
        return local(health), f"no router answered at {redact(url)}: showing the local config"
    finally:
        await bus.close()


async def admin_request(url: str, what: str, body: dict[str, Any]) -> dict[str, Any]:
    """One admin request to the running router; a clear error when none answers, and
    the error a ``Failure`` answer stands for."""
    try:
        bus = await Bus.connect(url, name="omnillm-cli", connect_wait_s=1.0)
    except NatsUnreachable as exc:
        raise NoRouter(f"no NATS at {redact(url)}: is `omni up` running?") from exc
    try:
        return await ask(bus, subjects.admin(what), body, dict[str, Any])
    except (NoRouter, NoAnswer) as exc:
        raise NoRouter(f"no router answered on {subjects.admin(what)} at {redact(url)}") from exc
    finally:
        await bus.close()


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: columns as wide as their widest cell, two spaces apart."""
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "-"
    return str(value)


def render_providers(rows: list[ProviderRow]) -> str:
    body = [
        (
            r.name,
            r.family,
            r.state,
            r.circuit,
            f"{r.ttft_ms:.0f} ms" if r.ttft_ms is not None else None,
            f"{r.error_rate:.0%}" if r.error_rate is not None else None,
            r.models,
            r.base_url or None,
            r.reason,
        )
        for r in rows
    ]
    headers = (
        "provider",
        "family",
        "state",
        "circuit",
        "ttft",
        "errors",
        "models",
        "base url",
        "why",
    )
    return table(headers, body)


def render_models(rows: list[ModelRow]) -> str:
    body = [
        (
            r.id,
            r.tier,
            f"{r.context_window:,}",
            f"{r.max_output:,}",
            r.input,
            r.cached_input,
            r.cache_write,
            r.output,
            r.capabilities,
            "yes" if r.live else "no",
            r.as_of or "-",
        )
        for r in rows
    ]
    headers = (
        "model",
        "tier",
        "context",
        "max out",
        "in $/M",
        "cached $/M",
        "write $/M",
        "out $/M",
        "capabilities",
        "live",
        "price as of",
    )
    return table(headers, body)


def local_providers(settings: Settings) -> Callable[[dict[str, ProviderHealth]], list[ProviderRow]]:
    return lambda health: provider_rows(settings, health)


def local_models(settings: Settings) -> Callable[[dict[str, ProviderHealth]], list[ModelRow]]:
    return lambda _health: model_rows(settings)
