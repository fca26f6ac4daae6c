"""The NATS connection every actor and client shares: one per process.

Two things nats-py leaves to us are done here once:

- a size check that counts headers: the server limits headers plus payload, and a
  violation makes nats-py close the connection for good;
- reconnect settings for long-running actors (reconnect forever, notice a dead TCP
  connection within seconds), with an initial connect that fails fast and clearly.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import anyio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

from omnillm.errors import OmniLLMError, RequestTooLarge

__all__ = ["RID_HEADER", "Bus", "NatsUnreachable", "headers_size"]

log = logging.getLogger("omnillm.bus")

RID_HEADER: Final = "Omni-Request-Id"
DEFAULT_CONNECT_WAIT_S: Final = 5.0

MsgHandler = Callable[[Msg], Awaitable[None]]


class NatsUnreachable(OmniLLMError):
    code = "nats_unreachable"


def headers_size(headers: dict[str, str] | None) -> int:
    """Bytes the headers take on the wire (``NATS/1.0`` line, ``k: v`` lines, blank line)."""
    if not headers:
        return 0
    return 12 + sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items())


async def _log_error(exc: Exception) -> None:
    log.warning("nats: %s", exc or type(exc).__name__)


class Bus:
    """A thin wrapper over one nats-py connection."""

    def __init__(self, nc: NATS, url: str) -> None:
        self.nc = nc
        self.url = url

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        name: str = "omnillm",
        inbox_prefix: str = "_INBOX",
        connect_wait_s: float = DEFAULT_CONNECT_WAIT_S,
        **options: Any,
    ) -> Bus:
        """Connect, retrying for ``connect_wait_s``; then reconnect forever on loss."""
        nc = NATS()
        settings: dict[str, Any] = {
            "name": name,
            "inbox_prefix": inbox_prefix,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.25,
            "connect_timeout": 2,
            "ping_interval": 20,
            "max_outstanding_pings": 3,
            "error_cb": _log_error,
            "pending_size": 16 * 1024 * 1024,
        }
        settings.update(options)
        with anyio.move_on_after(connect_wait_s) as scope:
            await nc.connect(servers=[url], **settings)
        if scope.cancelled_caught:
            await nc.close()
            raise NatsUnreachable(f"cannot reach NATS at {url} (waited {connect_wait_s:g}s)")
        return cls(nc, url)

    @property
    def max_payload(self) -> int:
        return int(self.nc.max_payload)

    def check_size(self, payload: bytes, headers: dict[str, str] | None) -> None:
        size = len(payload) + headers_size(headers)
        if size > self.max_payload:
            raise RequestTooLarge(
                f"message of {size} bytes is over the server's max_payload of {self.max_payload}"
            )

    async def publish(
        self,
        subject: str,
        payload: bytes,
        *,
        headers: dict[str, str] | None = None,
        reply: str = "",
    ) -> None:
        self.check_size(payload, headers)
        await self.nc.publish(subject, payload, reply=reply, headers=headers)

    async def subscribe(
        self, subject: str, cb: MsgHandler, *, queue: str = "", pending_msgs: int = 65536
    ) -> Subscription:
        return await self.nc.subscribe(subject, queue=queue, cb=cb, pending_msgs_limit=pending_msgs)

    async def key_value(
        self, bucket: str, *, replicas: int = 1, create: bool = True
    ) -> KeyValue | None:
        """The KV ``bucket``, created if missing (``create``), else None if missing.

        Raises whatever nats-py raises when the server has no JetStream: each board
        decides how to carry on without shared state.
        """
        js = self.nc.jetstream()
        try:
            return await js.key_value(bucket)
        except BucketNotFoundError:
            if not create:
                return None
            return await js.create_key_value(bucket=bucket, replicas=replicas)

    def new_inbox(self) -> str:
        return str(self.nc.new_inbox())

    async def flush(self, wait_s: int = 5) -> None:
        await self.nc.flush(timeout=wait_s)

    async def close(self) -> None:
        """Drain (subscriptions first, then pending publishes), then close."""
        if self.nc.is_closed:
            return
        try:
            await self.nc.drain()
        except Exception as exc:  # a dead connection cannot drain; closing is all that is left
            log.debug("drain failed: %r", exc)
            await self.nc.close()
