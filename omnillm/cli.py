"""The ``omni`` command: one subcommand a job, each a thin layer over the library.

::

    omni up [--nats-url URL] [--nats-port N] [--workers N]   run everything (embedded NATS)
    omni demo ["question"]                    the same against a built-in mock provider
    omni chat "question" [--model M]          ask, print tokens live, then a summary
    omni actor KIND [--provider P]            one actor against an existing NATS, to scale out
    omni tap [SUBJECT...]                     print every message on the bus
    omni providers|models [--json]            what the running router serves
    omni classify "prompt" [--json]           how the router would sort a prompt
    omni switch [PROVIDER | --clear]          prefer a provider everywhere, or show it
    omni cost [--by G] [--since D] [--json]   spend from the ledger
    omni stats [--since D] [--json]           requests, errors, latency, cost, savings
    omni openclaw install|uninstall           add OmniLLM to OpenClaw's models, or remove it

``--config FILE`` comes before the command. README.md has every option; ``omni COMMAND
--help`` prints them.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal, TextIO

import anyio
import msgspec
from anyio.abc import TaskStatus

from omnillm import costs, listings, openclaw
from omnillm.bus._login import redact
from omnillm.bus.admin import GROUPINGS, ModelRow, ProviderRow
from omnillm.bus.connection import RID_HEADER, Bus
from omnillm.bus.messages import ChatRequest, Delta, Done, Error, Reset, Start
from omnillm.client import DEFAULT_NATS_URL, Client, to_request
from omnillm.config import MAX_WORKERS, Config, load_config, resolve
from omnillm.errors import InvalidRequest, OmniLLMError
from omnillm.logs import configure_logging
from omnillm.supervisor import ACTOR_KINDS, Stack, servable_providers
from omnillm.workers import tag_logs, worker_count

__all__ = ["main"]

log = logging.getLogger("omnillm")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="omni", description="OmniLLM, the LLM router on NATS.")
    parser.add_argument("--config", help="config file (default: omnillm.yaml if present)")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run OmniLLM: NATS (embedded by default) and every actor")
    up.add_argument("--nats-url", help="use this NATS server instead of starting one")
    up.add_argument("--nats-port", type=int, help="port of the embedded server (0: a free one)")
    up.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics (0: a free port)")
    up.add_argument(
        "--workers",
        type=_workers,
        help="processes: the router, and N-1 serving the gateway on one port (auto: one "
        "per CPU, at most 4; default: gateway.workers, else 1)",
    )

    demo = commands.add_parser("demo", help="run against a built-in mock provider, ask, answer")
    demo.add_argument("question", nargs="?", default="Explain what a router for LLMs does.")
    demo.add_argument("--tokens", type=int, default=40, help="answer length of the mock")
    demo.add_argument("--token-delay-ms", type=float, default=25.0)

    chat = commands.add_parser("chat", help="ask a question through a running OmniLLM")
    chat.add_argument("question")
    chat.add_argument("--model", default="auto", help="auto, an alias, or provider/model")
    chat.add_argument("--system", help="a system prompt")
    chat.add_argument("--max-tokens", type=int)
    chat.add_argument("--nats-url", help=f"default: OMNI_NATS_URL or {DEFAULT_NATS_URL}")
    chat.add_argument("--timeout", type=float, default=120.0, help="seconds for the whole answer")
    chat.add_argument(
        "--user", help="NATS user (default: OMNI_NATS_USER); the password: OMNI_NATS_PASSWORD"
    )
    chat.add_argument(
        "--inbox-prefix",
        help="where answers come, the user's own (default: OMNI_NATS_INBOX_PREFIX, "
        "else _INBOX.<user>)",
    )

    actor = commands.add_parser("actor", help="run one actor against an existing NATS server")
    actor.add_argument("kind", choices=ACTOR_KINDS)
    actor.add_argument("--provider", action="append", help="caller: provider(s) to serve")
    actor.add_argument("--nats-url", help=f"default: OMNI_NATS_URL or {DEFAULT_NATS_URL}")
    actor.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics")

    tap = commands.add_parser("tap", help="print every message on the bus, one line each")
    tap.add_argument(
        "subject",
        nargs="*",
        default=["omni.v1.>"],
        help="subjects to tap; '_INBOX.>' adds client inboxes (needs permission)",
    )
    tap.add_argument("--request-id", dest="rid", help="only this request's messages")
    tap.add_argument("--json", action="store_true", help="one JSON object per line")
    tap.add_argument("--nats-url", help="default: as for chat")
    tap.add_argument(
        "--replay",
        action="store_true",
        help="print what the audit stream kept (audit.stream: true), then exit",
    )
    tap.add_argument("--since", help="with --replay: 2026-11-01, 24h, 7d or a unix time")

    claw = commands.add_parser("openclaw", help="add OmniLLM to OpenClaw's models, or remove it")
    claw_commands = claw.add_subparsers(dest="openclaw_command", required=True)
    claw_install = claw_commands.add_parser("install", help="add provider 'omnillm' and its models")
    claw_uninstall = claw_commands.add_parser("uninstall", help="remove what install added")
    for sub in (claw_install, claw_uninstall):
        sub.add_argument(
            "--config-path",
            type=Path,
            help="default: OPENCLAW_CONFIG_PATH, $OPENCLAW_STATE_DIR/openclaw.json, "
            "~/.openclaw/openclaw.json",
        )
        sub.add_argument("--dry-run", action="store_true", help="print the diff, write nothing")
    claw_install.add_argument(
        "--set-default", action="store_true", help="make omnillm/auto OpenClaw's default model"
    )
    claw_install.add_argument(
        "--gateway-url",
        help="the gateway's /v1 URL as OpenClaw reaches it (default: from gateway.host/port)",
    )
    claw_install.add_argument(
        "--api-key-env",
        help="variable OpenClaw takes the gateway key from (default with gateway.keys: "
        "the key's key_env, else OMNILLM_API_KEY)",
    )

    cost = commands.add_parser("cost", help="what requests cost, from the ledger")
    cost.add_argument("--by", choices=GROUPINGS, default="provider")
    cost.add_argument("--since", help="2026-11-01, 24h, 7d or a unix time")
    cost.add_argument("--json", action="store_true", help="JSON for scripts")
    cost.add_argument("--nats-url", help="the router's NATS (default: as for chat)")

    stats = commands.add_parser("stats", help="requests, errors, latency, tokens, cost, savings")
    stats.add_argument("--since", help="2026-11-01, 24h, 7d or a unix time")
    stats.add_argument("--reference", help="savings against always using this model")
    stats.add_argument("--json", action="store_true", help="JSON for scripts")
    stats.add_argument("--nats-url", help="the router's NATS (default: as for chat)")

    classify_ = commands.add_parser("classify", help="show how the router would sort a prompt")
    classify_.add_argument("prompt", nargs="?", help="the last user turn")
    classify_.add_argument("--file", help="a ChatRequest JSON file instead of a prompt")
    classify_.add_argument("--previous", help="the previous user turn, for a follow-up")
    classify_.add_argument("--json", action="store_true", help="JSON for scripts")

    switch = commands.add_parser("switch", help="prefer a provider from now on, everywhere")
    switch.add_argument("provider", nargs="?", help="the provider to prefer; none: show")
    switch.add_argument("--clear", action="store_true", help="stop preferring any provider")
    switch.add_argument("--nats-url", help="the router's NATS (default: as for chat)")

    for name, what in (
        ("providers", "providers, and why one is not live"),
        ("models", "the model catalog: prices, limits, capabilities"),
    ):
        listing = commands.add_parser(name, help=f"list {what}")
        listing.add_argument("--json", action="store_true", help="JSON for scripts")
        listing.add_argument("--nats-url", help="ask the router there (default: as for chat)")
    return parser


def _workers(text: str) -> int | Literal["auto"]:
    if text == "auto":
        return "auto"
    try:
        workers = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or auto, got {text!r}") from None
    if not 1 <= workers <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"expected 1 to {MAX_WORKERS}, got {workers}")
    return workers


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
        # Services log JSON lines (for collectors); interactive commands log readable text.
        configure_logging(config.log.level, json=args.command in ("up", "actor"))
        handler = {
            "up": _up,
            "demo": _demo,
            "chat": _chat,
            "actor": _actor,
            "providers": _providers,
            "models": _models,
            "switch": _switch,
            "tap": _tap,
            "classify": _classify,
            "cost": _cost,
            "openclaw": _openclaw,
            "stats": _stats,
        }[args.command]
        return anyio.run(handler, args, config)
    except OmniLLMError as exc:
        return _failed(exc)
    except BaseExceptionGroup as group:  # raised inside a task group, e.g. by Stack.run
        if (error := _lone_error(group)) is None:
            raise
        return _failed(error)
    except KeyboardInterrupt:
        return 130


def _failed(exc: OmniLLMError) -> int:
    print(f"omni: {exc.code}: {exc.message}", file=sys.stderr)
    return 2 if exc.code == "config_error" else 1


def _lone_error(group: BaseExceptionGroup[BaseException]) -> OmniLLMError | None:
    """The ``OmniLLMError`` a group holds when it holds nothing else (nested or not)."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, OmniLLMError) else None


def _nats_url(args: argparse.Namespace, config: Config) -> str:
    url: str | None = args.nats_url or config.nats.url
    if url:
        return url
    return f"nats://{config.nats.embedded.host}:{config.nats.embedded.port or 4222}"


async def _serve_until_signal(stack: Stack, announce: str) -> None:
    """Serve until SIGINT or SIGTERM, or until the stack stops on its own (its workers
    kept dying): then raise why."""
    async with anyio.create_task_group() as tg:
        url = await tg.start(_run_then_cancel, stack, tg.cancel_scope)
        metrics = f" Metrics: http://{stack.metrics_host}:{stack.metrics_port}/metrics."
        workers = f" ({stack.workers} processes)" if stack.workers > 1 else ""
        gateway = (
            f" OpenAI-compatible API: {stack.gateway_url}{workers}." if stack.gateway_url else ""
        )
        line = announce.format(url=url) + gateway + (metrics if stack.metrics_port else "")
        line += " Ctrl-C stops."
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            print(line, flush=True)  # only now: a signal sent on seeing it drains, not kills
            async for signum in signals:
                log.info("%s: draining and stopping", signal.Signals(signum).name)
                stack.stop()
                break
    if stack.failure is not None:
        raise stack.failure


async def _run_then_cancel(
    stack: Stack, scope: anyio.CancelScope, *, task_status: TaskStatus[str]
) -> None:
    await stack.run(task_status=task_status)
    scope.cancel()  # it stopped on its own: stop waiting for a signal


def _describe(stack: Stack) -> str:
    where = "embedded, data in " + str(stack.server.data_dir) if stack.server else "external"
    skipped = sorted(set(stack.settings.providers) - set(stack.providers))
    live = ", ".join(stack.providers) or (
        "none (set a provider's API key, see `omni providers`, or try `omni demo`)"
    )
    note = f" (not served yet: {', '.join(skipped)})" if skipped else ""
    return f"OmniLLM up: NATS {{url}} ({where}); providers: {live}{note}."


async def _up(args: argparse.Namespace, config: Config) -> int:
    settings = resolve(config)
    workers = worker_count(args.workers or config.gateway.workers)
    stack = Stack(
        settings,
        nats_url=args.nats_url,
        embedded_port=args.nats_port,
        metrics_port=args.metrics_port,
        workers=workers,
    )
    if workers > 1:
        tag_logs(0)
    await _serve_until_signal(stack, _describe(stack))
    return 0


async def _actor(args: argparse.Namespace, config: Config) -> int:
    settings = resolve(config)
    url = _nats_url(args, config)
    providers = args.provider or servable_providers(settings)
    stack = Stack(
        settings,
        nats_url=url,
        kinds=(args.kind,),
        providers=providers,
        metrics_port=args.metrics_port,
    )
    label = args.kind + (f" ({', '.join(providers)})" if args.kind == "caller" else "")
    await _serve_until_signal(stack, f"OmniLLM actor {label} on NATS {{url}}.")
    return 0


async def _providers(args: argparse.Namespace, config: Config) -> int:
    settings = resolve(config)
    url = _nats_url(args, config)
    rows, note = await listings.fetch(
        "providers", url, list[ProviderRow], listings.local_providers(settings)
    )
    return _print_listing(args, rows, note, listings.render_providers(rows))


async def _models(args: argparse.Namespace, config: Config) -> int:
    settings = resolve(config)
    url = _nats_url(args, config)
    rows, note = await listings.fetch(
        "models", url, list[ModelRow], listings.local_models(settings)
    )
    return _print_listing(args, rows, note, listings.render_models(rows))


def _print_listing(args: argparse.Namespace, rows: Any, note: str | None, text: str) -> int:
    if args.json:
        print(msgspec.json.encode(rows).decode())
    else:
        print(text)
    if note:
        print(f"({note})", file=sys.stderr)
    return 0


async def _openclaw(args: argparse.Namespace, config: Config) -> int:
    if args.openclaw_command == "install":
        change = openclaw.install(
            resolve(config),
            path=args.config_path,
            dry_run=args.dry_run,
            set_default=args.set_default,
            gateway_url=args.gateway_url or openclaw.gateway_url(config),
            api_key_env=args.api_key_env,
        )
    else:
        change = openclaw.uninstall(args.config_path, dry_run=args.dry_run)
    print(change)
    return 0


async def _cost(args: argparse.Namespace, config: Config) -> int:
    since = costs.parse_since(args.since) if args.since else None
    rows = await costs.fetch_cost(_nats_url(args, config), args.by, since)
    return _print_listing(args, rows, None, costs.render_cost(rows, args.by))


async def _stats(args: argparse.Namespace, config: Config) -> int:
    since = costs.parse_since(args.since) if args.since else None
    reference = args.reference or config.ledger.reference_model
    url = _nats_url(args, config)
    stats = await costs.fetch_stats(url, since, reference)
    if args.json:
        return _print_listing(args, stats, None, "")
    estimates = await costs.fetch_estimates(url, since)
    text = costs.render_stats(stats)
    if estimates.providers:
        text += "\n\n" + costs.render_estimates(estimates)
    return _print_listing(args, stats, None, text)


async def _classify(args: argparse.Namespace, config: Config) -> int:
    from omnillm.actors.classifier.actor import classify

    request = _request_to_classify(args)
    result = classify(request, config.classifier)
    if args.json:
        print(msgspec.json.encode(result).decode())
        return 0
    rows = [
        ("tier", result.tier),
        ("needs", ", ".join(result.needs) or "-"),
        ("confidence", f"{result.confidence:.2f}"),
        ("tokens", f"~{result.input_tokens} in, ~{result.output_tokens} out expected"),
        *(("reason", reason) for reason in result.reasons),
    ]
    print(listings.table(("", ""), rows).split("\n", 1)[1])
    return 0


def _request_to_classify(args: argparse.Namespace) -> ChatRequest:
    if args.file:
        try:
            return msgspec.json.decode(Path(args.file).read_bytes(), type=ChatRequest)
        except (OSError, msgspec.DecodeError) as exc:
            raise InvalidRequest(f"{args.file}: {exc}") from exc
    if not args.prompt:
        raise InvalidRequest("give a prompt, or --file with a chat request")
    messages: list[dict[str, Any]] = []
    if args.previous:
        messages += [
            {"role": "user", "content": args.previous},
            {"role": "assistant", "content": "..."},
        ]
    messages.append({"role": "user", "content": args.prompt})
    return to_request({"messages": messages})


async def _tap(args: argparse.Namespace, config: Config) -> int:
    from omnillm.tap import tap

    url = _nats_url(args, config)
    if args.replay:
        return await _replay(url, args)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_cancel_on_signal, tg.cancel_scope)
        await tg.start(partial(tap, url, args.subject, rid=args.rid, as_json=args.json))
        print(
            f"tapping {', '.join(args.subject)} on {redact(url)}; Ctrl-C stops",
            file=sys.stderr,
            flush=True,
        )
    return 0


async def _replay(url: str, args: argparse.Namespace) -> int:
    from omnillm.bus.audit import replay_audit
    from omnillm.tap import render, summarize

    since = costs.parse_since(args.since) if args.since else None
    bus = await Bus.connect(url, name="omnillm-tap", connect_wait_s=2.0)
    try:
        async for msg in replay_audit(bus, since):
            rid = (msg.headers or {}).get(RID_HEADER)
            if args.rid and rid != args.rid:
                continue
            summary = summarize(msg.subject, msg.headers, msg.data)
            at = msg.metadata.timestamp.timestamp()
            if args.json:
                print(
                    msgspec.json.encode(
                        {"at": at, "subject": msg.subject, "rid": rid, **summary}
                    ).decode()
                )
            else:
                print(render(msg.subject, rid, summary, at))
    finally:
        await bus.close()
    return 0


async def _switch(args: argparse.Namespace, config: Config) -> int:
    ask: dict[str, Any] = {"clear": True} if args.clear else {}
    if args.provider and not args.clear:
        ask["provider"] = args.provider
    try:
        answer = await listings.admin_request(_nats_url(args, config), "switch", ask)
    except OmniLLMError as exc:
        if type(exc) is not OmniLLMError:
            raise
        # A Failure with a code no class claims (``internal``): from_code kept the code
        # in the message, so say `code: message` once, as `omni switch` always has.
        print(f"omni: {exc.message}", file=sys.stderr)
        return 1
    provider = answer.get("provider")
    print(
        f"preferring {provider} for every request that does not pin a model"
        if provider
        else "no provider preference: routing by strategy"
    )
    return 0


async def _chat(args: argparse.Namespace, config: Config) -> int:
    url = _nats_url(args, config)
    messages: list[dict[str, Any]] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    messages.append({"role": "user", "content": args.question})
    request: dict[str, Any] = {"model": args.model, "messages": messages}
    if args.max_tokens:
        request["max_tokens"] = args.max_tokens
    # The password only ever comes from the environment (OMNI_NATS_PASSWORD), not argv,
    # where other users of the machine could read it.
    client = Client(url, timeout_s=args.timeout, user=args.user, inbox_prefix=args.inbox_prefix)
    async with client:
        return await print_stream(client, request, sys.stdout)


async def print_stream(client: Client, request: dict[str, Any], out: TextIO) -> int:
    """Print tokens as they arrive, then one summary line on stderr; 0 on a full answer."""
    started = time.perf_counter()
    first: float | None = None
    async for frame in client.stream(request):
        match frame:
            case Start():
                pass
            case Delta():
                first = first or time.perf_counter()
                out.write(
                    frame.text + "".join(_tool_text(t.name, t.arguments) for t in frame.tool_calls)
                )
                out.flush()
            case Reset():
                out.write("\n[restarting on another provider]\n")
            case Done():
                ttft = (first - started) * 1000 if first else 0.0
                out.write("\n")
                print(_summary(frame, ttft), file=sys.stderr)
                return 0
            case Error():
                out.write("\n")
                print(f"omni: {frame.code}: {frame.message}", file=sys.stderr)
                return 1
    return 1


def _tool_text(name: object, arguments: str) -> str:
    return (f"\n[tool call {name}] " if isinstance(name, str) else "") + arguments


def _summary(done: Done, ttft_ms: float) -> str:
    usage = done.usage
    tokens = f"{usage.input_tokens} in / {usage.output_tokens} out"
    return (
        f"-- {done.provider} · {done.model} · {tokens} tokens · ${done.cost_usd:.6f} · "
        f"first token {ttft_ms:.0f} ms · attempts {done.attempts} · {done.finish_reason}"
    )


async def _demo(args: argparse.Namespace, config: Config) -> int:
    from omnillm.testing.demo import mock_config
    from omnillm.testing.mock_provider import MockProvider, MockSettings

    mock = MockProvider(MockSettings(tokens=args.tokens, token_delay_s=args.token_delay_ms / 1000))
    request = {"messages": [{"role": "user", "content": args.question}]}

    async def ask(url: str) -> int:
        print(f"OmniLLM demo: NATS {url} (embedded); provider: mock at {mock.base_url}")
        print(f"> {args.question}", flush=True)
        async with Client(url) as client:
            return await print_stream(client, request, sys.stdout)

    async with mock:
        settings = resolve(mock_config(mock.base_url, config), env={})
        with tempfile.TemporaryDirectory(prefix="omnillm-demo-") as data:
            config = msgspec.structs.replace(
                settings.config,
                ledger=msgspec.structs.replace(
                    settings.config.ledger, path=str(Path(data) / "ledger.sqlite")
                ),
                gateway=msgspec.structs.replace(settings.config.gateway, port=0),
            )
            settings = resolve(config, env={})
            stack = Stack(settings, embedded_port=0, data_dir=Path(data) / "nats")
            return await _while_running(stack, ask)


async def _while_running(stack: Stack, work: Callable[[str], Awaitable[int]]) -> int:
    """Run ``stack``, do ``work`` against its URL, then stop it; a signal cuts it short."""
    result = 130
    async with anyio.create_task_group() as tg:
        url = await tg.start(stack.run)
        try:
            async with anyio.create_task_group() as inner:
                inner.start_soon(_cancel_on_signal, inner.cancel_scope)
                result = await work(url)
                inner.cancel_scope.cancel()
        finally:
            stack.stop()
    return result


async def _cancel_on_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
