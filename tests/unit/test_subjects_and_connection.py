"""Subject names, header sizes, and what a connection does at the server's limits."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable

import anyio
import pytest
from nats.aio.msg import Msg

from omnillm.bus import subjects
from omnillm.bus.connection import RID_HEADER, Bus, NatsUnreachable, headers_size
from omnillm.embedded import EmbeddedNats
from omnillm.errors import RequestTooLarge

# --- subjects ------------------------------------------------------------------------


def test_every_subject_lives_under_omni_v1() -> None:
    assert subjects.REQUEST == "omni.v1.request"
    assert subjects.PLAN == "omni.v1.plan"
    assert subjects.call("openai") == "omni.v1.call.openai"
    assert subjects.usage("my-vllm_2") == "omni.v1.usage.my-vllm_2"
    assert subjects.events("breaker") == "omni.v1.events.breaker"
    assert subjects.admin("status") == "omni.v1.admin.status"


def test_callers_of_one_provider_share_a_queue_group() -> None:
    assert subjects.caller_queue("anthropic") == "caller.anthropic"
    assert subjects.caller_queue("anthropic") != subjects.caller_queue("openai")


@pytest.mark.parametrize("token", ["openai", "vllm-2", "my_local", "A1", "x" * 64])
def test_check_token_accepts_letters_digits_dash_and_underscore(token: str) -> None:
    assert subjects.check_token(token) == token


@pytest.mark.parametrize(
    "token",
    ["open.ai", "*", "open*", ">", "all>", "my provider", " ", "", "x" * 65, "tab\t", "new\n"],
)
def test_check_token_rejects_what_would_misroute_and_says_what_is_allowed(token: str) -> None:
    with pytest.raises(ValueError) as raised:
        subjects.check_token(token)

    message = str(raised.value)
    assert repr(token) in message
    assert "letters, digits, '-' or '_'" in message


@pytest.mark.parametrize("build", [subjects.call, subjects.caller_queue, subjects.usage])
def test_a_provider_name_with_a_dot_never_becomes_a_subject(build: Callable[[str], str]) -> None:
    with pytest.raises(ValueError, match="cannot be a subject token"):
        build("evil.>")


def test_admin_and_event_names_are_checked_too() -> None:
    with pytest.raises(ValueError):
        subjects.admin("status.*")
    with pytest.raises(ValueError):
        subjects.events("a b")


# --- headers_size --------------------------------------------------------------------


def test_no_headers_take_no_bytes() -> None:
    assert headers_size(None) == 0
    assert headers_size({}) == 0


def test_headers_size_matches_the_wire_encoding() -> None:
    headers = {RID_HEADER: "abc123", "Nats-Msg-Id": "42"}
    wire = b"NATS/1.0\r\nOmni-Request-Id: abc123\r\nNats-Msg-Id: 42\r\n\r\n"

    assert headers_size(headers) == len(wire)


def test_headers_size_counts_bytes_not_characters() -> None:
    # nats-py encodes header values as UTF-8: "café" is 5 bytes on the wire, not 4.
    wire = "NATS/1.0\r\nOmni-Note: café\r\n\r\n".encode()

    assert headers_size({"Omni-Note": "café"}) == len(wire)


# --- a real server -------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_message_over_the_limit_only_with_its_headers_is_refused_before_sending(
    nats_server: EmbeddedNats,
) -> None:
    bus = await Bus.connect(nats_server.url)
    try:
        received: list[Msg] = []
        got = anyio.Event()

        async def on_msg(msg: Msg) -> None:
            received.append(msg)
            got.set()

        await bus.subscribe("omni.v1.test", on_msg)
        await bus.flush()
        headers = {RID_HEADER: "r" * 32}
        payload = b"x" * (bus.max_payload - 8)  # fits alone; the headers push it over

        limit = f"over the server's max_payload of {bus.max_payload}"
        with pytest.raises(RequestTooLarge, match=re.escape(limit)):
            await bus.publish("omni.v1.test", payload, headers=headers)

        await bus.publish("omni.v1.test", b"still here", headers=headers)
        with anyio.fail_after(5):
            await got.wait()
        assert bus.nc.is_connected
        assert [m.data for m in received] == [b"still here"]
        assert received[0].headers == headers
    finally:
        await bus.close()


@pytest.mark.anyio
async def test_connecting_where_nothing_listens_raises_nats_unreachable_naming_the_url() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"nats://127.0.0.1:{port}"

    began = time.monotonic()
    with pytest.raises(NatsUnreachable) as raised:
        await Bus.connect(url, connect_wait_s=1)
    waited = time.monotonic() - began

    assert url in str(raised.value)
    assert "waited 1s" in str(raised.value)
    assert waited < 3
