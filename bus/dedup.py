"""Request deduplication by idempotency key: one provider call, one bill, every duplicate served.

A request that carries an ``idempotency_key`` is served once. A duplicate that
arrives while the first runs attaches to the same stream and gets every frame from
the start, live; one that arrives after it finished gets the recorded frames. Three
JetStream pieces, all expiring after ``ttl_s``:

- **Claim**: KV bucket ``omni_dedup``, key ``key_token(idempotency_key)``, value the
  first request's rid. ``create`` is atomic, so exactly one request wins a key.
- **Record**: whoever sends a keyed request's frames to its client also publishes
  each frame's bytes to ``omni.v1.replay.<rid>``, then an empty message with the
  header ``Omni-End: 1`` after the end-of-stream; stream ``OMNI_REPLAY`` keeps them.
  These are core publishes: the stream captures the subject, so nothing waits for an
  ack. Measured on this machine: about 1.5 us of CPU a frame, against about 20 us
  for ``js.publish_async`` (a future, a reply inbox and a JSON ack per frame). The
  client's frame is published first and both leave in the same socket write, so the
  client waits for nothing. An unkeyed request records nothing and pays nothing.
- **Replay**: an ordered push consumer, from the first message, on the first
  request's subject; each frame is republished to the duplicate's inbox with its
  ``rid`` rewritten (``attempt`` and ``seq`` kept), until the end marker or a
  ``Done``/``Error``; then the empty end-of-stream. The wait is bounded by the
  duplicate's own deadline, after which it gets an ``Error`` ``dedup_timeout``.

A first request that ends in ``Error`` should ``release`` its key after recording
that end: duplicates already attached get the same ``Error`` (the recorded result),
and a later retry with the key runs afresh instead of replaying a failure for
``ttl_s``. A request that dies with its process holds its key until the TTL; its
duplicates time out at their deadlines. ``ttl_s`` must exceed the longest request.

Keys come from clients: scope them by the authenticated principal before they get
here, or two tenants using the same key would read each other's answers.

Without JetStream nothing is deduplicated: ``claim`` never reports a duplicate and
recording is a no-op, with one warning. A JetStream error during ``claim`` also lets
the request run (dedup fails open, like provider health).
"""

from __future__ import annotations

import logging
import re
import string
import time
from dataclasses import dataclass
from typing import Final

import anyio
import msgspec
from anyio.abc import TaskStatus
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy, DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from omnillm.bus import subjects
from omnillm.bus.connection import RID_HEADER, Bus, put_stream
from omnillm.bus.messages import END_OF_STREAM, Done, Error, decode_frame, encode
from omnillm.bus.stream import FrameSequencer
from omnillm.errors import DedupTimeout, DedupUnavailable, StreamGap

__all__ = [
    "BUCKET",
    "DEDUP_TIMEOUT",
    "DEDUP_UNAVAILABLE",
    "END_HEADER",
    "STREAM",
    "Claim",
    "DedupBoard",
    "Recorder",
    "key_from_token",
    "key_token",
    "replay_subject",
]

log = logging.getLogger("omnillm.dedup")

BUCKET: Final = "omni_dedup"
STREAM: Final = "OMNI_REPLAY"
REPLAY_PREFIX: Final = f"{subjects.ROOT}.replay"
END_HEADER: Final = "Omni-End"
DEDUP_TIMEOUT: Final = DedupTimeout.code
DEDUP_UNAVAILABLE: Final = DedupUnavailable.code
DEFAULT_TTL_S: Final = 600.0
MAX_KEY_BYTES: Final = 255
_CLAIM_TRIES: Final = 3
_STREAM_IN_USE: Final = 10058
_END_HEADERS: Final = {END_HEADER: "1"}
_PLAIN: Final = frozenset((string.ascii_letters + string.digits + "-").encode())
_ESCAPE: Final = re.compile(r"_([0-9A-F]{2})")


# --- pure codecs ----------------------------------------------------------------------


def key_token(key: str) -> str:
    """A KV-safe, reversible form of ``key``: bytes outside ``[A-Za-z0-9-]`` become ``_XX``.

    ``.`` is escaped too, so a key never splits into subject tokens. The same spelling
    as every other KV key (``subjects.key_token``). Raises
    ``ValueError`` for an empty key or one over ``MAX_KEY_BYTES`` UTF-8 bytes.
    """
    size = len(key.encode())
    if not 0 < size <= MAX_KEY_BYTES:
        raise ValueError(f"an idempotency key has 1 to {MAX_KEY_BYTES} bytes, not {size}")
    return subjects.key_token(key)


def key_from_token(token: str) -> str:
    return subjects.from_key_token(token)


def replay_subject(rid: str) -> str:
    return f"{REPLAY_PREFIX}.{subjects.check_token(rid)}"


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of claiming a key: who serves it, and whether that is someone else."""

    key: str
    rid: str
    """The rid that serves ``key``: the claimer's own, or the first request's."""
    duplicate: bool


# --- the board ------------------------------------------------------------------------


class DedupBoard:
    """Claims, recording and replay for idempotency keys; one per process, opened lazily."""

    def __init__(self, bus: Bus, *, ttl_s: float = DEFAULT_TTL_S, replicas: int = 1) -> None:
        self._bus = bus
        self.ttl_s = ttl_s
        self._replicas = replicas
        self._kv: KeyValue | None = None
        self._js: JetStreamContext | None = None
        self._opened = False
        self._lock = anyio.Lock()
        self.recorder: Final = Recorder(self, bus)

    @property
    def available(self) -> bool:
        """True once opened on a server with JetStream."""
        return self._kv is not None

    async def open(self) -> bool:
        """Create or bind the bucket and the stream; False without JetStream. Idempotent."""
        if self._opened:
            return self._kv is not None
        async with self._lock:
            if not self._opened:
                js = self._bus.nc.jetstream()
                try:
                    kv = await self._open_bucket(js)
                    await self._open_stream(js)
                except Exception as exc:  # no JetStream on this server
                    log.warning("requests are not deduplicated: %s", exc or type(exc).__name__)
                else:
                    self._js, self._kv = js, kv
                self._opened = True
        return self._kv is not None

    async def _open_bucket(self, js: JetStreamContext) -> KeyValue:
        try:
            return await js.create_key_value(
                bucket=BUCKET, ttl=self.ttl_s, history=1, replicas=self._replicas
            )
        except BadRequestError as exc:
            if exc.err_code != _STREAM_IN_USE:
                raise
            return await js.key_value(BUCKET)  # another process made it with other settings

    async def _open_stream(self, js: JetStreamContext) -> None:
        config = StreamConfig(
            name=STREAM,
            subjects=[f"{REPLAY_PREFIX}.>"],
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=self.ttl_s,
            max_msg_size=self._bus.max_payload,
            duplicate_window=min(self.ttl_s, 120.0),
            num_replicas=self._replicas,
        )
        await put_stream(js, config)

    async def claim(self, key: str, rid: str) -> Claim:
        """Claim ``key`` for ``rid``; a duplicate's ``Claim.rid`` names the first request.

        Claiming again with the rid that holds the key is not a duplicate (a redelivery).
        """
        token = key_token(key)
        if not await self.open():
            return Claim(key, rid, duplicate=False)
        try:
            for _ in range(_CLAIM_TRIES):
                if owner := await self._create_or_read(token, rid):
                    return Claim(key, owner, duplicate=owner != rid)
        except Exception as exc:  # a JetStream hiccup: serve the request rather than fail it
            log.warning("%s: idempotency key not checked: %r", rid, exc)
        return Claim(key, rid, duplicate=False)

    async def _create_or_read(self, token: str, rid: str) -> str | None:
        """The rid holding ``token`` after trying to take it; None if it vanished meanwhile."""
        assert self._kv is not None
        try:
            await self._kv.create(token, rid.encode())
        except KeyWrongLastSequenceError:
            pass
        else:
            return rid
        try:
            entry = await self._kv.get(token)
        except KeyNotFoundError:  # released or expired between the two calls
            return None
        return entry.value.decode() if entry.value else None

    async def release(self, key: str, rid: str) -> bool:
        """Free ``key`` if ``rid`` still holds it, so a retry with the key runs again.

        True when released; a key another request holds is left alone.
        """
        token = key_token(key)
        if not await self.open():
            return False
        assert self._kv is not None
        try:
            entry = await self._kv.get(token)
            if entry.value != rid.encode():
                return False
            await self._kv.delete(token, last=entry.revision)
        except (KeyNotFoundError, BadRequestError):  # gone, or changed since the read
            return False
        return True

    async def replay(
        self,
        rid: str,
        reply: str,
        *,
        new_rid: str,
        deadline: float,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> bool:
        """Send request ``rid``'s recorded frames, then the end-of-stream, to ``reply``.

        Frames carry ``new_rid``. ``deadline`` is a ``time.time()`` value: past it the
        duplicate gets ``Error`` ``dedup_timeout``. Reports started once the consumer is
        live. True when the whole recorded stream was forwarded.
        """
        sequencer = FrameSequencer()
        started = _Started(task_status)
        failure: Error | None = None
        try:
            with anyio.move_on_after(max(0.0, deadline - time.time())) as scope:
                failure = await self._forward(rid, reply, new_rid, sequencer, started)
            if scope.cancelled_caught:
                failure = _error(sequencer, new_rid, DEDUP_TIMEOUT, _timeout_message(rid))
        except Exception as exc:  # the one boundary for nats errors while reading a recording
            log.warning("%s: cannot replay %s: %r", new_rid, rid, exc)
            failure = _error(sequencer, new_rid, DEDUP_UNAVAILABLE, "the recording is unreadable")
        finally:
            started.report()
        if failure is not None:
            await self._bus.publish(reply, encode(failure), headers={RID_HEADER: new_rid})
        await self._bus.publish(reply, END_OF_STREAM)
        return failure is None

    async def _forward(
        self, rid: str, reply: str, new_rid: str, sequencer: FrameSequencer, started: _Started
    ) -> Error | None:
        """Forward until the end; an ``Error`` to send instead when the recording has a hole."""
        if not await self.open():
            return _error(sequencer, new_rid, DEDUP_UNAVAILABLE, "JetStream is not available")
        assert self._js is not None
        sub = await self._js.subscribe(
            replay_subject(rid),
            stream=STREAM,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )
        started.report()
        headers = {RID_HEADER: new_rid}
        try:
            while True:
                msg = await sub.next_msg(timeout=None)
                if msg.headers and msg.headers.get(END_HEADER):
                    return None
                frame = msgspec.structs.replace(decode_frame(msg.data), rid=new_rid)
                try:
                    if not sequencer.admit(frame):
                        continue
                except StreamGap as exc:
                    return _error(sequencer, new_rid, StreamGap.code, str(exc))
                await self._bus.publish(reply, encode(frame), headers=headers)
                if isinstance(frame, Done | Error):
                    return None
        finally:
            with anyio.CancelScope(shield=True):
                await sub.unsubscribe()


class Recorder:
    """Publishes a keyed request's frames to its replay subject; never fails the caller."""

    def __init__(self, board: DedupBoard, bus: Bus) -> None:
        self._board = board
        self._bus = bus

    async def record(self, rid: str, payload: bytes) -> None:
        """Record one frame, exactly the bytes sent to the client (after sending them)."""
        await self._publish(rid, payload, None)

    async def end(self, rid: str) -> None:
        """Record that the stream ended (after the client's end-of-stream message)."""
        await self._publish(rid, END_OF_STREAM, _END_HEADERS)

    async def _publish(self, rid: str, payload: bytes, headers: dict[str, str] | None) -> None:
        if not await self._board.open():
            return
        try:
            await self._bus.publish(replay_subject(rid), payload, headers=headers)
        except Exception as exc:  # a lost recording costs a duplicate, not this request
            log.warning("%s: frame not recorded: %r", rid, exc)


class _Started:
    """``task_status.started()`` at most once, whichever path gets there first."""

    def __init__(self, task_status: TaskStatus[None]) -> None:
        self._task_status = task_status
        self._done = False

    def report(self) -> None:
        if not self._done:
            self._done = True
            self._task_status.started()


def _error(sequencer: FrameSequencer, rid: str, code: str, message: str) -> Error:
    """An ``Error`` that fits where the duplicate's stream stands (next seq, same attempt)."""
    attempt = max(sequencer.attempt, 0)
    return Error(rid, attempt, sequencer.next_seq, code=code, message=message, retryable=True)


def _timeout_message(rid: str) -> str:
    return (
        f"the first request with this idempotency key ({rid}) did not finish "
        "within this request's deadline; retry with the same key for its result"
    )
