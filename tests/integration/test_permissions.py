"""``nats.conf``'s users and permissions on a real nats-server: what each role can and
cannot do, and a whole chat through the stack with every process logged in.

The server runs the embedded config with ``anonymous=False``: the permission blocks
``nats.conf`` carries (both come from ``omnillm/_nats_conf.py``) and no login without a
password. "Nothing arrives" is proved by a round trip, never by waiting: a sentinel
sent after the refused message, through the same server, arrives after anything the
server had routed before it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import anyio
import pytest
from nats.aio.msg import Msg

from omnillm.bus import subjects
from omnillm.bus.connection import Bus, NatsAuthFailed, NatsPermissionDenied
from omnillm.bus.messages import Delta, Done, Start, decode_frame
from omnillm.client import Client
from omnillm.config import NatsUser
from omnillm.embedded import EmbeddedNats
from omnillm.tap import tap
from omnillm.testing.mock_provider import MockProvider, answer_tokens
from tests.conftest import mock_settings, running
from tests.integration.test_tap import Lines

pytestmark = pytest.mark.anyio

WAIT_S = 10.0
ACTOR = "omnillm-actor"
PASSWORDS = {
    ACTOR: "actor-secret",
    "acme": '-1 "a c m e" #\\',  # nats-server would read it as config, unquoted
    "globex": "123",
    "audit": "audit-secret",
}
USERS = (
    NatsUser(name="acme", password_env="TEST_ACME_PASSWORD"),
    NatsUser(name="globex", password_env="TEST_GLOBEX_PASSWORD"),
    NatsUser(name="audit", password_env="TEST_AUDIT_PASSWORD", role="audit"),
)
SERVER_ENV = {
    "OMNI_ACTOR_PASSWORD": PASSWORDS[ACTOR],
    "TEST_ACME_PASSWORD": PASSWORDS["acme"],
    "TEST_GLOBEX_PASSWORD": PASSWORDS["globex"],
    "TEST_AUDIT_PASSWORD": PASSWORDS["audit"],
}


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A server as strict as ``nats.conf``, with test passwords."""
    server = EmbeddedNats(tmp_path / "nats", port=0, users=USERS, anonymous=False, env=SERVER_ENV)
    server.start()
    yield server
    server.stop()


def url_as(server: EmbeddedNats, user: str) -> str:
    return f"nats://{user}:{PASSWORDS[user]}@{server.host}:{server.port}"


@asynccontextmanager
async def connected(server: EmbeddedNats, user: str) -> AsyncIterator[Bus]:
    bus = await Bus.connect(server.url, user=user, password=PASSWORDS[user], env={})
    try:
        yield bus
    finally:
        await bus.close()


class Watch:
    """Everything one connection receives on ``subject``, in order."""

    def __init__(self, bus: Bus, subject: str) -> None:
        self.bus = bus
        self.subject = subject
        self.received: list[Msg] = []
        self._changed = anyio.Event()

    async def start(self) -> Watch:
        await self.bus.subscribe(self.subject, self._on_message)
        await self.bus.confirm_subscription(self.subject)
        return self

    async def _on_message(self, msg: Msg) -> None:
        self.received.append(msg)
        self._changed.set()
        self._changed = anyio.Event()

    async def until(self, last: Callable[[Msg], bool]) -> list[Msg]:
        """The messages up to and including the first for which ``last`` is true."""
        with anyio.fail_after(WAIT_S):
            while True:
                for i, msg in enumerate(self.received):
                    if last(msg):
                        return self.received[: i + 1]
                await self._changed.wait()


def has_data(data: bytes) -> Callable[[Msg], bool]:
    return lambda msg: msg.data == data


# --- client users ----------------------------------------------------------------------


async def test_a_client_cannot_subscribe_to_another_clients_inbox(secured: EmbeddedNats) -> None:
    async with connected(secured, "acme") as acme, connected(secured, ACTOR) as actor:
        stolen: list[Msg] = []

        async def steal(msg: Msg) -> None:
            stolen.append(msg)

        theft = await acme.subscribe("_INBOX.globex.>", steal)
        with pytest.raises(NatsPermissionDenied, match=r"_INBOX\.globex\.>"):
            await acme.confirm_subscription("_INBOX.globex.>")
        own = await Watch(acme, "_INBOX.acme.>").start()

        await actor.publish("_INBOX.globex.r1", b"globex's tokens")
        await actor.publish("_INBOX.acme.r1", b"sentinel")  # same publisher: it comes after
        assert [m.subject for m in await own.until(has_data(b"sentinel"))] == ["_INBOX.acme.r1"]
        assert stolen == []
        assert theft.pending_msgs == 0
        assert ("subscribe", "_inbox.globex.>") in acme.refusals  # nats-py lowers it


async def test_a_client_asking_with_another_clients_inbox_prefix_is_refused_at_once(
    secured: EmbeddedNats,
) -> None:
    client = Client(
        secured.url, user="acme", password=PASSWORDS["acme"], inbox_prefix="_INBOX.globex"
    )
    with pytest.raises(NatsPermissionDenied, match="may not subscribe there"):
        async with client:
            pass


async def test_a_client_cannot_publish_handoffs_usage_switch_or_gateway_requests(
    secured: EmbeddedNats,
) -> None:
    forged = [
        subjects.call("mock"),
        subjects.usage("mock"),
        subjects.PLAN,
        subjects.admin("switch"),
        subjects.events("breaker"),
        subjects.GATEWAY_REQUEST,  # where a key: tag is believed
    ]
    async with connected(secured, "acme") as acme, connected(secured, ACTOR) as actor:
        everything = await Watch(actor, f"{subjects.ROOT}.>").start()
        for subject in forged:
            await acme.publish(subject, b"{}")
        await acme.publish(subjects.REQUEST, b"sentinel")  # allowed, and after the rest

        seen = await everything.until(has_data(b"sentinel"))
        assert [m.subject for m in seen] == [subjects.REQUEST]
        await acme.flush()
        assert acme.refusals == [("publish", subject) for subject in forged]


# --- the audit user --------------------------------------------------------------------


async def test_the_audit_user_sees_all_traffic_but_publishes_nothing(
    secured: EmbeddedNats,
) -> None:
    async with (
        connected(secured, "audit") as audit,
        connected(secured, ACTOR) as actor,
        connected(secured, "acme") as acme,
    ):
        wire = await Watch(audit, ">").start()
        await acme.publish(subjects.REQUEST, b"a request")
        await acme.flush()  # routed before the actor's message below
        await actor.publish("_INBOX.acme.r1", b"a token")
        seen = await wire.until(has_data(b"a token"))
        assert [(m.subject, m.data) for m in seen] == [
            (subjects.REQUEST, b"a request"),
            ("_INBOX.acme.r1", b"a token"),
        ]

        everything = await Watch(actor, f"{subjects.ROOT}.>").start()
        forged = [subjects.REQUEST, subjects.call("mock"), "_INBOX.acme.r1"]
        for subject in forged:
            await audit.publish(subject, b"from audit")
        await audit.flush()  # the server has dealt with every one of them
        await actor.publish(subjects.events("sentinel"), b"sentinel")
        seen = await everything.until(has_data(b"sentinel"))
        assert [m.subject for m in seen] == [subjects.events("sentinel")]
        assert audit.refusals == [("publish", subject.lower()) for subject in forged]


async def test_omni_tap_runs_as_the_audit_user(secured: EmbeddedNats) -> None:
    out, stop = Lines(), anyio.Event()
    async with connected(secured, ACTOR) as actor, anyio.create_task_group() as tg:
        audit_url = url_as(secured, "audit")
        await tg.start(partial(tap, audit_url, ">", out=out, stop=stop))
        await actor.publish("_INBOX.acme.r1", b"")
        [line] = await out.until(1)
        stop.set()
    assert line.endswith(" - _INBOX.acme.r1 end")


# --- the laptop default ----------------------------------------------------------------


async def test_the_embedded_default_lets_loopback_in_without_a_password_as_before(
    tmp_path: Path,
) -> None:
    """``omni up`` on a laptop: no credentials, no limits; a configured user is limited."""
    with EmbeddedNats(tmp_path / "nats", port=0, users=USERS, env=SERVER_ENV) as server:
        anyone = await Bus.connect(server.url, env={})
        try:
            wire = await Watch(anyone, ">").start()
            await anyone.publish("custom.thing", b"anything goes")
            assert [m.subject for m in await wire.until(has_data(b"anything goes"))] == [
                "custom.thing"
            ]
            async with connected(server, "acme") as acme:
                await acme.publish("custom.thing", b"not from acme")
                await acme.flush()
                assert acme.refusals == [("publish", "custom.thing")]
        finally:
            await anyone.close()


# --- logging in ------------------------------------------------------------------------


async def test_a_wrong_password_fails_fast_and_never_shows_the_password(
    secured: EmbeddedNats,
) -> None:
    with anyio.fail_after(3):  # well inside the 5 s the connection would keep retrying
        with pytest.raises(NatsAuthFailed, match="refused user 'acme'") as refused:
            await Bus.connect(secured.url, user="acme", password="not-it", env={})
    assert "not-it" not in str(refused.value)

    with pytest.raises(NatsAuthFailed, match=r"refused user 'acme'") as refused:
        await Bus.connect(f"nats://acme:hunter2@127.0.0.1:{secured.port}", env={})
    assert "hunter2" not in str(refused.value)
    assert "acme:***@" in str(refused.value)

    with pytest.raises(NatsAuthFailed, match="set OMNI_NATS_USER and OMNI_NATS_PASSWORD"):
        await Bus.connect(secured.url, env={})


async def test_users_and_passwords_come_from_the_environment(secured: EmbeddedNats) -> None:
    env = {"OMNI_NATS_USER": "acme", "OMNI_NATS_PASSWORD": PASSWORDS["acme"]}
    bus = await Bus.connect(secured.url, env=env)
    try:
        assert bus.new_inbox().startswith("_INBOX.acme.")
    finally:
        await bus.close()


# --- a whole chat ----------------------------------------------------------------------


async def test_a_client_user_chats_through_actors_logged_in_as_the_actor_user(
    secured: EmbeddedNats, mock_provider: MockProvider
) -> None:
    prompt = "Name three rivers in Europe."
    request = {"messages": [{"role": "user", "content": prompt}]}
    actors_url = url_as(secured, ACTOR)
    async with (
        running(mock_settings(mock_provider), actors_url),
        connected(secured, "audit") as audit,
        Client(secured.url, user="acme", password=PASSWORDS["acme"]) as client,
    ):
        wire = await Watch(audit, "_INBOX.acme.>").start()
        frames = [frame async for frame in client.stream(request)]

        assert isinstance(frames[0], Start)
        assert isinstance(frames[-1], Done)
        deltas = [f for f in frames if isinstance(f, Delta)]
        assert "".join(d.text for d in deltas) == "".join(answer_tokens(prompt, 20))
        assert len(frames) >= 3  # many replies to one request: allow_responses' 1 would cut it
        # The audit user read the same stream, end-of-stream included.
        tapped = await wire.until(has_data(b""))
        # (the client yields the Start that the first Delta carries as a frame of its own)
        assert [decode_frame(m.data) for m in tapped[:-1]] == frames[1:]


async def test_the_router_answers_only_to_inboxes(
    secured: EmbeddedNats, mock_provider: MockProvider
) -> None:
    """A client naming, say, a KV or JetStream API subject as its reply would have the
    actors publish there with their rights; the router refuses and says so."""
    async with (
        running(mock_settings(mock_provider), url_as(secured, ACTOR)),
        connected(secured, ACTOR) as observer,
        connected(secured, "acme") as acme,
    ):
        everything = await Watch(observer, f"{subjects.ROOT}.>").start()
        request = b'{"messages": [{"role": "user", "content": "hi"}]}'
        await acme.publish(subjects.REQUEST, request, reply=f"{subjects.ROOT}.hijack")
        rejected = await everything.until(lambda m: m.subject == subjects.events("reject"))
        assert b"is not under _INBOX." in rejected[-1].data
        await observer.publish(subjects.events("sentinel"), b"sentinel")
        seen = await everything.until(has_data(b"sentinel"))
        assert f"{subjects.ROOT}.hijack" not in [m.subject for m in seen]


async def test_omni_chat_logs_in_with_user_flag_and_password_from_the_environment(
    secured: EmbeddedNats, mock_provider: MockProvider, tmp_path: Path
) -> None:
    prompt = "from the command line"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNI_")}
    omni = [sys.executable, "-m", "omnillm.cli", "chat", prompt, "--nats-url", secured.url]
    async with running(mock_settings(mock_provider), url_as(secured, ACTOR)):
        chat = await anyio.run_process(
            [*omni, "--user", "acme"],
            env={**env, "OMNI_NATS_PASSWORD": PASSWORDS["acme"]},
            cwd=tmp_path,
            check=False,
        )
        assert chat.returncode == 0, chat.stderr
        assert chat.stdout.decode().strip() == "".join(answer_tokens(prompt, 20))

        nosy = await anyio.run_process(
            [*omni, "--user", "acme", "--inbox-prefix", "_INBOX.globex"],
            env={**env, "OMNI_NATS_PASSWORD": PASSWORDS["acme"]},
            cwd=tmp_path,
            check=False,
        )
        assert nosy.returncode == 1
        assert "omni: nats_permission_denied:" in nosy.stderr.decode()

    forgetful = await anyio.run_process(
        [*omni, "--user", "acme"], env=env, cwd=tmp_path, check=False
    )
    assert forgetful.returncode == 1
    assert forgetful.stderr.decode().strip() == (
        "omni: nats_unauthorized: NATS user 'acme' has no password: set OMNI_NATS_PASSWORD"
    )
