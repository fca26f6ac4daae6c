"""The CLI's listings name the NATS URL they tried without the password in it."""

from __future__ import annotations

import socket

import pytest

from omnillm import costs, listings
from omnillm.bus.connection import NatsUnreachable
from omnillm.errors import NoRouter

pytestmark = pytest.mark.anyio


def closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"nats://acme:hunter2-secret@127.0.0.1:{port}"


async def test_an_unreachable_router_is_named_without_the_password() -> None:
    url = closed_url()
    with pytest.raises(NoRouter) as refused:
        await listings.admin_request(url, "switch", {})
    assert "acme:***@127.0.0.1" in str(refused.value)
    assert "hunter2" not in str(refused.value)


async def test_an_unreachable_ledger_is_named_without_the_password() -> None:
    url = closed_url()
    with pytest.raises(NatsUnreachable) as refused:
        await costs.fetch_cost(url)
    assert "acme:***@127.0.0.1" in str(refused.value)
    assert "hunter2" not in str(refused.value)
