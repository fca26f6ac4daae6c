"""Property tests of the request decoders: whatever bytes a client sends, the router
answers with its own error, never a foreign exception, and a valid request arrives whole.

The decoders are the two edges where a client's bytes become a ``ChatRequest``:
``read_request`` (NATS, ``omni.v1.request``) and ``parse_chat`` (the HTTP gateway).
"""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from omnillm.actors.classifier.actor import classify
from omnillm.actors.gateway.openai_in import parse_chat
from omnillm.bus.messages import (
    MAX_JSON_DEPTH,
    MAX_KEY_BYTES,
    MAX_MODEL_CHARS,
    MAX_OUTPUT_TOKENS,
    UNSET,
    CallEnvelope,
    ChatRequest,
    FunctionDef,
    ImagePart,
    ImageUrl,
    Message,
    RouteConstraints,
    TextPart,
    Tool,
    decode_envelope,
    decode_frame,
    decode_handoff_reply,
    encode,
    read_request,
)
from omnillm.errors import InvalidRequest, RequestError

LIMIT = 4 * 1024 * 1024
ROLES = ("system", "developer", "user", "assistant", "tool")

# --- strategies ------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=16,
)
hostile_text = st.one_of(
    st.text(max_size=16),
    st.sampled_from(
        ["user\x00", "a\x00b", "x\n", "openai.*.>/gpt", "mock.>", "é" * 200, "z" * 300]
    ),
)
hostile_numbers = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -1, 2**31, 2**63, 1e308, -1e308]),
)
anything = st.one_of(json_values, hostile_text, hostile_numbers)
parts = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": anything}),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": anything}),
    json_values,
)
messages = st.fixed_dictionaries(
    {
        "role": st.one_of(st.sampled_from(ROLES), hostile_text),
        "content": st.one_of(st.none(), hostile_text, st.lists(parts, max_size=3), anything),
    },
    optional={"name": anything, "tool_call_id": anything, "tool_calls": anything},
)
tools = st.fixed_dictionaries(
    {"type": st.just("function"), "function": st.fixed_dictionaries({"name": anything})},
    optional={"parameters": json_values},
)
request_fields = st.fixed_dictionaries(
    {"messages": st.one_of(st.lists(messages, max_size=3), anything)},
    optional={
        "model": st.one_of(hostile_text, anything),
        "max_tokens": st.one_of(hostile_numbers, anything),
        "max_completion_tokens": hostile_numbers,
        "temperature": hostile_numbers,
        "timeout_s": hostile_numbers,
        "n": anything,
        "stream": anything,
        "stream_options": anything,
        "idempotency_key": hostile_text,
        "tools": st.one_of(st.lists(tools, max_size=2), anything),
        "tool_choice": anything,
        "stop": anything,
        "metadata": anything,
        "route": anything,
        "user": anything,
    },
)


visible_text = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=24)
schemas = st.recursive(
    st.dictionaries(st.text(max_size=6), scalars, max_size=3),
    lambda inner: st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)
valid_messages = st.builds(
    Message,
    role=st.sampled_from(ROLES),
    content=st.one_of(
        st.none(),
        st.text(max_size=40),
        st.lists(
            st.one_of(
                st.builds(TextPart, text=st.text(max_size=20)),
                st.builds(ImagePart, image_url=st.builds(ImageUrl, url=st.text(max_size=20))),
            ),
            max_size=3,
        ),
    ),
)
valid_requests = st.builds(
    ChatRequest,
    messages=st.lists(valid_messages, min_size=1, max_size=4),
    model=st.one_of(st.just("auto"), visible_text),
    tools=st.one_of(
        st.just(UNSET),
        st.lists(
            st.builds(Tool, function=st.builds(FunctionDef, name=visible_text, parameters=schemas)),
            max_size=2,
        ),
    ),
    tool_choice=st.one_of(st.just(UNSET), st.just("auto"), schemas),
    temperature=st.one_of(st.just(UNSET), st.floats(min_value=0, max_value=2)),
    max_tokens=st.one_of(st.just(UNSET), st.integers(1, MAX_OUTPUT_TOKENS)),
    stop=st.one_of(st.just(UNSET), st.text(max_size=5), st.lists(st.text(max_size=5), max_size=2)),
    route=st.one_of(
        st.just(UNSET), st.builds(RouteConstraints, allow=st.lists(visible_text, max_size=2))
    ),
    idempotency_key=st.one_of(st.just(UNSET), st.text(min_size=1, max_size=60)),
    timeout_s=st.one_of(st.just(UNSET), st.floats(min_value=0.001, max_value=1e6)),
)


def mutated(data: bytes, draw: st.DrawFn) -> bytes:
    """``data`` as it is (most often), truncated, with a byte flipped, or with invalid
    UTF-8, a NUL or a bracket spliced in."""
    how = draw(st.sampled_from(["none", "none", "none", "cut", "flip", "splice"]))
    if how == "none" or not data:
        return data
    at = draw(st.integers(0, len(data) - 1))
    if how == "cut":
        return data[:at]
    if how == "flip":
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    splice = draw(st.sampled_from([b"\xff", b"\xc3", b"\x00", b"\\u0000", b"["]))
    return data[:at] + splice + data[at:]


@st.composite
def request_bytes(draw: st.DrawFn) -> bytes:
    """A valid request with a few fields replaced by hostile ones, sometimes mangled."""
    fields = msgspec.to_builtins(draw(valid_requests))
    hostile = draw(request_fields)
    for name in draw(st.lists(st.sampled_from(sorted(hostile)), max_size=2, unique=True)):
        fields[name] = hostile[name]
    return mutated(msgspec.json.encode(fields), draw)


def nested(depth: int, leaf: bytes = b"1") -> bytes:
    return b"[" * depth + leaf + b"]" * depth


def deep_request(where: str, depth: int = 10_000) -> bytes:
    deep = nested(depth)
    shapes = {
        "content": b'{"messages":[{"role":"user","content":%s}]}' % deep,
        "tool schema": b'{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function",'
        b'"function":{"name":"f","parameters":{"type":%s}}}]}' % deep,
        "tool_choice": b'{"messages":[{"role":"user","content":"x"}],"tool_choice":{"a":%s}}'
        % deep,
        "unknown field": b'{"messages":[{"role":"user","content":"x"}],"extra":%s}' % deep,
        "objects": b'{"messages":[{"role":"user","content":"x"}],"tool_choice":'
        + b'{"a":' * depth
        + b"1"
        + b"}" * depth
        + b"}",
    }
    return shapes[where]


def served(request: ChatRequest) -> None:
    """What every accepted request must satisfy for the hops after the decoder."""
    assert len(request.model) <= MAX_MODEL_CHARS
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in request.model)
    if isinstance(request.max_tokens, int):
        assert 1 <= request.max_tokens <= MAX_OUTPUT_TOKENS
    if isinstance(request.idempotency_key, str):
        assert 0 < len(request.idempotency_key.encode()) <= MAX_KEY_BYTES
    classify(request)
    envelope = CallEnvelope(rid="r", request=request, reply="_INBOX.x", deadline=0.0)
    assert decode_envelope(encode(envelope)) == envelope


# --- NATS: read_request ----------------------------------------------------------------


@given(st.binary(max_size=256))
def test_any_bytes_are_a_request_or_an_invalid_request(data: bytes) -> None:
    with contextlib.suppress(RequestError):
        served(read_request(data, max_bytes=LIMIT))


@given(request_bytes())
def test_hostile_request_fields_are_refused_with_the_routers_own_error(data: bytes) -> None:
    try:
        request = read_request(data, max_bytes=LIMIT)
    except RequestError as exc:
        assert exc.code in ("invalid_request", "request_too_large")
        assert exc.message
    else:
        served(request)


@given(valid_requests)
def test_a_valid_request_arrives_exactly_as_sent(request: ChatRequest) -> None:
    assert read_request(encode(request), max_bytes=LIMIT) == request


@given(st.binary(min_size=1, max_size=64))
def test_a_request_over_the_limit_is_too_large_whatever_it_holds(data: bytes) -> None:
    with pytest.raises(RequestError) as caught:
        read_request(data * 4, max_bytes=len(data) * 4 - 1)
    assert caught.value.code == "request_too_large"


@pytest.mark.parametrize(
    "where", ["content", "tool schema", "tool_choice", "unknown field", "objects"]
)
def test_ten_thousand_nested_levels_are_an_invalid_request(where: str) -> None:
    with pytest.raises(InvalidRequest):
        read_request(deep_request(where), max_bytes=LIMIT)
    with pytest.raises(InvalidRequest):
        parse_chat(deep_request(where))


@pytest.mark.parametrize("where", ["tool schema", "tool_choice"])
def test_a_schema_nested_past_the_limit_is_refused_and_one_at_it_accepted(where: str) -> None:
    inside = MAX_JSON_DEPTH - 1  # the schema object itself is one level
    assert isinstance(read_request(deep_request(where, inside), max_bytes=LIMIT), ChatRequest)
    with pytest.raises(InvalidRequest, match=f"nested deeper than {MAX_JSON_DEPTH} levels"):
        read_request(deep_request(where, inside + 1), max_bytes=LIMIT)


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"model": "a\x00b"}, "control character"),
        ({"model": "m" * (MAX_MODEL_CHARS + 1)}, "$.model"),
        ({"max_tokens": -1}, "$.max_tokens"),
        ({"max_tokens": 2**40}, "$.max_tokens"),
        ({"idempotency_key": "é" * 200}, "over 255 bytes"),
        ({"temperature": 1e300}, "$.temperature"),
    ],
)
def test_hostile_values_are_refused_naming_what_is_wrong(fields: dict[str, Any], says: str) -> None:
    data = msgspec.json.encode({"messages": [{"role": "user", "content": "x"}], **fields})
    with pytest.raises(InvalidRequest, match=None) as caught:
        read_request(data, max_bytes=LIMIT)
    assert says in caught.value.message


def test_invalid_utf8_is_an_invalid_request_that_says_so() -> None:
    with pytest.raises(InvalidRequest, match="UTF-8"):
        read_request(b'{"messages":[{"role":"user","content":"\xff"}]}', max_bytes=LIMIT)


# --- the other bus decoders keep their contract: a value or msgspec.DecodeError ---------


@given(st.one_of(st.binary(max_size=128), st.builds(msgspec.json.encode, json_values)))
def test_bus_decoders_raise_only_decode_errors(data: bytes) -> None:
    for decoder in (decode_frame, decode_envelope, decode_handoff_reply):
        with contextlib.suppress(msgspec.DecodeError):
            decoder(data)


def test_bus_decoders_report_deep_nesting_and_bad_utf8_as_decode_errors() -> None:
    for data in (nested(100_000), b'{"type":"delta","rid":"\xff"}'):
        for decoder in (decode_frame, decode_envelope, decode_handoff_reply):
            with pytest.raises(msgspec.DecodeError):
                decoder(data)


# --- HTTP: parse_chat ------------------------------------------------------------------


@given(st.binary(max_size=256))
def test_any_body_is_a_chat_or_an_invalid_request(data: bytes) -> None:
    try:
        served(parse_chat(data).request)
    except InvalidRequest as exc:
        assert exc.message


@given(request_bytes(), st.one_of(st.none(), st.text(max_size=300)))
def test_hostile_openai_bodies_and_keys_are_a_chat_or_an_invalid_request(
    data: bytes, idempotency_key: str | None
) -> None:
    try:
        parsed = parse_chat(data, key_name="k", idempotency_key=idempotency_key)
    except InvalidRequest as exc:
        assert exc.message
    else:
        served(parsed.request)
        if idempotency_key:
            assert parsed.request.idempotency_key == idempotency_key
            assert idempotency_key.isascii() and idempotency_key.isprintable()


@given(valid_requests)
def test_a_valid_openai_body_keeps_messages_model_and_limits(request: ChatRequest) -> None:
    parsed = parse_chat(encode(request)).request
    assert (parsed.messages, parsed.model) == (request.messages, request.model)
    assert (parsed.max_tokens, parsed.temperature, parsed.tools) == (
        request.max_tokens,
        request.temperature,
        request.tools,
    )


@pytest.mark.parametrize("key", ["k" * 256, "a\tb", "caf\xe9", "\x7f"])
def test_a_bad_idempotency_key_header_is_refused_naming_the_header(key: str) -> None:
    with pytest.raises(InvalidRequest, match="Idempotency-Key"):
        parse_chat(b'{"messages":[{"role":"user","content":"x"}]}', idempotency_key=key)
