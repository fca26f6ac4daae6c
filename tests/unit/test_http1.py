"""The callers' HTTP/1.1 transport against scripted servers on loopback (plain and TLS):
keep-alive, streaming, stale connections, limits and every way a response can fail."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
import trustme

from omnillm.actors.caller._http1 import Http1Transport

pytestmark = pytest.mark.anyio

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nhello"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Server:
    """Counts connections and requests; ``handler`` answers each connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.url = ""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        """One request (head and Content-Length body), recorded."""
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request


@asynccontextmanager
async def serving(
    handler: Callable[[Server, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[Server]:
    server = Server(lambda r, w: handler(server, r, w))
    listening = await asyncio.start_server(server.serve, "127.0.0.1", 0, ssl=tls)
    port = listening.sockets[0].getsockname()[1]
    server.url = f"{'https' if tls else 'http'}://localhost:{port}/v1/chat"
    async with listening:
        yield server


async def post(transport: Http1Transport, url: str, body: bytes = b"{}") -> httpx.Response:
    request = httpx.Request("POST", url, content=body, extensions={"timeout": {"connect": 5}})
    return await transport.handle_async_request(request)


async def read(response: httpx.Response) -> bytes:
    assert isinstance(response.stream, httpx.AsyncByteStream)
    try:
        return b"".join([chunk async for chunk in response.stream])
    finally:
        await response.aclose()


async def keep_answering(
    server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    while True:
        await server.read_request(reader)
        writer.write(OK)
        await writer.drain()


async def test_answers_reuse_one_kept_alive_connection() -> None:
    transport = Http1Transport()
    async with serving(keep_answering) as server:
        for _ in range(3):
            response = await post(transport, server.url, b'{"n": 1}')
            assert (response.status_code, await read(response)) == (200, b"hello")
            assert response.headers["content-type"] == "text/plain"
        await transport.aclose()
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /v1/chat HTTP/1.1\r\n")
    assert b"\r\nHost: localhost:" in first and first.endswith(b'\r\n\r\n{"n": 1}')


async def test_a_chunked_stream_is_read_as_it_arrives() -> None:
    more = asyncio.Event()

    async def stream(
        server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\ndata: \r\n")
        await more.wait()  # the client has read the first chunk before the second is written
        writer.write(b"3\r\none\r\n0\r\n\r\n")
        await writer.drain()
        await server.read_request(reader)
        writer.write(OK)

    transport = Http1Transport()
    async with serving(stream) as server:
        response = await post(transport, server.url)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        chunks = aiter(response.stream)
        assert await anext(chunks) == b"data: "
        more.set()
        assert b"".join([chunk async for chunk in chunks]) == b"one"
        await response.aclose()
        assert await read(await post(transport, server.url)) == b"hello"  # reused after it
        await transport.aclose()
    assert server.connections == 1


async def test_a_connection_the_server_closed_while_idle_is_replaced_unnoticed() -> None:
    async def once(
        server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(OK)
        await writer.drain()  # then close, as a server's idle timeout does

    transport = Http1Transport()
    async with serving(once) as server:
        assert await read(await post(transport, server.url)) == b"hello"
        assert await read(await post(transport, server.url)) == b"hello"
        await transport.aclose()
    assert (server.connections, len(server.requests)) == (2, 2)


async def test_a_body_that_ends_with_the_connection_is_whole() -> None:
    async def until_close(
        server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")

    transport = Http1Transport()
    async with serving(until_close) as server:
        assert await read(await post(transport, server.url)) == b"all of it"
        await transport.aclose()


async def test_a_connection_dropped_mid_body_is_a_read_error() -> None:
    async def drop(
        server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this")

    transport = Http1Transport()
    async with serving(drop) as server:
        response = await post(transport, server.url)
        with pytest.raises(httpx.ReadError, match="closed before the response was whole"):
            await read(response)
        await transport.aclose()


async def test_bytes_that_are_not_http_are_a_protocol_error() -> None:
    async def garbage(
        server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await reader.read()

    transport = Http1Transport()
    async with serving(garbage) as server:
        with pytest.raises(httpx.RemoteProtocolError, match=r"invalid HTTP/1\.1 response"):
            await post(transport, server.url)
        await transport.aclose()


async def test_a_refused_connection_is_a_connect_error() -> None:
    async with serving(keep_answering) as server:
        url = server.url
    transport = Http1Transport()
    with pytest.raises(httpx.ConnectError):
        await post(transport, url)


async def test_connections_are_capped_and_a_slot_is_freed_when_a_body_is_closed() -> None:
    transport = Http1Transport(max_connections=1)
    async with serving(keep_answering) as server:
        first = await post(transport, server.url)
        second = asyncio.ensure_future(post(transport, server.url))
        await asyncio.sleep(0)  # let it try: it must wait for the only slot
        assert not second.done()
        assert await read(first) == b"hello"
        assert await read(await second) == b"hello"
        await transport.aclose()
    assert server.connections == 1


async def test_tls_with_a_trusted_certificate_and_not_with_an_unknown_one() -> None:
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_tls)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    async with serving(keep_answering, tls=server_tls) as server:
        transport = Http1Transport(ssl_context=trusting)
        assert await read(await post(transport, server.url)) == b"hello"
        await transport.aclose()
        default = Http1Transport()  # certifi's roots: this test CA is not among them
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await post(default, server.url)
        await default.aclose()


async def test_only_http_and_https_urls() -> None:
    with pytest.raises(httpx.UnsupportedProtocol):
        await post(Http1Transport(), "ftp://localhost/file")


async def test_a_request_cancelled_before_its_answer_frees_its_slot_and_connection() -> None:
    answer = asyncio.Event()

    async def first_hangs(
        server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        if server.connections == 1:
            answer.set()  # the request is in; now the client gives up on it
            await reader.read()  # until the client closes the connection
            return
        writer.write(OK)
        await writer.drain()

    transport = Http1Transport(max_connections=1)
    async with serving(first_hangs) as server:
        waiting = asyncio.ensure_future(post(transport, server.url))
        await answer.wait()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await read(await post(transport, server.url)) == b"hello"
        await transport.aclose()
    assert server.connections == 2


async def test_an_informational_response_before_the_answer_is_skipped() -> None:
    async def hints(
        server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n" + OK)
        await writer.drain()
        await server.read_request(reader)
        writer.write(OK)
        await writer.drain()

    transport = Http1Transport()
    async with serving(hints) as server:
        response = await post(transport, server.url)
        assert (response.status_code, await read(response)) == (200, b"hello")
        assert "link" not in response.headers
        assert await read(await post(transport, server.url)) == b"hello"  # still in step
        await transport.aclose()
    assert server.connections == 1


@pytest.mark.parametrize("extra", [OK, b"HTTP/1.1 200 OK\r\n", b"\x16\x03 not http"])
async def test_bytes_after_an_answer_retire_its_connection(extra: bytes) -> None:
    async def chatty(
        server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(OK + extra)  # more than was asked for, in the same read
        await writer.drain()
        await reader.read()

    transport = Http1Transport()
    async with serving(chatty) as server:
        for _ in range(2):
            assert await read(await post(transport, server.url)) == b"hello"
        await transport.aclose()
    assert server.connections == 2
