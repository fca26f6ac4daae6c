"""The gateway's listening socket: what asyncio (and so uvicorn) does with its connections."""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest

from omnillm.actors.gateway.sockets import listen, steer_to_others

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

    listening = listen("127.0.0.1", 0)
    server = await asyncio.start_server(accepted, sock=listening)
    async with server:
        port = listening.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(nodelay, 5) != 0
        writer.close()


def _accepted(sock: socket.socket) -> int:
    """Connections waiting in ``sock``'s accept queue, accepted and closed."""
    sock.setblocking(False)
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT steering")
def test_the_main_process_socket_gets_connections_only_while_no_worker_listens() -> None:
    """``omni up --workers 3``: the main process's gateway (first in the port's group)
    sends new connections to the two workers, and takes them itself when they are down."""
    main = listen("127.0.0.1", 0, reuse_port=True)
    port = main.getsockname()[1]
    steer_to_others(main, 2)
    workers = [listen("127.0.0.1", port, reuse_port=True) for _ in range(2)]
    clients: list[socket.socket] = []
    try:
        clients += [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
        per_worker = [_accepted(w) for w in workers]
        assert _accepted(main) == 0
        assert sum(per_worker) == 40 and min(per_worker) > 0  # both took some

        for worker in workers:
            worker.close()
        clients += [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
        assert _accepted(main) == 10  # no worker listens: nothing is refused
    finally:
        for sock in [main, *workers, *clients]:
            sock.close()
