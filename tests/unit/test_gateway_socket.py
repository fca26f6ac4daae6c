"""The gateway's listening socket: what asyncio (and so uvicorn) does with its connections."""

from __future__ import annotations

import asyncio
import socket

import pytest

from omnillm.actors.gateway import _listen

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_accepted_connections_send_each_frame_at_once_without_nagle() -> None:
    """With Nagle on, every streamed answer after the first on a keep-alive connection
    waited about 40 ms for the client's delayed ACK before its first token."""
    nodelay: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        nodelay.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    listening = _listen("127.0.0.1", 0)
    server = await asyncio.start_server(accepted, sock=listening)
    async with server:
        port = listening.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(nodelay, 5) != 0
        writer.close()
