"""Provider health shared by every process: the JetStream KV bucket ``omni_health``.

One key per provider (``provider.<name>``) holding a ``ProviderHealth`` record. Callers
write only when a provider's state changes (a refused free tier, a rejected key, and
back to ok), so the bucket costs nothing on the hot path. Every reader (``omni
providers``, the admin responder, the planner) sees what any caller saw.

A server without JetStream has no bucket: writes are skipped and reads are empty,
with one warning; routing never depends on it being there. Nor on it answering: while
the bucket elects a leader (a cluster node was lost), reads keep the last snapshot and
writes are dropped, each with a warning.
"""

from __future__ import annotations

import logging
import time
from typing import Final

import anyio
import msgspec
import nats.errors
from nats.js.errors import KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue

from omnillm.bus.connection import Bus
from omnillm.bus.messages import LatencyStat, ProviderHealth
from omnillm.bus.subjects import key_token

__all__ = ["BUCKET", "HealthBoard"]

log = logging.getLogger("omnillm.health")

BUCKET: Final = "omni_health"
READ_WAIT_S: Final = 2.0
"""The longest a snapshot refresh may take: a request waits on it."""
_decoder: Final = msgspec.json.Decoder(ProviderHealth)


PREFIX: Final = "provider"
LATENCY_PREFIX: Final = "latency"
_latency_decoder: Final = msgspec.json.Decoder(LatencyStat)


def _key(subject: str) -> str:
    """``provider.<token>`` for a provider (``openai``) or a model (``openai/gpt-4.1-mini``)."""
    return f"{PREFIX}.{key_token(subject)}"


class HealthBoard:
    """Reads and writes provider health; one per process, opened lazily."""

    def __init__(self, bus: Bus, *, replicas: int = 1) -> None:
        self._bus = bus
        self._replicas = replicas
        self._kv: KeyValue | None = None
        self._unavailable = False
        self._snapshot: dict[str, ProviderHealth] = {}
        self._latency: dict[str, LatencyStat] = {}
        self._snapshot_at = -1e9
        self._refreshing = False

    async def snapshot(self, max_age_s: float = 2.0) -> dict[str, ProviderHealth]:
        """Every provider's health, read from the bucket at most every ``max_age_s``.

        Writes from this process show at once; other processes' within ``max_age_s``.
        While one refresh runs, concurrent callers get the previous snapshot.
        """
        if time.monotonic() - self._snapshot_at > max_age_s and not self._refreshing:
            self._refreshing = True
            try:
                with anyio.fail_after(READ_WAIT_S):
                    self._snapshot = {**await self.all()}
                    self._latency = await self.latencies()
            except (TimeoutError, nats.errors.Error) as exc:
                log.warning("provider health not read, keeping the last: %r", exc)
            finally:
                self._snapshot_at = time.monotonic()
                self._refreshing = False
        return self._snapshot

    async def _bucket(self, *, create: bool) -> KeyValue | None:
        if self._kv is not None or self._unavailable:
            return self._kv
        try:
            self._kv = await self._bus.key_value(BUCKET, replicas=self._replicas, create=create)
        except Exception as exc:  # no JetStream on this server
            log.warning("provider health is not shared: %s", exc or type(exc).__name__)
            self._unavailable = True
        return self._kv

    def latency_snapshot(self) -> dict[str, LatencyStat]:
        """Latency by catalog model id, as of the last ``snapshot`` refresh (no I/O)."""
        return self._latency

    async def put_latency(self, stat: LatencyStat) -> None:
        key = f"{LATENCY_PREFIX}.{key_token(stat.model)}"
        await self._write(key, msgspec.json.encode(stat))

    async def latencies(self) -> dict[str, LatencyStat]:
        kv = await self._bucket(create=False)
        if kv is None:
            return {}
        try:
            keys = await kv.keys(filters=[f"{LATENCY_PREFIX}."])
        except NoKeysError:
            return {}
        found: dict[str, LatencyStat] = {}
        for key in keys:
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:
                continue
            if entry.value:
                stat = _latency_decoder.decode(entry.value)
                found[stat.model] = stat
        return found

    async def put(self, health: ProviderHealth) -> None:
        self._snapshot = {**self._snapshot, health.provider: health}
        await self._write(_key(health.provider), msgspec.json.encode(health))

    async def _write(self, key: str, value: bytes) -> None:
        kv = await self._bucket(create=True)
        if kv is None:
            return
        try:
            await kv.put(key, value)
        except nats.errors.Error as exc:
            log.warning("provider health %s not written: %r", key, exc)

    async def get(self, subject: str) -> ProviderHealth | None:
        """The health of a provider (``openai``) or a model (``openai/gpt-4.1-mini``)."""
        return await self._read(_key(subject))

    async def _read(self, key: str) -> ProviderHealth | None:
        kv = await self._bucket(create=False)
        if kv is None:
            return None
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            return None
        return _decoder.decode(entry.value) if entry.value else None

    async def all(self) -> dict[str, ProviderHealth]:
        kv = await self._bucket(create=False)
        if kv is None:
            return {}
        try:
            keys = await kv.keys(filters=[f"{PREFIX}."])
        except NoKeysError:
            return {}
        found = [await self._read(key) for key in keys]
        return {health.provider: health for health in found if health is not None}
