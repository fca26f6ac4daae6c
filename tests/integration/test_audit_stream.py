"""The opt-in audit stream keeps requests and events; omni tap --replay prints them."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest

from omnillm.embedded import EmbeddedNats
from omnillm.testing.mock_provider import MockProvider
from tests.conftest import client_for, mock_settings, running

pytestmark = pytest.mark.anyio


async def test_requests_and_events_are_kept_and_replayed_in_order(
    nats_server: EmbeddedNats, mock_provider: MockProvider, tmp_path: Path
) -> None:
    settings = mock_settings(mock_provider, audit={"stream": True})
    async with running(settings, nats_server.url):
        async with client_for(nats_server.url) as client:
            first = await client.complete({"messages": [{"role": "user", "content": "keep me"}]})
            await client.complete({"messages": [{"role": "user", "content": "and me"}]})
    result = await anyio.run_process(
        [
            sys.executable,
            "-m",
            "omnillm.cli",
            "tap",
            "--replay",
            "--request-id",
            first.rid,
            "--nats-url",
            nats_server.url,
        ],
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert "omni.v1.request" in lines[0] and "keep me" in lines[0]
    kinds = [line.split()[3] for line in lines]
    assert kinds[0] == "request"
    assert {"event.route", "event.end"} <= set(kinds)
    assert all(first.rid in line for line in lines[1:])
    assert not any("and me" in line for line in lines)
