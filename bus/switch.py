"""``omni switch``: an operator's provider preference, shared through the KV bucket ``omni_config``.

One key, ``switch``, holding a :class:`~omnillm.bus.admin.Switch` (or nothing). Every
planner reads it at most once a second, so a switch made anywhere applies to the next
requests everywhere within a second, with no restart.
"""

from __future__ import annotations

import logging
import time
from typing import Final

import anyio
import msgspec
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from omnillm.bus.admin import Switch
from omnillm.bus.connection import Bus

__all__ = ["BUCKET", "SwitchBoard"]

log = logging.getLogger("omnillm.switch")

BUCKET: Final = "omni_config"
KEY: Final = "switch"
MAX_AGE_S: Final = 1.0
READ_WAIT_S: Final = 1.0


_decoder: Final = msgspec.json.Decoder(Switch)


class SwitchBoard:
    def __init__(self, bus: Bus, *, replicas: int = 1) -> None:
        self._bus = bus
        self._replicas = replicas
        self._kv: KeyValue | None = None
        self._unavailable = False
        self._cached = Switch()
        self._read_at = -1e9

    async def _bucket(self) -> KeyValue | None:
        if self._kv is not None or self._unavailable:
            return self._kv
        try:
            self._kv = await self._bus.key_value(BUCKET, replicas=self._replicas)
        except Exception as exc:  # no JetStream: no switch, routing goes on
            log.warning("omni switch is not available: %s", exc or type(exc).__name__)
            self._unavailable = True
        return self._kv

    async def current(self, max_age_s: float = MAX_AGE_S) -> str | None:
        """The preferred provider, read from the bucket at most every ``max_age_s``."""
        if time.monotonic() - self._read_at > max_age_s:
            self._read_at = time.monotonic()
            self._cached = await self.read()
        return self._cached.provider

    async def read(self) -> Switch:
        """The stored switch; the last one read while the bucket does not answer (its
        stream electing a leader after a node was lost), so routing goes on."""
        kv = await self._bucket()
        if kv is None:
            return Switch()
        try:
            with anyio.fail_after(READ_WAIT_S):  # a request waits on this read
                entry = await kv.get(KEY)
        except KeyNotFoundError:
            return Switch()
        except Exception as exc:
            log.warning("omni switch not read, keeping the last one: %r", exc)
            return self._cached
        return _decoder.decode(entry.value) if entry.value else Switch()

    async def set(self, provider: str | None) -> Switch:
        """Prefer ``provider`` from now on (None: no preference)."""
        kv = await self._bucket()
        switch = Switch(provider=provider, at=time.time())
        if kv is not None:
            await kv.put(KEY, msgspec.json.encode(switch))
        self._cached, self._read_at = switch, time.monotonic()
        return switch
