"""What one ``classify`` call costs: p50 and p99 microseconds, and calls a second.

Two workloads: every prompt of the evaluation set (``eval/prompts.jsonl``, built into
requests as the evaluation builds them), and an OpenClaw-like agent request: a
50,000-character system prompt, 12 tools with JSON-schema parameters, a history of
tool calls and a 200-character last user turn. The budget (docs/architecture.md, routing) is 100
microseconds a request. Run from the repository root::

    python -m bench.classifier [--rounds 200]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable, Sequence

from eval.evaluate import (
    build_request,
    load,
)
from omnillm.actors.classifier.actor import classify
from omnillm.bus.messages import ChatRequest, FunctionCall, FunctionDef, Message, Tool, ToolCall

BUDGET_US = 100.0
SYSTEM_CHUNK = (
    "## Tools\nYou are OpenClaw, an autonomous agent. Think step by step, analyse the "
    "trade-offs, design and architect robust solutions, prove and derive when asked, write "
    "and refactor code, debug failures and run the tests. Always explain why.\n"
    "```python\ndef example(x):\n    return x * 2\n```\n"
    "1. plan the work\n2. call tools\n3. verify the result\n"
)
LAST_TURN = (
    "Check the failing job in the deploy pipeline, read its last log, and tell me whether "
    "the error comes from our migration script or from the database itself. Keep it short."
)
TOOL_NAMES = (
    "read_file",
    "write_file",
    "list_dir",
    "run_shell",
    "search_code",
    "git_diff",
    "git_commit",
    "http_get",
    "browser_open",
    "send_message",
    "create_ticket",
    "query_db",
)


def openclaw_request(history_turns: int = 4) -> ChatRequest:
    """An agent framework's request: a huge system prompt, many tools, a short ask."""
    system = (SYSTEM_CHUNK * (50_000 // len(SYSTEM_CHUNK) + 1))[:50_000]
    tools = [
        Tool(
            function=FunctionDef(
                name=name,
                description=f"{name.replace('_', ' ')}: see the agent guide for when to use it.",
                parameters={
                    "type": "object",
                    "properties": {"target": {"type": "string"}, "limit": {"type": "integer"}},
                    "required": ["target"],
                },
            )
        )
        for name in TOOL_NAMES
    ]
    messages = [Message(role="system", content=system)]
    for i in range(history_turns):
        call = ToolCall(id=f"call_{i}", function=FunctionCall(name="run_shell", arguments="{}"))
        messages += [
            Message(role="user", content=f"Step {i}: look at the pipeline status."),
            Message(role="assistant", content="", tool_calls=[call]),
            Message(role="tool", content="exit 0\n" * 50, tool_call_id=f"call_{i}"),
            Message(role="assistant", content="Done; the pipeline is green so far."),
        ]
    messages.append(Message(role="user", content=LAST_TURN[:200]))
    return ChatRequest(messages=messages, tools=tools)


def timings(requests: Sequence[ChatRequest], rounds: int) -> list[float]:
    """Microseconds of every call, each request ``rounds`` times (after a warm-up pass)."""
    clock: Callable[[], int] = time.perf_counter_ns
    for request in requests:
        classify(request)
    samples: list[float] = []
    gc.disable()  # a collection pause is the runtime's, not the classifier's
    try:
        for _ in range(rounds):
            for request in requests:
                started = clock()
                classify(request)
                samples.append((clock() - started) / 1_000)
    finally:
        gc.enable()
    return samples


def row(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    per_second = len(samples) / (sum(samples) / 1e6)
    verdict = "ok" if p99 <= BUDGET_US else "OVER BUDGET"
    return f"{name:<34}{len(samples):>9}{p50:>9.1f}{p99:>9.1f}{per_second:>12,.0f}  {verdict}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.classifier", description=__doc__)
    parser.add_argument("--rounds", type=int, default=200, help="passes over each workload")
    args = parser.parse_args(argv)
    prompts = [build_request(case) for case in load()]
    agent = openclaw_request()
    print(f"{'workload':<34}{'calls':>9}{'p50 us':>9}{'p99 us':>9}{'calls/s':>12}")
    print(row(f"eval prompts ({len(prompts)})", timings(prompts, args.rounds)))
    print(row("OpenClaw-like (50K system, 12 tools)", timings([agent], args.rounds * 50)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
