"""A bare Python pass-through proxy: the yardstick a router's overhead is judged against.

aiohttp server and client, nothing else: a ``POST`` is forwarded to the upstream with
its body and content type, and the upstream's response bytes are streamed back as
they arrive. No parsing, no routing, no logging. Whatever a real router costs on top
of this is its own work; the ratio to this proxy holds on any machine. Run it in its
own process::

    python -m bench.passthrough --upstream http://127.0.0.1:PORT [--port 0]

It prints ``passthrough listening on http://127.0.0.1:PORT/v1`` once bound.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import aiohttp
from aiohttp import web

__all__ = ["main"]


def _app(upstream: str) -> web.Application:
    session: aiohttp.ClientSession | None = None

    async def open_session(app: web.Application) -> None:
        nonlocal session
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
        session = aiohttp.ClientSession(upstream, connector=connector, auto_decompress=False)

    async def close_session(app: web.Application) -> None:
        if session is not None:
            await session.close()

    async def forward(request: web.Request) -> web.StreamResponse:
        assert session is not None
        body = await request.read()
        headers = {"content-type": request.headers.get("content-type", "application/json")}
        async with session.post(request.path, data=body, headers=headers) as upstream_response:
            response = web.StreamResponse(status=upstream_response.status)
            response.content_type = upstream_response.content_type
            await response.prepare(request)
            async for chunk in upstream_response.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/{path:.*}", forward)
    app.on_startup.append(open_session)
    app.on_cleanup.append(close_session)
    return app


async def serve(host: str, port: int, upstream: str) -> None:
    runner = web.AppRunner(_app(upstream), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=2048)
    await site.start()
    bound = int(runner.addresses[0][1])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"passthrough listening on http://{host}:{bound}/v1", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.passthrough", description=__doc__)
    parser.add_argument("--upstream", required=True, help="scheme://host:port of the upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.upstream.rstrip("/")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
