"""How the classifier sorts a request: its tier, its hard needs, its size, and why."""

from __future__ import annotations

from typing import Any

import pytest

from omnillm.actors.classifier import classify, estimate_tokens
from omnillm.bus.messages import (
    TIERS,
    ChatRequest,
    FunctionDef,
    ImagePart,
    ImageUrl,
    Message,
    TextPart,
    Tool,
)

CODING_TASK = """\
I have a Flask service that leaks database connections under load. Please do the following:
1. Refactor the code below to use a connection pool with a context manager.
2. Add retry logic with exponential backoff for transient errors.
3. Write pytest tests covering the retry path and the pool exhaustion path.
4. Explain the trade-offs between pool size and request latency.

```python
import psycopg2
from flask import Flask

app = Flask(__name__)

def get_user(user_id):
    conn = psycopg2.connect(DSN)
    cur = conn.cursor()
    cur.execute("SELECT * FROM users WHERE id = %s", (user_id,))
    return cur.fetchone()
```

Keep the public function signatures unchanged and make sure the tests run without a real
database.
"""

PROOF_REQUEST = (
    "Prove that the square root of 2 is irrational, step by step, and justify each lemma you use."
)

AGENT_SYSTEM_PROMPT = (
    "You are an expert software architect. Analyze, design, optimize and debug code; "
    "prove every theorem and lemma, derive each equation step by step, compare the "
    "trade-offs and justify your plan.\n```python\ndef solve(x):\n    return x\n```\n"
    "1. reason carefully\n2. evaluate options\n3. architect the system\n"
    "Why? How? What if? "
) * 80
AGENT_SYSTEM_PROMPT = AGENT_SYSTEM_PROMPT[:20_000]


def user(content: str | list[Any]) -> Message:
    return Message(role="user", content=content)


def request(*messages: Message, **options: Any) -> ChatRequest:
    return ChatRequest(messages=list(messages), **options)


def ask(text: str, **options: Any) -> ChatRequest:
    return request(user(text), **options)


def image(url: str = "https://example.com/cat.png") -> ImagePart:
    return ImagePart(image_url=ImageUrl(url=url))


def at_least(tier: str) -> set[str]:
    return set(TIERS[TIERS.index(tier) :])


# --- tiers -------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["thanks!", "hi", "Hello there", "ok, cool"])
def test_small_talk_is_simple(text: str) -> None:
    result = classify(ask(text))

    assert result.tier == "simple"
    assert "small talk" in result.reasons


def test_a_long_multi_step_coding_task_with_code_is_complex_or_harder() -> None:
    result = classify(ask(CODING_TASK))

    assert result.tier in at_least("complex")
    assert "contains code" in result.reasons
    assert "multi-step instructions" in result.reasons


def test_a_math_proof_request_is_reasoning() -> None:
    result = classify(ask(PROOF_REQUEST))

    assert result.tier == "reasoning"
    assert "math" in result.reasons


def test_a_keyword_heavy_system_prompt_does_not_raise_the_tier() -> None:
    assert len(AGENT_SYSTEM_PROMPT) == 20_000
    with_system = request(Message(role="system", content=AGENT_SYSTEM_PROMPT), user("hi"))

    result = classify(with_system)

    assert result.tier in {"simple", "medium"}
    assert result.tier == classify(ask("hi")).tier
    assert not any("code" in why or "reasoning" in why for why in result.reasons)


def test_only_the_last_user_turn_decides_the_tier() -> None:
    conversation = request(
        user(CODING_TASK),
        Message(role="assistant", content="Here is the refactored service ..."),
        user("thanks!"),
    )

    result = classify(conversation)

    assert result.tier == "simple"
    assert "contains code" not in result.reasons


def test_a_hard_last_turn_after_small_talk_is_not_simple() -> None:
    conversation = request(
        user("hi"), Message(role="assistant", content="Hello! How can I help?"), user(PROOF_REQUEST)
    )

    assert classify(conversation).tier == "reasoning"


def test_assistant_and_tool_turns_after_the_user_turn_do_not_count() -> None:
    conversation = request(
        user("thanks!"),
        Message(role="assistant", content=CODING_TASK),
        Message(role="tool", content=PROOF_REQUEST, tool_call_id="call_1"),
    )

    assert classify(conversation).tier == "simple"


# --- needs -------------------------------------------------------------------------


def test_an_image_in_the_last_turn_needs_vision() -> None:
    result = classify(request(user([TextPart(text="What is in this picture?"), image()])))

    assert result.needs == ["vision"]


def test_an_image_in_an_earlier_turn_still_needs_vision() -> None:
    conversation = request(
        user([image()]),
        Message(role="assistant", content="A cat on a sofa."),
        user("What colour is it?"),
    )

    assert "vision" in classify(conversation).needs


def test_tools_in_the_request_need_tools() -> None:
    tools = [Tool(function=FunctionDef(name="get_weather", parameters={"type": "object"}))]

    assert classify(ask("What's the weather in Paris?", tools=tools)).needs == ["tools"]


def test_a_plain_text_request_has_no_needs() -> None:
    assert classify(ask("What is the capital of France?")).needs == []


def test_a_huge_prompt_needs_long_context() -> None:
    document = "The quarterly report lists revenue by region and product line. " * 7_000

    result = classify(request(Message(role="system", content=document), user("Summarise it.")))

    assert result.input_tokens > 100_000
    assert "long_context" in result.needs


def test_a_prompt_under_the_long_context_limit_does_not_need_it() -> None:
    document = "word " * 40_000  # about 50,000 tokens

    assert "long_context" not in classify(ask(document)).needs


# --- sizes -------------------------------------------------------------------------


def test_estimate_tokens_is_about_four_characters_a_token_over_every_message() -> None:
    short = estimate_tokens(ask("x" * 400))
    with_system = estimate_tokens(request(Message(role="system", content="y" * 4_000), user("x")))

    assert 100 <= short <= 110
    assert 1_000 <= with_system <= 1_015


def test_estimate_tokens_grows_with_the_prompt() -> None:
    assert estimate_tokens(ask("a" * 8_000)) > estimate_tokens(ask("a" * 800)) * 9


def test_classify_reports_the_estimated_input_tokens() -> None:
    chat = request(Message(role="system", content=AGENT_SYSTEM_PROMPT), user("hi"))

    assert classify(chat).input_tokens == estimate_tokens(chat)


def test_max_tokens_caps_the_expected_output() -> None:
    uncapped = classify(ask(PROOF_REQUEST))
    capped = classify(ask(PROOF_REQUEST, max_tokens=64))

    assert uncapped.output_tokens > 64
    assert capped.output_tokens == 64


def test_a_max_tokens_above_the_tier_default_changes_nothing() -> None:
    assert (
        classify(ask("thanks!", max_tokens=100_000)).output_tokens
        == classify(ask("thanks!")).output_tokens
    )


def test_harder_tiers_expect_longer_answers() -> None:
    simple = classify(ask("thanks!"))
    reasoning = classify(ask(PROOF_REQUEST))

    assert simple.output_tokens < reasoning.output_tokens


# --- confidence and reasons ----------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "thanks!",
        "What is the capital of France?",
        "Tell me about the history of the Roman empire and its long decline over centuries.",
        PROOF_REQUEST,
        CODING_TASK,
        "x",
        "",
    ],
)
def test_confidence_is_between_zero_and_one_and_reasons_are_words(text: str) -> None:
    result = classify(ask(text))

    assert 0.0 <= result.confidence <= 1.0
    assert result.reasons
    assert all(isinstance(why, str) and why.strip() for why in result.reasons)


def test_reasons_name_the_features_that_moved_the_score() -> None:
    reasons = classify(ask(CODING_TASK)).reasons

    assert "contains code" in reasons
    assert any("words" in why for why in reasons)


def test_a_request_with_no_signal_says_so() -> None:
    text = "Tell me about the history of the Roman empire and its long decline over centuries."

    assert classify(ask(text)).reasons == ["no strong signal"]
