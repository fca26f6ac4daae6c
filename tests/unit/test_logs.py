"""Structured logs: one JSON object per line, request ids, secrets redacted, contents dropped."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from omnillm.logs import configure_logging, log_context, redact


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    httpx_level = logging.getLogger("httpx").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(httpx_level)


def capture(**options: Any) -> io.StringIO:
    out = io.StringIO()
    configure_logging(options.pop("level", "info"), stream=out, **options)
    return out


def records(out: io.StringIO) -> list[dict[str, Any]]:
    lines = out.getvalue().splitlines()
    return [json.loads(line) for line in lines]


pytestmark = pytest.mark.usefixtures("restore_logging")
log = logging.getLogger("omnillm.test")


def test_every_record_is_one_line_of_json_with_time_level_logger_and_message() -> None:
    out = capture()

    log.info("first %s", "line\nwith a newline")
    log.warning("second")

    first, second = records(out)
    assert len(out.getvalue().splitlines()) == 2
    assert first["message"] == "first line\nwith a newline"
    assert first["level"] == "info"
    assert first["logger"] == "omnillm.test"
    assert first["time"].endswith("+00:00") and "T" in first["time"]
    assert second["level"] == "warning"


def test_the_request_id_comes_from_extra_or_from_the_log_context() -> None:
    out = capture()

    log.info("given", extra={"rid": "req-1"})
    with log_context(rid="req-2"):
        log.info("in context")
        log.info("extra wins", extra={"rid": "req-3"})
    log.info("after")

    assert [r.get("rid") for r in records(out)] == ["req-1", "req-2", "req-3", None]


def test_keys_and_tokens_in_messages_are_redacted() -> None:
    out = capture()

    log.warning("upstream refused Authorization: Bearer sk-abc123 (x-api-key: xyz)")
    log.warning("calling https://g.example/v1/models?alt=sse&key=AIzaSecretSecret")
    log.warning("headers %s", {"authorization": "Bearer tok_9", "api-key": "azure-secret"})

    text = out.getvalue()
    for secret in ("sk-abc123", "xyz", "AIzaSecretSecret", "tok_9", "azure-secret"):
        assert secret not in text
    messages = [r["message"] for r in records(out)]
    assert (
        messages[0] == "upstream refused Authorization: Bearer [redacted] (x-api-key: [redacted])"
    )
    assert messages[1] == "calling https://g.example/v1/models?alt=sse&key=[redacted]"


def test_secret_fields_in_extra_are_redacted_at_any_depth() -> None:
    out = capture()

    log.info("call", extra={"headers": {"X-Api-Key": "xyz", "accept": "text/event-stream"}})

    (record,) = records(out)
    assert record["headers"] == {"X-Api-Key": "[redacted]", "accept": "text/event-stream"}


def test_message_contents_are_dropped_unless_revealed() -> None:
    hidden = capture()
    log.info("request", extra={"prompt": "my diary", "content": "secret plans", "tier": "simple"})
    (record,) = records(hidden)
    assert "prompt" not in record and "content" not in record
    assert record["tier"] == "simple"
    assert "my diary" not in hidden.getvalue()

    shown = capture(reveal_content=True)
    log.info("request", extra={"prompt": "my diary, key sk-abc123"})
    (record,) = records(shown)
    assert record["prompt"] == "my diary, key [redacted]"


def test_the_level_filters_and_a_wrong_level_is_refused() -> None:
    out = capture(level="WARNING")

    log.info("not shown")
    log.error("shown")

    assert [r["message"] for r in records(out)] == ["shown"]
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        configure_logging("loud")


def test_configuring_again_replaces_the_handler_instead_of_doubling_lines() -> None:
    capture()
    out = capture()

    log.info("once")

    assert len(records(out)) == 1
    assert sum(h.get_name() == "omnillm" for h in logging.getLogger().handlers) == 1


def test_exceptions_are_logged_in_the_same_object_and_redacted() -> None:
    out = capture()

    try:
        raise RuntimeError("bad key sk-live-123456")
    except RuntimeError:
        log.exception("upstream failed")

    (record,) = records(out)
    assert "RuntimeError: bad key [redacted]" in record["exc"]


def test_the_text_format_is_redacted_too_and_names_the_request() -> None:
    out = capture(json=False)

    with log_context(rid="req-9"):
        log.info("Bearer abc.def")

    line = out.getvalue().strip()
    assert line.endswith("omnillm.test: [req-9] Bearer [redacted]")


def test_ordinary_words_are_not_taken_for_secrets() -> None:
    text = "authorization failed for xai/grok-4; the api-key is missing; a risk-free call"

    assert redact(text) == text
