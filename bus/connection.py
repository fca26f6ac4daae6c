"""The NATS connection every actor and client shares: one per process.

Two things nats-py leaves to us are done here once:

- a size check that counts headers: the server limits headers plus payload, and a
  violation makes nats-py close the connection for good;
- reconnect settings for long-running actors (reconnect forever, notice a dead TCP
  connection within seconds), with an initial connect that fails fast and clearly.

A URL may list several servers, comma-separated (``nats://a:4222,nats://b:4222``), as
other NATS clients accept; the cluster's other nodes are learnt from the server anyway.

JetStream assets get as many replicas as the cluster has nodes, at most 3, unless
config says otherwise: :func:`cluster_replicas` reads that off the server's INFO.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Literal

import anyio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import AuthorizationError
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import BadRequestError, BucketNotFoundError
from nats.js.kv import KeyValue

from omnillm.bus._login import (
    PASSWORD_ENV,
    USER_ENV,
    NatsAuthFailed,
    NatsPermissionDenied,
    login,
    redact,
)
from omnillm.errors import OmniLLMError, RequestTooLarge

__all__ = [
    "MAX_AUTO_REPLICAS",
    "RID_HEADER",
    "Bus",
    "NatsAuthFailed",
    "NatsPermissionDenied",
    "NatsUnreachable",
    "cluster_replicas",
    "headers_size",
    "put_stream",
]

log = logging.getLogger("omnillm.bus")

RID_HEADER: Final = "Omni-Request-Id"
DEFAULT_CONNECT_WAIT_S: Final = 5.0
MAX_AUTO_REPLICAS: Final = 3
"""Replicas ``auto`` picks at most: a majority survives one lost node; more only costs."""

STREAM_IN_USE: Final = 10058
"""JetStream's error code for a stream that exists with another configuration."""

MsgHandler = Callable[[Msg], Awaitable[None]]

_DENIED: Final = re.compile(r'permissions violation for (publish|subscription) to "([^"]*)"', re.I)
_OPERATIONS: Final = {"publish": "publish", "subscription": "subscribe"}


class NatsUnreachable(OmniLLMError):
    code = "nats_unreachable"


def headers_size(headers: dict[str, str] | None) -> int:
    """Bytes the headers take on the wire (``NATS/1.0`` line, ``k: v`` lines, blank line)."""
    if not headers:
        return 0
    return 12 + sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items())


def cluster_replicas(info: Mapping[str, Any]) -> int:
    """The replicas ``auto`` means for the server whose INFO this is: one per cluster node,
    at most :data:`MAX_AUTO_REPLICAS`.

    A server outside a cluster has no ``cluster`` in its INFO: 1, whatever else it says.
    A clustered one lists in ``connect_urls`` the client URL of every node it has a route
    to, its own included; no list (``no_advertise``, or no peer yet) counts as 1. A node
    listening on every interface may list several URLs, which the cap absorbs in a
    cluster of three or more; set ``nats.replicas`` to be exact.
    """
    if not info.get("cluster"):
        return 1
    nodes = len(set(info.get("connect_urls") or ()))
    return max(1, min(MAX_AUTO_REPLICAS, nodes))


async def put_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream ``config`` names, or bring an existing one to ``config``. Idempotent.

    An existing stream keeps its replicas where it has more: a process that counted
    fewer nodes (it met one before the cluster had formed) never shrinks a stream.
    Raises what nats-py raises without JetStream (``ServiceUnavailableError``).
    """
    try:
        await js.add_stream(config)
    except BadRequestError as exc:
        if exc.err_code != STREAM_IN_USE or config.name is None:
            raise
        current = await js.stream_info(config.name)
        kept = max(config.num_replicas or 1, current.config.num_replicas or 1)
        await js.update_stream(dataclasses.replace(config, num_replicas=kept))


async def _log_error(exc: Exception) -> None:
    log.warning("nats: %s", exc or type(exc).__name__)


def _refusal(url: str, user: str | None) -> str:
    if user is None:
        return f"NATS at {url} wants a user and password: set {USER_ENV} and {PASSWORD_ENV}"
    return f"NATS at {url} refused user {user!r}: a wrong password, or no such user"


class _Errors:
    """nats-py's error callback for one connection.

    While connecting, a refused login cancels ``connecting`` at once (nats-py would
    retry it until the wait ends, then look unreachable). Afterwards errors are logged,
    and the subjects the server refused are kept for :meth:`Bus.confirm_subscription`.
    """

    def __init__(self) -> None:
        self.connecting: anyio.CancelScope | None = None
        self.refused = False
        self.denied: deque[tuple[str, str]] = deque(maxlen=256)

    async def on_error(self, exc: Exception) -> None:
        refused = (
            isinstance(exc, AuthorizationError) or "authorization violation" in str(exc).lower()
        )
        if refused and self.connecting is not None:
            self.refused = True
            self.connecting.cancel()
            return
        if match := _DENIED.search(str(exc)):
            self.denied.append((_OPERATIONS[match[1].lower()], match[2]))
        await _log_error(exc)


class Bus:
    """A thin wrapper over one nats-py connection."""

    def __init__(self, nc: NATS, url: str, errors: _Errors | None = None) -> None:
        self.nc = nc
        self.url = url
        """Without its secrets (:func:`~omnillm.bus._login.redact`): fit to print."""
        self._errors = errors or _Errors()

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        name: str = "omnillm",
        inbox_prefix: str | None = None,
        user: str | None = None,
        password: str | None = None,
        connect_wait_s: float = DEFAULT_CONNECT_WAIT_S,
        env: Mapping[str, str] | None = None,
        **options: Any,
    ) -> Bus:
        """Connect, retrying for ``connect_wait_s``; then reconnect forever on loss.

        ``user``, ``password`` and ``inbox_prefix`` default to the URL's credentials and
        the ``OMNI_NATS_*`` variables of ``env`` (default ``os.environ``): see
        ``bus/_login.py``. Raises ``NatsAuthFailed`` when the server refuses the login.
        """
        who = login(
            url,
            user=user,
            password=password,
            inbox_prefix=inbox_prefix,
            env=os.environ if env is None else env,
        )
        errors = _Errors()
        nc = NATS()
        settings: dict[str, Any] = {
            "name": name,
            "inbox_prefix": who.inbox_prefix,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.25,
            "connect_timeout": 2,
            "ping_interval": 20,
            "max_outstanding_pings": 3,
            "error_cb": errors.on_error,
            "pending_size": 16 * 1024 * 1024,
        }
        if who.user is not None:
            settings.update(user=who.user, password=who.password)
        settings.update(options)
        shown = redact(url)
        with anyio.move_on_after(connect_wait_s) as scope:
            errors.connecting = scope
            await nc.connect(servers=[u.strip() for u in url.split(",")], **settings)
        errors.connecting = None
        if scope.cancelled_caught:
            await nc.close()
            if errors.refused:
                raise NatsAuthFailed(_refusal(shown, who.shown_user))
            raise NatsUnreachable(f"cannot reach NATS at {shown} (waited {connect_wait_s:g}s)")
        return cls(nc, shown, errors)

    def replicas(self, setting: int | Literal["auto"] = "auto") -> int:
        """JetStream replicas for assets this process creates: ``setting``, or for ``auto``
        what :func:`cluster_replicas` makes of the server this process connected to."""
        if isinstance(setting, int):
            return setting
        return cluster_replicas(self.nc._server_info)

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

    @property
    def refusals(self) -> list[tuple[str, str]]:
        """What the server refused this connection lately: ``("publish"|"subscribe",
        subject)``, oldest first; nats-py hands the subject over in lower case. The server
        reports refusals after the fact (a publish does not raise); a ``flush`` makes sure
        every earlier one has arrived."""
        return list(self._errors.denied)

    async def confirm_subscription(self, subject: str) -> None:
        """Raise ``NatsPermissionDenied`` if the server refused this connection's
        subscription to ``subject``. One round trip: the server answers a SUB, with an
        error if it refuses it, before the PING that follows."""
        await self.flush()
        if ("subscribe", subject.lower()) in self._errors.denied:
            raise NatsPermissionDenied(
                f"NATS refused the subscription to {subject}: this user may not subscribe "
                "there (a client user only under its own inbox prefix, see nats.users)"
            )

    async def flush(self, wait_s: int = 5) -> None:
        """Return once the server has dealt with everything this connection sent before.

        Two round trips: nats-py 2.16 writes a flush's PING straight to the socket, ahead
        of the publishes and subscriptions still in its buffer, so the first PONG can
        come back before they even reach the server. The first flush also pushes that
        buffer out; the second PING goes after it.
        """
        await self.nc.flush(timeout=wait_s)
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
