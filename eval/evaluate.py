"""How often the classifier agrees with a careful engineer, on ``eval/prompts.jsonl``.

Each line is one prompt: ``id``, ``kind``, the expected ``tier`` and the ``prompt`` (the
last user turn), optionally ``previous`` (the user turn before it, for follow-ups),
``tools: true`` (the request offers a tool, and carries an agent's long system prompt,
as agent frameworks send) and ``image: true`` (the turn carries an image). Run from the
repository root::

    python -m eval.evaluate [--show-errors] [--file eval/prompts.jsonl]

Prints accuracy, the confusion matrix, per-tier precision and recall, and the count of
reasoning prompts classified simple (the one mistake that must never happen).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

import msgspec

from omnillm.actors.classifier.actor import classify
from omnillm.bus.messages import (
    TIERS,
    ChatRequest,
    Classified,
    ContentPart,
    FunctionDef,
    ImagePart,
    ImageUrl,
    Message,
    TextPart,
    Tier,
    Tool,
)
from omnillm.config import ClassifierConfig

__all__ = ["PROMPTS", "Case", "Report", "build_request", "evaluate", "load"]

PROMPTS: Final = Path(__file__).with_name("prompts.jsonl")
AGENT_SYSTEM: Final = (
    "You are an autonomous coding and research agent. Analyse every task step by step, "
    "design and architect robust solutions, prove your claims, derive equations when "
    "needed, compare trade-offs and justify each decision. Always write tests.\n"
) * 40
TOOL: Final = Tool(
    function=FunctionDef(
        name="run",
        description="Run a command or call a service and return its output.",
        parameters={"type": "object", "properties": {"input": {"type": "string"}}},
    )
)


class Case(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    kind: str
    tier: Tier
    prompt: str
    previous: str | None = None
    tools: bool = False
    image: bool = False


class Report(msgspec.Struct, kw_only=True):
    total: int
    correct: int
    confusion: dict[Tier, dict[Tier, int]]
    """expected tier -> predicted tier -> count"""
    errors: list[tuple[Case, Classified]]

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    @property
    def reasoning_as_simple(self) -> int:
        return self.confusion["reasoning"]["simple"]

    def precision(self, tier: Tier) -> float:
        predicted = sum(row[tier] for row in self.confusion.values())
        return self.confusion[tier][tier] / predicted if predicted else 0.0

    def recall(self, tier: Tier) -> float:
        expected = sum(self.confusion[tier].values())
        return self.confusion[tier][tier] / expected if expected else 0.0


def load(path: Path = PROMPTS) -> list[Case]:
    decoder = msgspec.json.Decoder(Case)
    lines = path.read_bytes().splitlines()
    return [decoder.decode(line) for line in lines if line.strip()]


def build_request(case: Case) -> ChatRequest:
    """The chat request a client would send for ``case``."""
    messages: list[Message] = []
    if case.tools:
        messages.append(Message(role="system", content=AGENT_SYSTEM))
    if case.previous is not None:
        messages.append(Message(role="user", content=case.previous))
        messages.append(Message(role="assistant", content="(the earlier answer)"))
    content: str | list[ContentPart] = case.prompt
    if case.image:
        image = ImagePart(image_url=ImageUrl(url="https://example.com/photo.jpg"))
        content = [TextPart(text=case.prompt), image]
    messages.append(Message(role="user", content=content))
    tools = [TOOL] if case.tools else msgspec.UNSET
    return ChatRequest(messages=messages, tools=tools)


def evaluate(cases: Iterable[Case], config: ClassifierConfig | None = None) -> Report:
    confusion: dict[Tier, dict[Tier, int]] = {e: dict.fromkeys(TIERS, 0) for e in TIERS}
    errors: list[tuple[Case, Classified]] = []
    total = correct = 0
    for case in cases:
        request = build_request(case)
        result = classify(request) if config is None else classify(request, config)
        confusion[case.tier][result.tier] += 1
        total += 1
        if result.tier == case.tier:
            correct += 1
        else:
            errors.append((case, result))
    return Report(total=total, correct=correct, confusion=confusion, errors=errors)


def render(report: Report, *, show_errors: bool) -> str:
    lines = [
        f"accuracy: {report.accuracy:.1%} ({report.correct}/{report.total})",
        f"reasoning classified simple: {report.reasoning_as_simple} (must be 0)",
        "",
        "expected \\ predicted " + "".join(f"{t:>11}" for t in TIERS),
    ]
    for expected in TIERS:
        row = "".join(f"{report.confusion[expected][p]:>11}" for p in TIERS)
        lines.append(f"{expected:<21}{row}")
    lines += ["", f"{'tier':<11}{'precision':>10}{'recall':>8}{'prompts':>9}"]
    for tier in TIERS:
        count = sum(report.confusion[tier].values())
        lines.append(
            f"{tier:<11}{report.precision(tier):>10.1%}{report.recall(tier):>8.1%}{count:>9}"
        )
    if show_errors:
        lines += ["", f"misclassified ({len(report.errors)}):"]
        for case, result in report.errors:
            prompt = " ".join(case.prompt.split())
            lines.append(f"- {case.id}: expected {case.tier}, got {result.tier}: {prompt[:90]}")
            why = "; ".join(result.reasons)
            lines.append(f"    score reasons: {why} (confidence {result.confidence:.2f})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.evaluate", description=__doc__)
    parser.add_argument("--file", type=Path, default=PROMPTS, help="the JSON-lines prompt set")
    parser.add_argument("--show-errors", action="store_true", help="list each misclassified prompt")
    args = parser.parse_args(argv)
    report = evaluate(load(args.file))
    print(render(report, show_errors=args.show_errors))
    return 1 if report.reasoning_as_simple else 0


if __name__ == "__main__":
    sys.exit(main())
