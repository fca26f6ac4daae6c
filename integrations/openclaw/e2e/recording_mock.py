"""The mock provider for ``integrations/openclaw/e2e.sh``, recording what it is asked.

``serve`` runs :class:`omnillm.testing.mock_provider.MockProvider`, the same server as
``python -m omnillm.testing.mock_provider``, and appends every POST it receives (the
path and the raw JSON body) to a JSONL file. It prints the same ``mock provider
listening on URL`` line once it accepts connections, and stops on SIGINT or SIGTERM.

``expect`` reads that file and prints the text the mock answered to the last
chat-completions request, worked out again from the recorded body by the mock's own
rules (``make_plan``: the prompt is the last user message, the answer is
``answer_tokens(prompt, n)``). OpenClaw's user message carries a timestamp and a
runtime line, so the answer cannot be known before the turn, but it is a pure function
of the request. A summary (requests, upstream model, prompt size) goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from omnillm.testing import _mock_openai
from omnillm.testing._mock_common import MockError, MockSettings, make_plan
from omnillm.testing.mock_provider import MockProvider, serve_until_signal

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RecordingMock(MockProvider):
    def __init__(self, settings: MockSettings, record: Path) -> None:
        super().__init__(settings)
        self.record = record

    def app(self) -> web.Application:
        app = super().app()

        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.method == "POST":
                body = await request.read()  # aiohttp keeps it for the handler
                row = {"path": request.path, "body": body.decode("utf-8", "replace")}
                with self.record.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(row) + "\n")
            return await handler(request)

        app.middlewares.append(record)
        return app


async def serve(args: argparse.Namespace) -> None:
    provider = RecordingMock(MockSettings(tokens=args.tokens), args.record)
    await serve_until_signal(provider, args.host, args.port)


def expect(args: argparse.Namespace) -> int:
    lines = args.record.read_text(encoding="utf-8").splitlines() if args.record.exists() else []
    rows = [json.loads(line) for line in lines if line.strip()]
    chats = [row for row in rows if row["path"].endswith("/chat/completions")]
    if not chats:
        print(f"the mock received no chat-completions request ({len(rows)} POSTs)", file=sys.stderr)
        return 1
    body = json.loads(chats[-1]["body"])
    try:
        ask = _mock_openai.FAMILY.parse(body, None)  # type: ignore[arg-type]  # path unused
    except MockError as exc:
        print(f"the mock refused the request: {exc.kind}: {exc.detail}", file=sys.stderr)
        return 1
    if args.model is not None and ask.model != args.model:
        print(f"the mock was asked for model {ask.model!r}, not {args.model!r}", file=sys.stderr)
        return 1
    plan = make_plan(ask, MockSettings(tokens=args.tokens), serial=len(rows))
    if plan.tool_call is not None:
        print(
            f"the mock answered with a call to tool {plan.tool_call.name!r}, not text "
            f"({len(ask.tools)} tools offered)",
            file=sys.stderr,
        )
        return 1
    prompt = next((t.text for t in reversed(ask.turns) if t.role == "user"), "")
    print(
        f"mock: {len(chats)} chat request(s); last: model {ask.model}, "
        f"{len(ask.turns)} messages, {len(chats[-1]['body'])} bytes, "
        f"{len(ask.tools)} tools, prompt {prompt[:60]!r}..., "
        f"answer {len(plan.tokens)} tokens, finish {plan.finish}",
        file=sys.stderr,
    )
    print(plan.text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recording_mock.py")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_ = commands.add_parser("serve", help="run the mock, recording each POST")
    serve_.add_argument("--host", default="127.0.0.1")
    serve_.add_argument("--port", type=int, default=0, help="0 picks a free port")
    expect_ = commands.add_parser("expect", help="print the mock's answer to the last chat")
    expect_.add_argument("--model", help="fail unless the request asked for this model")
    for sub in (serve_, expect_):
        sub.add_argument("--record", type=Path, required=True, help="the JSONL file")
        sub.add_argument("--tokens", type=int, default=MockSettings.tokens)
    args = parser.parse_args(argv)
    if args.command == "serve":
        asyncio.run(serve(args))
        return 0
    return expect(args)


if __name__ == "__main__":
    sys.exit(main())
